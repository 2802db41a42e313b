package main

// Résumés shared through etcd. With MSERVE_ETCD set (mserve passes its
// -etcd to its plugins), every published résumé is written to
//
//	<prefix>/resumes/<servant>   {"by":…,"requests":N,"resume":{class: score},"skills":{class: {time,count,seen}}}
//
// and every instance — each mserve's resume plugin — watches that folder
// and adopts what the others publish: the last publication of a servant's
// résumé wins, and learning goes on from it. Résumés therefore survive
// restarts and are common to all mserve instances, as zc.resumelb's
// workers' résumés were common to all its load balancers. Deleting a
// servant's key makes every instance forget what it learned about it.
// <prefix>/config/resume/variance and <prefix>/config/resume/history are
// applied live; deleting them restores the environment's settings.
//
// No etcd I/O happens on the decision path: publishing hands the record to
// a writer goroutine, and adopting takes the algorithm's lock only to swap
// maps. etcd unreachable leaves decisions as they are, with the résumés
// known; writes are retried, the latest per servant winning.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mserve/mserve/sdk/announce"
)

// record is one servant's résumé as shared in etcd.
type record struct {
	By       string             `json:"by"`       // the instance that published it
	Requests int64              `json:"requests"` // the servant's request count, to which the skills' seen refer
	Resume   map[string]float64 `json:"resume"`
	Skills   map[string]*skill  `json:"skills"`
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// share hands w's résumé, just published, to the store. Caller holds r.mu.
func (r *Resume) share(w *worker) {
	if r.shared == nil {
		return
	}
	b, err := json.Marshal(record{By: r.id, Requests: w.requests, Resume: w.resume, Skills: w.skills})
	if err != nil {
		return
	}
	r.shared.publish(w.name, b)
}

// adopt takes the résumé another instance published for servant name.
func (r *Resume) adopt(name string, rec *record) {
	if rec.By == r.id {
		return // our own, echoed; we have moved on since
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.worker(name)
	w.resume = map[string]float64{}
	for k, v := range rec.Resume {
		w.resume[k] = v
	}
	w.skills = map[string]*skill{}
	w.requests = rec.Requests
	for k, v := range rec.Skills {
		if v != nil {
			sk := *v
			w.skills[k] = &sk
			w.requests = max(w.requests, sk.Seen)
		}
	}
}

// forget drops what was learned about servant name.
func (r *Resume) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.workers[name]; w != nil {
		w.resume, w.skills, w.sinceSave = map[string]float64{}, map[string]*skill{}, 0
	}
}

// setVariance and setHistory change the settings live.
func (r *Resume) setVariance(v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.Variance = v
}

func (r *Resume) setHistory(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.History = n
	if !r.skillAgeIsSet {
		r.cfg.MaxSkillAge = 10 * n
	}
}

// Settings returns the settings in force.
func (r *Resume) Settings() Settings {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// store shares résumés through etcd for the Resume instances of one
// process.
type store struct {
	client     *clientv3.Client
	resumesDir string
	configDir  string
	base       Settings // the environment's, restored when a config key is deleted
	log        *log.Logger
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	pmu     sync.Mutex // guards pending; never held while taking a Resume's lock
	pending map[string][]byte
	wake    chan struct{}

	mu       sync.Mutex // guards what follows; held while applying to subscribers
	subs     []*Resume
	records  map[string]*record // the latest record of each servant in etcd
	settings map[string]string  // config/resume/* keys present
}

// Setting keys under <prefix>/config/resume/.
const (
	keyVariance = "variance"
	keyHistory  = "history"
)

// startStore connects to etcd in the background and starts following it.
// It fails only on a configuration error; etcd unreachable is retried.
func startStore(cfg Settings, logger *log.Logger) (*store, error) {
	if logger == nil {
		logger = log.New(os.Stderr, "resume: ", 0)
	}
	client, err := clientv3.New(announce.ClientConfig(cfg.Etcd, nil)) // redials at least every 3s, not gRPC's 2 minutes
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(cfg.Etcd, ","), err)
	}
	root := strings.TrimRight(cfg.EtcdPrefix, "/")
	if cfg.EtcdPrefix == "" {
		root = announce.DefaultPrefix
	}
	s := &store{client: client, resumesDir: root + "/resumes/", configDir: root + "/config/resume/", base: cfg, log: logger,
		pending: map[string][]byte{}, wake: make(chan struct{}, 1), records: map[string]*record{}, settings: map[string]string{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.write() }()
	go func() { defer s.wg.Done(); s.follow() }()
	return s, nil
}

// close stops the store's goroutines and closes its client.
func (s *store) close() {
	s.cancel()
	s.wg.Wait()
	s.client.Close()
}

// subscribe has r share through the store: it publishes there, and is
// given what is in etcd now and every change from now on.
func (s *store) subscribe(r *Resume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.mu.Lock()
	r.shared = s
	r.mu.Unlock()
	s.subs = append(s.subs, r)
	for name, rec := range s.records {
		r.adopt(name, rec)
	}
	for key, v := range s.settings {
		s.applySetting(r, key, v)
	}
}

// publish queues a servant's record for writing; it never blocks.
func (s *store) publish(name string, b []byte) {
	s.pmu.Lock()
	s.pending[name] = b
	s.pmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// retry paces one kind of etcd work that fails and recovers: it logs the
// first failure of a run and the recovery once each, and waits between
// attempts from 100ms doubling up to 5s.
type retry struct {
	s         *store
	failed    string // logged at the first failure, with the error
	recovered string // logged when work succeeds after failures
	wait      time.Duration
	failing   bool
}

const (
	retryMinWait = 100 * time.Millisecond
	retryMaxWait = 5 * time.Second
)

// ok records a success.
func (r *retry) ok() {
	if r.failing {
		r.s.log.Printf("%s", r.recovered)
	}
	r.failing, r.wait = false, retryMinWait
}

// fail records a failure and waits before the next attempt. It returns
// false when the store is closing.
func (r *retry) fail(err error) bool {
	if r.s.ctx.Err() != nil {
		return false
	}
	if !r.failing {
		r.s.log.Printf(r.failed, err)
		r.failing = true
	}
	select {
	case <-r.s.ctx.Done():
		return false
	case <-time.After(r.wait):
	}
	r.wait = min(2*r.wait, retryMaxWait)
	return true
}

// write writes queued records, retrying failed ones with backoff (a newer
// record of the same servant replaces one waiting).
func (s *store) write() {
	r := &retry{s: s, wait: retryMinWait,
		failed:    "etcd: cannot write résumés (%v); decisions go on, retrying",
		recovered: "etcd: résumés written again"}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		}
		for {
			s.pmu.Lock()
			batch := s.pending
			s.pending = map[string][]byte{}
			s.pmu.Unlock()
			var err error
			for name, b := range batch {
				if err == nil {
					ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
					_, err = s.client.Put(ctx, s.resumesDir+name, string(b))
					cancel()
					if err == nil {
						continue
					}
				}
				s.pmu.Lock()
				if _, newer := s.pending[name]; !newer {
					s.pending[name] = b
				}
				s.pmu.Unlock()
			}
			if err == nil {
				r.ok()
				break
			}
			if !r.fail(err) {
				return
			}
		}
	}
}

// follow lists the résumés and settings, then watches them; after a
// failure it lists again.
func (s *store) follow() {
	r := &retry{s: s, wait: retryMinWait,
		failed:    "etcd: cannot follow shared résumés (%v); using those known, retrying",
		recovered: "etcd: résumés followed again"}
	for s.ctx.Err() == nil {
		rev, err := s.list()
		if err == nil {
			r.ok()
			err = s.watch(rev)
		}
		if !r.fail(err) {
			return
		}
	}
}

// list reads both folders at one revision and reconciles with them.
func (s *store) list() (int64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(s.resumesDir, clientv3.WithPrefix()),
		clientv3.OpGet(s.configDir, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	listed := map[string]bool{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		name := strings.TrimPrefix(string(kv.Key), s.resumesDir)
		listed[name] = true
		s.putRecord(name, kv.Value)
	}
	for name := range s.records {
		if !listed[name] {
			s.deleteRecord(name)
		}
	}
	present := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		key := strings.TrimPrefix(string(kv.Key), s.configDir)
		present[key] = true
		s.setSetting(key, string(kv.Value), true)
	}
	for key := range s.settings {
		if !present[key] {
			s.setSetting(key, "", false)
		}
	}
	return resp.Header.Revision, nil
}

// watch applies changes after rev until a watch fails.
func (s *store) watch(rev int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	resumes := s.client.Watch(ctx, s.resumesDir, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	config := s.client.Watch(ctx, s.configDir, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-resumes:
		case resp, ok = <-config:
		}
		if !ok {
			return errors.New("watch closed")
		}
		if err := resp.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		for _, ev := range resp.Events {
			key, put := string(ev.Kv.Key), ev.Type == clientv3.EventTypePut
			if name, ok := strings.CutPrefix(key, s.resumesDir); ok {
				if put {
					s.putRecord(name, ev.Kv.Value)
				} else {
					s.deleteRecord(name)
				}
			} else if k, ok := strings.CutPrefix(key, s.configDir); ok {
				s.setSetting(k, string(ev.Kv.Value), put)
			}
		}
		s.mu.Unlock()
	}
}

// putRecord adopts a servant's record everywhere. Caller holds s.mu.
func (s *store) putRecord(name string, value []byte) {
	rec := &record{}
	if err := json.Unmarshal(value, rec); err != nil || name == "" || strings.Contains(name, "/") {
		s.log.Printf("etcd: résumé %s%s ignored: not a résumé (%v)", s.resumesDir, name, err)
		return
	}
	if old := s.records[name]; old != nil && string(mustJSON(old)) == string(mustJSON(rec)) {
		return
	}
	s.records[name] = rec
	for _, r := range s.subs {
		r.adopt(name, rec)
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// deleteRecord forgets a servant everywhere. Caller holds s.mu.
func (s *store) deleteRecord(name string) {
	if _, ok := s.records[name]; !ok {
		return
	}
	delete(s.records, name)
	for _, r := range s.subs {
		r.forget(name)
	}
}

// setSetting applies a config/resume/ key everywhere (present), or
// restores the environment's value (deleted). Caller holds s.mu.
func (s *store) setSetting(key, value string, present bool) {
	if key != keyVariance && key != keyHistory {
		return
	}
	value = strings.TrimSpace(value)
	if present {
		if old, ok := s.settings[key]; ok && old == value {
			return
		}
		if err := checkSetting(key, value); err != nil {
			s.log.Printf("etcd: %s%s=%q not applied (%v); the setting in force stays", s.configDir, key, value, err)
			return
		}
		s.settings[key] = value
	} else {
		if _, ok := s.settings[key]; !ok {
			return
		}
		delete(s.settings, key)
		switch key {
		case keyVariance:
			value = strconv.FormatFloat(s.base.Variance, 'g', -1, 64)
		case keyHistory:
			value = strconv.Itoa(s.base.History)
		}
	}
	for _, r := range s.subs {
		s.applySetting(r, key, value)
	}
	s.log.Printf("etcd: %s=%s applied", key, value)
}

// checkSetting validates a setting's value.
func checkSetting(key, value string) error {
	switch key {
	case keyVariance:
		if f, err := strconv.ParseFloat(value, 64); err != nil || f <= 0 {
			return errors.New("want a positive number")
		}
	case keyHistory:
		if n, err := strconv.Atoi(value); err != nil || n <= 0 {
			return errors.New("want a positive whole number")
		}
	}
	return nil
}

// applySetting applies a valid value to r.
func (s *store) applySetting(r *Resume, key, value string) {
	switch key {
	case keyVariance:
		f, _ := strconv.ParseFloat(value, 64)
		r.setVariance(f)
	case keyHistory:
		n, _ := strconv.Atoi(value)
		r.setHistory(n)
	}
}
