package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/core"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// chaosAnswer is what came back for one call.
type chaosAnswer struct {
	result string
	code   int
	count  int // answers received for the call: must be exactly 1
}

// TestE2EChaos runs a fixed number of calls at concurrency 64 against 4
// servants while servants are killed with SIGKILL at random moments, and
// checks the promise: every call gets exactly one answer; idempotent calls
// all succeed (they are re-dispatched); the others succeed or answer
// "servant lost"; no non-idempotent call runs twice. It reports the counts
// and how long a killed servant took to come back.
func TestE2EChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	const (
		calls       = 4000
		concurrency = 64
		servants    = 4
	)
	execLog := filepath.Join(t.TempDir(), "executions.log")
	m := startMserve(t, mserveOpts{
		flags: []string{"-algo", "least", "-timeout", "30s", "-max-attempts", "10", "-eject-after", "-1", "-health-interval", "-1s",
			"-restart-max", "400ms"},
		servants: []string{strconv.Itoa(servants), os.Args[0]},
		env:      []string{"MSERVE_TEST_SERVANT=1", "FAULT_EXEC_LOG=" + execLog},
	})
	m.waitServing("s1", "s2", "s3", "s4")

	rng := rand.New(rand.NewPCG(1, 2))
	stopKiller := make(chan struct{})
	var (
		mu         sync.Mutex
		recoveries []time.Duration
		kills      int
		measuring  sync.WaitGroup
	)
	killerDone := make(chan struct{})
	go func() { // the killer: SIGKILL a random servant that is up every 40–160 ms
		defer close(killerDone)
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(time.Duration(40+rng.IntN(120)) * time.Millisecond):
			}
			st := adminStatus(t, m)
			name := fmt.Sprintf("s%d", 1+rng.IntN(servants))
			pid := servantPid(st, name)
			if pid == 0 || !servantHealthy(st, name) {
				continue // down or restarting
			}
			killedAt := time.Now()
			if syscall.Kill(pid, syscall.SIGKILL) != nil {
				continue
			}
			m.notePid(pid)
			mu.Lock()
			kills++
			mu.Unlock()
			measuring.Add(1)
			go func() { // recovery: a new process back in dispatch
				defer measuring.Done()
				for time.Since(killedAt) < 20*time.Second {
					st := adminStatus(t, m)
					if p := servantPid(st, name); p != 0 && p != pid && servantHealthy(st, name) {
						mu.Lock()
						recoveries = append(recoveries, time.Since(killedAt))
						mu.Unlock()
						return
					}
					time.Sleep(5 * time.Millisecond) // polling the status to time the recovery, not to order the calls under test
				}
			}()
		}
	}()

	answers := runRawCalls(t, m.native, calls, concurrency, func(i int) (string, []byte) {
		method := "work"
		if i%2 == 1 {
			method = "once"
		}
		return method, fmt.Appendf(nil, `["c%d",%d]`, i, 1+i%3)
	})
	close(stopKiller)
	<-killerDone
	measuring.Wait()

	// Every call answered exactly once.
	var ok, lost, other, duplicates, missing int
	for i := range calls {
		a := answers[fmt.Sprintf("c%d", i)]
		switch {
		case a == nil || a.count == 0:
			missing++
			continue
		case a.count > 1:
			duplicates++
		}
		id := fmt.Sprintf("c%d", i)
		switch {
		case a.code == 0 && a.result == strconv.Quote(id):
			ok++
		case a.code == jsonrpc.ServantLost && i%2 == 1:
			lost++
		default:
			other++
			t.Errorf("call %s (%s) got result %s code %d", id, map[bool]string{true: "once", false: "work"}[i%2 == 1], a.result, a.code)
		}
	}
	// Executions, from the servants' own log.
	runs := map[string]int{}
	f, err := os.Open(execLog)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		runs[sc.Text()]++
	}
	f.Close()
	twice := 0
	for i := 1; i < calls; i += 2 {
		if n := runs[fmt.Sprintf("c%d", i)]; n > 1 {
			twice++
			t.Errorf("non-idempotent call c%d ran %d times", i, n)
		}
	}
	st := adminStatus(t, m)
	if missing > 0 || duplicates > 0 {
		t.Errorf("%d calls unanswered, %d answered more than once", missing, duplicates)
	}
	if kills < 5 {
		t.Errorf("only %d servants were killed: the test did not stress anything", kills)
	}
	slices.Sort(recoveries)
	var sum time.Duration
	for _, r := range recoveries {
		sum += r
	}
	avg := time.Duration(0)
	if len(recoveries) > 0 {
		avg = sum / time.Duration(len(recoveries))
	}
	t.Logf("chaos: %d calls, %d kills; answered ok %d, servant lost %d, other %d; re-dispatched %d; duplicates %d, lost %d, non-idempotent run twice %d",
		calls, kills, ok, lost, other, st.Calls.Redispatched, duplicates, missing, twice)
	if len(recoveries) > 0 {
		t.Logf("recovery after a kill (killed → new process back in dispatch): min %v, median %v, mean %v, max %v over %d",
			recoveries[0].Round(time.Millisecond), recoveries[len(recoveries)/2].Round(time.Millisecond),
			avg.Round(time.Millisecond), recoveries[len(recoveries)-1].Round(time.Millisecond), len(recoveries))
	}
}

func adminStatus(t *testing.T, m *mserveProc) core.Status {
	resp, err := http.Get("http://" + m.admin + "/status")
	if err != nil {
		t.Error(err)
		return core.Status{}
	}
	defer resp.Body.Close()
	var st core.Status
	json.NewDecoder(resp.Body).Decode(&st)
	return st
}

func servantPid(st core.Status, name string) int {
	for _, s := range st.Servants {
		if s.Name == name {
			return s.Pid
		}
	}
	return 0
}

func servantHealthy(st core.Status, name string) bool {
	for _, s := range st.Servants {
		if s.Name == name {
			return s.Healthy
		}
	}
	return false
}

// runRawCalls sends n calls over one native connection with at most conc
// unanswered at a time, and counts the answers to each call by its id, so
// that an answer arriving twice would be seen (the SDK client would drop
// it). mk returns call i's method and params; its first argument is its id.
func runRawCalls(t *testing.T, addr string, n, conc int, mk func(i int) (string, []byte)) map[string]*chaosAnswer {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	answers := map[string]*chaosAnswer{}
	var mu sync.Mutex
	sem := make(chan struct{}, conc)
	remaining := n
	done := make(chan struct{})
	go func() { // reader
		r := wire.NewReader(conn, 0)
		for {
			frame, err := r.ReadFrame(nil)
			if err != nil {
				if err != io.EOF {
					t.Errorf("reading answers: %v", err)
				}
				close(done)
				return
			}
			var resp jsonrpc.Response
			if err := jsonrpc.ParseResponse(frame, &resp); err != nil {
				t.Errorf("bad answer %s: %v", frame, err)
				continue
			}
			id, _ := jsonrpc.Unquote(resp.ID)
			mu.Lock()
			a := answers[id]
			if a == nil {
				a = &chaosAnswer{}
				answers[id] = a
			}
			a.count++
			if resp.Error != nil {
				if e, err := jsonrpc.DecodeError(resp.Error); err == nil {
					a.code = e.Code
				}
			} else {
				a.result = string(resp.Result)
			}
			remaining--
			last := remaining == 0
			mu.Unlock()
			<-sem
			if last {
				close(done)
				return
			}
		}
	}()
	w := bufio.NewWriter(conn)
	for i := range n {
		sem <- struct{}{}
		method, params := mk(i)
		body := jsonrpc.AppendRequest(nil, []byte(strconv.Quote(fmt.Sprintf("c%d", i))), method, params)
		w.Write(wire.AppendFrame(nil, body))
		if len(sem) == cap(sem) || i == n-1 {
			w.Flush()
		}
	}
	w.Flush()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		t.Fatalf("%d calls still unanswered after 2 minutes", remaining)
		mu.Unlock()
	}
	// A late duplicate would arrive right after: give the connection a
	// moment of reading more before counting.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	extra, _ := io.ReadAll(conn)
	if len(strings.TrimSpace(string(extra))) > 0 {
		t.Errorf("%d bytes arrived after every call was answered: an answer was sent twice", len(extra))
	}
	return answers
}
