// Command boundedhash is a compiled dispatch plugin for mserve providing
// consistent hashing with bounded loads as "boundedhash". See README.md.
//
//	go build -o bin/boundedhash ./plugins/boundedhash
//	MSERVE_PLUGINS=bin/boundedhash MSERVE_ALGO=boundedhash mserve ...
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/plugin"
)

// Defaults: ε = 0.25 is the value Vimeo found best; a backlog lets a
// routing string wait for its servant rather than move at the first busy
// moment.
const (
	defaultEpsilon = 0.25
	defaultBacklog = 8
)

func main() {
	eps, backlog, err := settingsFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "boundedhash:", err)
		os.Exit(2)
	}
	plugin.Serve(plugin.Plugin{
		Algorithms: map[string]plugin.AlgorithmSpec{
			"boundedhash": {
				Summary: "consistent hashing of the routing string with loads bounded to (1+ε)×average",
				Backlog: backlog,
				New:     func() dispatch.Algorithm { return New(eps, backlog) },
			},
		},
	})
}

// settingsFromEnv reads MSERVE_BOUNDEDHASH_EPSILON and
// MSERVE_BOUNDEDHASH_BACKLOG.
func settingsFromEnv() (float64, int, error) {
	eps, backlog := defaultEpsilon, defaultBacklog
	if v := os.Getenv("MSERVE_BOUNDEDHASH_EPSILON"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return 0, 0, fmt.Errorf("MSERVE_BOUNDEDHASH_EPSILON=%q: want a number ≥ 0", v)
		}
		eps = f
	}
	if v := os.Getenv("MSERVE_BOUNDEDHASH_BACKLOG"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("MSERVE_BOUNDEDHASH_BACKLOG=%q: want a whole number ≥ 0", v)
		}
		backlog = n
	}
	return eps, backlog, nil
}
