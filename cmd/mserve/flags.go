package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/logging"
)

// envName returns the environment variable that sets the flag called name
// of the command whose flag set is called cmd: MSERVE_, then the
// sub-command's name if any (MSERVE_CALL_…), then the flag's name in upper
// case with '-' as '_'.
func envName(cmd, name string) string {
	prefix := "MSERVE_"
	if sub, ok := strings.CutPrefix(cmd, "mserve "); ok {
		prefix += strings.ToUpper(sub) + "_"
	}
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applyEnv sets every flag of fs that the command line did not set from
// its environment variable, if that is set: flags win over the environment.
// It returns the source of each flag's value ("flag", "env" or "default").
func applyEnv(fs *flag.FlagSet) (map[string]string, error) {
	src := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { src[f.Name] = "default" })
	fs.Visit(func(f *flag.Flag) { src[f.Name] = "flag" })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || src[f.Name] == "flag" {
			return
		}
		if v, ok := os.LookupEnv(envName(fs.Name(), f.Name)); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %v", envName(fs.Name(), f.Name), v, serr)
				return
			}
			src[f.Name] = "env"
		}
	})
	return src, err
}

// printConfig writes each flag's effective value and where it came from.
func printConfig(w io.Writer, fs *flag.FlagSet, src map[string]string) {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "print-config" {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		fmt.Fprintf(w, "%-14s %-22s %-8s %s\n", n, quoteIfEmpty(f.Value.String()), src[n], envName(fs.Name(), n))
	}
}

func quoteIfEmpty(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// usageFor returns a FlagSet usage function that prints head, then each
// flag with its environment variable.
func usageFor(fs *flag.FlagSet, head string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprint(w, head)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  -%s", f.Name)
			if name != "" {
				fmt.Fprintf(w, " %s", name)
			}
			fmt.Fprintf(w, "\n    \t%s", strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, " [$%s]\n", envName(fs.Name(), f.Name))
		})
	}
}

// stringList is a comma-separated list flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// pathList is a list of paths separated by the OS path-list separator, as
// in MSERVE_PLUGINS.
type pathList []string

func (l *pathList) String() string { return strings.Join(*l, string(os.PathListSeparator)) }

func (l *pathList) Set(v string) error {
	*l = nil
	for _, p := range filepath.SplitList(v) {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// parseFlags parses a sub-command's flags and applies its environment
// variables. It returns false with the exit status to use when the command
// must stop (help asked for, or bad usage, already reported).
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if _, err := applyEnv(fs); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
		return exitUsage, false
	}
	return exitOK, true
}

// logFlags are the logging settings of the long-running sub-commands
// (the daemon, launcher, announce): -log and -log-format.
type logFlags struct{ level, format string }

// register adds -log and -log-format to fs.
func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", logging.FormatAuto, "log format: auto (console on a terminal, JSON otherwise), console or json")
}

// logger builds the logger the flags ask for.
func (l *logFlags) logger() (*zap.Logger, error) { return logging.New(l.level, l.format) }
