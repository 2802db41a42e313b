package frontend

import (
	"encoding/json"

	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// MaxBatch is the most requests one batch may hold.
const MaxBatch = 1000

// Front is the call path the front ends share: parse, control methods,
// gate, submit.
type Front struct {
	Engine  *engine.Engine
	Gate    *allow.Gate // nil lets every call through unchecked
	Version string      // mserve's version, for rpc.hello and rpc.discover
	// Refused, when set, sees every request refused before the queue
	// (malformed, undeclared, bad arguments, unauthorized), for metrics
	// and the query log. method is "" when it could not be read.
	Refused func(method, user string, e *jsonrpc.Error)
}

// Client is one client's context: who it is, how its calls are tracked,
// and whether it keeps state between requests (a native connection does;
// an HTTP request does not).
type Client struct {
	*Tracker
	User     string // authenticated user; allow.Anonymous for none
	Source   string // where it connects from, for logs; "" for an HTTP request without credentials (nothing logs it)
	Stateful bool   // a native connection: rpc.hello may authenticate it
	Close    bool   // set when the client must be disconnected after its answer (failed authentication)
}

// IsControl reports whether method is one of the "rpc." methods mserve
// answers itself rather than forwarding.
func IsControl(method string) bool { return len(method) > 4 && method[:4] == "rpc." }

// Prepare parses one request body. It returns either a call to submit, or
// the complete response to send (errors, refusals and control methods), or
// neither (a notification that needs no answer).
func (fr *Front) Prepare(body []byte, cl *Client) (*engine.Call, []byte) {
	var req jsonrpc.Request
	if e := jsonrpc.ParseRequest(body, &req); e != nil {
		fr.refused(req.Method, cl.User, e)
		return nil, jsonrpc.AppendErrorResponse(nil, req.ID, e, nil)
	}
	if IsControl(req.Method) {
		res, e := fr.control(&req, cl)
		switch {
		case req.ID == nil && !cl.Close:
			return nil, nil
		case e != nil:
			return nil, jsonrpc.AppendErrorResponse(nil, req.ID, e, nil)
		}
		return nil, jsonrpc.AppendResponse(nil, req.ID, res, nil, nil)
	}
	c, e := NewCall(&req)
	if e == nil && fr.Gate != nil {
		e = fr.Gate.Check(cl.User, c)
	}
	if e != nil {
		fr.refused(req.Method, cl.User, e)
		if req.ID == nil {
			return nil, nil
		}
		return nil, jsonrpc.AppendErrorResponse(nil, req.ID, e, nil)
	}
	return c, nil
}

func (fr *Front) refused(method, user string, e *jsonrpc.Error) {
	if fr.Refused != nil {
		fr.Refused(method, user, e)
	}
}

// helloParams are what a client may say in rpc.hello.
type helloParams struct {
	User   string `json:"user"`
	Secret string `json:"secret"`
}

// helloResult is mserve's answer to rpc.hello: for a client, who it is
// and who the caller is; for a balancer above this one (mserve as a
// servant), what a servant's hello says: its slots (those of its servants
// together), the functions the caller may call, and that it is a
// balancer.
type helloResult struct {
	wire.HelloResult
	Server  string `json:"server"`
	Version string `json:"version"`
	User    string `json:"user"`
}

func (fr *Front) hello(user string) []byte {
	r := helloResult{Server: "mserve", Version: fr.Version, User: user,
		HelloResult: wire.HelloResult{Protocol: wire.ProtocolVersion, Balancer: true}}
	for _, s := range fr.Engine.Stats().Servants {
		r.Slots += s.Slots
	}
	if fr.Gate != nil {
		r.Functions = fr.Gate.Declarations(user)
	}
	out, _ := json.Marshal(r)
	return out
}

// control answers a control method.
func (fr *Front) control(req *jsonrpc.Request, cl *Client) ([]byte, *jsonrpc.Error) {
	switch req.Method {
	case wire.MethodPing:
		return []byte(`"pong"`), nil
	case wire.MethodHello:
		var hp helloParams
		if req.Params != nil && req.Params[0] == '{' {
			if err := json.Unmarshal(req.Params, &hp); err != nil {
				return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: rpc.hello: %v", err)
			}
		}
		if hp.Secret != "" {
			if !cl.Stateful {
				return nil, jsonrpc.Errorf(jsonrpc.InvalidRequest,
					"invalid request: over HTTP, send credentials in the Authorization header (Bearer token or Basic user:secret)")
			}
			if fr.Gate == nil {
				return nil, jsonrpc.Errorf(jsonrpc.Unauthorized, "unauthorized: this mserve has no users")
			}
			user, e := fr.Gate.Authenticate(hp.User, hp.Secret, cl.Source)
			if e != nil {
				cl.Close = true
				return nil, e
			}
			cl.User = user
		}
		return fr.hello(cl.User), nil
	case wire.MethodCancel:
		var id []byte
		if req.Params != nil && req.Params[0] == '[' {
			jsonrpc.Elements(req.Params, func(v []byte) bool { id = v; return false })
		}
		if id == nil {
			return nil, jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: rpc.cancel takes [id], the id of the call to cancel")
		}
		if cl.Tracker == nil || !cl.Cancel(id) {
			return []byte("false"), nil
		}
		return []byte("true"), nil
	case "rpc.discover":
		if fr.Gate == nil {
			return nil, jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found: rpc.discover needs declarations, and this mserve has none")
		}
		return fr.Gate.Discover(cl.User, fr.Version), nil
	}
	return nil, jsonrpc.Errorf(jsonrpc.MethodNotFound,
		"method not found: %q is not a control method mserve knows (rpc.ping, rpc.hello, rpc.cancel, rpc.discover)", req.Method)
}

// errAfterFailedHello answers the requests of a batch after a failed
// rpc.hello in it.
var errAfterFailedHello = jsonrpc.Errorf(jsonrpc.Unauthorized,
	"unauthorized: an rpc.hello earlier in this batch failed; the rest of the batch was not run and the connection is closed")

// ServeBatch handles the batch body and calls done once with the complete
// response: the array of responses, a single error object when the batch
// itself is malformed or empty, or nil when every request was a
// notification.
func (fr *Front) ServeBatch(body []byte, cl *Client, done func(resp []byte)) {
	var elems [][]byte
	if e := jsonrpc.SplitBatch(body, func(el []byte) { elems = append(elems, el) }); e != nil {
		done(jsonrpc.AppendErrorResponse(nil, nil, e, nil))
		return
	}
	switch {
	case len(elems) == 0:
		done(jsonrpc.AppendErrorResponse(nil, nil, jsonrpc.Errorf(jsonrpc.InvalidRequest, "invalid request: empty batch"), nil))
		return
	case len(elems) > MaxBatch:
		done(jsonrpc.AppendErrorResponse(nil, nil, jsonrpc.Errorf(jsonrpc.InvalidRequest,
			"invalid request: batch of %d requests exceeds the limit of %d", len(elems), MaxBatch), nil))
		return
	}
	b := NewBatch(len(elems), done)
	for i, el := range elems {
		if cl.Close { // an rpc.hello earlier in the batch failed: run nothing more
			var req jsonrpc.Request
			if jsonrpc.ParseRequest(el, &req); req.ID != nil {
				b.Respond(i, jsonrpc.AppendErrorResponse(nil, req.ID, errAfterFailedHello, nil))
			} else {
				b.Skip(i)
			}
			continue
		}
		c, resp := fr.Prepare(el, cl)
		switch {
		case c != nil:
			c.Reply = b.Replier(i)
			cl.Submit(c)
		case resp != nil:
			b.Respond(i, resp)
		default:
			b.Skip(i)
		}
	}
}
