package allow

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mserve/mserve/sdk/fuzzseed"

	"github.com/mserve/mserve/sdk/jsonrpc"
)

func FuzzParseFile(f *testing.F) {
	fuzzseed.Add(f, "FuzzParseFile", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, src []byte) {
		nLines := bytes.Count(src, []byte("\n")) + 1
		file, err := ParseFile("fuzz.allow", src)
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error %v (%T) is not a *LineError", err, err)
			}
			// Line 0 for the anonymous line is a known bug, pinned by
			// TestParseFileRejects; keep fuzzing for others.
			known := le.Line == 0 && strings.HasPrefix(le.Err.Error(), "anonymous:")
			if (le.Line < 1 || le.Line > nLines) && !known {
				t.Fatalf("error %q at line %d, outside 1..%d", err, le.Line, nLines)
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range file.Funcs {
			if seen[e.Decl.Name] {
				t.Fatalf("function %q accepted twice", e.Decl.Name)
			}
			seen[e.Decl.Name] = true
			if e.Line < 1 || e.Line > nLines {
				t.Fatalf("function %q at line %d", e.Decl.Name, e.Line)
			}
		}
		lower := strings.ToLower(string(src))
		for _, u := range file.Users {
			if !validName(u.Name) {
				t.Fatalf("user name %q accepted", u.Name)
			}
			// The stored hash is one written in the file as sha256:HEX,
			// never the hash of something else written there.
			if !strings.Contains(lower, HashPrefix+hex.EncodeToString(u.Hash[:])) {
				t.Fatalf("user %q: hash %x is not written in the file", u.Name, u.Hash)
			}
		}
		p, err := Compile(file)
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("Compile error %v (%T) is not a *LineError", err, err)
			}
			return
		}
		if len(p.Functions()) != len(file.Funcs) || len(p.Users()) != len(file.Users) {
			t.Fatalf("policy has %d functions and %d users; the file %d and %d", len(p.Functions()), len(p.Users()), len(file.Funcs), len(file.Users))
		}
		for _, name := range append(p.Users(), Anonymous) {
			u := p.User(name)
			if u == nil {
				t.Fatalf("User(%q) = nil", name)
			}
			for fn := range u.allowed {
				if p.Func(fn) == nil {
					t.Fatalf("user %q is granted undeclared %q", name, fn)
				}
			}
		}
		if p.HasUsers() && file.Anonymous == nil && len(p.User(Anonymous).allowed) != 0 {
			t.Fatal("anonymous callers granted something by a file with users and no anonymous line")
		}
	})
}

// fuzzDecl covers every type and constraint Check enforces, an optional
// parameter and a condition. FuzzCheckArgs verifies what Check accepts
// against it with an oracle written from the declaration, not with decl.
const fuzzDecl = `f(a int 1..100, b float -1..1, c string len 1..8 /[a-z]+/, d symbol, e date 2020-01-01.., g list<int> len ..3, h bool, i duration ..1h, j string in ["x","y"] = "x") where a <= 50 || h`

var fuzzParams = []string{"a", "b", "c", "d", "e", "g", "h", "i", "j"}

// fuzzOptDecl has only optional parameters: any call may leave all out.
const fuzzOptDecl = `opt(k int 0..9 = 1, s symbol = "A")`

// optOracle is oracle for fuzzOptDecl.
func optOracle(in, out []byte) string {
	args, msg := forwarded(in, out, []string{"k", "s"})
	if msg != "" {
		return msg
	}
	if k, ok := exactInt(args["k"]); !ok || k < 0 || k > 9 {
		return fmt.Sprintf("k = %s is not an int in 0..9", args["k"])
	}
	if s, ok := str(args["s"]); !ok || len(s) < 1 || len(s) > 255 || strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != "" {
		return fmt.Sprintf("s = %s is not a symbol", args["s"])
	}
	return ""
}

func FuzzCheckArgs(f *testing.F) {
	fuzzseed.Add(f, "FuzzCheckArgs", func(b []byte) { f.Add(b) })
	funcs := []struct {
		fn     *Func
		oracle func(in, out []byte) string
	}{
		{compileFunc(f, fuzzDecl), oracle},
		{compileFunc(f, fuzzOptDecl), optOracle},
	}
	f.Fuzz(func(t *testing.T, params []byte) {
		for _, fc := range funcs {
			in := append([]byte(nil), params...)
			out, rpcErr := fc.fn.Check(params)
			if !bytes.Equal(in, params) {
				t.Fatalf("Check modified its input: %q became %q", in, params)
			}
			// Calls reach Check with params validated and trimmed by
			// jsonrpc.ParseRequest; other bytes must merely not panic.
			if !jsonrpc.Valid(params) || !bytes.Equal(bytes.TrimSpace(params), params) || len(params) == 0 {
				continue
			}
			if rpcErr != nil {
				if rpcErr.Code != jsonrpc.InvalidParams {
					t.Fatalf("%s: code %d", fc.fn.Decl.Name, rpcErr.Code)
				}
				continue
			}
			if msg := fc.oracle(in, out); msg != "" {
				t.Fatalf("%s: Check(%s) accepted it, forwarding %s, but %s", fc.fn.Decl.Name, in, out, msg)
			}
		}
	})
}

// forwarded checks the form of what Check forwards for the call params in
// to a function with the parameters names: JSON, every parameter given
// once, the arguments the caller sent unchanged. It returns the arguments
// by name, or what is wrong.
func forwarded(in, out []byte, names []string) (map[string][]byte, string) {
	if !json.Valid(out) {
		return nil, "the forwarded params are not JSON"
	}
	args := map[string][]byte{}
	if string(in) == "null" { // no arguments
		in = []byte("[]")
	}
	switch in[0] {
	case '[':
		var given, sent []json.RawMessage
		if json.Unmarshal(in, &given) != nil || json.Unmarshal(out, &sent) != nil {
			return nil, "the forwarded params are not an array"
		}
		if len(sent) != len(names) {
			return nil, fmt.Sprintf("%d arguments are forwarded", len(sent))
		}
		for i := range given {
			if !bytes.Equal(given[i], sent[i]) {
				return nil, fmt.Sprintf("argument %d changed from %s to %s", i, given[i], sent[i])
			}
		}
		for i, name := range names {
			args[name] = sent[i]
		}
	case '{':
		given, err := members(in)
		if err != "" {
			return nil, "input: " + err
		}
		sent, err := members(out)
		if err != "" {
			return nil, "forwarded: " + err
		}
		for k, v := range given {
			if !bytes.Equal(sent[k], v) {
				return nil, fmt.Sprintf("argument %q changed from %s to %s", k, v, sent[k])
			}
		}
		if len(sent) != len(names) {
			return nil, fmt.Sprintf("members %v are forwarded", sent)
		}
		for _, name := range names {
			if sent[name] == nil {
				return nil, fmt.Sprintf("%q is not forwarded", name)
			}
			args[name] = sent[name]
		}
	default:
		return nil, "params that are neither an array nor an object were accepted"
	}
	return args, ""
}

// oracle returns what is wrong with forwarding out for the call params in,
// or "" when every argument satisfies fuzzDecl.
func oracle(in, out []byte) string {
	args, msg := forwarded(in, out, fuzzParams)
	if msg != "" {
		return msg
	}
	a, ok := exactInt(args["a"])
	if !ok || a < 1 || a > 100 {
		return fmt.Sprintf("a = %s is not an int in 1..100", args["a"])
	}
	var b float64
	if !isNumber(args["b"]) || json.Unmarshal(args["b"], &b) != nil || b < -1 || b > 1 {
		return fmt.Sprintf("b = %s is not a float in -1..1", args["b"])
	}
	c, ok := str(args["c"])
	if n := utf8.RuneCountInString(c); !ok || n < 1 || n > 8 || strings.Trim(c, "abcdefghijklmnopqrstuvwxyz") != "" {
		return fmt.Sprintf("c = %s is not a string of 1 to 8 letters a-z", args["c"])
	}
	d, ok := str(args["d"])
	if !ok || len(d) < 1 || len(d) > 255 || strings.Trim(d, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != "" {
		return fmt.Sprintf("d = %s is not a symbol", args["d"])
	}
	e, ok := str(args["e"])
	if !ok || !isDate(e) || e < "2020-01-01" {
		return fmt.Sprintf("e = %s is not a date from 2020-01-01", args["e"])
	}
	var g []json.RawMessage
	if len(args["g"]) == 0 || args["g"][0] != '[' || json.Unmarshal(args["g"], &g) != nil || len(g) > 3 {
		return fmt.Sprintf("g = %s is not a list of at most 3", args["g"])
	}
	for _, el := range g {
		if _, ok := exactInt(el); !ok {
			return fmt.Sprintf("g = %s: element %s is not an int", args["g"], el)
		}
	}
	var h bool
	switch string(args["h"]) {
	case "true":
		h = true
	case "false":
	default:
		return fmt.Sprintf("h = %s is not a bool", args["h"])
	}
	i, ok := str(args["i"])
	dur, err := time.ParseDuration(i)
	if !ok || err != nil || dur > time.Hour {
		return fmt.Sprintf("i = %s is not a duration up to 1h", args["i"])
	}
	j, ok := str(args["j"])
	if !ok || (j != "x" && j != "y") {
		return fmt.Sprintf("j = %s is not x or y", args["j"])
	}
	if !(a <= 50 || h) {
		return fmt.Sprintf("the condition a <= 50 || h is false for a = %d, h = %v", a, h)
	}
	return ""
}

// members decodes a JSON object's members with encoding/json, refusing
// duplicate names.
func members(b []byte) (map[string][]byte, string) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, "not an object"
	}
	out := map[string][]byte{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err.Error()
		}
		k := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err.Error()
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Sprintf("member %q given twice", k)
		}
		out[k] = v
	}
	return out, ""
}

func isNumber(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

// str decodes a JSON string (never null) as encoding/json does.
func str(raw []byte) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// isDate reports whether s is a real calendar date written YYYY-MM-DD.
func isDate(s string) bool {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	for k, c := range []byte(s) {
		if k != 4 && k != 7 && (c < '0' || c > '9') {
			return false
		}
	}
	y, _ := strconv.Atoi(s[:4])
	m, _ := strconv.Atoi(s[5:7])
	d, _ := strconv.Atoi(s[8:])
	return m >= 1 && m <= 12 && d >= 1 && d <= time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// exactInt returns the value of the JSON number raw when it is exactly a
// whole number that fits in 64 bits, working on its decimal digits so that
// nothing is rounded: 1.0 and 1e2 are whole, 1.0000000000000001 is not.
func exactInt(raw []byte) (int64, bool) {
	s := string(raw)
	if !isNumber(raw) || !json.Valid(raw) {
		return 0, false
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	exp := 0
	if k := strings.IndexAny(s, "eE"); k >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(s[k+1:], "+"))
		if err != nil { // an exponent beyond int: decide on the digits alone
			e = math.MaxInt32
			if strings.HasPrefix(s[k+1:], "-") {
				e = math.MinInt32
			}
		}
		exp, s = e, s[:k]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= len(frac)
	for strings.HasSuffix(digits, "0") {
		digits = digits[:len(digits)-1]
		exp++
	}
	if digits == "" {
		return 0, true
	}
	if exp < 0 || len(digits)+exp > 19 {
		return 0, false
	}
	u, err := strconv.ParseUint(digits+strings.Repeat("0", exp), 10, 64)
	switch {
	case err != nil:
		return 0, false
	case neg && u <= 1<<63:
		return int64(-u), true // -(1<<63) wraps to MinInt64
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}

func TestExactInt(t *testing.T) {
	for raw, want := range map[string]int64{"0": 0, "-0": 0, "1": 1, "1.0": 1, "1e2": 100, "1E+2": 100, "100e-2": 1, "0.5e1": 5, "0e99999999999999999999": 0,
		"-9223372036854775808": math.MinInt64, "9223372036854775807": math.MaxInt64, "-92233720368547758.08e2": math.MinInt64} {
		if got, ok := exactInt([]byte(raw)); !ok || got != want {
			t.Errorf("exactInt(%s) = %d, %v; want %d", raw, got, ok, want)
		}
	}
	for _, raw := range []string{"1.5", "1.0000000000000001", "9223372036854775808", "-9223372036854775809", "1e19", "1e99999999999999999999", "1e-99999999999999999999", `"1"`, "true", "", "01"} {
		if got, ok := exactInt([]byte(raw)); ok {
			t.Errorf("exactInt(%s) = %d, want not an int", raw, got)
		}
	}
}

// TestOracleAcceptsGoodCalls keeps the oracle honest: calls that satisfy
// fuzzDecl pass it and Check alike.
func TestOracleAcceptsGoodCalls(t *testing.T) {
	fn := compileFunc(t, fuzzDecl)
	for _, p := range []string{
		`[50,0.5,"abc","IBM","2026-01-02",[1,2],false,"30m"]`,
		`[100,-1,"a","a.b-c_D","2020-01-01",[],true,"1h","y"]`,
		`{"j":"y","i":"-5s","h":true,"g":[1e2],"e":"2024-02-29","d":"X","c":"zz","b":1,"a":99}`,
		`[1, 1e-3 , "abcdefgh" ,"0", "2999-12-31" ,[-1, 0, 1.0], false, "0s"]`,
	} {
		out, err := fn.Check([]byte(p))
		if err != nil {
			t.Errorf("Check(%s) = %v", p, err)
			continue
		}
		if msg := oracle([]byte(p), out); msg != "" {
			t.Errorf("oracle refuses %s → %s: %s", p, out, msg)
		}
	}
	for _, bad := range []string{
		`[50,0.5,"abc","IBM","2026-01-02",[1,2],false,"30m","z"]`,
		`[51,0.5,"abc","IBM","2026-01-02",[1,2],false,"30m","x"]`,
		`[50,0.5,"abc","IBM","2026-02-30",[1,2],false,"30m","x"]`,
		`[50,0.5,"abc","IBM","2026-01-02",[1,2,3,4],false,"30m","x"]`,
		`[50,0.5,"abc","IBM","2026-01-02",[1.5],false,"30m","x"]`,
		`[50,0.5,"ab1","IBM","2026-01-02",[1],false,"30m","x"]`,
		`[50,0.5,"abc","I M","2026-01-02",[1],false,"30m","x"]`,
		`[50,0.5,"abc","IBM","2026-01-02",[1],false,"61m","x"]`,
		`[50,1.5,"abc","IBM","2026-01-02",[1],false,"1m","x"]`,
		`[50.5,0.5,"abc","IBM","2026-01-02",[1],false,"1m","x"]`,
	} {
		if msg := oracle([]byte(bad), []byte(bad)); msg == "" {
			t.Errorf("oracle accepts %s", bad)
		}
	}
}
