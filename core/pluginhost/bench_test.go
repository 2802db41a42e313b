package pluginhost

// Benchmarks of a decision through a real plugin process, against the same
// algorithm in-process:
//
//	go test -run '^$' -bench . -benchtime 2s ./core/pluginhost
//
// "idle" is one call on idle servants: the time from the round that sends
// it to the plugin to the round that applies the plugin's decision. "batch"
// is a round of 64 or 512 waiting calls with room for all of them, the
// case under load; per-call figures are the batch's time divided by its
// calls. Run without -race: the race detector slows the plugin binaries
// too. To profile the plugin's side as well, set TESTPLUGIN_CPUPROFILE
// (and TESTPLUGIN_PROFILE_FOR) for testdata/testplugin.

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/mserve/mserve/core/algo"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

// benchRound is one round's input, reset before each use.
type benchRound struct {
	calls    []*dispatch.Call
	servants []*dispatch.Servant
}

func newBenchRound(calls, servants, slots int) *benchRound {
	r := &benchRound{}
	for i := range servants {
		r.servants = append(r.servants, &dispatch.Servant{
			Name: fmt.Sprintf("s%d", i+1), Addr: fmt.Sprintf("127.0.0.1:%d", 7001+i), Host: "127.0.0.1",
			Slots: slots, Healthy: true, Latency: time.Millisecond,
		})
	}
	for i := range calls {
		sym := symbols[i%len(symbols)]
		r.calls = append(r.calls, &dispatch.Call{Method: "proc1", Params: []byte(`["` + sym + `"]`), Route: sym, Arrived: time.Now()})
	}
	return r
}

func (r *benchRound) reset() {
	for _, s := range r.servants {
		s.InFlight, s.Backlog, s.Used, s.LastRoute = 0, 0, false, ""
	}
}

// pluginRound runs one decision through the adapter: a round that sends
// the batch, then, once the plugin's answer wakes the engine, the round
// that applies it.
func pluginRound(b *testing.B, a *Algorithm, woken chan struct{}, r *benchRound, p *dispatch.Plan) {
	r.reset()
	p.Reset(r.calls, r.servants, time.Now())
	p.MaxBacklog = a.BacklogLimit()
	a.Assign(r.calls, r.servants, p)
	<-woken
	p.Reset(r.calls, r.servants, time.Now())
	p.MaxBacklog = a.BacklogLimit()
	a.Assign(r.calls, r.servants, p)
	if got := len(p.Assignments()); got != len(r.calls) {
		b.Fatalf("the plugin assigned %d of %d calls: %s", got, len(r.calls), statsString(a.h))
	}
}

func benchAdapter(b *testing.B, bin, algorithm string, backlog int) (*Algorithm, chan struct{}) {
	h, err := Start(Config{Path: bin, Deadline: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	a := NewAlgorithm(h, algorithm, backlog, fixedAlgorithm{})
	woken := make(chan struct{}, 1)
	a.SetWaker(func() { woken <- struct{}{} })
	return a, woken
}

func report(b *testing.B, calls int) {
	perDecision := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(perDecision/1e3, "µs/decision")
	b.ReportMetric(perDecision/float64(calls), "ns/call")
}

func BenchmarkDecision(b *testing.B) {
	shapes := []struct {
		name                   string
		calls, servants, slots int
	}{
		{"idle", 1, 4, 1},
		{"batch64", 64, 8, 8},
		{"batch512", 512, 8, 64},
	}
	for _, sh := range shapes {
		b.Run(sh.name+"/plugin-least", func(b *testing.B) {
			a, woken := benchAdapter(b, testPluginBin, "least", 0)
			r := newBenchRound(sh.calls, sh.servants, sh.slots)
			var p dispatch.Plan
			b.ResetTimer()
			for range b.N {
				pluginRound(b, a, woken, r, &p)
			}
			report(b, sh.calls)
		})
		b.Run(sh.name+"/inprocess-least", func(b *testing.B) {
			a := &algo.Least{}
			r := newBenchRound(sh.calls, sh.servants, sh.slots)
			var p dispatch.Plan
			b.ResetTimer()
			for range b.N {
				r.reset()
				p.Reset(r.calls, r.servants, time.Now())
				a.Assign(r.calls, r.servants, &p)
				if len(p.Assignments()) != len(r.calls) {
					b.Fatal("not all assigned")
				}
			}
			report(b, sh.calls)
		})
	}
	for _, sh := range shapes[1:] {
		for _, pl := range []struct {
			bin, name string
			backlog   int
		}{{boundedHashBin, "boundedhash", 8}, {resumeBin, "resume", 16}} {
			b.Run(sh.name+"/plugin-"+pl.name, func(b *testing.B) {
				a, woken := benchAdapter(b, pl.bin, pl.name, pl.backlog)
				r := newBenchRound(sh.calls, sh.servants, sh.slots)
				var p dispatch.Plan
				b.ResetTimer()
				for range b.N {
					pluginRound(b, a, woken, r, &p)
				}
				report(b, sh.calls)
			})
		}
	}
}

// BenchmarkCodec isolates the JSON codec's share of a batch: encoding the
// request and decoding it (as mserve and the plugin do), and the same for
// the response, for 512 calls over 8 servants.
func BenchmarkCodec(b *testing.B) {
	r := newBenchRound(512, 8, 64)
	req := &plugin.AssignRequest{Algorithm: "least", Session: 1, Now: time.Now(),
		Calls: make([]dispatch.Call, len(r.calls)), Servants: make([]dispatch.Servant, len(r.servants))}
	for i, c := range r.calls {
		req.Calls[i] = *c
	}
	for i, s := range r.servants {
		req.Servants[i] = *s
	}
	resp := &plugin.AssignResponse{}
	for i := range r.calls {
		resp.Assignments = append(resp.Assignments, dispatch.Assignment{Call: i, Servant: i % 8})
	}
	b.Run("request", func(b *testing.B) {
		size := 0
		for range b.N {
			buf, err := json.Marshal(req)
			if err != nil {
				b.Fatal(err)
			}
			size = len(buf)
			var got plugin.AssignRequest
			if err := json.Unmarshal(buf, &got); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/512, "ns/call")
		b.ReportMetric(float64(size)/512, "bytes/call")
	})
	b.Run("response", func(b *testing.B) {
		size := 0
		for range b.N {
			buf, err := json.Marshal(resp)
			if err != nil {
				b.Fatal(err)
			}
			size = len(buf)
			var got plugin.AssignResponse
			if err := json.Unmarshal(buf, &got); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/512, "ns/call")
		b.ReportMetric(float64(size)/512, "bytes/call")
	})
}
