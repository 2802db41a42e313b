package launch

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/mserve/mserve/sdk/fuzzseed"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// FuzzDecodeRequest feeds arbitrary frames to the agent's request decoder.
// It never panics; a refusal carries one of the codes a request can earn;
// an accepted request is of a known method with its params validated, and
// the params survive re-encoding unchanged.
func FuzzDecodeRequest(f *testing.F) {
	fuzzseed.Add(f, "FuzzDecodeRequest", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, e := decodeRequest(frame)
		if e != nil {
			switch e.Code {
			case jsonrpc.ParseError, jsonrpc.InvalidRequest, jsonrpc.InvalidParams, jsonrpc.MethodNotFound:
			default:
				t.Fatalf("refused with code %d: %v", e.Code, e)
			}
			if e.Message == "" {
				t.Fatal("refusal without a message")
			}
			if req.id != nil && !json.Valid(req.id) {
				t.Fatalf("refusal addressed to invalid id %q", req.id)
			}
			return
		}
		switch req.method {
		case wire.MethodPing, MethodStop:
			if req.auth != nil || req.start != nil {
				t.Fatalf("%s with params decoded", req.method)
			}
		case MethodAuth:
			if req.auth == nil || req.auth.check() != nil {
				t.Fatalf("auth accepted without valid params: %+v", req.auth)
			}
			var again authParams
			roundTrip(t, req.auth, &again)
			if !reflect.DeepEqual(*req.auth, again) {
				t.Fatalf("auth params changed in a round trip: %+v vs %+v", *req.auth, again)
			}
		case MethodStart:
			p := req.start
			if p == nil || p.check() != nil {
				t.Fatalf("start accepted without valid params: %+v", p)
			}
			if len(p.Argv) == 0 || len(p.Servants) == 0 || len(p.Servants) > MaxServants || p.Secret == "" {
				t.Fatalf("start accepted with %+v", p)
			}
			for _, s := range p.Servants {
				if !validName(s.Name) || (s.Port != 0 && (s.Port < 1024 || s.Port > 65535)) {
					t.Fatalf("start accepted servant %+v", s)
				}
			}
			var again startParams
			roundTrip(t, p, &again)
			if !reflect.DeepEqual(*p, again) {
				t.Fatalf("start params changed in a round trip: %+v vs %+v", *p, again)
			}
		default:
			t.Fatalf("accepted unknown method %q", req.method)
		}
	})
}

func roundTrip(t *testing.T, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}
