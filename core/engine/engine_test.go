package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// fakeLink is a Transport that hands sent calls to the test.
type fakeLink struct {
	sent     chan *Call
	down     atomic.Bool
	canceled chan *Call
}

func newFakeLink() *fakeLink {
	return &fakeLink{sent: make(chan *Call, 1024), canceled: make(chan *Call, 1024)}
}

func (f *fakeLink) Send(c *Call, _ *wire.Flusher) error {
	if f.down.Load() {
		return errors.New("down")
	}
	f.sent <- c
	return nil
}

func (f *fakeLink) Cancel(c *Call) { f.canceled <- c }

// recorder is a Replier that keeps each answer as a decoded response.
type recorder struct {
	mu      sync.Mutex
	answers map[*Call][]map[string]any
	got     chan *Call
}

func newRecorder() *recorder {
	return &recorder{answers: map[*Call][]map[string]any{}, got: make(chan *Call, 1024)}
}

func (r *recorder) Answer(c *Call, a *Answer) {
	var m map[string]any
	if err := json.Unmarshal(AppendResponse(nil, c, a), &m); err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.answers[c] = append(r.answers[c], m)
	r.mu.Unlock()
	r.got <- c
}

// wait returns the next answered call, failing the test after a while.
func (r *recorder) wait(t *testing.T) (*Call, map[string]any) {
	t.Helper()
	select {
	case c := <-r.got:
		r.mu.Lock()
		defer r.mu.Unlock()
		return c, r.answers[c][len(r.answers[c])-1]
	case <-time.After(5 * time.Second):
		t.Fatal("no answer within 5s")
		return nil, nil
	}
}

func sentCall(t *testing.T, l *fakeLink) *Call {
	t.Helper()
	select {
	case c := <-l.sent:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent within 5s")
		return nil
	}
}

func noSend(t *testing.T, l *fakeLink) {
	t.Helper()
	select {
	case c := <-l.sent:
		t.Fatalf("unexpected send of %s(%s)", c.Method, c.Params)
	default:
	}
}

func newEngine(t *testing.T, algoName string, cfg Config) *Engine {
	t.Helper()
	a, err := algo.New(algo.Builtins(), algoName, algo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Algorithm = a
	if cfg.Router == nil {
		cfg.Router = firstArg{}
	}
	return New(cfg)
}

// firstArg routes by the raw params, enough for these tests.
type firstArg struct{}

func (firstArg) Route(c *dispatch.Call) (string, error) {
	return strings.Trim(string(c.Params), `[]"`), nil
}

func call(r Replier, method, params string) *Call {
	c := &Call{ID: []byte("7"), Reply: r}
	c.Method = method
	c.Params = []byte(params)
	return c
}

func ok(result string) *jsonrpc.Response { return &jsonrpc.Response{Result: []byte(result)} }

func TestCallWaitsForAServantThenSucceeds(t *testing.T) {
	e := newEngine(t, "least", Config{})
	l := newFakeLink()
	s := e.AddServant(ServantSpec{Name: "s1", Addr: "127.0.0.1:7001"}, l)
	rec := newRecorder()

	c := call(rec, "proc1", `["IBM"]`)
	e.Submit(c)
	noSend(t, l) // the servant is not up yet: the call waits in the queue
	s.Up(Announce{})
	got := sentCall(t, l)
	if got != c {
		t.Fatalf("sent %v, want the submitted call", got)
	}
	s.Done(got, &jsonrpc.Response{Result: []byte(`{"t":[1,2]}`), Info: []byte(`{"handler_ns":5,"rows":2,"route":"spoofed"}`)}, nil)
	_, resp := rec.wait(t)
	if fmt.Sprint(resp["result"]) != "map[t:[1 2]]" {
		t.Errorf("result = %v", resp["result"])
	}
	info := resp["info"].(map[string]any)
	for k, want := range map[string]any{"route": "IBM", "servant": "s1", "backlog": 0.0, "remaining": 0.0, "rows": 2.0, "handler_ns": 5.0} {
		if info[k] != want {
			t.Errorf("info[%q] = %v, want %v", k, info[k], want)
		}
	}
	if info["elapsed_ns"].(float64) < info["execution_ns"].(float64) {
		t.Errorf("elapsed %v < execution %v", info["elapsed_ns"], info["execution_ns"])
	}
	st := e.Stats()
	if st.OK != 1 || st.Queued != 0 || st.Running != 0 || st.Servants[0].Served != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestBacklogAndRemainingCountQueuedAndRunning(t *testing.T) {
	e := newEngine(t, "orig", Config{})
	l := newFakeLink()
	s := e.AddServant(ServantSpec{Name: "s1"}, l)
	s.Up(Announce{})
	rec := newRecorder()
	c1, c2, c3 := call(rec, "f", `[1]`), call(rec, "f", `[2]`), call(rec, "f", `[3]`)
	e.Submit(c1)
	e.Submit(c2)
	e.Submit(c3)
	if c1.Backlog() != 0 || c2.Backlog() != 1 || c3.Backlog() != 2 {
		t.Errorf("backlogs = %d %d %d, want 0 1 2", c1.Backlog(), c2.Backlog(), c3.Backlog())
	}
	s.Done(sentCall(t, l), ok("1"), nil)
	_, r1 := rec.wait(t)
	if got := r1["info"].(map[string]any)["remaining"]; got != 2.0 {
		t.Errorf("remaining after the first = %v, want 2", got)
	}
	if got := sentCall(t, l); got != c2 {
		t.Fatalf("second send is not the second call")
	}
}

func TestTimeoutInQueueNamesTheReason(t *testing.T) {
	e := newEngine(t, "least", Config{Timeout: 20 * time.Millisecond})
	e.AddServant(ServantSpec{Name: "s1"}, newFakeLink()) // never up
	rec := newRecorder()
	e.Submit(call(rec, "f", `[1]`))
	_, resp := rec.wait(t)
	errObj := resp["error"].(map[string]any)
	if errObj["code"] != float64(jsonrpc.Timeout) || !strings.Contains(errObj["message"].(string), "0 of 1 servants available") {
		t.Errorf("error = %v", errObj)
	}
	if st := e.Stats(); st.Queued != 0 || st.Timeouts != 1 {
		t.Errorf("stats after timeout = %+v", st)
	}
}

func TestTimeoutWhileRunningAnswersOnceAndKeepsTheSlot(t *testing.T) {
	e := newEngine(t, "least", Config{})
	l := newFakeLink()
	s := e.AddServant(ServantSpec{Name: "s1"}, l)
	s.Up(Announce{})
	rec := newRecorder()
	c := call(rec, "f", `[1]`)
	c.Timeout = 20 * time.Millisecond
	e.Submit(c)
	sent := sentCall(t, l)
	_, resp := rec.wait(t)
	if code := resp["error"].(map[string]any)["code"]; code != float64(jsonrpc.Timeout) {
		t.Fatalf("code = %v, want timeout", code)
	}
	select {
	case x := <-l.canceled:
		if x != c {
			t.Error("cancelled another call")
		}
	case <-time.After(5 * time.Second):
		t.Error("the servant was not told to cancel")
	}
	// The servant is still busy with it: a new call waits.
	c2 := call(rec, "f", `[2]`)
	e.Submit(c2)
	noSend(t, l)
	// The late result frees the slot but is not answered again.
	s.Done(sent, ok("late"), nil)
	if got := sentCall(t, l); got != c2 {
		t.Fatal("the waiting call was not sent after the late result")
	}
	rec.mu.Lock()
	n := len(rec.answers[c])
	rec.mu.Unlock()
	if n != 1 {
		t.Errorf("the timed-out call was answered %d times", n)
	}
}

func TestServantDownAnswersLostAndRequeuesItsBacklog(t *testing.T) {
	e := newEngine(t, "least", Config{})
	l1, l2 := newFakeLink(), newFakeLink()
	s1 := e.AddServant(ServantSpec{Name: "s1"}, l1)
	s2 := e.AddServant(ServantSpec{Name: "s2"}, l2)
	s1.Up(Announce{})
	rec := newRecorder()
	running := call(rec, "f", `[1]`)
	e.Submit(running)
	waitingCall := call(rec, "f", `[2]`)
	e.Submit(waitingCall)
	sentCall(t, l1)
	l1.down.Store(true)
	s1.Down([]*Call{running}, errors.New("EOF"))
	c, resp := rec.wait(t)
	if c != running {
		t.Fatal("the answered call is not the running one")
	}
	errObj := resp["error"].(map[string]any)
	if errObj["code"] != float64(jsonrpc.ServantLost) || !strings.Contains(errObj["message"].(string), "s1") {
		t.Errorf("error = %v", errObj)
	}
	s2.Up(Announce{})
	if got := sentCall(t, l2); got != waitingCall {
		t.Fatal("the waiting call did not go to the other servant")
	}
	st := e.Stats()
	if st.Servants[0].Healthy || st.Servants[0].InFlight != 0 || st.Servants[0].Used {
		t.Errorf("s1 after down = %+v", st.Servants[0])
	}
}

func TestSendFailureRequeuesTheCall(t *testing.T) {
	e := newEngine(t, "orig", Config{})
	l1, l2 := newFakeLink(), newFakeLink()
	s1 := e.AddServant(ServantSpec{Name: "s1"}, l1)
	s2 := e.AddServant(ServantSpec{Name: "s2"}, l2)
	s1.Up(Announce{})
	s2.Up(Announce{})
	l1.down.Store(true) // the link died; Down has not been reported yet
	rec := newRecorder()
	c := call(rec, "f", `[1]`)
	e.Submit(c)
	noSend(t, l2) // not yet: s1 looks healthy until its link reports
	s1.Down(nil, errors.New("EOF"))
	if got := sentCall(t, l2); got != c {
		t.Fatal("the call did not move to s2 after s1 went down")
	}
}

func TestOverloadedWhenTheQueueIsFull(t *testing.T) {
	e := newEngine(t, "least", Config{MaxQueue: 2})
	e.AddServant(ServantSpec{Name: "s1"}, newFakeLink())
	rec := newRecorder()
	e.Submit(call(rec, "f", `[1]`))
	e.Submit(call(rec, "f", `[2]`))
	third := call(rec, "f", `[3]`)
	e.Submit(third)
	c, resp := rec.wait(t)
	if c != third || resp["error"].(map[string]any)["code"] != float64(jsonrpc.Overloaded) {
		t.Errorf("got %v for call %p, want overloaded for the third", resp, c)
	}
}

func TestCancelRemovesAWaitingCall(t *testing.T) {
	e := newEngine(t, "least", Config{})
	l := newFakeLink()
	s := e.AddServant(ServantSpec{Name: "s1"}, l)
	rec := newRecorder()
	c1, c2 := call(rec, "f", `[1]`), call(rec, "f", `[2]`)
	e.Submit(c1)
	e.Submit(c2)
	e.Cancel(c1, "the client went away")
	_, resp := rec.wait(t)
	if resp["error"].(map[string]any)["code"] != float64(jsonrpc.Cancelled) {
		t.Errorf("resp = %v", resp)
	}
	s.Up(Announce{})
	if got := sentCall(t, l); got != c2 {
		t.Fatal("the cancelled call was sent")
	}
	e.Cancel(c1, "twice") // no effect, no second answer
	noSend(t, l)
}

func TestDrainWaitsForRunningCallsThenAnswersTheRest(t *testing.T) {
	e := newEngine(t, "least", Config{})
	l := newFakeLink()
	s := e.AddServant(ServantSpec{Name: "s1"}, l)
	s.Up(Announce{})
	rec := newRecorder()
	running, queued := call(rec, "f", `[1]`), call(rec, "f", `[2]`)
	e.Submit(running)
	e.Submit(queued)
	sent := sentCall(t, l)

	e.Close()
	// A call after Close is refused at once.
	late := newRecorder()
	e.Submit(call(late, "f", `[3]`))
	if _, resp := late.wait(t); resp["error"].(map[string]any)["code"] != float64(jsonrpc.ShuttingDown) {
		t.Errorf("a call after Close got %v", resp)
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { // end the grace period once the running call is answered
			for c := range rec.got {
				if c == running {
					cancel()
					return
				}
			}
		}()
		drained <- e.Drain(ctx)
	}()
	s.Done(sent, ok("1"), nil)
	if err := <-drained; !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain = %v, want context.Canceled (the queued call was left)", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if a := rec.answers[running]; len(a) != 1 || a[0]["result"] != 1.0 {
		t.Errorf("running call answers = %v", a)
	}
	if a := rec.answers[queued]; len(a) != 1 || a[0]["error"].(map[string]any)["code"] != float64(jsonrpc.ShuttingDown) {
		t.Errorf("queued call answers = %v", a)
	}
}

func TestUpAppliesAnnouncedSlotsUnlessFixed(t *testing.T) {
	e := newEngine(t, "least", Config{})
	free := e.AddServant(ServantSpec{Name: "free"}, newFakeLink())
	fixed := e.AddServant(ServantSpec{Name: "fixed", Slots: 2, Tags: []string{"gpu"}}, newFakeLink())
	free.Up(Announce{Slots: 4, Tags: []string{"hdb"}})
	fixed.Up(Announce{Slots: 8, Tags: []string{"hdb", "gpu"}})
	st := e.Stats()
	if st.Servants[0].Slots != 4 || st.Servants[1].Slots != 2 {
		t.Errorf("slots = %d, %d; want 4 (announced) and 2 (fixed at launch)", st.Servants[0].Slots, st.Servants[1].Slots)
	}
	if got := fmt.Sprint(st.Servants[1].Tags); got != "[gpu hdb]" {
		t.Errorf("tags = %s, want launch tags plus announced ones without duplicates", got)
	}
}

// TestEveryCallAnsweredExactlyOnce drives many concurrent calls through
// servants that answer, fail, time out and go down, and checks each call
// got exactly one answer. Run with -race.
func TestEveryCallAnsweredExactlyOnce(t *testing.T) {
	e := newEngine(t, "least", Config{Timeout: 50 * time.Millisecond})
	const servants, calls = 4, 2000
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range servants {
		l := newFakeLink()
		s := e.AddServant(ServantSpec{Name: fmt.Sprint("s", i), Slots: 2}, l)
		s.Up(Announce{})
		wg.Add(1)
		go func() { // a servant: answers most calls, drops some, crashes now and then
			defer wg.Done()
			n := 0
			var held []*Call
			for {
				select {
				case <-ctx.Done():
					return
				case c := <-l.sent:
					n++
					switch {
					case n%97 == 0: // crash: lose what it holds, come back
						held = append(held, c)
						s.Down(held, errors.New("killed"))
						held = nil
						s.Up(Announce{})
					case n%13 == 0: // hold it: the call times out, the result comes later
						held = append(held, c)
					default:
						s.Done(c, ok("1"), nil)
						if len(held) > 0 {
							s.Done(held[0], ok("late"), nil)
							held = held[1:]
						}
					}
				}
			}
		}()
	}
	var answers atomic.Int64
	counts := make([]atomic.Int32, calls)
	var cwg sync.WaitGroup
	for i := range calls {
		cwg.Add(1)
		c := call(replierFunc(func(*Call, *Answer) {
			counts[i].Add(1)
			answers.Add(1)
			cwg.Done()
		}), "f", fmt.Sprintf("[%d]", i%10))
		go e.Submit(c)
	}
	cwg.Wait()
	for i := range counts {
		if n := counts[i].Load(); n != 1 {
			t.Errorf("call %d answered %d times", i, n)
		}
	}
	cancel()
	wg.Wait()
	st := e.Stats()
	if st.Answered != calls {
		t.Errorf("answered %d, want %d", st.Answered, calls)
	}
	t.Logf("ok=%d timeouts=%d lost=%d", st.OK, st.Timeouts, st.Lost)
}

type replierFunc func(*Call, *Answer)

func (f replierFunc) Answer(c *Call, a *Answer) { f(c, a) }

// TestOutlierEjection: a servant whose calls fail in a row is taken out of
// dispatch for a while, then readmitted; at most half the servants are
// ever out.
func TestOutlierEjection(t *testing.T) {
	now := time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEngine(t, "orig", Config{EjectAfter: 3, EjectFor: time.Minute, Now: clock})
	l1, l2, l3 := newFakeLink(), newFakeLink(), newFakeLink()
	s1 := e.AddServant(ServantSpec{Name: "s1"}, l1)
	s2 := e.AddServant(ServantSpec{Name: "s2"}, l2)
	s3 := e.AddServant(ServantSpec{Name: "s3"}, l3)
	for _, s := range []*Servant{s1, s2, s3} {
		s.Up(Announce{})
	}
	rec := newRecorder()
	internal := &jsonrpc.Response{Error: []byte(`{"code":-32603,"message":"boom"}`)}
	appErr := &jsonrpc.Response{Error: []byte(`{"code":-32602,"message":"bad argument"}`)}
	// Application errors do not count against the servant.
	for range 5 {
		e.Submit(call(rec, "f", `[1]`))
		s1.Done(sentCall(t, l1), appErr, nil)
		rec.wait(t)
	}
	if e.Stats().Servants[0].Ejected {
		t.Fatal("s1 was ejected for its callers' mistakes")
	}
	// Three internal errors in a row eject it.
	for range 3 {
		e.Submit(call(rec, "f", `[1]`))
		s1.Done(sentCall(t, l1), internal, nil)
		rec.wait(t)
	}
	st := e.Stats()
	if !st.Servants[0].Ejected || st.Ejections != 1 {
		t.Fatalf("after 3 internal errors: ejected=%v ejections=%d", st.Servants[0].Ejected, st.Ejections)
	}
	e.Submit(call(rec, "f", `[1]`)) // orig would pick s1 first: it goes to s2
	if c := sentCall(t, l2); c == nil {
		t.Fatal("the call did not go to s2")
	} else {
		s2.Done(c, ok("1"), nil)
		rec.wait(t)
	}
	// s2 fails too: ejecting it would leave 1 of 3 — more than half out? 2 of 3 out is more than half: refused.
	for range 3 {
		e.Submit(call(rec, "f", `[1]`))
		s2.Done(sentCall(t, l2), internal, nil)
		rec.wait(t)
	}
	if e.Stats().Servants[1].Ejected {
		t.Error("a second servant of three was ejected: more than half would be out")
	}
	// After EjectFor, s1 is readmitted at the next round.
	advance(time.Minute + time.Second)
	e.Submit(call(rec, "f", `[1]`))
	if c := sentCall(t, l1); c == nil {
		t.Fatal("s1 was not readmitted")
	} else {
		s1.Done(c, ok("1"), nil)
		rec.wait(t)
	}
	if e.Stats().Servants[0].Ejected {
		t.Error("s1 still ejected after its time")
	}
	_ = s3
}

// TestSlowServantEjected: with EjectSlower set, a servant whose latency
// passes that many times its peers' average is ejected.
func TestSlowServantEjected(t *testing.T) {
	now := time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEngine(t, "least", Config{EjectSlower: 5, EjectFor: time.Minute, Now: clock})
	links := []*fakeLink{newFakeLink(), newFakeLink(), newFakeLink()}
	var servants []*Servant
	for i, l := range links {
		s := e.AddServant(ServantSpec{Name: fmt.Sprint("s", i+1)}, l)
		s.Up(Announce{})
		servants = append(servants, s)
	}
	rec := newRecorder()
	// 25 calls on each: s3 takes 20 ms, the others 1 ms.
	for range 25 {
		for i, l := range links {
			e.Submit(call(rec, "f", `[1]`))
			c := sentCall(t, l)
			if i == 2 {
				advance(20 * time.Millisecond)
			} else {
				advance(time.Millisecond)
			}
			servants[i].Done(c, ok("1"), nil)
			rec.wait(t)
			if e.Stats().Servants[2].Ejected {
				return
			}
		}
	}
	t.Fatalf("the slow servant was not ejected: %+v", e.Stats().Servants)
}

// TestIdempotentCallRedispatched: a servant lost under an idempotent call
// sends it to another servant; a non-idempotent one is answered lost.
func TestIdempotentCallRedispatched(t *testing.T) {
	e := newEngine(t, "orig", Config{})
	l1, l2 := newFakeLink(), newFakeLink()
	s1 := e.AddServant(ServantSpec{Name: "s1", Slots: 2}, l1)
	s2 := e.AddServant(ServantSpec{Name: "s2", Slots: 2}, l2)
	s1.Up(Announce{})
	rec := newRecorder()
	idem, plain := call(rec, "f", `["i"]`), call(rec, "f", `["p"]`)
	idem.Idempotent = true
	e.Submit(idem)
	e.Submit(plain)
	a, b := sentCall(t, l1), sentCall(t, l1)
	s2.Up(Announce{})
	s1.Down([]*Call{a, b}, errors.New("killed"))
	c, resp := rec.wait(t)
	if c != plain || resp["error"].(map[string]any)["code"] != float64(jsonrpc.ServantLost) {
		t.Fatalf("first answer: %v for %v, want servant lost for the non-idempotent call", resp, c)
	}
	if again := sentCall(t, l2); again != idem {
		t.Fatal("the idempotent call was not sent to s2")
	}
	s2.Done(idem, ok(`"i"`), nil)
	if c, resp := rec.wait(t); c != idem || resp["result"] != "i" {
		t.Errorf("idempotent call answered %v", resp)
	}
	if st := e.Stats(); st.Redispatched != 1 {
		t.Errorf("redispatched = %d, want 1", st.Redispatched)
	}
}
