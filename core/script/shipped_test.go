package script

// The shipped scripts that are not copies of built-ins: tiered.lua (route by
// the age of a date argument to hdb or rdb servants) and canary.lua (send a
// share of the calls to canary servants).

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// dateCall is a call to f whose params are given as raw JSON.
func dateCall(params string) *dispatch.Call {
	return &dispatch.Call{Method: "f", Params: []byte(params), Arrived: t0}
}

func TestTiered(t *testing.T) {
	h := newHost(t, Config{Files: []string{shippedScript("tiered.lua")}, Budget: time.Second})
	// tiered compares with the wall clock (mserve.now), so dates are taken
	// relative to it, far from the 48h boundary.
	now := time.Now().UTC()
	today := now.Format(time.DateOnly)
	yearAgo := now.AddDate(-1, 0, 0).Format(time.DateOnly)
	threeDaysAgo := now.Add(-72 * time.Hour).Format(time.RFC3339)
	dayAgo := now.Add(-24 * time.Hour).Format(time.RFC3339Nano)

	tiers := []srv{
		{tags: []string{"rdb"}},             // s1
		{tags: []string{"hdb"}},             // s2
		{tags: []string{"rdb", "gpu"}},      // s3
		{},                                  // s4: no tier: never used by tiered
		{tags: []string{"hdb"}, down: true}, // s5
	}
	tests := []struct {
		name     string
		servants []srv
		params   []string // one call each, oldest first
		want     []string // "call→servant", 1-based
	}{
		{"old date to hdb, recent to rdb", tiers,
			[]string{fmt.Sprintf(`["IBM",%q]`, yearAgo), fmt.Sprintf(`["IBM",%q]`, today)}, []string{"1→s2", "2→s1"}},
		{"the first argument that reads as a date counts", tiers,
			[]string{fmt.Sprintf(`[%q,%q]`, yearAgo, today), fmt.Sprintf(`[1,%q,%q]`, today, yearAgo)}, []string{"1→s2", "2→s1"}},
		{"timestamps: three days ago is history, a day ago recent", tiers,
			[]string{fmt.Sprintf(`[%q]`, threeDaysAgo), fmt.Sprintf(`[%q]`, dayAgo)}, []string{"1→s2", "2→s1"}},
		{"no date goes to rdb", tiers,
			[]string{`["IBM"]`, `[]`, `[42,"not a date"]`}, []string{"1→s1", "2→s3"}},
		{"old call waits while hdb is busy; recent goes", []srv{{tags: []string{"rdb"}}, {tags: []string{"hdb"}, busy: 1}, {}},
			[]string{fmt.Sprintf(`[%q]`, yearAgo), fmt.Sprintf(`[%q]`, today)}, []string{"2→s1"}},
		{"recent call waits while every rdb is busy or down", []srv{{tags: []string{"rdb"}, busy: 1}, {tags: []string{"hdb"}}, {tags: []string{"rdb"}, draining: true}, {tags: []string{"rdb"}, down: true}},
			[]string{fmt.Sprintf(`[%q]`, today), fmt.Sprintf(`[%q]`, today)}, nil},
		{"fewest pending within the tier", []srv{{tags: []string{"rdb"}, slots: 4, busy: 2}, {tags: []string{"rdb"}, slots: 4, busy: 1}, {tags: []string{"hdb"}}},
			[]string{fmt.Sprintf(`[%q]`, today), fmt.Sprintf(`[%q]`, today), fmt.Sprintf(`[%q]`, today)}, []string{"1→s2", "2→s1", "3→s2"}},
		{"a tier servant that does not serve the function is skipped", []srv{{tags: []string{"hdb"}, serves: []string{"g"}}, {tags: []string{"hdb"}}},
			[]string{fmt.Sprintf(`[%q]`, yearAgo)}, []string{"1→s2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := make([]*dispatch.Call, len(tc.params))
			for i, p := range tc.params {
				calls[i] = dateCall(p)
			}
			a := NewAlgorithm(h, "tiered", failFallback(t, "tiered"))
			o := round(a, calls, views(t0, tc.servants...), t0)
			var got []string
			for _, x := range o.assigned {
				got = append(got, fmt.Sprintf("%d→s%d", x.Call+1, x.Servant+1))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("assigned %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("routing function tier", func(t *testing.T) {
		r := NewRouter(h, "tier", &fixedRouter{route: "fallback"})
		for _, tc := range []struct{ params, want string }{
			{fmt.Sprintf(`["IBM",%q]`, yearAgo), "hdb"},
			{fmt.Sprintf(`["IBM",%q]`, today), "rdb"},
			{fmt.Sprintf(`[%q]`, threeDaysAgo), "hdb"},
			{`["IBM"]`, "rdb"},
			{``, "rdb"},
		} {
			got, err := r.Route(dateCall(tc.params))
			if err != nil || got != tc.want {
				t.Errorf("tier(%s) = %q, %v; want %q", tc.params, got, err, tc.want)
			}
		}
		if c := h.Counters("tier"); c.Errors.Load() != 0 {
			t.Errorf("%d errors", c.Errors.Load())
		}
	})

	// tiered.lua says "the date is the first argument that reads as a
	// date"; a call with named params has arguments too.
	t.Run("named params", func(t *testing.T) {
		r := NewRouter(h, "tier", &fixedRouter{route: "fallback"})
		got, _ := r.Route(dateCall(fmt.Sprintf(`{"sym":"IBM","date":%q}`, yearAgo)))
		if got != "hdb" {
			t.Errorf(`tier({"sym":"IBM","date":%q}) = %q, want "hdb": a named date argument is ignored and a call for year-old data runs on rdb`, yearAgo, got)
		}
	})
}

func TestCanary(t *testing.T) {
	h := newHost(t, Config{Files: []string{shippedScript("canary.lua")}, Budget: time.Second})
	// pick runs one round with one waiting call and reports the servant
	// chosen (1-based), or 0.
	pick := func(t *testing.T, a dispatch.Algorithm, vs []*dispatch.Servant, c *dispatch.Call) int {
		for _, v := range vs {
			v.InFlight = 0
		}
		o := round(a, []*dispatch.Call{c}, vs, t0)
		if len(o.assigned) == 0 {
			return 0
		}
		return o.assigned[0].Servant + 1
	}
	call := dateCall(`["IBM"]`)

	t.Run("about PERCENT percent to canaries", func(t *testing.T) {
		// math.random in scripts uses Go's global source, which cannot be
		// seeded (rand.Seed is a no-op since Go 1.24), so the share is
		// checked with a wide tolerance: 5% of 10000 is 500, with a
		// standard deviation of about 22.
		const n = 10000
		a := NewAlgorithm(h, "canary", failFallback(t, "canary"))
		vs := views(t0, srv{tags: []string{"canary"}}, srv{}, srv{tags: []string{"rdb"}}, srv{tags: []string{"canary"}})
		count := map[int]int{}
		for range n {
			count[pick(t, a, vs, call)]++
		}
		canary := count[1] + count[4]
		t.Logf("canary %d of %d; by servant %v", canary, n, count)
		if count[0] != 0 {
			t.Errorf("%d calls were not assigned", count[0])
		}
		if canary < 350 || canary > 650 {
			t.Errorf("%d of %d calls went to canaries, want about 500", canary, n)
		}
		// Within a group, the fewest pending wins, ties to the first: with
		// every servant idle, that is always the first of each group.
		if count[3] != 0 || count[4] != 0 {
			t.Errorf("ties did not go to the first servant of the group: %v", count)
		}
	})
	t.Run("no canary present: all to the others", func(t *testing.T) {
		for _, servants := range [][]srv{
			{{}, {tags: []string{"rdb"}}},
			{{tags: []string{"canary"}, down: true}, {}, {tags: []string{"canary"}, draining: true}},
		} {
			a := NewAlgorithm(h, "canary", failFallback(t, "canary"))
			vs := views(t0, servants...)
			for i := range 2000 {
				got := pick(t, a, vs, call)
				if got == 0 || vs[got-1].HasTag("canary") {
					t.Fatalf("call %d went to %d; want a servant that is not a canary", i, got)
				}
			}
		}
	})
	t.Run("only canaries: all to them", func(t *testing.T) {
		a := NewAlgorithm(h, "canary", failFallback(t, "canary"))
		vs := views(t0, srv{tags: []string{"canary"}}, srv{down: true})
		for i := range 500 {
			if got := pick(t, a, vs, call); got != 1 {
				t.Fatalf("call %d went to %d, want the canary s1", i, got)
			}
		}
	})
	t.Run("fewest pending within the group", func(t *testing.T) {
		a := NewAlgorithm(h, "canary", failFallback(t, "canary"))
		vs := views(t0, srv{slots: 3}, srv{slots: 3}, srv{slots: 3})
		for range 200 {
			vs[0].InFlight, vs[1].InFlight, vs[2].InFlight = 2, 0, 1
			o := round(a, []*dispatch.Call{call}, vs, t0)
			if len(o.assigned) != 1 || o.assigned[0].Servant != 1 {
				t.Fatalf("assigned %v, want s2 (fewest pending)", o.assigned)
			}
		}
	})
}
