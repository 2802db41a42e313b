package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Markers around the generated part of docs/configuration.md.
const (
	configDocBegin = "<!-- BEGIN GENERATED: mserve help config -->"
	configDocEnd   = "<!-- END GENERATED -->"
)

// commandFlagSets returns every command's flag set, daemon first, for the
// configuration reference.
func commandFlagSets() []*flag.FlagSet {
	daemon, _ := newDaemonFlags()
	call, _ := callFlags()
	bench, _ := benchFlags()
	launcher, _ := launcherFlags()
	announce, _ := announceFlags()
	return []*flag.FlagSet{daemon, call, bench, launcher, announce}
}

// writeConfigDoc writes the configuration reference: one table per
// command, one row per flag with its environment variable and default.
func writeConfigDoc(w io.Writer) {
	fmt.Fprintln(w, configDocBegin)
	for _, fs := range commandFlagSets() {
		fmt.Fprintf(w, "\n### `%s`\n\n", fs.Name())
		fmt.Fprintln(w, "| flag | environment | default | meaning |")
		fmt.Fprintln(w, "|---|---|---|---|")
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if def == "" {
				def = `""`
			}
			usage := strings.ReplaceAll(f.Usage, "|", `\|`)
			fmt.Fprintf(w, "| `-%s` | `%s` | `%s` | %s |\n", f.Name, envName(fs.Name(), f.Name), def, usage)
		})
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, configDocEnd)
}
