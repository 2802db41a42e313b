// Package watch notices when files change, by polling their size and
// modification time: portable, needs no extra dependency, and a reload a
// second late is fine for configuration.
package watch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultInterval is how often Paths polls when given no interval.
const DefaultInterval = time.Second

// stamp identifies one version of a file.
type stamp struct {
	size int64
	mod  time.Time
}

// snapshot maps every file under the watched paths to its stamp.
func snapshot(paths []string, suffix string) map[string]stamp {
	out := map[string]stamp{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue // gone: its absence is the change
		}
		if !fi.IsDir() {
			out[p] = stamp{fi.Size(), fi.ModTime()}
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), suffix) {
				continue
			}
			// Stat follows symbolic links, so that a change to a linked
			// file's target counts (Kubernetes mounts ConfigMap files as
			// links into a folder it swaps).
			full := filepath.Join(p, e.Name())
			if info, err := os.Stat(full); err == nil && info.Mode().IsRegular() {
				out[full] = stamp{info.Size(), info.ModTime()}
			}
		}
	}
	return out
}

// Paths calls onChange whenever a file among paths changes, appears or
// disappears. A path may be a file or a folder; in a folder, only files
// whose names end in suffix count ("" for all). It polls every interval
// (DefaultInterval when <= 0) until ctx ends.
func Paths(ctx context.Context, paths []string, suffix string, interval time.Duration, onChange func()) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	last := snapshot(paths, suffix)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := snapshot(paths, suffix)
		if !equal(last, now) {
			last = now
			onChange()
		}
	}
}

func equal(a, b map[string]stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, as := range a {
		if bs, ok := b[k]; !ok || bs != as {
			return false
		}
	}
	return true
}
