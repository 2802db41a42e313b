package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGoalsBestLocality(t *testing.T) {
	tests := []struct {
		name, rows string
		want       []string // the algorithms of the "best locality" lines, in order
	}{
		{"one algorithm best at both", "zipf,even,0.25,1000\nzipf,resume,0.95,2000\nzipf,match,0.5,1500\n", []string{"resume"}},
		{"best hits and best rate apart", "zipf,even,0.25,1000\nzipf,resume,0.95,900\nzipf,warm,0.85,1400\n", []string{"resume", "warm"}},
		{"no even row", "zipf,resume,0.95,900\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			csv := "workload,algo,hit_rate,calls_per_s\n" + tt.rows
			if err := os.WriteFile(filepath.Join(dir, "locality.csv"), []byte(csv), 0o644); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, line := range strings.Split((&reporter{dir: dir}).goals(), "\n") {
				if strings.HasPrefix(line, "| best locality algorithm") {
					algo, _, _ := strings.Cut(strings.Split(line, " | ")[1], ":")
					got = append(got, algo)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("best locality lines for %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPeersCPUColumns(t *testing.T) {
	dir := t.TempDir()
	raw := "round,conc,target,requests,duration_us,errors,p50_us,p90_us,p99_us,max_us,balancer_cpu_us,backends_cpu_us\n" +
		"1,1,haproxy,1000,1000000,0,50,60,70,80,20000,30000\n" +
		"2,1,haproxy,1000,1000000,0,50,60,70,80,40000,50000\n"
	if err := os.WriteFile(filepath.Join(dir, "peers-raw.csv"), []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &reporter{dir: dir}
	r.aggregatePeers()
	rows := r.read("peers.csv")
	if len(rows) != 1 || rows[0]["balancer_cpu_us_per_req"] != "30.0" || rows[0]["backends_cpu_us_per_req"] != "40.0" {
		t.Fatalf("peers.csv rows %v; want 30.0 and 40.0 µs of CPU per request", rows)
	}
	if table := r.peers(); !strings.Contains(table, "30.0 µs / 40.0 µs") {
		t.Errorf("peers table lacks the CPU figures:\n%s", table)
	}

	// Results from before CPU was measured: no figure, not 0.
	old := "round,conc,target,requests,duration_us,errors,p50_us,p90_us,p99_us,max_us\n1,1,haproxy,1000,1000000,0,50,60,70,80\n"
	if err := os.WriteFile(filepath.Join(dir, "peers-raw.csv"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r.aggregatePeers()
	if table := r.peers(); !strings.Contains(table, "| – |") || strings.Contains(table, "µs / ") {
		t.Errorf("peers table for old results:\n%s", table)
	}
}
