package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/sdk/client"
	"github.com/mserve/mserve/sdk/jsonrpc"
)

// TestE2EAllowlistNothingReachesTheServant: undeclared calls, arguments
// that break their declaration (an injection-shaped string to a symbol)
// and calls outside a user's grant are all refused by mserve; the servant's
// own execution counter proves none of them ran there.
func TestE2EAllowlistNothingReachesTheServant(t *testing.T) {
	file := filepath.Join(t.TempDir(), "allow.txt")
	src := "count(x symbol /[A-Z]{1,8}/)\n" +
		"echo(x any)\n" +
		"user alice " + allow.HashSecret("alice-secret") + ": count echo\n" +
		"user bob " + allow.HashSecret("bob-secret") + ": echo\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startMserve(t, mserveOpts{
		flags:    []string{"-algo", "least", "-allow", file},
		servants: []string{"1", os.Args[0]},
		env:      []string{"MSERVE_TEST_SERVANT=1"},
	})
	m.waitServantsUp("s1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(user, secret string) *client.Client {
		c, err := client.Dial(ctx, m.native, client.Credentials(user, secret))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice, bob, anon := dial("alice", "alice-secret"), dial("bob", "bob-secret"), dial("", "")

	refused := []struct {
		name   string
		c      *client.Client
		method string
		params []any
		code   int
	}{
		{"undeclared function (would crash the servant)", alice, "crash", []any{"x"}, jsonrpc.MethodNotFound},
		{"injection-shaped argument to a symbol", alice, "count", []any{`IBM; system "rm -rf /"`}, jsonrpc.InvalidParams},
		{"argument breaking the pattern", alice, "count", []any{"ibm"}, jsonrpc.InvalidParams},
		{"too many arguments", alice, "count", []any{"IBM", "MSFT"}, jsonrpc.InvalidParams},
		{"outside the user's grant", bob, "count", []any{"IBM"}, jsonrpc.MethodNotFound},
		{"anonymous caller when users are defined", anon, "count", []any{"IBM"}, jsonrpc.MethodNotFound},
		{"anonymous caller, any function", anon, "echo", []any{"hi"}, jsonrpc.MethodNotFound},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.c.Call(ctx, tc.method, tc.params)
			e, ok := err.(*jsonrpc.Error)
			if !ok || e.Code != tc.code {
				t.Fatalf("got %v, want code %d", err, tc.code)
			}
			if resp != nil && resp.InfoRaw != nil {
				t.Errorf("a refused call has an info record: it reached the queue: %s", resp.InfoRaw)
			}
		})
	}
	// The servant's own count: the first call that passes is its first.
	resp, err := alice.Call(ctx, "count", []any{"IBM"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Count int `json:"count"`
		Pid   int `json:"pid"`
	}
	json.Unmarshal(resp.Result, &got)
	if got.Count != 1 {
		t.Errorf("the servant counted %d calls to count, want 1: a refused call reached it", got.Count)
	}
	m.notePid(got.Pid)
	if _, err := bob.Call(ctx, "echo", []any{"granted"}); err != nil {
		t.Errorf("bob's granted call: %v", err)
	}
}
