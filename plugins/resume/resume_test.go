package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

var t0 = time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)

// settings are zc.resumelb's defaults with a short history (so that
// résumés are published every 4 observations) and variance 1.
func settings() Settings {
	s := DefaultSettings()
	s.History = 4
	s.Variance = 1
	return s
}

// servants returns n healthy servants s1…sn with the given slots.
func servants(n, slots int) []*dispatch.Servant {
	out := make([]*dispatch.Servant, n)
	for i := range out {
		out[i] = &dispatch.Servant{Name: fmt.Sprintf("s%d", i+1), Slots: slots, Healthy: true}
	}
	return out
}

// assign runs one round for calls with the given routing strings and
// returns the servant chosen for each ("" when none).
func assign(r *Resume, ss []*dispatch.Servant, routes ...string) []string {
	calls := make([]*dispatch.Call, len(routes))
	for i, rt := range routes {
		calls[i] = &dispatch.Call{Method: "f", Route: rt}
	}
	var p dispatch.Plan
	p.Reset(calls, ss, t0)
	p.MaxBacklog = r.BacklogLimit()
	r.Assign(calls, ss, &p)
	out := make([]string, len(routes))
	for _, a := range p.Assignments() {
		out[a.Call] = ss[a.Servant].Name
	}
	return out
}

// done reports n finished calls of class route on servant si (named as
// servants() names it), each taking exec.
func done(r *Resume, si int, route string, exec time.Duration, n int) {
	s := &dispatch.Servant{Name: fmt.Sprintf("s%d", si+1)}
	for range n {
		r.Done(&dispatch.Call{Method: "f", Route: route}, s, exec, true)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// An unskilled call goes to the least recently used servant, which is
// recorded with UnskilledScore for the class, so the next call of that
// class prefers it.
func TestUnskilledCallGoesToLeastRecentlyUsed(t *testing.T) {
	r := New(settings())
	ss := servants(3, 4)
	// New servants enter at the least recently used end in the order they
	// appear: s3, the last to enter, is the least recently used.
	if got := assign(r, ss, "a"); got[0] != "s3" {
		t.Fatalf("first unskilled call went to %s, want s3 (least recently used)", got[0])
	}
	if got := r.Resumes()["s3"]["a"]; got != DefaultSettings().UnskilledScore {
		t.Errorf("score recorded for a on s3 = %v, want UnskilledScore %v", got, DefaultSettings().UnskilledScore)
	}
	// s3 is busy now, yet skilled in a: the next a goes there, not to the
	// less recently used s1 and s2.
	if got := assign(r, ss, "a"); got[0] != "s3" {
		t.Errorf("second call of a went to %s, want s3 (skilled)", got[0])
	}
	// Another unskilled class goes to the least recently used: s2, then s1.
	if got := assign(r, ss, "b", "c"); got[0] != "s2" || got[1] != "s1" {
		t.Errorf("unskilled b, c went to %v, want s2, s1", got)
	}
	if res := r.Resumes(); res["s2"]["b"] != 1 || res["s1"]["c"] != 1 || len(res["s3"]) != 1 {
		t.Errorf("résumés = %v", res)
	}
	// Everyone used once: the least recently used is s3 (used first).
	if got := assign(r, ss, "d"); got[0] != "s3" {
		t.Errorf("unskilled d went to %s, want s3 (least recently used)", got[0])
	}
}

// A skilled servant with the higher score per backlog wins; with a backlog
// of at most 1 the score counts alone.
func TestSkilledBestScorePerBacklogWins(t *testing.T) {
	for _, tc := range []struct {
		inflight1, inflight2 int
		want                 string
	}{
		{0, 0, "s1"}, // 10 vs 8
		{1, 1, "s1"}, // backlog 1: 10 vs 8
		{2, 1, "s2"}, // 10/2 = 5 vs 8
		{2, 2, "s1"}, // 5 vs 4
		{3, 2, "s2"}, // 3.33 vs 4
		{4, 4, "s1"}, // 2.5 vs 2
	} {
		t.Run(fmt.Sprintf("backlogs %d,%d", tc.inflight1, tc.inflight2), func(t *testing.T) {
			s := settings()
			s.Variance = 100 // no servant skipped for its backlog here
			r := New(s)
			ss := servants(3, 8)
			assign(r, ss) // learn the servants' names
			// Scores are requests per second: calls of 100 ms score 10, of
			// 125 ms score 8.
			done(r, 0, "a", 100*time.Millisecond, 4)
			done(r, 1, "a", 125*time.Millisecond, 4)
			res := r.Resumes()
			if !near(res["s1"]["a"], 10) || !near(res["s2"]["a"], 8) {
				t.Fatalf("résumés = %v, want s1: a=10, s2: a=8", res)
			}
			ss[0].InFlight, ss[1].InFlight = tc.inflight1, tc.inflight2
			if got := assign(r, ss, "a"); got[0] != tc.want {
				t.Errorf("a went to %s, want %s", got[0], tc.want)
			}
		})
	}
}

// A skilled servant whose mean backlog exceeds min_backlog + max_backlog is
// skipped: min_backlog is the least recently used servant's mean backlog
// + 1, max_backlog = max(variance · pool mean / servants, 1).
func TestSkilledServantTooFarBehindIsSkipped(t *testing.T) {
	for _, tc := range []struct {
		mean1, mean2 float64
		want         string
	}{
		{0, 0, "s1"},   // best score
		{3.0, 0, "s1"}, // 3 − 1 = 2, not above max_backlog 2
		{3.5, 0, "s2"}, // 2.5 > 2: skipped
		{3.5, 3.5, "s3"},
	} {
		t.Run(fmt.Sprintf("means %v,%v", tc.mean1, tc.mean2), func(t *testing.T) {
			r := New(settings())
			ss := servants(3, 100)
			r.worker("s1").resume["a"] = 10
			r.worker("s2").resume["a"] = 5
			r.worker("s3") // the least recently used, mean backlog 0: min_backlog = 1
			r.worker("s1").bd, r.worker("s1").bn = tc.mean1, 1
			r.worker("s2").bd, r.worker("s2").bn = tc.mean2, 1
			r.pd, r.pn = 6, 1 // pool mean 6 over 3 servants, variance 1: max_backlog = 2
			if got := assign(r, ss, "a"); got[0] != tc.want {
				t.Errorf("a went to %s, want %s", got[0], tc.want)
			}
			if tc.want == "s3" && r.Resumes()["s3"]["a"] != 1 {
				t.Errorf("unskilled score not recorded on s3: %v", r.Resumes())
			}
		})
	}
}

// New servants enter at the least recently used end, so they are used
// first.
func TestNewServantsAreUsedFirst(t *testing.T) {
	r := New(settings())
	ss := servants(2, 4)
	got := assign(r, ss, "a", "b", "c")
	if fmt.Sprint(got) != "[s2 s1 s2]" {
		t.Fatalf("a, b, c went to %v, want [s2 s1 s2]", got)
	}
	for _, s := range ss {
		s.InFlight = 0
	}
	ss = append(ss, &dispatch.Servant{Name: "s3", Slots: 4, Healthy: true})
	if got := assign(r, ss, "x"); got[0] != "s3" {
		t.Errorf("unskilled x went to %s, want the new servant s3", got[0])
	}
	// Then back to the least recently used of the others: s1 (s2 took c).
	if got := assign(r, ss, "y"); got[0] != "s1" {
		t.Errorf("unskilled y went to %s, want s1", got[0])
	}
}

// The decayed time and count follow the formula: after each request,
// d = decay^(requests since the class was last seen), time = time·d +
// elapsed, count = count·d + 1, score = count / time, decay = 1 − 1/history.
func TestDecayedUpdate(t *testing.T) {
	r := New(settings()) // history 4: decay 0.75
	ss := servants(1, 1)
	assign(r, ss)
	seq := []struct {
		class string
		exec  time.Duration
	}{{"a", time.Second}, {"b", 2 * time.Second}, {"a", 3 * time.Second}}
	for _, s := range seq {
		done(r, 0, s.class, s.exec, 1)
	}
	if res := r.Resumes()["s1"]; len(res) != 0 {
		t.Errorf("résumé published before %d requests: %v", 4, res)
	}
	done(r, 0, "a", time.Second, 1)
	// By hand: a at request 1: time 1, count 1. b at 2: time 2, count 1.
	// a at 3: d = 0.75² = 0.5625, time = 0.5625 + 3 = 3.5625, count = 1.5625.
	// a at 4: d = 0.75, time = 3.5625·0.75 + 1 = 3.671875, count = 2.171875.
	want := map[string]float64{"a": 2.171875 / 3.671875, "b": 0.5}
	got := r.Resumes()["s1"]
	if len(got) != 2 || !near(got["a"], want["a"]) || !near(got["b"], want["b"]) {
		t.Errorf("résumé = %v, want %v", got, want)
	}
	sk := r.workers["s1"].skills["a"]
	if !near(sk.Time, 3.671875) || !near(sk.Count, 2.171875) || sk.Seen != 4 {
		t.Errorf("a's accumulators = %+v, want time 3.671875, count 2.171875, seen 4", *sk)
	}
}

// Résumés are recomputed every History observations (not in between) and
// a class unused for MaxSkillAge requests is dropped.
func TestResumeRecomputedEveryHistoryAndAged(t *testing.T) {
	s := settings()
	s.MaxSkillAge = 8
	r := New(s)
	ss := servants(1, 1)
	assign(r, ss)
	done(r, 0, "old", time.Second, 1)
	done(r, 0, "a", 100*time.Millisecond, 3) // request 4: published
	res := r.Resumes()["s1"]
	if !near(res["old"], 1) || !near(res["a"], 10) {
		t.Fatalf("résumé after 4 = %v, want old=1, a=10", res)
	}
	done(r, 0, "a", 500*time.Millisecond, 3) // requests 5-7: not published
	if got := r.Resumes()["s1"]["a"]; !near(got, 10) {
		t.Errorf("résumé changed between publications: a = %v, want 10 until request 8", got)
	}
	done(r, 0, "a", 500*time.Millisecond, 1) // request 8: published; old last seen 7 requests ago
	res = r.Resumes()["s1"]
	if _, ok := res["old"]; !ok || near(res["a"], 10) {
		t.Errorf("résumé after 8 = %v: want old kept (7 ≤ 8 requests unused) and a recomputed", res)
	}
	done(r, 0, "a", 500*time.Millisecond, 4) // request 12: old unused for 11 > 8
	res = r.Resumes()["s1"]
	if _, ok := res["old"]; ok {
		t.Errorf("résumé after 12 = %v: old should be dropped (unused for 11 > MaxSkillAge 8 requests)", res)
	}
	if _, ok := r.workers["s1"].skills["old"]; ok {
		t.Error("old's accumulators kept")
	}
	if len(res) != 1 {
		t.Errorf("résumé after 12 = %v, want only a", res)
	}
}

// Résumés are saved to Settings.File and a new instance loads them: they
// survive a restart, and so does what they decide.
func TestResumesSurviveARestart(t *testing.T) {
	s := settings()
	s.File = filepath.Join(t.TempDir(), "sub", "resumes.json")
	r := New(s)
	ss := servants(3, 4)
	assign(r, ss)
	done(r, 0, "a", 100*time.Millisecond, 4)
	done(r, 1, "b", 200*time.Millisecond, 4)
	if _, err := os.Stat(s.File); err != nil {
		t.Fatalf("résumés not saved: %v", err)
	}
	before := r.Resumes()

	r2 := New(s)
	after := r2.Resumes()
	for _, name := range []string{"s1", "s2"} {
		if fmt.Sprint(before[name]) != fmt.Sprint(after[name]) {
			t.Errorf("%s: loaded %v, saved %v", name, after[name], before[name])
		}
	}
	if !near(after["s1"]["a"], 10) || !near(after["s2"]["b"], 5) {
		t.Errorf("loaded %v", after)
	}
	ss = servants(3, 4)
	if got := assign(r2, ss, "a", "b"); got[0] != "s1" || got[1] != "s2" {
		t.Errorf("after a restart a, b went to %v, want s1, s2 (their skilled servants)", got)
	}
	// The accumulators came back too: learning continues where it stopped.
	if got := r2.workers["s1"].requests; got != 4 {
		t.Errorf("s1's request count after loading = %d, want 4", got)
	}
	// A missing or broken file starts empty.
	os.WriteFile(s.File, []byte("{not json"), 0o644)
	if res := New(s).Resumes(); len(res) != 0 {
		t.Errorf("loaded %v from a broken file", res)
	}
}

// TestKeepsTheContract: over random rounds, never a call to an unavailable
// servant, beyond free slots plus backlog room, or to a servant that does
// not serve its method.
func TestKeepsTheContract(t *testing.T) {
	r := New(settings())
	rng := rand.New(rand.NewPCG(1, 2))
	assigned := 0
	for round := range 2000 {
		ss := randomServants(rng, 1+rng.IntN(6), r.BacklogLimit())
		calls := randomCalls(rng, rng.IntN(20))
		before := clone(ss)
		var p dispatch.Plan
		p.Reset(calls, ss, t0)
		p.MaxBacklog = r.BacklogLimit()
		r.Assign(calls, ss, &p)
		if err := checkPlan(calls, before, &p); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		assigned += len(p.Assignments())
		for _, a := range p.Assignments() {
			if rng.IntN(2) == 0 {
				r.Done(calls[a.Call], ss[a.Servant], time.Duration(1+rng.IntN(50))*time.Millisecond, true)
			}
		}
	}
	if assigned == 0 {
		t.Error("nothing assigned")
	}
}

func randomServants(rng *rand.Rand, n, maxBacklog int) []*dispatch.Servant {
	out := make([]*dispatch.Servant, n)
	for i := range out {
		slots := 1 + rng.IntN(3)
		s := &dispatch.Servant{Name: fmt.Sprintf("s%d", 1+rng.IntN(8)), Slots: slots, InFlight: rng.IntN(slots + 1),
			Backlog: rng.IntN(maxBacklog + 1), Healthy: rng.IntN(6) != 0, Draining: rng.IntN(8) == 0}
		s.Name = fmt.Sprintf("%s-%d", s.Name, i) // unique
		if rng.IntN(4) == 0 {
			s.Functions = map[string]bool{"f": true}
		}
		out[i] = s
	}
	return out
}

func randomCalls(rng *rand.Rand, n int) []*dispatch.Call {
	out := make([]*dispatch.Call, n)
	for i := range out {
		out[i] = &dispatch.Call{Method: []string{"f", "f", "g"}[rng.IntN(3)], Route: fmt.Sprintf("r%d", rng.IntN(12))}
	}
	return out
}

func clone(ss []*dispatch.Servant) []*dispatch.Servant {
	out := make([]*dispatch.Servant, len(ss))
	for i, s := range ss {
		c := *s
		out[i] = &c
	}
	return out
}

// checkPlan checks a round's decisions against the servants as they were
// before it.
func checkPlan(calls []*dispatch.Call, before []*dispatch.Servant, p *dispatch.Plan) error {
	if r := p.Rejected(); r != 0 {
		return fmt.Errorf("the Plan refused %d assignments", r)
	}
	taken := make([]int, len(before))
	seen := map[int]bool{}
	for _, a := range p.Assignments() {
		if seen[a.Call] {
			return fmt.Errorf("call %d assigned twice", a.Call)
		}
		seen[a.Call] = true
		s, c := before[a.Servant], calls[a.Call]
		if !s.Available() {
			return fmt.Errorf("call %d to unavailable %s", a.Call, s.Name)
		}
		if !s.Serves(c.Method) {
			return fmt.Errorf("call %d (%s) to %s, which does not serve it", a.Call, c.Method, s.Name)
		}
		if taken[a.Servant]++; taken[a.Servant] > s.Free()+p.MaxBacklog-s.Backlog {
			return fmt.Errorf("%s given %d calls with %d free slots and %d of %d backlog places used",
				s.Name, taken[a.Servant], s.Free(), s.Backlog, p.MaxBacklog)
		}
	}
	return nil
}

// The environment settings.
func TestSettingsFromEnv(t *testing.T) {
	t.Setenv("MSERVE_RESUME_HISTORY", "50")
	t.Setenv("MSERVE_RESUME_VARIANCE", "2.5")
	t.Setenv("MSERVE_RESUME_BACKLOG_HISTORY", "3")
	t.Setenv("MSERVE_RESUME_UNSKILLED_SCORE", "0.5")
	t.Setenv("MSERVE_RESUME_FILE", "none")
	s, err := settingsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if s.History != 50 || s.Variance != 2.5 || s.BacklogHistory != 3 || s.UnskilledScore != 0.5 || s.File != "" {
		t.Errorf("settings = %+v", s)
	}
	t.Setenv("MSERVE_RESUME_HISTORY", "-1")
	if _, err := settingsFromEnv(); err == nil {
		t.Error("accepted MSERVE_RESUME_HISTORY=-1")
	}
}

func BenchmarkAssign(b *testing.B) {
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) {
			r := New(settings())
			ss := servants(8, n)
			calls := randomCalls(rand.New(rand.NewPCG(1, 1)), n)
			for _, c := range calls {
				c.Method = "f"
			}
			var p dispatch.Plan
			for range b.N {
				for _, s := range ss {
					s.InFlight, s.Backlog = 0, 0
				}
				p.Reset(calls, ss, t0)
				p.MaxBacklog = r.BacklogLimit()
				r.Assign(calls, ss, &p)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/call")
		})
	}
}
