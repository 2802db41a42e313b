package jsonrpc

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// nest returns depth arrays around inner, e.g. nest(2, "1") = "[[1]]".
func nest(depth int, inner string) string {
	return strings.Repeat("[", depth) + inner + strings.Repeat("]", depth)
}

// nestObj returns depth objects around inner, e.g. nestObj(1, "1") = `{"a":1}`.
func nestObj(depth int, inner string) string {
	return strings.Repeat(`{"a":`, depth) + inner + strings.Repeat("}", depth)
}

func TestValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
		deep bool // encoding/json has no depth limit, so it disagrees on purpose
	}{
		// literals
		{"true", `true`, true, false},
		{"false", `false`, true, false},
		{"null", `null`, true, false},
		{"truncated literal tru", `tru`, false, false},
		{"misspelled literal nul", `nul1`, false, false},
		{"capitalised True", `True`, false, false},
		{"literal followed by letters", `nullx`, false, false},
		// numbers
		{"zero", `0`, true, false},
		{"negative zero", `-0`, true, false},
		{"integer", `12345`, true, false},
		{"fraction", `1.5`, true, false},
		{"exponent", `1e10`, true, false},
		{"capital exponent with plus", `1E+2`, true, false},
		{"negative fraction with negative exponent", `-1.0e-3`, true, false},
		{"leading zero", `01`, false, false},
		{"negative leading zero", `-01`, false, false},
		{"bare minus", `-`, false, false},
		{"leading plus", `+1`, false, false},
		{"trailing decimal point", `1.`, false, false},
		{"leading decimal point", `.5`, false, false},
		{"empty exponent", `1e`, false, false},
		{"exponent sign without digits", `1e+`, false, false},
		{"hex", `0x1`, false, false},
		{"NaN", `NaN`, false, false},
		{"Infinity", `Infinity`, false, false},
		{"minus Infinity", `-Infinity`, false, false},
		// strings
		{"empty string", `""`, true, false},
		{"all simple escapes", `"\" \\ \/ \b \f \n \r \t"`, true, false},
		{"unicode escape", `"\u00e9\u00E9"`, true, false},
		{"surrogate pair escape", `"\ud83d\ude00"`, true, false},
		{"lone surrogate escape is still valid syntax", `"\ud800"`, true, false},
		{"short unicode escape", `"\u12"`, false, false},
		{"non-hex unicode escape", `"\u12g4"`, false, false},
		{"unknown escape", `"\x41"`, false, false},
		{"escape at end of input", `"\`, false, false},
		{"raw newline in string", "\"a\nb\"", false, false},
		{"raw NUL in string", "\"a\x00b\"", false, false},
		{"raw unit separator in string", "\"\x1f\"", false, false},
		{"DEL is allowed raw", "\"\x7f\"", true, false},
		{"raw UTF-8", `"héllo, 世界 😀"`, true, false},
		{"invalid UTF-8 bytes are not a syntax error", "\"\xff\xfe\"", true, false},
		{"unterminated string", `"abc`, false, false},
		{"single quotes", `'a'`, false, false},
		// arrays
		{"empty array", `[]`, true, false},
		{"empty array with space", `[ ]`, true, false},
		{"array of mixed values", `[1,"a",true,null,{},[]]`, true, false},
		{"array trailing comma", `[1,]`, false, false},
		{"array leading comma", `[,1]`, false, false},
		{"array missing comma", `[1 2]`, false, false},
		{"unclosed array", `[1`, false, false},
		{"array closed by brace", `[1}`, false, false},
		// objects
		{"empty object", `{}`, true, false},
		{"object", `{"a":1,"b":[2],"c":{"d":null}}`, true, false},
		{"object with spaces everywhere", " { \"a\" : 1 , \"b\" : 2 } ", true, false},
		{"object duplicate keys are valid JSON", `{"a":1,"a":2}`, true, false},
		{"object trailing comma", `{"a":1,}`, false, false},
		{"object missing colon", `{"a" 1}`, false, false},
		{"object missing value", `{"a":}`, false, false},
		{"object number key", `{1:2}`, false, false},
		{"object bare key", `{a:2}`, false, false},
		{"object single value", `{"a"}`, false, false},
		{"unclosed object", `{"a":1`, false, false},
		{"object closed by bracket", `{"a":1]`, false, false},
		// whitespace and document shape
		{"empty input", ``, false, false},
		{"only whitespace", " \t\r\n", false, false},
		{"all four whitespace characters around a value", " \t\r\n1 \t\r\n", true, false},
		{"form feed is not whitespace", "\f1", false, false},
		{"vertical tab is not whitespace", "\v1", false, false},
		{"non-breaking space is not whitespace", "\u00a01", false, false},
		{"byte order mark is not allowed", "\ufeff1", false, false},
		{"two values", `1 2`, false, false},
		{"two objects", `{}{}`, false, false},
		{"trailing garbage", `[1]x`, false, false},
		// depth
		{"arrays nested exactly MaxDepth", nest(MaxDepth, "1"), true, false},
		{"arrays nested MaxDepth+1", nest(MaxDepth+1, "1"), false, true},
		{"objects nested exactly MaxDepth", nestObj(MaxDepth, "1"), true, false},
		{"objects nested MaxDepth+1", nestObj(MaxDepth+1, "1"), false, true},
		{"mixed nesting MaxDepth+1", nest(MaxDepth/2, nestObj(MaxDepth/2+1, "[]")), false, true},
		{"ten thousand open brackets", strings.Repeat("[", 10000), false, false},
		{"deep but unclosed below the limit", nest(MaxDepth, "1")[:MaxDepth+1], false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Valid([]byte(tc.in)); got != tc.want {
				t.Errorf("Valid(%.80q) = %v, want %v", tc.in, got, tc.want)
			}
			if std := json.Valid([]byte(tc.in)); std != tc.want && !tc.deep {
				t.Errorf("test table disagrees with encoding/json on %.80q: json.Valid = %v", tc.in, std)
			}
		})
	}
}

func TestValueEnd(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		start   int
		want    int
		wantErr string
	}{
		{"number at start", `12 rest`, 0, 2, ""},
		{"array then text", `[1, 2] rest`, 0, 6, ""},
		{"leading whitespace is skipped", "  \t{\"a\":1},", 0, 10, ""},
		{"from an offset", `x = "s" y`, 4, 7, ""},
		{"string with escaped quote", `"a\"b"!`, 0, 6, ""},
		{"invalid value", `@`, 0, 0, "unexpected '@', expected a value"},
		{"end of input", `   `, 0, 3, "unexpected end of input, expected a value"},
		{"unterminated array", `[1,`, 0, 3, "unexpected end of input, expected a value"},
		{"too deep", nest(MaxDepth+1, ""), 0, MaxDepth, "nesting too deep (limit 64)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ValueEnd([]byte(tc.in), tc.start)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ValueEnd(%q, %d) = %d, %v; want %d, nil", tc.in, tc.start, got, err, tc.want)
				}
				return
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("ValueEnd(%q) error = %v, want a *SyntaxError", tc.in, err)
			}
			if !strings.Contains(se.Msg, tc.wantErr) {
				t.Errorf("error %q does not say %q", se.Msg, tc.wantErr)
			}
			if se.Offset != tc.want {
				t.Errorf("error offset = %d, want %d", se.Offset, tc.want)
			}
		})
	}
}

func TestSyntaxErrorOffsetAndMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		offset  int
		wantMsg string
	}{
		{"bad literal", `[tru]`, 1, "invalid literal, expected true"},
		{"bad number", `[-x]`, 2, `invalid number "-x"`},
		{"missing fraction digit", `[1.x]`, 3, "expected digit after decimal point"},
		{"missing exponent digit", `[1ex]`, 3, "expected digit in exponent"},
		{"control character", "[\"a\tb\"]", 3, "control character 0x09 in string"},
		{"bad escape", `["\q"]`, 2, `invalid escape "\\q" in string`},
		{"bad unicode escape", `["\u00zz"]`, 2, `invalid \u escape in string`},
		{"unterminated string", `["abc`, 1, "unterminated string"},
		{"array separator", `[1;2]`, 2, `unexpected ';' in array, expected ',' or ']'`},
		{"object separator", `{"a":1;}`, 6, `unexpected ';' in object, expected ',' or '}'`},
		{"object key", `{1:1}`, 1, `unexpected '1' in object, expected a string key`},
		{"object colon", `{"a"=1}`, 4, `unexpected '=' after object key, expected ':'`},
		{"non-ASCII unexpected character is named", `[é]`, 1, `unexpected 'é', expected a value`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ValueEnd([]byte(tc.in), 0)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error = %v, want *SyntaxError", err)
			}
			if se.Offset != tc.offset || !strings.Contains(se.Msg, tc.wantMsg) {
				t.Errorf("got offset %d msg %q; want offset %d msg containing %q", se.Offset, se.Msg, tc.offset, tc.wantMsg)
			}
			wantText := "invalid JSON at byte "
			if !strings.HasPrefix(se.Error(), wantText) {
				t.Errorf("Error() = %q, want prefix %q", se.Error(), wantText)
			}
		})
	}
}

func TestMembers(t *testing.T) {
	type kv struct{ k, v string }
	tests := []struct {
		name    string
		in      string
		stopAt  int // stop after this many members (0: never)
		want    []kv
		wantErr string
	}{
		{"empty object", `{}`, 0, nil, ""},
		{"empty object with spaces", " { } ", 0, nil, ""},
		{"raw keys and values in order", `{"b": [1, 2] ,"a":"x\n","c":{"d":null}}`, 0,
			[]kv{{`"b"`, `[1, 2]`}, {`"a"`, `"x\n"`}, {`"c"`, `{"d":null}`}}, ""},
		{"escaped key stays raw", `{"\u0061":1}`, 0, []kv{{`"\u0061"`, `1`}}, ""},
		{"duplicate keys are both reported", `{"a":1,"a":2}`, 0, []kv{{`"a"`, `1`}, {`"a"`, `2`}}, ""},
		{"stop early", `{"a":1,"b":2,"c":3}`, 1, []kv{{`"a"`, `1`}}, ""},
		{"not an object", `[1]`, 0, nil, "expected an object"},
		{"empty input", ``, 0, nil, "expected an object"},
		{"data after object", `{"a":1} x`, 0, []kv{{`"a"`, `1`}}, "unexpected data after object"},
		{"data after empty object", `{} x`, 0, nil, "unexpected data after object"},
		{"truncated", `{"a":1,`, 0, []kv{{`"a"`, `1`}}, "expected a string key"},
		{"bad value", `{"a":tru}`, 0, nil, "invalid literal"},
		{"value nested exactly to the limit", `{"a":` + nest(MaxDepth-1, "") + `}`, 0,
			[]kv{{`"a"`, nest(MaxDepth-1, "")}}, ""},
		{"value nested past the limit", `{"a":` + nest(MaxDepth, "") + `}`, 0, nil, "nesting too deep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []kv
			err := Members([]byte(tc.in), func(k, v []byte) bool {
				got = append(got, kv{string(k), string(v)})
				return tc.stopAt == 0 || len(got) < tc.stopAt
			})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("members = %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("member %d = %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestElements(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		stopAt  int
		want    []string
		wantErr string
	}{
		{"empty array", `[]`, 0, nil, ""},
		{"empty array with spaces", " [ ] ", 0, nil, ""},
		{"raw elements in order", `[ 1 ,"a\"b", {"x" : 1},[ ],null]`, 0, []string{`1`, `"a\"b"`, `{"x" : 1}`, `[ ]`, `null`}, ""},
		{"stop early", `[1,2,3]`, 2, []string{`1`, `2`}, ""},
		{"not an array", `{}`, 0, nil, "expected an array"},
		{"data after array", `[1] 2`, 0, []string{`1`}, "unexpected data after array"},
		{"data after empty array", `[] 2`, 0, nil, "unexpected data after array"},
		{"trailing comma", `[1,]`, 0, []string{`1`}, "expected a value"},
		{"missing separator", `[1 2]`, 0, []string{`1`}, "expected ',' or ']'"},
		{"element nested past the limit", `[` + nest(MaxDepth, "") + `]`, 0, nil, "nesting too deep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := Elements([]byte(tc.in), func(v []byte) bool {
				got = append(got, string(v))
				return tc.stopAt == 0 || len(got) < tc.stopAt
			})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
				t.Errorf("elements = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUnquote(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr string
	}{
		{"empty string", `""`, "", ""},
		{"plain ASCII takes the fast path", `"proc1"`, "proc1", ""},
		{"simple escapes", `"\"\\\/\b\f\n\r\t"`, "\"\\/\b\f\n\r\t", ""},
		{"unicode escapes, both cases", `"\u0041\u00e9\u00E9"`, "Aéé", ""},
		{"escaped NUL", `"a\u0000b"`, "a\x00b", ""},
		{"raw UTF-8", `"héllo 世界"`, "héllo 世界", ""},
		{"surrogate pair", `"\ud83d\ude00"`, "😀", ""},
		{"surrogate pair upper case", `"\uD83D\uDE00!"`, "😀!", ""},
		{"lone high surrogate", `"\ud800"`, "\uFFFD", ""},
		{"lone low surrogate", `"\udc00x"`, "\uFFFDx", ""},
		{"high surrogate then ordinary escape", `"\ud800\u0041"`, "\uFFFDA", ""},
		{"two high surrogates", `"\ud800\ud800"`, "\uFFFD\uFFFD", ""},
		{"high surrogate then low surrogate then high", `"\ud83d\ude00\ud83d"`, "😀\uFFFD", ""},
		{"high surrogate then raw text", `"\ud83dabc"`, "\uFFFDabc", ""},
		{"invalid UTF-8 becomes U+FFFD per byte", "\"a\xffb\xc3\"", "a\uFFFDb\uFFFD", ""},
		{"encoded surrogate bytes become U+FFFD", "\"\xed\xa0\x80\"", "\uFFFD\uFFFD\uFFFD", ""},
		{"valid U+FFFD stays", "\"\xef\xbf\xbd\"", "\uFFFD", ""},
		{"DEL raw", "\"\x7f\"", "\x7f", ""},
		{"no quotes", `abc`, "", "expected a string"},
		{"lone quote", `"`, "", "expected a string"},
		{"empty input", ``, "", "expected a string"},
		{"missing closing quote", `"abc`, "", "expected a string"},
		{"escaped closing quote", `"abc\"`, "", "unterminated string"},
		{"quote inside", `"a"b"`, "", "unexpected data after string"},
		{"raw control character", "\"a\nb\"", "", "control character"},
		{"invalid escape", `"\a"`, "", "invalid escape"},
		{"short unicode escape", `"\u41"`, "", `invalid \u escape`},
		{"leading space", ` "a"`, "", "expected a string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Unquote([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Unquote(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Unquote(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			var std string
			if err := json.Unmarshal([]byte(tc.in), &std); err != nil || std != got {
				t.Errorf("encoding/json decodes %q as %q (err %v), Unquote gave %q", tc.in, std, err, got)
			}
		})
	}
}
