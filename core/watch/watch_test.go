package watch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// interval is the polling interval of these tests: short, so that changes
// are seen quickly; the tests wait on channels, never on the clock.
const interval = 5 * time.Millisecond

// failsafe bounds a wait that only runs out when the code is broken.
const failsafe = 5 * time.Second

// quiet is how long a test watches for a callback that must not come: many
// polling intervals.
const quiet = 40 * interval

// watcher runs Paths over paths plus a sentinel file until the test ends
// and reports callbacks on a channel. Before returning it touches the
// sentinel until a callback comes: from then on the watcher has taken its
// first snapshot (which a change made earlier would have been folded into)
// and is polling, so every later change is one it must report.
func watcher(t *testing.T, paths []string, suffix string) <-chan struct{} {
	t.Helper()
	sentinel := filepath.Join(t.TempDir(), "sentinel")
	changed := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Paths(ctx, append(paths, sentinel), suffix, interval, func() { changed <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(failsafe):
			t.Error("Paths did not return after its context ended")
		}
	})
	deadline := time.After(failsafe)
	for i := 1; ; i++ {
		write(t, sentinel, "s")
		setMtime(t, sentinel, epoch.Add(time.Duration(i)*time.Second))
		select {
		case <-changed:
			// An earlier sentinel write may still be reported: wait until
			// the watcher has been quiet for a while.
			for {
				select {
				case <-changed:
				case <-time.After(quiet / 2):
					return changed
				}
			}
		case <-deadline:
			t.Fatal("the watcher never noticed its sentinel change")
		case <-time.After(50 * interval):
			// the change may have gone into the first snapshot: again
		}
	}
}

func waitChange(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(failsafe):
		t.Fatalf("no change noticed within %v after %s", failsafe, what)
	}
}

func noChange(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("a change was reported after %s, which must be ignored", what)
	case <-time.After(quiet):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replace replaces path's content and mtime in one step (a rename), so
// that no poll can see a half-written file.
func replace(t *testing.T, path, content string, mod time.Time) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "tmp")
	write(t, tmp, content)
	setMtime(t, tmp, mod)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// setMtime sets a file's modification time explicitly, so that a change
// of mtime does not depend on the file system's timestamp granularity.
func setMtime(t *testing.T, path string, mod time.Time) {
	t.Helper()
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

var epoch = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

func TestPathsNoticesChanges(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, dir string) (paths []string, suffix string)
		change func(t *testing.T, dir string)
	}{
		{
			name: "a watched file that appears",
			setup: func(t *testing.T, dir string) ([]string, string) {
				return []string{filepath.Join(dir, "mserve.allow")}, ""
			},
			change: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "mserve.allow"), "f()\n") },
		},
		{
			name: "a watched file whose size changes",
			setup: func(t *testing.T, dir string) ([]string, string) {
				p := filepath.Join(dir, "mserve.allow")
				write(t, p, "a")
				setMtime(t, p, epoch)
				return []string{p}, ""
			},
			change: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "mserve.allow")
				write(t, p, "ab")
				setMtime(t, p, epoch) // same mtime: only the size tells
			},
		},
		{
			name: "a watched file whose mtime changes with the same size",
			setup: func(t *testing.T, dir string) ([]string, string) {
				p := filepath.Join(dir, "mserve.allow")
				write(t, p, "a")
				setMtime(t, p, epoch)
				return []string{p}, ""
			},
			change: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "mserve.allow")
				write(t, p, "b")
				setMtime(t, p, epoch.Add(time.Second))
			},
		},
		{
			name: "a watched file that is removed",
			setup: func(t *testing.T, dir string) ([]string, string) {
				p := filepath.Join(dir, "mserve.allow")
				write(t, p, "a")
				return []string{p}, ""
			},
			change: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "mserve.allow")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "a file with the suffix created in a watched folder",
			setup: func(t *testing.T, dir string) ([]string, string) {
				return []string{dir}, ".lua"
			},
			change: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "even.lua"), "x") },
		},
		{
			name: "a file with the suffix modified in a watched folder",
			setup: func(t *testing.T, dir string) ([]string, string) {
				p := filepath.Join(dir, "even.lua")
				write(t, p, "x")
				setMtime(t, p, epoch)
				return []string{dir}, ".lua"
			},
			change: func(t *testing.T, dir string) { setMtime(t, filepath.Join(dir, "even.lua"), epoch.Add(time.Hour)) },
		},
		{
			name: "a file with the suffix removed from a watched folder",
			setup: func(t *testing.T, dir string) ([]string, string) {
				write(t, filepath.Join(dir, "even.lua"), "x")
				return []string{dir}, ".lua"
			},
			change: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "even.lua")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "an empty suffix counts every file in a folder",
			setup: func(t *testing.T, dir string) ([]string, string) {
				return []string{dir}, ""
			},
			change: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "anything.txt"), "x") },
		},
		{
			name: "a watched folder that appears with a matching file",
			setup: func(t *testing.T, dir string) ([]string, string) {
				return []string{filepath.Join(dir, "scripts")}, ".lua"
			},
			change: func(t *testing.T, dir string) {
				if err := os.Mkdir(filepath.Join(dir, "scripts"), 0o700); err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(dir, "scripts", "a.lua"), "x")
			},
		},
		{
			// core.LuaFiles loads a symlinked *.lua in a folder, so its
			// edits must be noticed as well.
			name: "the target of a symlinked file with the suffix in a watched folder is modified",
			setup: func(t *testing.T, dir string) ([]string, string) {
				target := filepath.Join(t.TempDir(), "real.lua")
				write(t, target, "x")
				setMtime(t, target, epoch)
				if err := os.Symlink(target, filepath.Join(dir, "linked.lua")); err != nil {
					t.Skip("no symlinks here:", err)
				}
				return []string{dir}, ".lua"
			},
			change: func(t *testing.T, dir string) {
				target, err := os.Readlink(filepath.Join(dir, "linked.lua"))
				if err != nil {
					t.Fatal(err)
				}
				write(t, target, "xy")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			paths, suffix := tt.setup(t, dir)
			ch := watcher(t, paths, suffix)
			tt.change(t, dir)
			waitChange(t, ch, tt.name)
		})
	}
}

func TestPathsIgnores(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, dir string)
		change func(t *testing.T, dir string)
	}{
		{
			name:   "a file with another suffix created in the folder",
			change: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "notes.txt"), "x") },
		},
		{
			name:  "a file with another suffix modified in the folder",
			setup: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "notes.txt"), "x") },
			change: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "notes.txt"), "xyz")
				setMtime(t, filepath.Join(dir, "notes.txt"), epoch)
			},
		},
		{
			name: "a file with the suffix inside a sub-folder",
			setup: func(t *testing.T, dir string) {
				if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
					t.Fatal(err)
				}
			},
			change: func(t *testing.T, dir string) { write(t, filepath.Join(dir, "sub", "deep.lua"), "x") },
		},
		{
			name:   "a sub-folder whose name has the suffix",
			change: func(t *testing.T, dir string) { os.Mkdir(filepath.Join(dir, "dir.lua"), 0o700) },
		},
		{
			name: "a file rewritten with the same size and mtime",
			setup: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "a.lua"), "x")
				setMtime(t, filepath.Join(dir, "a.lua"), epoch)
			},
			change: func(t *testing.T, dir string) { replace(t, filepath.Join(dir, "a.lua"), "y", epoch) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			ch := watcher(t, []string{dir}, ".lua")
			tt.change(t, dir)
			noChange(t, ch, tt.name)
			// The watcher still works: a relevant change is noticed.
			write(t, filepath.Join(dir, "after.lua"), "x")
			waitChange(t, ch, "a relevant change after the ignored one")
		})
	}
}

func TestPathsReportsEachChangeOnce(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.lua")
	ch := watcher(t, []string{dir}, ".lua")
	for i, content := range []string{"1", "22", "333"} {
		replace(t, p, content, epoch.Add(time.Duration(i)*time.Second))
		waitChange(t, ch, "write "+content)
		if i == 2 {
			noChange(t, ch, "the last change was reported once")
		}
	}
}

func TestPathsReturnsWhenTheContextEnds(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
	}{
		{"with an interval", interval},
		{"with the default interval (zero)", 0},
		{"with a negative interval", -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				Paths(ctx, []string{t.TempDir()}, "", tt.interval, func() {})
			}()
			cancel()
			select {
			case <-done:
			case <-time.After(failsafe):
				t.Fatal("Paths did not return")
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.lua"), "aa")
	write(t, filepath.Join(dir, "b.txt"), "b")
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	write(t, filepath.Join(dir, "sub", "c.lua"), "c")
	single := filepath.Join(t.TempDir(), "single.allow")
	write(t, single, "abc")
	setMtime(t, single, epoch)

	tests := []struct {
		name   string
		paths  []string
		suffix string
		want   []string
	}{
		{"folder with suffix keeps matching files only", []string{dir}, ".lua", []string{filepath.Join(dir, "a.lua")}},
		{"folder without suffix keeps every file but no sub-folder", []string{dir}, "", []string{filepath.Join(dir, "a.lua"), filepath.Join(dir, "b.txt")}},
		{"a file path is kept whatever its suffix", []string{single}, ".lua", []string{single}},
		{"a missing path contributes nothing", []string{filepath.Join(dir, "missing")}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := snapshot(tt.paths, tt.suffix)
			if len(got) != len(tt.want) {
				t.Fatalf("snapshot = %v, want keys %v", got, tt.want)
			}
			for _, k := range tt.want {
				if _, ok := got[k]; !ok {
					t.Errorf("snapshot lacks %s: %v", k, got)
				}
			}
		})
	}
	t.Run("a file's stamp is its size and mtime", func(t *testing.T) {
		s := snapshot([]string{single}, "")[single]
		if s.size != 3 || !s.mod.Equal(epoch) {
			t.Errorf("stamp = %+v, want size 3 mtime %v", s, epoch)
		}
	})
}

func TestEqual(t *testing.T) {
	a := stamp{1, epoch}
	tests := []struct {
		name string
		x, y map[string]stamp
		want bool
	}{
		{"both empty", map[string]stamp{}, map[string]stamp{}, true},
		{"same", map[string]stamp{"f": a}, map[string]stamp{"f": a}, true},
		{"size differs", map[string]stamp{"f": a}, map[string]stamp{"f": {2, epoch}}, false},
		{"mtime differs", map[string]stamp{"f": a}, map[string]stamp{"f": {1, epoch.Add(1)}}, false},
		{"a file appeared", map[string]stamp{}, map[string]stamp{"f": a}, false},
		{"a file disappeared", map[string]stamp{"f": a}, map[string]stamp{}, false},
		{"renamed", map[string]stamp{"f": a}, map[string]stamp{"g": a}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := equal(tt.x, tt.y); got != tt.want {
				t.Errorf("equal = %v, want %v", got, tt.want)
			}
		})
	}
}
