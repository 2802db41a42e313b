// Package quickauth_test runs examples/quickauth end to end: it builds
// mserve and the quickstart servant, starts mserve with allow.txt, runs
// every command README.md shows and checks that each prints what README.md
// says it prints, that run.sh runs the same commands, and that the calls
// the allowlist refused never reached mserve's queue.
package quickauth_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/freeport"
)

// step is one command of README.md and the output it shows.
type step struct {
	line string   // the command as written after "$ "
	want []string // the output lines shown under it
}

func TestQuickauth(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mserve and runs it: skipped in -short mode")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme := readFile(t, "README.md")
	steps := consoleSteps(readme)
	vars := shellVars(readme)
	for _, v := range []string{"ALICE", "BOB", "URL"} {
		if vars[v] == "" {
			t.Fatalf("README.md sets no %s=… in its sh blocks", v)
		}
	}
	checkHashes(t, readFile(t, "allow.txt"), vars["ALICE"], vars["BOB"])
	checkRunSh(t, steps, readFile(t, "run.sh"))
	start := startCommand(t, readme)

	bin := t.TempDir()
	goBuild(t, root, filepath.Join(bin, "mserve"), "./cmd/mserve")
	goBuild(t, root, filepath.Join(bin, "quickstart-servant"), "./examples/quickstart")

	httpAddr, nativeAddr := freeAddr(t), freeAddr(t)
	vars["URL"] = "http://" + httpAddr
	d := startMserve(t, root, bin, start, httpAddr, nativeAddr)

	passed := 0 // calls that should have reached the queue
	for _, s := range steps {
		words, err := shellWords(s.line, vars)
		if err != nil {
			t.Fatalf("%s: %v", s.line, err)
		}
		var got []string
		var wantStatus, gotStatus int
		var method string
		switch {
		case len(words) >= 2 && words[0] == "mserve" && words[1] == "call":
			method = callMethod(words[2:])
			got, gotStatus = runMserve(t, root, bin, nativeAddr, words[1:])
			wantStatus = 0
			if hasPrefix(s.want, "error:") {
				wantStatus = 1
			}
			if wantStatus == 1 && hasPrefix(got, "info:") {
				t.Errorf("%s: a refused call has an info record, so it reached the queue:\n%s", s.line, strings.Join(got, "\n"))
			}
		case len(words) >= 2 && words[0] == "mserve":
			got, gotStatus = runMserve(t, root, bin, nativeAddr, words[1:])
		case len(words) >= 1 && words[0] == "curl":
			var body string
			body, method, gotStatus = curl(t, words[1:])
			got = []string{body}
			wantStatus = http.StatusOK
			if strings.Contains(s.want[0], `"code":-32001`) {
				wantStatus = http.StatusUnauthorized
			}
			if strings.Contains(s.want[0], `"error"`) && strings.Contains(body, `"info"`) {
				t.Errorf("%s: a refused call has an info record, so it reached the queue:\n%s", s.line, body)
			}
		default:
			t.Fatalf("README.md shows a command this test cannot run: %s", s.line)
		}
		if gotStatus != wantStatus {
			t.Errorf("%s: exit status %d, README.md implies %d\noutput:\n%s", s.line, gotStatus, wantStatus, strings.Join(got, "\n"))
		}
		if !equalOutput(got, s.want) {
			t.Errorf("%s:\n--- README.md shows:\n%s\n--- got:\n%s\n--- mserve's log:\n%s",
				s.line, strings.Join(s.want, "\n"), strings.Join(got, "\n"), d.log.String())
		}
		if method != "" && !strings.HasPrefix(method, "rpc.") && !hasPrefix(s.want, "error:") && !strings.Contains(s.want[0], `"error"`) {
			passed++
		}
	}

	// Refused calls are answered before the queue: the engine's totals,
	// logged when mserve stops, count only the calls that passed.
	d.stop(t)
	answered, ok := stoppedTotals(t, d.log.String())
	if answered != passed || ok != passed {
		t.Errorf("mserve's queue answered %d calls (%d ok); only the %d calls that passed the allowlist should have reached it\n%s",
			answered, ok, passed, d.log.String())
	}
	if want := fmt.Sprintf(`"msg":"mserve stopped","answered":%d,"ok":%d}`, passed, passed); !strings.Contains(readme, want) {
		t.Errorf("README.md should show the log line %s", want)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// consoleSteps returns the commands ("$ …" lines) of README.md's console
// blocks, each with the lines shown under it.
func consoleSteps(readme string) []step {
	var steps []step
	in := false
	for _, l := range strings.Split(readme, "\n") {
		switch {
		case !in && l == "```console":
			in = true
		case in && l == "```":
			in = false
		case in && strings.HasPrefix(l, "$ "):
			steps = append(steps, step{line: strings.TrimPrefix(l, "$ ")})
		case in && len(steps) > 0:
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, l)
		}
	}
	return steps
}

var assignRE = regexp.MustCompile(`^([A-Z_]+)=(\S+)$`)

// shellVars returns the NAME=value lines of README.md's sh blocks.
func shellVars(readme string) map[string]string {
	vars := map[string]string{}
	for _, l := range strings.Split(readme, "\n") {
		if m := assignRE.FindStringSubmatch(l); m != nil {
			vars[m[1]] = m[2]
		}
	}
	return vars
}

// startCommand returns the words of README.md's command that starts mserve.
func startCommand(t *testing.T, readme string) []string {
	t.Helper()
	for _, l := range strings.Split(readme, "\n") {
		if strings.HasPrefix(l, "bin/mserve -") {
			w, err := shellWords(l, nil)
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
	}
	t.Fatal("README.md has no line starting mserve (bin/mserve -…)")
	return nil
}

// checkHashes checks that allow.txt holds the hashes of the secrets the
// README publishes.
func checkHashes(t *testing.T, allow string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		sum := sha256.Sum256([]byte(s))
		if h := "sha256:" + hex.EncodeToString(sum[:]); !strings.Contains(allow, h) {
			t.Errorf("allow.txt does not hold %s, the hash of the README's secret %s", h, s)
		}
		if strings.Contains(allow, s) {
			t.Errorf("allow.txt holds the secret %s in clear", s)
		}
	}
}

// checkRunSh checks that run.sh runs the README's calls, in the same order.
func checkRunSh(t *testing.T, steps []step, runSh string) {
	t.Helper()
	var readme, script []string
	for _, s := range steps {
		if strings.HasPrefix(s.line, "mserve call ") || strings.HasPrefix(s.line, "curl ") {
			readme = append(readme, s.line)
		}
	}
	_, list, ok := strings.Cut(runSh, "<<'EOF'\n")
	list, _, ok2 := strings.Cut(list, "\nEOF\n")
	if !ok || !ok2 {
		t.Fatal("run.sh has no <<'EOF' … EOF list of commands")
	}
	for _, l := range strings.Split(list, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			script = append(script, l)
		}
	}
	if strings.Join(readme, "\n") != strings.Join(script, "\n") {
		t.Errorf("run.sh and README.md run different calls\n--- README.md:\n%s\n--- run.sh:\n%s",
			strings.Join(readme, "\n"), strings.Join(script, "\n"))
	}
}

func goBuild(t *testing.T, root, out, pkg string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	cmd := exec.Command(goTool, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// freeAddr returns a loopback address whose port was free a moment ago
// and that this process has not handed out before.
func freeAddr(t *testing.T) string { return freeport.Test(t) }

// env is the environment for the binaries: this process's without any
// MSERVE_ variable (so the caller's settings cannot change the outcome),
// plus extra.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MSERVE_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// syncBuffer collects a process's output safely while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type daemon struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	once sync.Once
	err  error
}

// startMserve starts mserve the way README.md does, on the given addresses
// and with the binaries in bin.
func startMserve(t *testing.T, root, bin string, words []string, httpAddr, nativeAddr string) *daemon {
	t.Helper()
	var args []string
	for i := 1; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "-http" || w == "-listen":
			args = append(args, w, map[string]string{"-http": httpAddr, "-listen": nativeAddr}[w])
			i++
		case strings.HasPrefix(w, "bin/"):
			args = append(args, filepath.Join(bin, strings.TrimPrefix(w, "bin/")))
		default:
			args = append(args, w)
		}
	}
	args = append([]string{"-log-format", "json"}, args...)
	d := &daemon{log: &syncBuffer{}}
	d.cmd = exec.Command(filepath.Join(bin, "mserve"), args...)
	d.cmd.Dir = root
	// MSERVE_ADMIN="": no admin listener on a fixed port, should this
	// mserve have one (harmless otherwise).
	d.cmd.Env = env("MSERVE_ADMIN=")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop sends SIGTERM and waits for mserve to exit (killing it after 20 s).
func (d *daemon) stop(t *testing.T) {
	d.once.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- d.cmd.Wait() }()
		select {
		case d.err = <-done:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			d.err = <-done
			t.Errorf("mserve did not stop within 20 s of SIGTERM\n%s", d.log.String())
		}
		if d.err != nil {
			t.Errorf("mserve exited with %v\n%s", d.err, d.log.String())
		}
	})
}

// runMserve runs the mserve binary with args and returns its output lines
// (stdout and stderr) and exit status.
func runMserve(t *testing.T, root, bin, nativeAddr string, args []string) ([]string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "mserve"), args...)
	cmd.Dir = root
	cmd.Env = env("MSERVE_CALL_ADDR=" + nativeAddr)
	out, err := cmd.CombinedOutput()
	status := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		status = exit.ExitCode()
	case err != nil:
		t.Fatalf("mserve %s: %v", strings.Join(args, " "), err)
	}
	return strings.Split(strings.TrimRight(string(out), "\n"), "\n"), status
}

// callMethod returns the METHOD of mserve call's arguments.
func callMethod(args []string) string {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-json":
		case strings.HasPrefix(a, "-") && !strings.Contains(a, "="):
			i++ // a flag with its value
		case strings.HasPrefix(a, "-"):
		default:
			return a
		}
	}
	return ""
}

// curl does what the README's curl command does (POST -d BODY to URL with
// -u or -H credentials) and returns the response body, the request's
// method and the HTTP status.
func curl(t *testing.T, args []string) (string, string, int) {
	t.Helper()
	var url, body, user string
	header := http.Header{}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-s":
		case "-u":
			i++
			user = args[i]
		case "-H":
			i++
			k, v, _ := strings.Cut(args[i], ":")
			header.Set(k, strings.TrimSpace(v))
		case "-d":
			i++
			body = args[i]
		default:
			if strings.HasPrefix(args[i], "-") {
				t.Fatalf("curl: this test does not know the flag %s", args[i])
			}
			url = args[i]
		}
	}
	var req struct {
		Method string `json:"method"`
	}
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatalf("curl -d %s: %v", body, err)
	}
	r, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header = header
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded") // as curl -d sends
	if user != "" {
		u, p, _ := strings.Cut(user, ":")
		r.SetBasicAuth(u, p)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), req.Method, resp.StatusCode
}

var (
	infoDurRE   = regexp.MustCompile(`\b(elapsed|execution|handler)=[0-9][0-9.hmsµn]*`)
	servantRE   = regexp.MustCompile(`\bservant=s[0-9]+\b`)
	jsonDurRE   = regexp.MustCompile(`"(elapsed_ns|execution_ns|handler_ns)":[0-9]+`)
	jsonServant = regexp.MustCompile(`"servant":"s[0-9]+"`)
)

// normalize blanks out what differs from run to run: timings and which
// servant ran a call.
func normalize(l string) string {
	if strings.HasPrefix(l, "info:") {
		l = infoDurRE.ReplaceAllString(l, "$1=D")
		l = servantRE.ReplaceAllString(l, "servant=S")
	}
	l = jsonDurRE.ReplaceAllString(l, `"$1":0`)
	return jsonServant.ReplaceAllString(l, `"servant":"S"`)
}

func equalOutput(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if normalize(got[i]) != normalize(want[i]) {
			return false
		}
	}
	return true
}

func hasPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// stoppedTotals reads the engine's totals from mserve's "mserve stopped"
// log record.
func stoppedTotals(t *testing.T, log string) (answered, ok int) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg      string `json:"msg"`
			Answered *int   `json:"answered"`
			OK       *int   `json:"ok"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "mserve stopped" && rec.Answered != nil && rec.OK != nil {
			return *rec.Answered, *rec.OK
		}
	}
	t.Fatalf("mserve logged no \"mserve stopped\" record with answered and ok counts, so what reached the queue cannot be checked\n%s", log)
	return 0, 0
}

// shellWords splits a command line as sh does for the forms README.md
// uses: blanks between words, '…' literal, "…" with \ escapes and $NAME,
// and $NAME outside quotes (vars holds the values; an unknown name is an
// error).
func shellWords(s string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	expand := func(i int) (int, error) { // s[i] == '$'
		j := i + 1
		for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || j > i+1 && s[j] >= '0' && s[j] <= '9') {
			j++
		}
		name := s[i+1 : j]
		v, ok := vars[name]
		if name == "" || !ok {
			return 0, fmt.Errorf("unknown variable $%s", name)
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated '")
			}
			cur.WriteString(s[i+1 : i+1+end])
			inWord = true
			i += end + 2
		case c == '"':
			inWord = true
			i++
			for {
				if i >= len(s) {
					return nil, errors.New(`unterminated "`)
				}
				if s[i] == '"' {
					i++
					break
				}
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\", s[i+1]) >= 0:
					cur.WriteByte(s[i+1])
					i += 2
				case s[i] == '$':
					var err error
					if i, err = expand(i); err != nil {
						return nil, err
					}
				default:
					cur.WriteByte(s[i])
					i++
				}
			}
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			inWord = true
			i += 2
		case c == '$':
			var err error
			if i, err = expand(i); err != nil {
				return nil, err
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
