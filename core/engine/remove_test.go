package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/jsonrpc"
)

// TestRemoveServant covers what happens to the calls of a servant taken
// out for good, and to the servants listed after it.
func TestRemoveServant(t *testing.T) {
	t.Run("running calls: idempotent ones move, the others are answered lost", func(t *testing.T) {
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
		sentCall(t, l1)
		sentCall(t, l1)
		s2.Up(Announce{})
		e.RemoveServant(s1, errors.New("it left"))
		c, resp := rec.wait(t)
		if c != plain || resp["error"].(map[string]any)["code"] != float64(jsonrpc.ServantLost) {
			t.Fatalf("answer %v for %v, want servant lost for the non-idempotent call", resp, c)
		}
		if got := sentCall(t, l2); got != idem {
			t.Fatal("the idempotent call did not move to s2")
		}
		// The removed servant's link answering late changes nothing.
		s1.Done(plain, ok(`"late"`), nil)
		s1.Down([]*Call{idem}, errors.New("EOF"))
		s2.Done(idem, ok(`"i"`), nil)
		if c, resp := rec.wait(t); c != idem || resp["result"] != "i" {
			t.Fatalf("idempotent call answered %v", resp)
		}
		select {
		case c := <-rec.got:
			t.Fatalf("a second answer, for %s(%s)", c.Method, c.Params)
		default:
		}
	})

	t.Run("calls waiting for it go to another servant", func(t *testing.T) {
		e := newEngine(t, "least", Config{})
		l1, l2 := newFakeLink(), newFakeLink()
		s1 := e.AddServant(ServantSpec{Name: "s1"}, l1)
		s1.Up(Announce{})
		rec := newRecorder()
		first, second := call(rec, "f", `[1]`), call(rec, "f", `[2]`)
		e.Submit(first)
		e.Submit(second) // waits: s1's one slot is taken
		sentCall(t, l1)
		s2 := e.AddServant(ServantSpec{Name: "s2"}, l2)
		e.RemoveServant(s1, errors.New("it left"))
		rec.wait(t) // first: lost
		s2.Up(Announce{})
		if got := sentCall(t, l2); got != second {
			t.Fatal("the waiting call did not go to s2")
		}
	})

	t.Run("servants after it move down a place and still get calls", func(t *testing.T) {
		e := newEngine(t, "orig", Config{})
		links := []*fakeLink{newFakeLink(), newFakeLink(), newFakeLink()}
		var ss []*Servant
		for i, l := range links {
			s := e.AddServant(ServantSpec{Name: []string{"a", "b", "c"}[i]}, l)
			s.Up(Announce{})
			ss = append(ss, s)
		}
		e.RemoveServant(ss[0], errors.New("it left"))
		st := e.Stats()
		if len(st.Servants) != 2 || st.Servants[0].Name != "b" || st.Servants[1].Name != "c" {
			t.Fatalf("servants after removing a: %+v", st.Servants)
		}
		if e.Lookup("a") != nil {
			t.Error("Lookup still finds the removed servant")
		}
		rec := newRecorder()
		e.Submit(call(rec, "f", `[1]`))
		e.Submit(call(rec, "f", `[2]`))
		x, y := sentCall(t, links[1]), sentCall(t, links[2])
		ss[1].Done(x, ok("1"), nil)
		ss[2].Done(y, ok("2"), nil)
		rec.wait(t)
		rec.wait(t)
		if st := e.Stats(); st.Servants[0].Served != 1 || st.Servants[1].Served != 1 {
			t.Errorf("served counts after the shift: %+v", st.Servants)
		}
	})

	t.Run("a removed servant does not come back when its link reconnects", func(t *testing.T) {
		e := newEngine(t, "least", Config{})
		l1 := newFakeLink()
		s1 := e.AddServant(ServantSpec{Name: "s1"}, l1)
		e.RemoveServant(s1, errors.New("it left"))
		e.RemoveServant(s1, errors.New("twice")) // no effect
		s1.Up(Announce{})
		if !s1.Removed() {
			t.Error("Removed() = false")
		}
		if n := len(e.Stats().Servants); n != 0 {
			t.Fatalf("%d servants listed", n)
		}
		rec := newRecorder()
		e.Submit(call(rec, "f", `[1]`))
		noSend(t, l1)
	})

	t.Run("with no servant left, calls wait for one to join", func(t *testing.T) {
		e := newEngine(t, "least", Config{Timeout: time.Minute})
		s1 := e.AddServant(ServantSpec{Name: "s1"}, newFakeLink())
		e.RemoveServant(s1, errors.New("it left"))
		rec := newRecorder()
		c := call(rec, "f", `[1]`)
		e.Submit(c)
		select {
		case <-rec.got:
			t.Fatal("answered at once; it should wait for a servant")
		default:
		}
		l2 := newFakeLink()
		e.AddServant(ServantSpec{Name: "s2"}, l2).Up(Announce{})
		if got := sentCall(t, l2); got != c {
			t.Fatal("the waiting call did not go to the servant that joined")
		}
	})

	t.Run("an ejected servant's removal frees its place in the ejection quota", func(t *testing.T) {
		e := newEngine(t, "least", Config{EjectAfter: 1})
		var ss []*Servant
		var ls []*fakeLink
		for _, n := range []string{"a", "b", "c", "d"} {
			l := newFakeLink()
			s := e.AddServant(ServantSpec{Name: n}, l)
			s.Up(Announce{})
			ss, ls = append(ss, s), append(ls, l)
		}
		rec := newRecorder()
		c := call(rec, "f", `[1]`)
		e.Submit(c)
		sentCall(t, ls[0])
		ss[0].Done(c, &jsonrpc.Response{Error: []byte(`{"code":-32603,"message":"boom"}`)}, nil)
		rec.wait(t)
		if !e.Stats().Servants[0].Ejected {
			t.Fatal("a was not ejected")
		}
		e.RemoveServant(ss[0], errors.New("it left"))
		e.mu.Lock()
		ejected := e.ejected
		e.mu.Unlock()
		if ejected != 0 {
			t.Errorf("ejected count = %d after removing the ejected servant, want 0", ejected)
		}
	})
}

// TestServantShuttingDownPassesTheCallOn: a servant that answers "shutting
// down" did not run the call, so another servant gets it, and the stopping
// servant gets no more calls until it reconnects.
func TestServantShuttingDownPassesTheCallOn(t *testing.T) {
	e := newEngine(t, "orig", Config{})
	l1, l2 := newFakeLink(), newFakeLink()
	s1 := e.AddServant(ServantSpec{Name: "s1"}, l1)
	s1.Up(Announce{})
	rec := newRecorder()
	c := call(rec, "f", `[1]`)
	e.Submit(c)
	sentCall(t, l1)
	s2 := e.AddServant(ServantSpec{Name: "s2"}, l2)
	s2.Up(Announce{})
	s1.Done(c, &jsonrpc.Response{Error: []byte(`{"code":-32006,"message":"the servant is shutting down"}`)}, nil)
	if got := sentCall(t, l2); got != c {
		t.Fatal("the call did not go to s2")
	}
	select {
	case <-rec.got:
		t.Fatal("the shutting-down answer reached the caller")
	default:
	}
	if v := s1.View(); v.Healthy || v.Served != 0 {
		t.Errorf("s1 after shutting down: healthy %v, served %d; want out of dispatch and nothing counted", v.Healthy, v.Served)
	}
	s2.Done(c, ok(`"x"`), nil)
	if got, resp := rec.wait(t); got != c || resp["result"] != "x" {
		t.Fatalf("answer %v", resp)
	}
	d := call(rec, "f", `[2]`)
	e.Submit(d)
	if got := sentCall(t, l2); got != d {
		t.Fatal("the next call did not go to s2")
	}
	noSend(t, l1)
	s1.Up(Announce{}) // reconnected: back in dispatch
	if !s1.View().Healthy {
		t.Error("s1 not healthy after reconnecting")
	}
}
