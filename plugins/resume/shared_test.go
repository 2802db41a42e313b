package main

// The two instances here are two Resume values in this process, each with
// its own store and its own etcd client: exactly what two plugin processes
// run, minus go-plugin's transport (tested in core/pluginhost), and with
// their state open to inspection. etcd is the only channel between them.

import (
	"bytes"
	"context"
	"encoding/json"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/announce/etcdtest"
)

// syncBuf is a log output safe for concurrent use.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sharedInstance starts a Resume sharing through etcd at endpoint.
func sharedInstance(t *testing.T, endpoint, prefix string) (*Resume, *syncBuf) {
	t.Helper()
	cfg := settings()
	cfg.Etcd, cfg.EtcdPrefix = []string{endpoint}, prefix
	out := &syncBuf{}
	st, err := startStore(cfg, log.New(out, "resume: ", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.close)
	r := New(cfg)
	st.subscribe(r)
	return r, out
}

// waitUntil polls cond until it holds, failing the test after 10s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling, bounded by the deadline
	}
}

// What one instance publishes, the other adopts; a later publication of
// the same servant wins; a new instance starts with everything published;
// deleting a servant's key makes them forget it.
func TestResumesSharedThroughEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	a, _ := sharedInstance(t, srv.Endpoint, "/r")
	b, _ := sharedInstance(t, srv.Endpoint, "/r")
	ss := servants(2, 4)
	assign(a, ss)
	assign(b, ss)

	done(a, 0, "IBM", 100*time.Millisecond, 4) // history 4: a publishes s1's résumé
	waitUntil(t, "b adopts s1's résumé from a", func() bool { return near(b.Resumes()["s1"]["IBM"], 10) })
	if got := assign(b, servants(2, 4), "IBM"); got[0] != "s1" {
		t.Errorf("b sent IBM to %s; want s1, skilled by what a learned", got[0])
	}

	done(b, 0, "MSFT", 200*time.Millisecond, 4) // b goes on from a's record and publishes s1 again
	waitUntil(t, "a adopts b's later s1 résumé", func() bool { return near(a.Resumes()["s1"]["MSFT"], 5) })
	if res := a.Resumes()["s1"]; !near(res["IBM"], b.Resumes()["s1"]["IBM"]) {
		t.Errorf("a's s1 résumé %v; want b's %v (last writer wins)", res, b.Resumes()["s1"])
	}

	c, _ := sharedInstance(t, srv.Endpoint, "/r") // a restart: everything published comes back
	waitUntil(t, "a new instance starts with the published résumés", func() bool {
		res := c.Resumes()["s1"]
		return near(res["IBM"], b.Resumes()["s1"]["IBM"]) && near(res["MSFT"], 5)
	})
	c.mu.Lock()
	requests := c.workers["s1"].requests
	c.mu.Unlock()
	if requests != 8 {
		t.Errorf("a new instance's request count for s1 = %d; want 8, to which the skills refer", requests)
	}

	if _, err := srv.Client().Delete(context.Background(), "/r/resumes/s1"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Resume{a, b, c} {
		waitUntil(t, "s1 forgotten everywhere", func() bool { return len(r.Resumes()["s1"]) == 0 })
	}
}

// The stored record is JSON with the résumé and the skills, as the file.
func TestRecordInEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	a, _ := sharedInstance(t, srv.Endpoint, "/rec/")
	assign(a, servants(1, 4))
	done(a, 0, "IBM", 100*time.Millisecond, 4)
	cli := srv.Client()
	var raw []byte
	waitUntil(t, "s1's résumé in etcd", func() bool {
		r, err := cli.Get(context.Background(), "/rec/resumes/s1")
		if err != nil || len(r.Kvs) == 0 {
			return false
		}
		raw = r.Kvs[0].Value
		return true
	})
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.By != a.id || rec.Requests != 4 || !near(rec.Resume["IBM"], 10) || rec.Skills["IBM"] == nil || rec.Skills["IBM"].Seen != 4 {
		t.Errorf("record %s", raw)
	}
}

// config/resume/variance and history are applied live, a bad value is
// refused, and deleting the key restores the environment's value.
func TestSettingsFromEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	a, aLog := sharedInstance(t, srv.Endpoint, "/s")
	b, _ := sharedInstance(t, srv.Endpoint, "/s")
	cli := srv.Client()
	put := func(k, v string) {
		if _, err := cli.Put(context.Background(), "/s/config/resume/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	put("variance", "2.5")
	put("history", "50")
	for _, r := range []*Resume{a, b} {
		waitUntil(t, "variance 2.5 and history 50", func() bool {
			s := r.Settings()
			return s.Variance == 2.5 && s.History == 50 && s.MaxSkillAge == 500
		})
	}
	put("variance", "-1")
	waitUntil(t, "the bad variance logged", func() bool { return strings.Contains(aLog.String(), `variance="-1" not applied`) })
	if v := a.Settings().Variance; v != 2.5 {
		t.Errorf("variance %v after a bad value; want 2.5 kept", v)
	}
	if _, err := cli.Delete(context.Background(), "/s/config/resume/variance"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "variance back to the environment's", func() bool { return a.Settings().Variance == settings().Variance })
}

// etcd unreachable never blocks a decision or an observation, and the
// writes are retried: what was published while etcd was away reaches it
// when it is back.
func TestEtcdDownNeverBlocksDecisions(t *testing.T) {
	srv := etcdtest.Start(t)
	srv.Stop()
	a, aLog := sharedInstance(t, srv.Endpoint, "/down")
	start := time.Now()
	ss := servants(3, 4)
	for range 50 {
		assign(a, ss, "IBM", "MSFT")
		done(a, 0, "IBM", time.Millisecond, 4)
		for _, s := range ss {
			s.InFlight, s.Backlog = 0, 0
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("50 rounds and 200 observations took %v with etcd down; want no wait on etcd", took)
	}
	waitUntil(t, "the failing write logged", func() bool { return strings.Contains(aLog.String(), "cannot write résumés") })
	srv.Restart()
	cli := srv.Client()
	waitUntil(t, "s1's résumé written once etcd is back", func() bool {
		r, err := cli.Get(context.Background(), "/down/resumes/s1")
		return err == nil && len(r.Kvs) == 1
	})
}

// A store's client is created without waiting for etcd.
func TestStartStoreDoesNotWait(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cfg := settings()
	cfg.Etcd = []string{dead}
	start := time.Now()
	st, err := startStore(cfg, log.New(&syncBuf{}, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	st.subscribe(New(cfg))
	if took := time.Since(start); took > time.Second {
		t.Errorf("starting the store took %v with etcd unreachable", took)
	}
	st.close()
}

// MSERVE_ETCD turns the file off unless one is named.
func TestSettingsFromEnvWithEtcd(t *testing.T) {
	t.Setenv("MSERVE_ETCD", "h1:2379, h2:2379")
	t.Setenv("MSERVE_ETCD_PREFIX", "/x")
	t.Setenv("MSERVE_RESUME_FILE", "")
	s, err := settingsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Etcd, ",") != "h1:2379,h2:2379" || s.EtcdPrefix != "/x" || s.File != "" {
		t.Errorf("settings %+v", s)
	}
}
