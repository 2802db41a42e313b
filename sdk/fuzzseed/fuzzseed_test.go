package fuzzseed

import (
	"testing"
)

func TestAddFindsTheRepositorysSeeds(t *testing.T) {
	n := 0
	Add(t, "FuzzReadFrame", func(b []byte) { n++ })
	if n == 0 {
		t.Error("no seed passed to add")
	}
}

func TestMissingCorpusFails(t *testing.T) {
	ft := &fakeTB{TB: t}
	func() {
		defer func() { recover() }()
		Add(ft, "NoSuchTarget", func([]byte) {})
	}()
	if !ft.failed {
		t.Error("a missing corpus did not fail the test")
	}
}

// fakeTB records Fatalf instead of stopping the real test.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(string, ...any) {
	f.failed = true
	panic("fatal")
}
