package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

// TestConfigDocMatchesFlags fails when docs/configuration.md no longer says
// what the flags are: run `make docs` to regenerate it.
func TestConfigDocMatchesFlags(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	begin := bytes.Index(doc, []byte(configDocBegin))
	end := bytes.Index(doc, []byte(configDocEnd))
	if begin < 0 || end < begin {
		t.Fatalf("docs/configuration.md lacks the generated section between %q and %q", configDocBegin, configDocEnd)
	}
	var want bytes.Buffer
	writeConfigDoc(&want)
	got := string(doc[begin : end+len(configDocEnd)])
	if got != strings.TrimSpace(want.String()) {
		t.Errorf("docs/configuration.md is out of date with the flags; run make docs.\n--- want ---\n%s", want.String())
	}
}

// TestEveryFlagHasHelp checks each flag of each command says what it does.
func TestEveryFlagHasHelp(t *testing.T) {
	for _, fs := range commandFlagSets() {
		fs.VisitAll(func(f *flag.Flag) {
			if len(f.Usage) < 10 {
				t.Errorf("%s -%s: usage %q says too little", fs.Name(), f.Name, f.Usage)
			}
		})
	}
}
