// Package fuzzseed loads the seed corpora of mserve's fuzz targets, kept in
// the repository's testdata/fuzz-seeds/<target> folders, one input per
// file. It is for tests: a fuzz target calls Add before f.Fuzz.
package fuzzseed

import (
	"os"
	"path/filepath"
	"testing"
)

// Add calls add with the bytes of every file in testdata/fuzz-seeds/name,
// found by walking up from the test's working directory (its package's
// folder) to the folder holding go.mod. It fails the test when the folder
// is missing or holds no file: a fuzz target must not run without its
// seeds.
func Add(tb testing.TB, name string, add func([]byte)) {
	tb.Helper()
	dir, err := seedDir(name)
	if err != nil {
		tb.Fatalf("seed corpus %s: %v", name, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatalf("seed corpus: %v", err)
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		add(b)
		n++
	}
	if n == 0 {
		tb.Fatalf("no seeds in %s", dir)
	}
}

// seedDir finds testdata/fuzz-seeds/name under the module root.
func seedDir(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "testdata", "fuzz-seeds", name), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
