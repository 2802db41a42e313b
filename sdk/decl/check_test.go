package decl

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCheck runs each declared parameter over values it must accept and
// values it must refuse.
func TestCheck(t *testing.T) {
	tests := []struct {
		param  string   // "name type constraints", as inside a declaration
		accept []string // JSON values
		reject []string // JSON values, each with the problem expected in the error after '|'
	}{
		{"b bool", []string{"true", "false"}, []string{`"true"|not true or false`, "1|not true or false", "null|null is not"}},
		{"n int", []string{"0", "-7", "9223372036854775807", "1.0", "1e3"},
			[]string{"1.5|has a fraction", `"1"|not a whole number`, "1e30|does not fit in 64 bits", "true|not a whole number"}},
		{"n int 1..100", []string{"1", "100", "50"}, []string{"0|out of range 1..100", "101|out of range"}},
		{"n int ..0", []string{"-5", "0"}, []string{"1|out of range ..0"}},
		{"x float", []string{"0", "-1.5", "1e-9", "3"}, []string{`"1.5"|not a number`}},
		{"x float 0..1", []string{"0", "0.5", "1"}, []string{"-0.1|out of range", "1.0001|out of range"}},
		{"s string", []string{`""`, `"héllo"`, `"a\"b"`}, []string{"1|not a string", "[]|not a string"}},
		{"s string len 1..3", []string{`"a"`, `"héé"`}, []string{`""|length 0 is outside 1..3`, `"abcd"|length 4`}},
		{"s string /[a-z]+/", []string{`"abc"`}, []string{`"abc1"|does not match`, `"ABC"|does not match`, `"x; rm -rf /"|does not match`}},
		{`s string in ["buy","sell"]`, []string{`"buy"`, `"sell"`}, []string{`"hold"|not one of the allowed values`, `"BUY"|not one of`}},
		{"sym symbol", []string{`"IBM"`, `"BRK.A"`, `"0700"`, `"a_b-c"`},
			[]string{`"IBM; system \"rm -rf /\""|not a symbol`, `""|not a symbol`, `"a b"|not a symbol`, `"é"|not a symbol`, `1|not a symbol`}},
		{"sym symbol /[A-Z]{1,4}/", []string{`"IBM"`}, []string{`"IBMXX"|does not match`}},
		{"d date", []string{`"2026-01-02"`}, []string{`"2026-13-02"|not a date`, `"02/01/2026"|not a date`, `20260102|not a date`}},
		{"d date 2020-01-01..2030-12-31", []string{`"2020-01-01"`, `"2030-12-31"`}, []string{`"2019-12-31"|out of range`}},
		{"ts timestamp", []string{`"2026-01-02T09:30:00Z"`, `"2026-01-02T09:30:00.123+01:00"`}, []string{`"2026-01-02"|not an RFC 3339`, `"09:30"|not an RFC 3339`}},
		{"ttl duration 1s..1h", []string{`"1s"`, `"30m"`, `"1h"`}, []string{`"500ms"|out of range`, `"2h"|out of range`, `"soon"|not a duration`, `60|not a duration`}},
		{"blob bytes len ..4", []string{`"AAEC"`, `""`}, []string{`"AAECAwQ="|length 5`, `"!!"|not a base64`}},
		{"m dict", []string{`{}`, `{"a":[1]}`}, []string{`[]|not an object`}},
		{"m dict len ..1", []string{`{"a":1}`}, []string{`{"a":1,"b":2}|length 2`}},
		{"xs list<int>", []string{`[]`, `[1,2,3]`}, []string{`[1,"2"]|element 1`, `[1.5]|element 0`, `{}|not an array`}},
		{"xs list<int> len 1..2", []string{`[1]`}, []string{`[]|length 0`, `[1,2,3]|length 3`}},
		{"xss list<list<symbol>>", []string{`[["A"],[]]`}, []string{`[["A B"]]|element 0`}},
		{"v any", []string{"null", "1", `"s"`, `{"a":[null]}`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.param, func(t *testing.T) {
			f, err := Parse("f(" + tt.param + ")")
			if err != nil {
				t.Fatal(err)
			}
			p := &f.Params[0]
			for _, v := range tt.accept {
				if _, err := p.Check([]byte(v)); err != nil {
					t.Errorf("Check(%s) = %v, want accepted", v, err)
				}
			}
			for _, rv := range tt.reject {
				v, problem, _ := strings.Cut(rv, "|")
				_, err := p.Check([]byte(v))
				var ae *ArgError
				if !errors.As(err, &ae) {
					t.Errorf("Check(%s) = %v, want an *ArgError", v, err)
					continue
				}
				if ae.Param != p.Name || ae.Got != v || !strings.Contains(err.Error(), problem) {
					t.Errorf("Check(%s) = %q, want it to name %q, the value and %q", v, err, p.Name, problem)
				}
			}
		})
	}
}

func TestCheckValues(t *testing.T) {
	f := MustParse(`f(n int, x float, d date, ts timestamp, ttl duration, b bytes, xs list<int>, s symbol)`)
	args := []string{`7`, `1.5`, `"2026-01-02"`, `"2026-01-02T09:30:00Z"`, `"90s"`, `"AAE="`, `[1,2]`, `"IBM"`}
	want := []any{int64(7), 1.5, time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC),
		90 * time.Second, []byte{0, 1}, []any{int64(1), int64(2)}, "IBM"}
	for i := range f.Params {
		got, err := f.Params[i].Check([]byte(args[i]))
		if err != nil {
			t.Fatal(err)
		}
		if g, w := describeValue(got), describeValue(want[i]); g != w {
			t.Errorf("%s: value %s, want %s", f.Params[i].Name, g, w)
		}
	}
}

func describeValue(v any) string {
	if tm, ok := v.(time.Time); ok {
		return tm.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%T %v", v, v)
}

// TestConstraintSyntax checks that constraints parse where they make sense
// and are refused, with a clear message, where they do not.
func TestConstraintSyntax(t *testing.T) {
	accept := []string{
		`f(n int 1..10)`, `f(n int ..10, m int 5..)`, `f(x float -1.5..1e3)`,
		`f(s string len 1..64 /[a-z]+/)`, `f(s string /a\/b/)`, `f(side string in ["buy", "sell"] = "buy")`,
		`f(n int in [1,2,3])`, `f(d date 2020-01-01..)`, `f(t timestamp ..2030-01-01T00:00:00Z)`,
		`f(ttl duration 1ms..1h = "5s")`, `f(xs list<int> len ..100)`,
		`f(a date, b date) where a <= b`, `f(a int) idempotent where a > 0 && a < 10`,
	}
	for _, src := range accept {
		f, err := Parse(src)
		if err != nil {
			t.Errorf("Parse(%q) = %v", src, err)
			continue
		}
		// The canonical form parses back to itself.
		again, err := Parse(f.String())
		if err != nil || again.String() != f.String() {
			t.Errorf("round trip of %q: %q, %v", src, f.String(), err)
		}
	}
	reject := []struct{ src, want string }{
		{`f(s string 1..10)`, `a value range applies to int, float, date, timestamp and duration, not string`},
		{`f(n int len 1..10)`, `len applies to string, symbol, bytes, list and dict, not int`},
		{`f(n int /[0-9]+/)`, `a /regexp/ applies to string and symbol, not int`},
		{`f(n int 10..1)`, `empty range 10..1`},
		{`f(n int 1..b)`, `range end "b": not a whole number`},
		{`f(d date 2020-13-01..)`, `range start "2020-13-01": not a date`},
		{`f(s string /[a-z)`, `unterminated /regexp/`},
		{`f(s string /[a-z]+(/)`, `bad regexp`},
		{`f(s string in "buy")`, `in needs a JSON array`},
		{`f(n int in ["x"])`, `in: "x" is not a int`},
		{`f(n int in [])`, `in [] allows nothing`},
		{`f(xs list<int> in [[1]])`, `in applies to bool, int, float`},
		{`f(n int 1..10 = 11)`, `default 11 does not fit: expects int 1..10`},
		{`f(s string len ..2 = "abc")`, `default "abc" does not fit`},
		{`f(s string len -1..2)`, `a length cannot be negative`},
		{`f(a int) where`, `where needs a condition`},
		{`f(n int foo)`, `expected a constraint`},
	}
	for _, tt := range reject {
		_, err := Parse(tt.src)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.src, err, tt.want)
		}
	}
}
