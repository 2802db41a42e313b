package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

const callUsage = `mserve call makes one call and prints its result and info record.

Usage:
  mserve call [flags] METHOD [ARGS...]

Each ARG is parsed as JSON when it looks like JSON (a number, true, false,
null, or starts with { [ or "), and is a string otherwise:
  mserve call proc1 IBM           → params ["IBM"]
  mserve call sleep 250           → params [250]
  mserve call echo '{"a":[1,2]}'  → params [{"a":[1,2]}]

Exit status: 0 on a result, 1 on an error answer or failure, 2 on bad usage.

Flags (each also settable by the environment variable shown):
`

// callOptions are mserve call's settings.
type callOptions struct {
	addr, url, user, secret string
	timeout, wait           time.Duration
	raw                     bool
}

// callFlags defines mserve call's flags.
func callFlags() (*flag.FlagSet, *callOptions) {
	o := &callOptions{}
	fs := flag.NewFlagSet("mserve call", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:5001", "mserve's native address (host:port)")
	fs.StringVar(&o.url, "url", "", "call over HTTP at this URL instead of the native address")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the answer")
	fs.DurationVar(&o.wait, "wait", 0, "keep retrying the connection this long while mserve is starting")
	fs.BoolVar(&o.raw, "json", false, "print the raw JSON-RPC response instead")
	fs.StringVar(&o.user, "user", "", "allowlist user to call as (with -secret)")
	fs.StringVar(&o.secret, "secret", "", "the user's secret; without -user, a bearer token")
	fs.Usage = usageFor(fs, callUsage)
	return fs, o
}

func callMain(args []string) int {
	fs, o := callFlags()
	addr, url, timeout, wait, raw, user, secret := &o.addr, &o.url, &o.timeout, &o.wait, &o.raw, &o.user, &o.secret
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	method := fs.Arg(0)
	params := argsToParams(fs.Args()[1:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+*wait)
	defer cancel()

	var resp *client.Response
	var err error
	if *url != "" {
		resp, err = callHTTP(ctx, *url, method, params, *wait, *raw, *user, *secret)
	} else {
		resp, err = callNative(ctx, *addr, method, params, *wait, *timeout, *raw, *user, *secret)
	}
	if *raw {
		if err != nil && resp == nil {
			fmt.Fprintln(os.Stderr, "mserve call:", err)
			return exitError
		}
		if err != nil {
			return exitError
		}
		return exitOK
	}
	if resp != nil && resp.Result != nil {
		fmt.Printf("result: %s\n", indent(resp.Result))
	}
	if err != nil {
		var e *jsonrpc.Error
		if errors.As(err, &e) {
			fmt.Printf("error:  %s (code %d %s)\n", e.Message, e.Code, jsonrpc.CodeName(e.Code))
		} else {
			fmt.Fprintln(os.Stderr, "mserve call:", err)
		}
	}
	if resp != nil && resp.InfoRaw != nil {
		fmt.Printf("info:   %s\n", formatInfo(resp.InfoRaw))
	}
	if err != nil {
		return exitError
	}
	return exitOK
}

// argsToParams turns command-line arguments into a JSON params array.
func argsToParams(args []string) []byte {
	if len(args) == 0 {
		return nil
	}
	out := []byte{'['}
	for i, a := range args {
		if i > 0 {
			out = append(out, ',')
		}
		if looksLikeJSON(a) {
			out = append(out, a...)
		} else {
			out = jsonrpc.AppendString(out, a)
		}
	}
	return append(out, ']')
}

func looksLikeJSON(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" || !jsonrpc.Valid([]byte(s)) {
		return false
	}
	switch c := s[0]; {
	case c == '{' || c == '[' || c == '"' || c == '-' || (c >= '0' && c <= '9'):
		return true
	}
	return s == "true" || s == "false" || s == "null"
}

func callNative(ctx context.Context, addr, method string, params []byte, wait, timeout time.Duration, raw bool, user, secret string) (*client.Response, error) {
	c, err := dialRetry(ctx, addr, wait, client.Credentials(user, secret))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.CallRaw(cctx, method, params)
	if raw && resp != nil {
		printRaw(resp, err)
	}
	return resp, err
}

// dialRetry dials addr, retrying refused connections for up to wait.
func dialRetry(ctx context.Context, addr string, wait time.Duration, opts ...client.Option) (*client.Client, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := client.Dial(ctx, addr, opts...)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func printRaw(resp *client.Response, err error) {
	out := map[string]any{"jsonrpc": "2.0"}
	var e *jsonrpc.Error
	if errors.As(err, &e) {
		out["error"] = e
	} else {
		out["result"] = resp.Result
	}
	if resp.InfoRaw != nil {
		out["info"] = resp.InfoRaw
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(b))
}

func callHTTP(ctx context.Context, url, method string, params []byte, wait time.Duration, raw bool, user, secret string) (*client.Response, error) {
	body := jsonrpc.AppendRequest(nil, []byte("1"), method, params)
	deadline := time.Now().Add(wait)
	var hr *http.Response
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		switch {
		case secret != "" && user != "":
			req.SetBasicAuth(user, secret)
		case secret != "":
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		hr, err = http.DefaultClient.Do(req)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer hr.Body.Close()
	b, err := io.ReadAll(hr.Body)
	if err != nil {
		return nil, err
	}
	if raw {
		var pretty bytes.Buffer
		if json.Indent(&pretty, b, "", "  ") == nil {
			fmt.Println(pretty.String())
		} else {
			fmt.Println(string(b))
		}
	}
	var r jsonrpc.Response
	if err := jsonrpc.ParseResponse(b, &r); err != nil {
		return nil, fmt.Errorf("HTTP %s: %s", hr.Status, strings.TrimSpace(string(b)))
	}
	resp := &client.Response{Result: r.Result, InfoRaw: r.Info}
	if r.Error != nil {
		e, err := jsonrpc.DecodeError(r.Error)
		if err != nil {
			return resp, err
		}
		return resp, e
	}
	return resp, nil
}

func indent(raw []byte) string {
	var b bytes.Buffer
	if json.Indent(&b, raw, "        ", "  ") != nil {
		return string(raw)
	}
	return b.String()
}

// formatInfo renders an info record as key=value pairs, mserve's keys
// first, durations in readable units.
func formatInfo(raw []byte) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	first := []string{"route", "servant", "elapsed_ns", "execution_ns", "handler_ns", "backlog", "remaining"}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		pi, pj := indexOf(first, keys[i]), indexOf(first, keys[j])
		if pi != pj {
			return pi < pj
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := string(m[k])
		if name, ok := strings.CutSuffix(k, "_ns"); ok {
			var ns int64
			if json.Unmarshal(m[k], &ns) == nil {
				parts = append(parts, name+"="+time.Duration(ns).String())
				continue
			}
		}
		var s string
		if json.Unmarshal(m[k], &s) == nil {
			v = s
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return len(list)
}
