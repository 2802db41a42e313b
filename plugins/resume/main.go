// Command resume is a compiled dispatch plugin for mserve providing
// zc.resumelb's résumé-based algorithm as "resume". See README.md.
//
//	go build -o bin/resume ./plugins/resume
//	MSERVE_PLUGINS=bin/resume MSERVE_ALGO=resume mserve ...
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

func main() {
	cfg, err := settingsFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "resume:", err)
		os.Exit(2)
	}
	var shared *store // résumés shared through etcd (shared.go)
	if len(cfg.Etcd) > 0 {
		if shared, err = startStore(cfg, nil); err != nil {
			fmt.Fprintln(os.Stderr, "resume:", err)
			os.Exit(2)
		}
	}
	plugin.Serve(plugin.Plugin{
		Algorithms: map[string]plugin.AlgorithmSpec{
			"resume": {
				Summary: "zc.resumelb: skilled servant with the best score per backlog, else least recently used",
				Backlog: 16,
				New: func() dispatch.Algorithm {
					r := New(cfg)
					if shared != nil {
						shared.subscribe(r)
					}
					return r
				},
			},
		},
	})
}

// settingsFromEnv reads MSERVE_RESUME_HISTORY, _VARIANCE, _BACKLOG_HISTORY,
// _UNSKILLED_SCORE and _FILE, and MSERVE_ETCD and MSERVE_ETCD_PREFIX (set
// by mserve -etcd): with etcd, résumés are shared there, and saved to a
// file only if MSERVE_RESUME_FILE names one.
func settingsFromEnv() (Settings, error) {
	s := DefaultSettings()
	ints := map[string]*int{"MSERVE_RESUME_HISTORY": &s.History, "MSERVE_RESUME_BACKLOG_HISTORY": &s.BacklogHistory}
	for k, p := range ints {
		if v := os.Getenv(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return s, fmt.Errorf("%s=%q: want a positive whole number", k, v)
			}
			*p = n
		}
	}
	floats := map[string]*float64{"MSERVE_RESUME_VARIANCE": &s.Variance, "MSERVE_RESUME_UNSKILLED_SCORE": &s.UnskilledScore}
	for k, p := range floats {
		if v := os.Getenv(k); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return s, fmt.Errorf("%s=%q: want a positive number", k, v)
			}
			*p = f
		}
	}
	for _, e := range strings.Split(os.Getenv("MSERVE_ETCD"), ",") {
		if e = strings.TrimSpace(e); e != "" {
			s.Etcd = append(s.Etcd, e)
		}
	}
	s.EtcdPrefix = os.Getenv("MSERVE_ETCD_PREFIX")
	s.File = os.Getenv("MSERVE_RESUME_FILE")
	if s.File == "" && len(s.Etcd) > 0 {
		return s, nil // résumés live in etcd
	}
	if s.File == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		s.File = filepath.Join(dir, "mserve", "resumes.json")
	} else if s.File == "none" {
		s.File = ""
	}
	return s, nil
}
