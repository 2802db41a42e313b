package frontend

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/internal/testkit"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

const failsafe = 10 * time.Second

// newTransport returns a transport handing sent calls to the test and
// noting cancellations.
func newTransport() *testkit.Transport {
	return &testkit.Transport{Sent: make(chan *engine.Call, 2048), Cancelled: make(chan *engine.Call, 2048)}
}

// rig is a real engine with one servant behind a fake transport.
type rig struct {
	eng *engine.Engine
	s   *engine.Servant
	tr  *testkit.Transport
}

// newRig returns an engine whose servant "s1" is up with slots slots (0:
// not up, calls wait in the queue).
func newRig(t *testing.T, slots int) *rig {
	t.Helper()
	r := &rig{tr: newTransport()}
	r.eng = engine.New(engine.Config{Algorithm: testkit.FirstFree})
	r.s = r.eng.AddServant(engine.ServantSpec{Name: "s1"}, r.tr)
	if slots > 0 {
		r.s.Up(engine.Announce{Slots: slots})
	}
	t.Cleanup(func() { r.eng.Close() })
	return r
}

// answer answers a sent call with result.
func (r *rig) answer(c *engine.Call, result string) {
	r.s.Done(c, &jsonrpc.Response{Result: []byte(result)}, nil)
}

const aliceSecret = "alice-secret"

// gate returns a gate over a small allowlist: f(x int) and g(x any), user
// alice may call both, anonymous callers only f.
func gate(t *testing.T) *allow.Gate {
	t.Helper()
	src := strings.Join([]string{
		"f(x int)",
		"g(x any)",
		"user alice " + allow.HashSecret(aliceSecret) + ": f g",
		"anonymous: f",
	}, "\n") + "\n"
	return testkit.Gate(t, src)
}

// refusal is one call of the Refused hook.
type refusal struct {
	method, user string
	code         int
}

type refusals struct {
	mu  sync.Mutex
	got []refusal
}

func (r *refusals) hook(method, user string, e *jsonrpc.Error) {
	r.mu.Lock()
	r.got = append(r.got, refusal{method, user, e.Code})
	r.mu.Unlock()
}

// front returns a Front (version v1.2.3) over r's engine, whose Refused
// hook records into the returned refusals, with gate(t) as its Gate when
// withGate is set.
func (r *rig) front(t *testing.T, withGate bool) (*Front, *refusals) {
	t.Helper()
	rf := &refusals{}
	fr := &Front{Engine: r.eng, Version: "v1.2.3", Refused: rf.hook}
	if withGate {
		fr.Gate = gate(t)
	}
	return fr, rf
}

func (r *refusals) list() []refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]refusal(nil), r.got...)
}

// decode parses a response body into a map.
func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response %q is not a JSON object: %v", b, err)
	}
	return m
}

func errCode(m map[string]any) float64 {
	e, _ := m["error"].(map[string]any)
	if e == nil {
		return 0
	}
	c, _ := e["code"].(float64)
	return c
}

func errMessage(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	if e == nil {
		return ""
	}
	s, _ := e["message"].(string)
	return s
}

// ownerReplier is a client's own replier: it forgets answered calls as
// front ends do and reports each answer.
type ownerReplier struct {
	tr  *Tracker
	got chan answered
}

type answered struct {
	c    *engine.Call
	resp map[string]any
}

func (o *ownerReplier) Answer(c *engine.Call, a *engine.Answer) {
	if o.tr != nil {
		o.tr.Forget(c)
	}
	var m map[string]any
	json.Unmarshal(engine.AppendResponse(nil, c, a), &m)
	o.got <- answered{c, m}
}

func (o *ownerReplier) wait(t *testing.T) answered {
	t.Helper()
	return testkit.Recv(t, o.got, "no answer")
}

func newOwner() *ownerReplier { return &ownerReplier{got: make(chan answered, 64)} }

// ownedTracker returns a tracker over eng and its owner replier, which
// makes the tracker forget each call it is answered (as a connection's
// replier does).
func ownedTracker(eng *engine.Engine) (*Tracker, *ownerReplier) {
	owner := newOwner()
	tr := NewTracker(eng, owner)
	owner.tr = tr
	return tr, owner
}

// callF returns a call of f with the given id, answered to r.
func callF(id string, r engine.Replier) *engine.Call {
	c := &engine.Call{ID: []byte(id), Reply: r}
	c.Method = "f"
	return c
}

func req(id, method, params string, extra ...string) []byte {
	s := `{"jsonrpc":"2.0"`
	if id != "" {
		s += `,"id":` + id
	}
	s += `,"method":"` + method + `"`
	if params != "" {
		s += `,"params":` + params
	}
	for _, e := range extra {
		s += "," + e
	}
	return []byte(s + "}")
}

func TestIsControl(t *testing.T) {
	tests := []struct {
		method string
		want   bool
	}{
		{"rpc.ping", true},
		{"rpc.anything", true},
		{"rpc.", false},
		{"rpc", false},
		{"rpcx.ping", false},
		{"RPC.ping", false},
		{"proc1", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.method), func(t *testing.T) {
			if got := IsControl(tt.method); got != tt.want {
				t.Errorf("IsControl(%q) = %v, want %v", tt.method, got, tt.want)
			}
		})
	}
}

func TestSameID(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"1", "1", true},
		{" 1", "1 ", true},
		{`"a"`, `"a"`, true},
		{"1", "2", false},
		{"1", "1.0", false},
		{`"1"`, "1", false},
		{"", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			if got := SameID([]byte(tt.a), []byte(tt.b)); got != tt.want {
				t.Errorf("SameID = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewCallOptions(t *testing.T) {
	tests := []struct {
		name    string
		mserve  string // the "mserve" member's value; "" for none
		timeout time.Duration
		errHas  []string // nil: accepted
	}{
		{name: "no options", timeout: 0},
		{name: "empty options object", mserve: `{}`},
		{name: "integer timeout_ms", mserve: `{"timeout_ms": 250}`, timeout: 250 * time.Millisecond},
		{name: "fractional timeout_ms", mserve: `{"timeout_ms": 0.5}`, timeout: 500 * time.Microsecond},
		{name: "exponent timeout_ms", mserve: `{"timeout_ms": 1e3}`, timeout: time.Second},
		{name: "the maximum timeout is accepted", mserve: `{"timeout_ms": 86400000}`, timeout: MaxTimeout},
		{name: "zero timeout is refused", mserve: `{"timeout_ms": 0}`, errHas: []string{`"timeout_ms"`, "positive", "86400000", "got 0"}},
		{name: "negative timeout is refused", mserve: `{"timeout_ms": -5}`, errHas: []string{`"timeout_ms"`, "got -5"}},
		{name: "timeout above the maximum is refused", mserve: `{"timeout_ms": 86400001}`, errHas: []string{`"timeout_ms"`, "up to 86400000"}},
		{name: "huge timeout is refused", mserve: `{"timeout_ms": 1e400}`, errHas: []string{`"timeout_ms"`}},
		{name: "string timeout is refused", mserve: `{"timeout_ms": "100"}`, errHas: []string{`"timeout_ms"`, `got "100"`}},
		{name: "boolean timeout is refused", mserve: `{"timeout_ms": true}`, errHas: []string{`"timeout_ms"`}},
		{name: "null timeout is refused", mserve: `{"timeout_ms": null}`, errHas: []string{`"timeout_ms"`}},
		{name: "unknown option is refused naming it", mserve: `{"priority": 1}`, errHas: []string{`unknown option "priority"`, `known: "timeout_ms"`}},
		{name: "a user claim is refused", mserve: `{"user": "root"}`, errHas: []string{`unknown option "user"`}},
		{name: "a role claim is refused", mserve: `{"role": "admin"}`, errHas: []string{`unknown option "role"`}},
		{name: "an unknown option after a valid one is refused", mserve: `{"timeout_ms": 5, "user": "root"}`, errHas: []string{`"user"`}},
		// A positive timeout must not end up as 0, which means "the
		// engine's default" (possibly no deadline at all).
		{name: "a positive timeout below a nanosecond does not become no deadline", mserve: `{"timeout_ms": 1e-7}`, errHas: []string{`"timeout_ms"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := req("3", "f", "[1]")
			if tt.mserve != "" {
				body = req("3", "f", "[1]", `"mserve":`+tt.mserve)
			}
			var r jsonrpc.Request
			if e := jsonrpc.ParseRequest(body, &r); e != nil {
				t.Fatalf("ParseRequest(%s): %v", body, e)
			}
			c, e := NewCall(&r)
			if tt.errHas == nil {
				if e != nil {
					t.Fatalf("NewCall: %v", e)
				}
				if c.Timeout != tt.timeout || c.Method != "f" || string(c.Params) != "[1]" || string(c.ID) != "3" {
					t.Errorf("call: timeout %v method %q params %s id %s", c.Timeout, c.Method, c.Params, c.ID)
				}
				return
			}
			if e == nil {
				t.Fatalf("NewCall accepted %s (timeout %v)", tt.mserve, c.Timeout)
			}
			if c != nil {
				t.Error("NewCall returned a call with its error")
			}
			if e.Code != jsonrpc.InvalidRequest {
				t.Errorf("code %d, want %d", e.Code, jsonrpc.InvalidRequest)
			}
			for _, want := range tt.errHas {
				if !strings.Contains(e.Message, want) {
					t.Errorf("message %q lacks %q", e.Message, want)
				}
			}
		})
	}
}

func TestPrepareRequests(t *testing.T) {
	tests := []struct {
		name      string
		gate      bool
		user      string
		body      string
		wantCall  bool
		wantResp  bool
		code      float64
		id        any // the response's id
		refused   []refusal
		checkCall func(t *testing.T, c *engine.Call)
	}{
		{name: "parse error answers with id null", body: `{"jsonrpc":"2.0","id":1,"method":`,
			wantResp: true, code: jsonrpc.ParseError, id: nil, refused: []refusal{{"", "", jsonrpc.ParseError}}},
		{name: "not JSON at all", body: `hello`, wantResp: true, code: jsonrpc.ParseError, id: nil,
			refused: []refusal{{"", "", jsonrpc.ParseError}}},
		{name: "invalid request keeps a readable id", body: `{"jsonrpc":"1.0","id":7,"method":"f"}`,
			wantResp: true, code: jsonrpc.InvalidRequest, id: 7.0, refused: []refusal{{"", "", jsonrpc.InvalidRequest}}},
		{name: "invalid request with an unreadable id answers id null", body: `{"jsonrpc":"2.0","id":{"x":1},"method":"f"}`,
			wantResp: true, code: jsonrpc.InvalidRequest, id: nil},
		{name: "a JSON array element that is not an object", body: `42`, wantResp: true, code: jsonrpc.InvalidRequest, id: nil},
		{name: "a valid call without a gate is returned to submit", body: string(req(`"a"`, "anything", `[1,2]`)),
			wantCall: true, checkCall: func(t *testing.T, c *engine.Call) {
				if c.Method != "anything" || string(c.Params) != "[1,2]" || string(c.ID) != `"a"` {
					t.Errorf("call %+v", c)
				}
			}},
		{name: "a valid call passing the gate gets its user", gate: true, user: "alice", body: string(req("1", "g", `["x"]`)),
			wantCall: true, checkCall: func(t *testing.T, c *engine.Call) {
				if c.User != "alice" {
					t.Errorf("User = %q, want alice", c.User)
				}
			}},
		{name: "an anonymous call the gate refuses answers with the id", gate: true, body: string(req("5", "g", `["x"]`)),
			wantResp: true, code: jsonrpc.MethodNotFound, id: 5.0, refused: []refusal{{"g", "", jsonrpc.MethodNotFound}}},
		{name: "bad arguments are refused with the id", gate: true, user: "alice", body: string(req("6", "f", `["not an int"]`)),
			wantResp: true, code: jsonrpc.InvalidParams, id: 6.0, refused: []refusal{{"f", "alice", jsonrpc.InvalidParams}}},
		{name: "a notification the gate refuses gets no response but is seen by Refused", gate: true, body: string(req("", "g", `["x"]`)),
			refused: []refusal{{"g", "", jsonrpc.MethodNotFound}}},
		{name: "a notification with bad options gets no response but is seen by Refused", body: string(req("", "f", `[1]`, `"mserve":{"x":1}`)),
			refused: []refusal{{"f", "", jsonrpc.InvalidRequest}}},
		{name: "a call with bad options answers invalid request", body: string(req("8", "f", `[1]`, `"mserve":{"timeout_ms":-1}`)),
			wantResp: true, code: jsonrpc.InvalidRequest, id: 8.0, refused: []refusal{{"f", "", jsonrpc.InvalidRequest}}},
		{name: "options that are not an object are refused with the id", body: string(req("9", "f", `[1]`, `"mserve":5`)),
			wantResp: true, code: jsonrpc.InvalidRequest, id: 9.0, refused: []refusal{{"", "", jsonrpc.InvalidRequest}}},
		{name: "a valid notification is returned to submit", body: string(req("", "f", `[1]`)), wantCall: true,
			checkCall: func(t *testing.T, c *engine.Call) {
				if c.ID != nil {
					t.Errorf("notification has id %s", c.ID)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 1)
			fr, rf := r.front(t, tt.gate)
			cl := &Client{User: tt.user, Stateful: true}
			c, resp := fr.Prepare([]byte(tt.body), cl)
			if (c != nil) != tt.wantCall || (resp != nil) != tt.wantResp {
				t.Fatalf("Prepare = call %v, response %s; want call %v, response %v", c != nil, resp, tt.wantCall, tt.wantResp)
			}
			if c != nil && resp != nil {
				t.Fatal("Prepare returned both a call and a response")
			}
			if tt.wantResp {
				m := decode(t, resp)
				if m["jsonrpc"] != "2.0" || errCode(m) != tt.code || m["id"] != tt.id {
					t.Errorf("response %s: want code %v id %v", resp, tt.code, tt.id)
				}
				if _, has := m["id"]; !has {
					t.Errorf("response %s has no id member", resp)
				}
			}
			if tt.checkCall != nil {
				tt.checkCall(t, c)
			}
			got := rf.list()
			if tt.refused != nil {
				if len(got) != len(tt.refused) {
					t.Fatalf("Refused saw %v, want %v", got, tt.refused)
				}
				for i := range got {
					if got[i] != tt.refused[i] {
						t.Errorf("Refused[%d] = %+v, want %+v", i, got[i], tt.refused[i])
					}
				}
			} else if tt.wantCall && len(got) != 0 {
				t.Errorf("Refused saw %v for an accepted call", got)
			}
		})
	}
}

func TestControlMethods(t *testing.T) {
	tests := []struct {
		name      string
		gate      bool
		stateful  bool
		body      string
		wantResp  bool
		result    any // expected result (JSON-decoded) when no error; nil to skip
		code      float64
		errHas    string
		wantUser  string
		wantClose bool
		check     func(t *testing.T, m map[string]any)
	}{
		{name: "rpc.ping answers pong", body: string(req("1", "rpc.ping", "")), wantResp: true, result: "pong"},
		{name: "rpc.ping as a notification gets no response", body: string(req("", "rpc.ping", "")), wantResp: false},
		{name: "rpc.hello without credentials", body: string(req("2", "rpc.hello", "")), wantResp: true,
			check: func(t *testing.T, m map[string]any) {
				res := m["result"].(map[string]any)
				if res["protocol"] != float64(wire.ProtocolVersion) || res["server"] != "mserve" || res["version"] != "v1.2.3" || res["user"] != "" {
					t.Errorf("hello result %v", res)
				}
			}},
		{name: "rpc.hello with only a user name does not authenticate", gate: true, stateful: true,
			body: string(req("2", "rpc.hello", `{"user":"alice"}`)), wantResp: true,
			check: func(t *testing.T, m map[string]any) {
				if u := m["result"].(map[string]any)["user"]; u != "" {
					t.Errorf("user = %v, want anonymous", u)
				}
			}},
		{name: "rpc.hello with good credentials authenticates a stateful client", gate: true, stateful: true,
			body: string(req("3", "rpc.hello", `{"user":"alice","secret":"`+aliceSecret+`"}`)), wantResp: true, wantUser: "alice",
			check: func(t *testing.T, m map[string]any) {
				if u := m["result"].(map[string]any)["user"]; u != "alice" {
					t.Errorf("user = %v, want alice", u)
				}
			}},
		{name: "rpc.hello with a bearer-style secret alone authenticates", gate: true, stateful: true,
			body: string(req("3", "rpc.hello", `{"secret":"`+aliceSecret+`"}`)), wantResp: true, wantUser: "alice"},
		{name: "rpc.hello with a wrong secret fails and closes", gate: true, stateful: true,
			body: string(req("4", "rpc.hello", `{"user":"alice","secret":"wrong"}`)), wantResp: true,
			code: jsonrpc.Unauthorized, errHas: "unknown user or wrong secret", wantClose: true},
		{name: "a failed rpc.hello sent as a notification is still answered", gate: true, stateful: true,
			body: string(req("", "rpc.hello", `{"user":"alice","secret":"wrong"}`)), wantResp: true,
			code: jsonrpc.Unauthorized, wantClose: true},
		{name: "rpc.hello with credentials over a stateless (HTTP) client is refused", gate: true, stateful: false,
			body: string(req("5", "rpc.hello", `{"user":"alice","secret":"`+aliceSecret+`"}`)), wantResp: true,
			code: jsonrpc.InvalidRequest, errHas: "Authorization header"},
		{name: "rpc.hello with credentials and no users", gate: false, stateful: true,
			body: string(req("6", "rpc.hello", `{"user":"alice","secret":"x"}`)), wantResp: true,
			code: jsonrpc.Unauthorized, errHas: "no users"},
		{name: "rpc.hello with ill-typed params", stateful: true,
			body: string(req("7", "rpc.hello", `{"user":5}`)), wantResp: true, code: jsonrpc.InvalidParams, errHas: "rpc.hello"},
		{name: "rpc.hello with array params is a plain hello", stateful: true,
			body: string(req("7", "rpc.hello", `["x"]`)), wantResp: true},
		{name: "rpc.cancel of an unknown id answers false", body: string(req("8", "rpc.cancel", `[99]`)), wantResp: true, result: false},
		{name: "rpc.cancel without params", body: string(req("9", "rpc.cancel", "")), wantResp: true,
			code: jsonrpc.InvalidParams, errHas: "rpc.cancel takes [id]"},
		{name: "rpc.cancel with an empty array", body: string(req("9", "rpc.cancel", `[]`)), wantResp: true, code: jsonrpc.InvalidParams},
		{name: "rpc.cancel with an object", body: string(req("9", "rpc.cancel", `{"id":1}`)), wantResp: true, code: jsonrpc.InvalidParams},
		{name: "rpc.discover without a gate is method not found", body: string(req("10", "rpc.discover", "")), wantResp: true,
			code: jsonrpc.MethodNotFound, errHas: "needs declarations"},
		{name: "rpc.discover with a gate lists what the caller may call", gate: true, body: string(req("11", "rpc.discover", "")), wantResp: true,
			check: func(t *testing.T, m map[string]any) {
				res := m["result"].(map[string]any)
				if res["openrpc"] != allow.OpenRPCVersion || res["info"].(map[string]any)["version"] != "v1.2.3" {
					t.Errorf("discover result %v", res)
				}
				ms := res["methods"].([]any)
				if len(ms) != 1 || ms[0].(map[string]any)["name"] != "f" {
					t.Errorf("anonymous callers may call f only; methods = %v", ms)
				}
			}},
		{name: "unknown rpc method is method not found listing the known ones", body: string(req("12", "rpc.nope", "")), wantResp: true,
			code: jsonrpc.MethodNotFound, errHas: "rpc.ping, rpc.hello, rpc.cancel, rpc.discover"},
		{name: "unknown rpc notification gets no response", body: string(req("", "rpc.nope", "")), wantResp: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 1)
			fr, rf := r.front(t, tt.gate)
			cl := &Client{Tracker: NewTracker(r.eng, nil), Stateful: tt.stateful, Source: "127.0.0.1:5555"}
			c, resp := fr.Prepare([]byte(tt.body), cl)
			if c != nil {
				t.Fatal("a control method became a call")
			}
			if (resp != nil) != tt.wantResp {
				t.Fatalf("response %s, want one: %v", resp, tt.wantResp)
			}
			if cl.User != tt.wantUser || cl.Close != tt.wantClose {
				t.Errorf("client after: User %q Close %v; want %q %v", cl.User, cl.Close, tt.wantUser, tt.wantClose)
			}
			if len(rf.list()) != 0 {
				t.Errorf("Refused saw a control method: %v", rf.list())
			}
			if !tt.wantResp {
				return
			}
			m := decode(t, resp)
			if errCode(m) != tt.code {
				t.Errorf("response %s: code %v, want %v", resp, errCode(m), tt.code)
			}
			if tt.errHas != "" && !strings.Contains(errMessage(m), tt.errHas) {
				t.Errorf("message %q lacks %q", errMessage(m), tt.errHas)
			}
			if tt.result != nil && m["result"] != tt.result {
				t.Errorf("result %v, want %v", m["result"], tt.result)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

func TestRPCCancelCancelsTheClientsCall(t *testing.T) {
	tests := []struct {
		name    string
		target  string // the rpc.cancel argument
		cancels bool
	}{
		{"the same id", `"job-1"`, true},
		{"the same id with spaces", ` "job-1" `, true},
		{"another id", `"job-2"`, false},
		{"a number for a string id", `1`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 0) // nothing runs: the call waits
			tr, owner := ownedTracker(r.eng)
			fr := &Front{Engine: r.eng}
			cl := &Client{Tracker: tr, Stateful: true}
			c, _ := fr.Prepare(req(`"job-1"`, "f", "[1]"), cl)
			c.Reply = owner
			cl.Submit(c)
			_, resp := fr.Prepare(req("2", "rpc.cancel", "["+tt.target+"]"), cl)
			m := decode(t, resp)
			if m["result"] != tt.cancels {
				t.Fatalf("rpc.cancel answered %s, want result %v", resp, tt.cancels)
			}
			if !tt.cancels {
				select {
				case a := <-owner.got:
					t.Fatalf("the call was answered: %v", a.resp)
				default:
				}
				return
			}
			a := owner.wait(t)
			if a.c != c || errCode(a.resp) != jsonrpc.Cancelled || a.resp["id"] != "job-1" {
				t.Errorf("answer %v, want cancelled for job-1", a.resp)
			}
			// Answered and forgotten: cancelling again finds nothing.
			_, resp = fr.Prepare(req("3", "rpc.cancel", `["job-1"]`), cl)
			if decode(t, resp)["result"] != false {
				t.Errorf("second rpc.cancel answered %s, want false", resp)
			}
		})
	}
	t.Run("a client without a tracker answers false", func(t *testing.T) {
		r := newRig(t, 1)
		fr := &Front{Engine: r.eng}
		_, resp := fr.Prepare(req("1", "rpc.cancel", `[1]`), &Client{})
		if decode(t, resp)["result"] != false {
			t.Errorf("answered %s", resp)
		}
	})
}

// serveBatch runs ServeBatch, calls during (to answer the calls that
// reached the servant), and returns what done received, checking done is
// called exactly once.
func serveBatch(t *testing.T, fr *Front, cl *Client, body string, during func()) []byte {
	t.Helper()
	done := make(chan []byte, 2)
	fr.ServeBatch([]byte(body), cl, func(b []byte) { done <- b })
	if during != nil {
		during()
	}
	var got []byte
	select {
	case got = <-done:
	case <-time.After(failsafe):
		t.Fatal("ServeBatch never called done")
	}
	select {
	case <-done:
		t.Fatal("done called twice")
	default:
	}
	return got
}

func TestServeBatch(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		calls  int // calls reaching the servant, answered in reverse order
		ids    []any
		codes  []float64
		single float64 // a single error object with this code instead of an array
		none   bool    // done(nil)
	}{
		{name: "order of the requests is kept whatever the order of the answers",
			body:  `[` + string(req("1", "f", "[1]")) + `,` + string(req("2", "rpc.ping", "")) + `,{"jsonrpc":"1.0","id":3,"method":"f"},` + string(req("4", "f", "[4]")) + `]`,
			calls: 2, ids: []any{1.0, 2.0, 3.0, 4.0}, codes: []float64{0, 0, jsonrpc.InvalidRequest, 0}},
		{name: "notifications get no entry",
			body:  `[` + string(req("", "f", "[1]")) + `,` + string(req("9", "f", "[2]")) + `,` + string(req("", "rpc.ping", "")) + `]`,
			calls: 2, ids: []any{9.0}, codes: []float64{0}},
		{name: "a batch of only notifications gives nil",
			body:  `[` + string(req("", "f", "[1]")) + `,` + string(req("", "f", "[2]")) + `]`,
			calls: 2, none: true},
		{name: "elements that are not requests get an error each",
			body: `[1, "x"]`, ids: []any{nil, nil}, codes: []float64{jsonrpc.InvalidRequest, jsonrpc.InvalidRequest}},
		{name: "an empty batch is a single invalid request error", body: `[]`, single: jsonrpc.InvalidRequest},
		{name: "an empty batch with spaces", body: ` [ ] `, single: jsonrpc.InvalidRequest},
		{name: "a malformed batch is a single parse error", body: `[{"jsonrpc":"2.0","id":1,`, single: jsonrpc.ParseError},
		{name: "a batch over MaxBatch is refused whole", body: bigBatch(MaxBatch + 1), single: jsonrpc.InvalidRequest},
		{name: "a batch of exactly MaxBatch pings is served", body: bigBatch(MaxBatch), ids: make([]any, MaxBatch)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 8)
			fr := &Front{Engine: r.eng}
			cl := &Client{Tracker: NewTracker(r.eng, nil)}
			resp := serveBatch(t, fr, cl, tt.body, func() {
				sent := make([]*engine.Call, tt.calls)
				for i := range sent {
					sent[i] = r.tr.Next(t)
				}
				for i := len(sent) - 1; i >= 0; i-- {
					r.answer(sent[i], fmt.Sprintf(`"r%s"`, sent[i].Params))
				}
			})
			if tt.none {
				if resp != nil {
					t.Errorf("done(%s), want nil", resp)
				}
				return
			}
			if tt.single != 0 {
				m := decode(t, resp)
				if errCode(m) != tt.single || m["id"] != nil {
					t.Errorf("response %s, want a single error %v with id null", resp, tt.single)
				}
				return
			}
			var arr []map[string]any
			if err := json.Unmarshal(resp, &arr); err != nil {
				t.Fatalf("response %.200s is not an array: %v", resp, err)
			}
			if len(arr) != len(tt.ids) {
				t.Fatalf("%d responses, want %d: %.300s", len(arr), len(tt.ids), resp)
			}
			if tt.codes == nil {
				return
			}
			for i, m := range arr {
				if m["id"] != tt.ids[i] || errCode(m) != tt.codes[i] {
					t.Errorf("response %d = %v, want id %v code %v", i, m, tt.ids[i], tt.codes[i])
				}
			}
		})
	}
}

func bigBatch(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(req(fmt.Sprint(i), "rpc.ping", ""))
	}
	b.WriteByte(']')
	return b.String()
}

func TestServeBatchResultsCarryTheServantsAnswer(t *testing.T) {
	r := newRig(t, 2)
	fr := &Front{Engine: r.eng}
	cl := &Client{Tracker: NewTracker(r.eng, nil)}
	resp := serveBatch(t, fr, cl, `[`+string(req("1", "f", "[1]"))+`,`+string(req("2", "f", "[2]"))+`]`, func() {
		a, b := r.tr.Next(t), r.tr.Next(t)
		if string(a.Params) != "[1]" || string(b.Params) != "[2]" {
			t.Fatalf("sent %s then %s, want the batch's order", a.Params, b.Params)
		}
		r.answer(b, `"second"`) // the second finishes first
		r.answer(a, `"first"`)
	})
	var arr []map[string]any
	if err := json.Unmarshal(resp, &arr); err != nil || len(arr) != 2 {
		t.Fatalf("response %s", resp)
	}
	for i, want := range []struct {
		id     float64
		result string
	}{{1, "first"}, {2, "second"}} {
		m := arr[i]
		if m["id"] != want.id || m["result"] != want.result || m["info"].(map[string]any)["servant"] != "s1" {
			t.Errorf("response %d = %v, want id %v with result %q and its info", i, m, want.id, want.result)
		}
	}
}

func TestServeBatchCallsAreTrackedAndForgotten(t *testing.T) {
	r := newRig(t, 0) // calls wait
	fr := &Front{Engine: r.eng}
	tr := NewTracker(r.eng, nil)
	cl := &Client{Tracker: tr}
	done := make(chan []byte, 1)
	fr.ServeBatch([]byte(`[`+string(req("1", "f", "[1]"))+`,`+string(req("2", "f", "[2]"))+`]`), cl, func(b []byte) { done <- b })
	// rpc.cancel finds a batch element by its id…
	if !tr.Cancel([]byte("1")) {
		t.Fatal("a waiting batch element was not found by id")
	}
	// …and CancelAll cancels the rest.
	tr.CancelAll("client gone")
	var resp []byte
	select {
	case resp = <-done:
	case <-time.After(failsafe):
		t.Fatal("batch not answered after cancelling its calls")
	}
	var arr []map[string]any
	json.Unmarshal(resp, &arr)
	if len(arr) != 2 || errCode(arr[0]) != jsonrpc.Cancelled || errCode(arr[1]) != jsonrpc.Cancelled {
		t.Fatalf("batch response %s, want two cancelled", resp)
	}
	if !strings.Contains(errMessage(arr[0]), "the client cancelled the call") || !strings.Contains(errMessage(arr[1]), "client gone") {
		t.Errorf("messages %q, %q", errMessage(arr[0]), errMessage(arr[1]))
	}
	// Answered batch elements are forgotten by the wrapping replier.
	if tr.Cancel([]byte("2")) {
		t.Error("an answered batch element is still tracked")
	}
}

func TestTracker(t *testing.T) {
	t.Run("Cancel by id answers the waiting call cancelled", func(t *testing.T) {
		r := newRig(t, 0)
		tr, owner := ownedTracker(r.eng)
		c := callF("7", owner)
		tr.Submit(c)
		if tr.Cancel([]byte("8")) {
			t.Error("Cancel of an unknown id reported true")
		}
		if !tr.Cancel([]byte("7")) {
			t.Fatal("Cancel(7) = false")
		}
		a := owner.wait(t)
		if a.c != c || errCode(a.resp) != jsonrpc.Cancelled {
			t.Errorf("answer %v", a.resp)
		}
		if r.eng.Stats().Queued != 0 {
			t.Error("the cancelled call is still queued")
		}
	})
	t.Run("Cancel of a running call answers it and tells the servant", func(t *testing.T) {
		r := newRig(t, 1)
		tr, owner := ownedTracker(r.eng)
		c := callF("1", owner)
		tr.Submit(c)
		sent := r.tr.Next(t)
		if !tr.Cancel([]byte("1")) {
			t.Fatal("Cancel = false")
		}
		if a := owner.wait(t); errCode(a.resp) != jsonrpc.Cancelled {
			t.Errorf("answer %v", a.resp)
		}
		select {
		case x := <-r.tr.Cancelled:
			if x != sent {
				t.Error("another call was cancelled on the servant")
			}
		case <-time.After(failsafe):
			t.Error("the servant was not told")
		}
	})
	t.Run("Forget stops tracking", func(t *testing.T) {
		r := newRig(t, 0)
		tr := NewTracker(r.eng, newOwner())
		c := callF("1", tr.owner)
		tr.Submit(c)
		tr.Forget(c)
		if tr.Cancel([]byte("1")) {
			t.Error("a forgotten call was cancelled")
		}
	})
	t.Run("the owner's calls are not wrapped; others are", func(t *testing.T) {
		r := newRig(t, 0)
		owner := newOwner()
		tr := NewTracker(r.eng, owner)
		mine := callF("1", owner)
		tr.Submit(mine)
		if mine.Reply != owner {
			t.Error("the owner's replier was wrapped")
		}
		other := newOwner() // e.g. a batch element's replier
		theirs := callF("2", other)
		tr.Submit(theirs)
		if theirs.Reply == other {
			t.Error("a foreign replier was not wrapped")
		}
		tr.CancelAll("bye")
		// The wrapped replier passes the answer on, and forgets the call.
		if a := other.wait(t); a.c != theirs || errCode(a.resp) != jsonrpc.Cancelled {
			t.Errorf("inner replier got %v", a.resp)
		}
		if tr.Cancel([]byte("2")) {
			t.Error("the wrapped call was not forgotten on its answer")
		}
		owner.wait(t)
	})
	t.Run("CancelAll answers every call, queued and running", func(t *testing.T) {
		r := newRig(t, 1)
		tr, owner := ownedTracker(r.eng)
		for i := range 4 {
			tr.Submit(callF(fmt.Sprint(i), owner))
		}
		r.tr.Next(t) // one runs, three wait
		tr.CancelAll("the client disconnected")
		ids := map[any]bool{}
		for range 4 {
			a := owner.wait(t)
			if errCode(a.resp) != jsonrpc.Cancelled || !strings.Contains(errMessage(a.resp), "the client disconnected") {
				t.Errorf("answer %v", a.resp)
			}
			ids[a.resp["id"]] = true
		}
		if len(ids) != 4 {
			t.Errorf("answered ids %v", ids)
		}
		if st := r.eng.Stats(); st.Queued != 0 || st.Cancelled != 4 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("a call answered at once (overloaded) is not left tracked", func(t *testing.T) {
		eng := engine.New(engine.Config{Algorithm: testkit.FirstFree, MaxQueue: 1})
		eng.AddServant(engine.ServantSpec{Name: "s1"}, newTransport())
		tr := NewTracker(eng, nil)
		first := newOwner()
		a := callF("1", first)
		tr.Submit(a) // fills the queue
		second := newOwner()
		b := callF("2", second)
		tr.Submit(b)
		if ans := second.wait(t); errCode(ans.resp) != jsonrpc.Overloaded {
			t.Fatalf("answer %v", ans.resp)
		}
		if tr.Cancel([]byte("2")) {
			t.Error("the overloaded call is still tracked")
		}
	})
}

func TestBatchCollector(t *testing.T) {
	tests := []struct {
		name string
		ops  func(b *Batch)
		want string
	}{
		{"responses in request order", func(b *Batch) {
			b.Respond(2, []byte(`"c"`))
			b.Respond(0, []byte(`"a"`))
			b.Respond(1, []byte(`"b"`))
		}, `["a","b","c"]`},
		{"skipped requests are left out", func(b *Batch) {
			b.Skip(1)
			b.Respond(2, []byte(`"c"`))
			b.Respond(0, []byte(`"a"`))
		}, `["a","c"]`},
		{"all skipped gives nil", func(b *Batch) { b.Skip(0); b.Skip(1); b.Skip(2) }, ""},
		{"a notification answered through the replier is left out", func(b *Batch) {
			b.Respond(0, []byte(`"a"`))
			b.Replier(1).Answer(&engine.Call{}, &engine.Answer{Result: []byte(`1`)})
			b.Respond(2, []byte(`"c"`))
		}, `["a","c"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			calls := 0
			b := NewBatch(3, func(body []byte) { got = body; calls++ })
			tt.ops(b)
			if calls != 1 {
				t.Fatalf("done called %d times", calls)
			}
			if tt.want == "" {
				if got != nil {
					t.Errorf("done(%s), want nil", got)
				}
				return
			}
			if string(got) != tt.want {
				t.Errorf("done(%s), want %s", got, tt.want)
			}
		})
	}
	t.Run("a replier answer is the full response", func(t *testing.T) {
		var got []byte
		b := NewBatch(1, func(body []byte) { got = body })
		c := &engine.Call{ID: []byte("5")}
		b.Replier(0).Answer(c, &engine.Answer{Result: []byte(`"x"`), Servant: "s1"})
		var arr []map[string]any
		if err := json.Unmarshal(got, &arr); err != nil || len(arr) != 1 || arr[0]["id"] != 5.0 || arr[0]["result"] != "x" {
			t.Errorf("done(%s)", got)
		}
	})
	t.Run("concurrent answers call done once", func(t *testing.T) {
		const n = 200
		var mu sync.Mutex
		calls := 0
		var got []byte
		b := NewBatch(n, func(body []byte) { mu.Lock(); calls++; got = body; mu.Unlock() })
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); b.Respond(i, []byte(fmt.Sprint(i))) }()
		}
		wg.Wait()
		var arr []int
		json.Unmarshal(got, &arr)
		if calls != 1 || len(arr) != n || arr[0] != 0 || arr[n-1] != n-1 {
			t.Errorf("done called %d times with %d entries", calls, len(arr))
		}
	})
}
