package plugin

import (
	"reflect"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/fuzzseed"

	"github.com/mserve/mserve/sdk/dispatch"
)

func TestCodecRoundTrip(t *testing.T) {
	now := time.Unix(0, 1795422372594226039)
	tests := []struct {
		name string
		msg  any
		into any
	}{
		{"empty request", &AssignRequest{Calls: []dispatch.Call{}, Servants: []dispatch.Servant{}}, &AssignRequest{}},
		{"full request", &AssignRequest{
			Algorithm: "resume", Session: 1 << 60, Now: now, MaxBacklog: 16,
			Calls: []dispatch.Call{
				{Method: "proc1", Params: []byte(`["IBM"]`), Route: "IBM", User: "alice", Arrived: now},
				{Method: "echo"},
			},
			Servants: []dispatch.Servant{
				{Name: "s1", Addr: "127.0.0.1:1", Host: "127.0.0.1", Tags: []string{"gpu", "hdb"}, Slots: 4, InFlight: 2, Backlog: 1,
					Used: true, LastRoute: "IBM", LastUsed: now, Functions: map[string]bool{"proc1": true}, Healthy: true,
					Draining: true, Ejected: true, Latency: 1500 * time.Microsecond, Served: 99},
				{Name: "s2", Functions: nil, Healthy: true},
			},
			Observed: []Observation{{Call: dispatch.Call{Method: "proc1", Route: "IBM"}, Servant: "s2", Execution: time.Millisecond, OK: true}},
		}, &AssignRequest{}},
		{"response", &AssignResponse{Assignments: []dispatch.Assignment{{Call: 0, Servant: 3}, {Call: 7, Servant: 1, Backlog: true}}, Wake: now}, &AssignResponse{}},
		{"empty response", &AssignResponse{}, &AssignResponse{}},
		{"manifest (JSON)", &Manifest{Protocol: 1, Algorithms: []AlgorithmInfo{{Name: "a", Backlog: 2}}}, &Manifest{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := codec{}.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if err := (codec{}).Unmarshal(b, tt.into); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalise(tt.msg), normalise(tt.into)) {
				t.Errorf("round trip:\n got %+v\nwant %+v", tt.into, tt.msg)
			}
		})
	}
}

// normalise makes times comparable (monotonic clock and location dropped).
func normalise(v any) any {
	switch m := v.(type) {
	case *AssignRequest:
		c := *m
		c.Now = c.Now.UTC()
		for i := range c.Calls {
			c.Calls[i].Arrived = c.Calls[i].Arrived.UTC()
		}
		for i := range c.Servants {
			c.Servants[i].LastUsed = c.Servants[i].LastUsed.UTC()
		}
		return &c
	case *AssignResponse:
		c := *m
		c.Wake = c.Wake.UTC()
		return &c
	}
	return v
}

func TestCodecRefusesTruncatedAndOversizedInput(t *testing.T) {
	full, _ := codec{}.Marshal(&AssignRequest{Algorithm: "x", Calls: []dispatch.Call{{Method: "m"}}, Servants: []dispatch.Servant{{Name: "s"}}})
	for i := range len(full) {
		if err := (codec{}).Unmarshal(full[:i], &AssignRequest{}); err == nil {
			t.Errorf("a request cut at byte %d of %d decoded without error", i, len(full))
		}
	}
	if err := (codec{}).Unmarshal(append(full, 0), &AssignRequest{}); err == nil {
		t.Error("trailing bytes accepted")
	}
	huge := []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f} // a call count of 4 billion
	if err := (codec{}).Unmarshal(huge, &AssignRequest{}); err == nil {
		t.Error("an impossible count was accepted")
	}
}

func FuzzCodec(f *testing.F) {
	fuzzseed.Add(f, "FuzzCodec", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, b []byte) {
		var req AssignRequest
		if (codec{}).Unmarshal(b, &req) == nil {
			again, _ := codec{}.Marshal(&req)
			var req2 AssignRequest
			if err := (codec{}).Unmarshal(again, &req2); err != nil {
				t.Fatalf("re-encoded request does not decode: %v", err)
			}
		}
		var r AssignResponse
		(codec{}).Unmarshal(b, &r)
	})
}

// TestMinServantIsTheSmallestEncoding: the decoder's bound on servant
// counts must not refuse a message of the smallest servants.
func TestMinServantIsTheSmallestEncoding(t *testing.T) {
	if n := len(appendServant(nil, &dispatch.Servant{})); n != minServant {
		t.Errorf("an empty servant encodes in %d bytes; minServant is %d", n, minServant)
	}
}
