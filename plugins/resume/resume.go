package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// Settings are zc.resumelb's knobs.
type Settings struct {
	History        int     // requests between résumé updates; decay = 1 − 1/History
	MaxSkillAge    int     // a class unused for this many requests leaves the résumé (default 10 × History)
	Variance       float64 // how far above the mean backlog a skilled servant may be and still get work
	BacklogHistory int     // memory of the backlog means
	UnskilledScore float64 // score recorded for a class on the servant that gets it unskilled
	File           string  // where résumés are saved; "" keeps them in memory only

	Etcd       []string // etcd endpoints (MSERVE_ETCD): résumés are shared there by every instance (shared.go)
	EtcdPrefix string   // root of mserve's keys in etcd (MSERVE_ETCD_PREFIX)
}

// Defaults from zc.resumelb (its command line uses variance 4).
func DefaultSettings() Settings {
	return Settings{History: 9999, Variance: 4, BacklogHistory: 9, UnskilledScore: 1}
}

// skill is what a servant has learned about one class: decayed time and
// count, and the request number when it last saw the class.
type skill struct {
	Time  float64 `json:"time"`
	Count float64 `json:"count"`
	Seen  int64   `json:"seen"`
}

// worker is one servant as the balancer knows it.
type worker struct {
	name      string
	requests  int64              // requests it has finished
	skills    map[string]*skill  // running accumulators
	resume    map[string]float64 // published résumé: class → requests/second
	sinceSave int                // requests since the résumé was last published
	// backlog mean, decayed on every get and put
	bd, bn      float64
	lru         int64 // when it was last chosen; smaller is less recently used
	outstanding int   // calls it holds (in flight and backlog), kept between rounds
}

func (w *worker) meanBacklog() float64 {
	if w.bn == 0 {
		return 0
	}
	return w.bd / w.bn
}

// Resume is zc.resumelb's résumé-based algorithm as a dispatch.Algorithm:
// each servant has a résumé {routing string → requests per second} learned
// from the calls it ran; a call goes to the skilled servant with the best
// score per unit of backlog, skipping servants whose backlog runs too far
// above the mean, and otherwise to the least recently used servant, which
// is then recorded as (unskilled) for that routing string.
type Resume struct {
	cfg     Settings
	mu      sync.Mutex
	workers map[string]*worker
	clock   int64    // orders LRU
	pd, pn  float64  // pool backlog mean
	names   []string // servant names by index, as of the last round
	// poolBacklog is the calls outstanding over all servants: taken from
	// the view each round, kept up to date between rounds.
	poolBacklog int

	id            string // this instance, in the résumés it shares
	shared        *store // where résumés are shared; nil without etcd
	skillAgeIsSet bool   // MaxSkillAge was given, not derived from History
}

// New returns a Resume, loading saved résumés from cfg.File if it exists.
func New(cfg Settings) *Resume {
	if cfg.History <= 0 {
		cfg.History = 9999
	}
	skillAgeIsSet := cfg.MaxSkillAge > 0
	if !skillAgeIsSet {
		cfg.MaxSkillAge = 10 * cfg.History
	}
	if cfg.BacklogHistory <= 0 {
		cfg.BacklogHistory = 9
	}
	if cfg.Variance <= 0 {
		cfg.Variance = 4
	}
	if cfg.UnskilledScore <= 0 {
		cfg.UnskilledScore = 1
	}
	r := &Resume{cfg: cfg, workers: map[string]*worker{}, id: newID(), skillAgeIsSet: skillAgeIsSet}
	r.load()
	return r
}

// BacklogLimit implements dispatch.BacklogUser: resumelb gives work to busy
// workers, so servants hold a backlog.
func (r *Resume) BacklogLimit() int { return 16 }

func (r *Resume) decay() float64 { return 1 - 1/float64(r.cfg.History) }

func (r *Resume) worker(name string) *worker {
	w := r.workers[name]
	if w == nil {
		// New workers enter at the least recently used end: used first.
		w = &worker{name: name, skills: map[string]*skill{}, resume: map[string]float64{}, lru: -1 - int64(len(r.workers))}
		r.workers[name] = w
	}
	return w
}

// noteBacklog decays the worker's and the pool's backlog means with their
// backlogs now (resumelb does this on every get and put).
func (r *Resume) noteBacklog(w *worker) {
	dw := 1 - 1/(2*float64(r.cfg.BacklogHistory))
	w.bd = w.bd*dw + float64(w.outstanding)
	w.bn = w.bn*dw + 1
	dp := 1 - 1/(2*float64(r.cfg.BacklogHistory)*float64(max(len(r.names), 1)))
	r.pd = r.pd*dp + float64(r.poolBacklog)
	r.pn = r.pn*dp + 1
}

// Done implements dispatch.Observer: the servant learns from the call, as
// a resumelb worker does after each request.
func (r *Resume) Done(c *dispatch.Call, servant *dispatch.Servant, execution time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.worker(servant.Name)
	w.requests++
	sk := w.skills[c.Route]
	if sk == nil {
		sk = &skill{}
		w.skills[c.Route] = sk
	}
	d := math.Pow(r.decay(), float64(w.requests-sk.Seen))
	sk.Time = sk.Time*d + max(execution.Seconds(), 1e-9)
	sk.Count = sk.Count*d + 1
	sk.Seen = w.requests
	if r.poolBacklog > 0 {
		r.poolBacklog--
	}
	if w.outstanding > 0 {
		w.outstanding--
	}
	r.noteBacklog(w)
	if w.sinceSave++; w.sinceSave >= r.cfg.History {
		w.sinceSave = 0
		r.publish(w)
		r.save()
		r.share(w)
	}
}

// publish recomputes a worker's résumé from its accumulators, dropping
// classes unused for MaxSkillAge requests.
func (r *Resume) publish(w *worker) {
	res := map[string]float64{}
	for class, sk := range w.skills {
		if w.requests-sk.Seen > int64(r.cfg.MaxSkillAge) {
			delete(w.skills, class)
			continue
		}
		res[class] = sk.Count / sk.Time
	}
	w.resume = res
}

// Assign implements dispatch.Algorithm.
func (r *Resume) Assign(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = r.names[:0]
	r.poolBacklog = 0
	for _, s := range servants {
		r.names = append(r.names, s.Name)
		r.poolBacklog += s.InFlight + s.Backlog
		r.worker(s.Name).outstanding = s.InFlight + s.Backlog
	}
	for ci, c := range calls {
		if p.Assigned(ci) {
			continue
		}
		si := r.choose(c, servants, p)
		if si < 0 {
			continue
		}
		s := servants[si]
		if !p.Assign(ci, si) {
			continue
		}
		w := r.worker(s.Name)
		r.clock++
		w.lru = r.clock
		r.poolBacklog++
		w.outstanding++
		r.noteBacklog(w)
	}
}

// choose is resumelb's pool.get for class c.Route; it returns -1 when no
// servant can take the call.
func (r *Resume) choose(c *dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) int {
	n := 0
	lruIdx := -1
	for i, s := range servants {
		if !p.CanTake(s, c) {
			continue
		}
		n++
		if lruIdx < 0 || r.worker(s.Name).lru < r.worker(servants[lruIdx].Name).lru {
			lruIdx = i
		}
	}
	if n == 0 {
		return -1
	}
	poolMean := 0.0
	if r.pn > 0 {
		poolMean = r.pd / r.pn
	}
	maxBacklog := max(r.cfg.Variance*poolMean/float64(n), 1)
	minBacklog := r.worker(servants[lruIdx].Name).meanBacklog() + 1
	best, bestValue := -1, 0.0
	for i, s := range servants {
		if !p.CanTake(s, c) {
			continue
		}
		w := r.worker(s.Name)
		score, skilled := w.resume[c.Route]
		if !skilled {
			continue
		}
		if w.meanBacklog()-minBacklog > maxBacklog {
			continue
		}
		value := score
		if backlog := s.InFlight + s.Backlog; backlog > 1 {
			value = score / float64(backlog)
		}
		if best < 0 || value > bestValue {
			best, bestValue = i, value
		}
	}
	if best >= 0 {
		return best
	}
	w := r.worker(servants[lruIdx].Name)
	if _, ok := w.resume[c.Route]; !ok {
		w.resume[c.Route] = r.cfg.UnskilledScore
	}
	return lruIdx
}

// saved is the file format: résumés and accumulators by servant name.
type saved struct {
	Resumes map[string]map[string]float64 `json:"resumes"`
	Skills  map[string]map[string]*skill  `json:"skills"`
}

// save writes every worker's résumé; errors are ignored (the next save may
// succeed, and losing résumés costs only warm-up).
func (r *Resume) save() {
	if r.cfg.File == "" {
		return
	}
	out := saved{Resumes: map[string]map[string]float64{}, Skills: map[string]map[string]*skill{}}
	for name, w := range r.workers {
		out.Resumes[name] = w.resume
		out.Skills[name] = w.skills
	}
	b, err := json.Marshal(out)
	if err != nil {
		return
	}
	os.MkdirAll(filepath.Dir(r.cfg.File), 0o755)
	tmp := r.cfg.File + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		os.Rename(tmp, r.cfg.File)
	}
}

func (r *Resume) load() {
	if r.cfg.File == "" {
		return
	}
	b, err := os.ReadFile(r.cfg.File)
	if err != nil {
		return
	}
	var in saved
	if json.Unmarshal(b, &in) != nil {
		return
	}
	names := make([]string, 0, len(in.Resumes))
	for name := range in.Resumes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		w := r.worker(name)
		w.resume = in.Resumes[name]
		if w.resume == nil {
			w.resume = map[string]float64{}
		}
		if sk := in.Skills[name]; sk != nil {
			w.skills = sk
			for _, s := range sk {
				w.requests = max(w.requests, s.Seen)
			}
		}
	}
}

// Resumes returns a copy of the published résumés, for tests and tools.
func (r *Resume) Resumes() map[string]map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]map[string]float64{}
	for name, w := range r.workers {
		out[name] = map[string]float64{}
		for k, v := range w.resume {
			out[name][k] = v
		}
	}
	return out
}

var (
	_ dispatch.Algorithm   = (*Resume)(nil)
	_ dispatch.Observer    = (*Resume)(nil)
	_ dispatch.BacklogUser = (*Resume)(nil)
)
