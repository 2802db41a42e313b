package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mserve/mserve/core"
)

const maintenanceUsage = `mserve %[1]s asks a running mserve, through its admin address, to %[2]s.

Usage:
  mserve %[1]s [flags] SERVANT

Flags (each also settable by the environment variable shown):
`

// maintenanceMain runs drain, undrain and restart.
func maintenanceMain(verb, what string, args []string) int {
	fs := flag.NewFlagSet("mserve "+verb, flag.ContinueOnError)
	addr := fs.String("admin", "127.0.0.1:5002", "mserve's admin address")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the servant's running calls to finish (drain, restart)")
	fs.Usage = usageFor(fs, fmt.Sprintf(maintenanceUsage, verb, what))
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	u := fmt.Sprintf("http://%s/servants/%s/%s", *addr, url.PathEscape(fs.Arg(0)), verb)
	if verb != "undrain" {
		u += "?wait=" + wait.String()
	}
	client := &http.Client{Timeout: *wait + 10*time.Second}
	resp, err := client.Post(u, "application/json", nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mserve %s: %v\n", verb, err)
		return exitError
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(body, &out)
	switch {
	case resp.StatusCode == http.StatusOK && verb == "drain":
		fmt.Printf("%s drained: no calls running; it takes no new ones until mserve undrain %s\n", fs.Arg(0), fs.Arg(0))
	case resp.StatusCode == http.StatusAccepted:
		fmt.Printf("%s draining: %v calls still running after %v\n", fs.Arg(0), out["in_flight"], *wait)
		return exitError
	case resp.StatusCode == http.StatusOK:
		fmt.Printf("%s %sed\n", fs.Arg(0), strings.TrimSuffix(verb, "e"))
	default:
		fmt.Fprintf(os.Stderr, "mserve %s: %s: %v\n", verb, resp.Status, out["error"])
		return exitError
	}
	return exitOK
}

const statusUsage = `mserve status prints a running mserve's state as tables.

Usage:
  mserve status [flags]

Flags (each also settable by the environment variable shown):
`

func statusMain(args []string) int {
	fs := flag.NewFlagSet("mserve status", flag.ContinueOnError)
	addr := fs.String("admin", "127.0.0.1:5002", "mserve's admin address")
	raw := fs.Bool("json", false, "print the JSON status instead")
	fs.Usage = usageFor(fs, statusUsage)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + *addr + "/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve status:", err)
		return exitError
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if *raw {
		os.Stdout.Write(body)
		return exitOK
	}
	var st core.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(os.Stderr, "mserve status: %s: %v\n", resp.Status, err)
		return exitError
	}
	printStatus(os.Stdout, &st)
	return exitOK
}

func printStatus(w io.Writer, st *core.Status) {
	fmt.Fprintf(w, "mserve %s  up %s  algorithm %s  routing %s\n", st.Version, st.Uptime, st.Algorithm, st.Routing)
	fmt.Fprintf(w, "native %s  http %s  %s\n", orDash(st.Native), orDash(st.HTTP), st.Allowlist)
	c := st.Calls
	fmt.Fprintf(w, "queue %d  running %d  answered %d (ok %d, servant errors %d, timeouts %d, lost %d, overloaded %d, cancelled %d)  connections %d/%d\n\n",
		st.Queued, st.Running, c.Answered, c.OK, c.ServantError, c.Timeout, c.ServantLost, c.Overloaded, c.Cancelled, st.Conns.Open, st.Conns.Limit)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVANT\tSTATE\tSLOTS\tIN FLIGHT\tBACKLOG\tSERVED\tLATENCY\tLAST ROUTE\tADDR\tTAGS")
	for _, s := range st.Servants {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%.3fms\t%s\t%s\t%s\n", s.Name, servantState(s), s.Slots, s.InFlight, s.Backlog,
			s.Served, s.LatencyMs, orDash(s.LastRoute), s.Addr, orDash(strings.Join(s.Tags, ",")))
	}
	tw.Flush()
	for _, p := range st.Plugins {
		fmt.Fprintf(w, "\nplugin %s: healthy=%v decisions=%d calls=%d fallbacks=%d failures=%d restarts=%d\n",
			p.Name, p.Healthy, p.Decisions, p.Calls, p.Fallbacks, p.Failures, p.Restarts)
	}
	for _, s := range st.Scripts {
		fmt.Fprintf(w, "\nscript %s: %s\n", s.Path, strings.Join(s.Provides, " "))
	}
}

func servantState(s core.ServantStatus) string {
	switch {
	case s.Draining:
		return "draining"
	case s.Ejected:
		return "ejected"
	case !s.Healthy:
		return "down"
	}
	return "up"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
