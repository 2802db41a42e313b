package logging

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// captureStderr points os.Stderr at a file for the test (New reads it when
// called) and returns a function reading what was written so far.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = f
	t.Cleanup(func() {
		os.Stderr = old
		f.Close()
	})
	return func() string {
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
}

func TestLevels(t *testing.T) {
	tests := []struct {
		level string
		want  zapcore.Level
	}{
		{"debug", zapcore.DebugLevel},
		{"info", zapcore.InfoLevel},
		{"warn", zapcore.WarnLevel},
		{"error", zapcore.ErrorLevel},
		{"DEBUG", zapcore.DebugLevel},
		{"Info", zapcore.InfoLevel},
		{"WaRn", zapcore.WarnLevel},
		{"ERROR", zapcore.ErrorLevel},
	}
	for _, tt := range tests {
		t.Run(tt.level+" enables "+tt.want.String()+" and above only", func(t *testing.T) {
			read := captureStderr(t)
			log, err := New(tt.level, FormatJSON)
			if err != nil {
				t.Fatalf("New(%q): %v", tt.level, err)
			}
			for _, l := range []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel} {
				if got := log.Core().Enabled(l); got != (l >= tt.want) {
					t.Errorf("Enabled(%v) = %v", l, got)
				}
			}
			log.Debug("at-debug")
			log.Error("at-error")
			log.Sync()
			out := read()
			if !strings.Contains(out, "at-error") {
				t.Errorf("an error entry was not written: %q", out)
			}
			if got := strings.Contains(out, "at-debug"); got != (tt.want == zapcore.DebugLevel) {
				t.Errorf("debug entry written = %v at level %s: %q", got, tt.level, out)
			}
		})
	}
}

func TestBadLevelNamesTheAllowedOnes(t *testing.T) {
	// The documented levels are debug, info, warn and error (-log,
	// docs/configuration.md); anything else is refused with a message
	// naming them.
	for _, level := range []string{"verbose", "trace", "warnings", "1", " info", "fatal", "panic", "dpanic"} {
		t.Run(level, func(t *testing.T) {
			log, err := New(level, FormatJSON)
			if err == nil {
				t.Fatalf("New(%q) accepted the level (logger enables error: %v, fatal: %v)", level,
					log.Core().Enabled(zapcore.ErrorLevel), log.Core().Enabled(zapcore.FatalLevel))
			}
			for _, want := range []string{`"` + level + `"`, "debug", "info", "warn", "error"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestFormats(t *testing.T) {
	tests := []struct {
		name   string
		format string
		json   bool
	}{
		{"json writes one JSON object per line", FormatJSON, true},
		{"console writes human-readable lines", FormatConsole, false},
		// stderr is a file here, not a terminal: auto chooses JSON.
		{"auto on a non-terminal writes JSON", FormatAuto, true},
		{"empty means auto", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := captureStderr(t)
			log, err := New("info", tt.format)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			log.Info("hello there", zap.String("servant", "s1"))
			log.Sync()
			out := strings.TrimSpace(read())
			if strings.Count(out, "\n") != 0 {
				t.Fatalf("want one line, got %q", out)
			}
			var m map[string]any
			isJSON := json.Unmarshal([]byte(out), &m) == nil
			if isJSON != tt.json {
				t.Fatalf("output %q: JSON = %v, want %v", out, isJSON, tt.json)
			}
			if tt.json {
				if m["msg"] != "hello there" || m["level"] != "info" || m["servant"] != "s1" {
					t.Errorf("JSON entry = %v", m)
				}
				ts, _ := m["ts"].(string)
				if !strings.Contains(ts, "T") {
					t.Errorf("ts = %v, want an RFC 3339 time", m["ts"])
				}
				return
			}
			for _, want := range []string{"INFO", "hello there", `"servant": "s1"`} {
				if !strings.Contains(out, want) {
					t.Errorf("console line %q lacks %q", out, want)
				}
			}
		})
	}
}

func TestBadFormat(t *testing.T) {
	for _, format := range []string{"text", "JSON", "logfmt", "Console"} {
		t.Run(format, func(t *testing.T) {
			_, err := New("info", format)
			if err == nil {
				t.Fatalf("New accepted format %q", format)
			}
			for _, want := range []string{`"` + format + `"`, "auto", "console", "json"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}
