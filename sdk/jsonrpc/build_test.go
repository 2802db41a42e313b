package jsonrpc

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// replaceInvalid returns s with each byte that is not part of valid UTF-8
// replaced by U+FFFD, which is what encoding/json and AppendString do.
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", `""`},
		{"plain", "proc1", `"proc1"`},
		{"quote", `a"b`, `"a\"b"`},
		{"backslash", `a\b`, `"a\\b"`},
		{"slash is not escaped", "a/b", `"a/b"`},
		{"newline, return, tab", "\n\r\t", `"\n\r\t"`},
		{"NUL", "\x00", `"\u0000"`},
		{"backspace and form feed use \\u", "\b\f", `"\u0008\u000c"`},
		{"unit separator", "\x1f", `"\u001f"`},
		{"DEL is not escaped", "\x7f", "\"\x7f\""},
		{"space is not escaped", " ", `" "`},
		{"UTF-8 passes through", "héllo 世界 😀", `"héllo 世界 😀"`},
		{"line separator passes through", "\u2028", "\"\u2028\""},
		{"valid U+FFFD passes through", "\uFFFD", "\"\uFFFD\""},
		{"invalid byte becomes U+FFFD", "a\xffb", `"a\ufffdb"`},
		{"truncated sequence becomes one U+FFFD per byte", "\xe2\x82", `"\ufffd\ufffd"`},
		{"encoded surrogate becomes U+FFFD per byte", "\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{"overlong encoding becomes U+FFFD per byte", "\xc0\xaf", `"\ufffd\ufffd"`},
		{"invalid byte at the end after escapes", "\"\n\xff", `"\"\n\ufffd"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendString(nil, tc.in))
			if got != tc.want {
				t.Fatalf("AppendString(%q) = %s, want %s", tc.in, got, tc.want)
			}
			var back string
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatalf("encoding/json rejects %s: %v", got, err)
			}
			if want := replaceInvalid(tc.in); back != want {
				t.Errorf("round trip through encoding/json = %q, want %q", back, want)
			}
		})
	}
}

func TestAppendStringAppends(t *testing.T) {
	dst := []byte(`{"k":`)
	got := string(AppendString(dst, "v\x01"))
	if got != `{"k":"v\u0001"` {
		t.Errorf("got %s", got)
	}
}

func TestAppendStringRoundTripsEveryByteAndRune(t *testing.T) {
	cases := []string{}
	for c := 0; c < 256; c++ {
		cases = append(cases, string([]byte{byte(c)}), "x"+string([]byte{byte(c)})+"y")
	}
	for _, r := range []rune{0x80, 0x7ff, 0x800, 0xfffd, 0xffff, 0x10000, 0x10ffff, 0xd7ff, 0xe000} {
		cases = append(cases, string(r))
	}
	for _, s := range cases {
		out := AppendString(nil, s)
		if !json.Valid(out) || !Valid(out) {
			t.Fatalf("AppendString(%q) = %s is not valid JSON", s, out)
		}
		var back string
		if err := json.Unmarshal(out, &back); err != nil || back != replaceInvalid(s) {
			t.Fatalf("AppendString(%q) = %s decodes to %q (%v)", s, out, back, err)
		}
		if u, err := Unquote(out); err != nil || u != back {
			t.Fatalf("Unquote(%s) = %q, %v; encoding/json gives %q", out, u, err, back)
		}
	}
}

func TestAppendID(t *testing.T) {
	tests := []struct {
		name string
		id   uint64
		want string
	}{
		{"zero", 0, "0"},
		{"small", 17, "17"},
		{"largest", math.MaxUint64, "18446744073709551615"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(AppendID([]byte("x"), tc.id)); got != "x"+tc.want {
				t.Errorf("AppendID = %s, want x%s", got, tc.want)
			}
		})
	}
}

func TestAppendRequest(t *testing.T) {
	tests := []struct {
		name   string
		id     []byte
		method string
		params []byte
		want   string
	}{
		{"call with params", []byte("17"), "proc1", []byte(`["IBM"]`), `{"jsonrpc":"2.0","id":17,"method":"proc1","params":["IBM"]}`},
		{"params forwarded byte for byte", []byte(`"a"`), "f", []byte(`{ "x" : [1,  2] }`), `{"jsonrpc":"2.0","id":"a","method":"f","params":{ "x" : [1,  2] }}`},
		{"notification without params", nil, "tick", nil, `{"jsonrpc":"2.0","method":"tick"}`},
		{"null id", []byte("null"), "f", nil, `{"jsonrpc":"2.0","id":null,"method":"f"}`},
		{"method is escaped", []byte("1"), "a\"b\n", []byte(`[]`), `{"jsonrpc":"2.0","id":1,"method":"a\"b\n","params":[]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := AppendRequest(nil, tc.id, tc.method, tc.params)
			if string(out) != tc.want {
				t.Fatalf("AppendRequest = %s, want %s", out, tc.want)
			}
			var req Request
			if e := ParseRequest(out, &req); e != nil {
				t.Fatalf("ParseRequest rejects its own output: %v", e)
			}
			if req.Method != tc.method || string(req.ID) != string(tc.id) || (req.ID == nil) != (tc.id == nil) ||
				string(req.Params) != string(tc.params) || (req.Params == nil) != (tc.params == nil) {
				t.Errorf("round trip = %+v", req)
			}
		})
	}
}

func TestAppendResponse(t *testing.T) {
	tests := []struct {
		name                     string
		id, result, errObj, info []byte
		want                     string
	}{
		{"result", []byte("1"), []byte(`{"a": [1, 2]}`), nil, nil, `{"jsonrpc":"2.0","id":1,"result":{"a": [1, 2]}}`},
		{"nil id writes null", nil, []byte(`1`), nil, nil, `{"jsonrpc":"2.0","id":null,"result":1}`},
		{"nil result writes null", []byte(`"x"`), nil, nil, nil, `{"jsonrpc":"2.0","id":"x","result":null}`},
		{"error wins over result", []byte("2"), []byte("1"), []byte(`{"code":-32601,"message":"m"}`), nil, `{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"m"}}`},
		{"info appended", []byte("3"), []byte(`[]`), nil, []byte(`{"handler_ns":5}`), `{"jsonrpc":"2.0","id":3,"result":[],"info":{"handler_ns":5}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := AppendResponse(nil, tc.id, tc.result, tc.errObj, tc.info)
			if string(out) != tc.want {
				t.Fatalf("AppendResponse = %s, want %s", out, tc.want)
			}
			var resp Response
			if err := ParseResponse(out, &resp); err != nil {
				t.Fatalf("ParseResponse rejects its own output: %v", err)
			}
		})
	}
}

func TestAppendErrorAndDecodeError(t *testing.T) {
	tests := []struct {
		name string
		e    *Error
		want string
	}{
		{"plain", &Error{Code: InvalidParams, Message: "bad"}, `{"code":-32602,"message":"bad"}`},
		{"message escaped", &Error{Code: 1, Message: "say \"hi\"\n\x00\xff"}, `{"code":1,"message":"say \"hi\"\n\u0000\ufffd"}`},
		{"data appended raw", &Error{Code: -32000, Message: "m", Data: []byte(`{"x": 1}`)}, `{"code":-32000,"message":"m","data":{"x": 1}}`},
		{"empty data omitted", &Error{Code: 2, Message: "", Data: []byte{}}, `{"code":2,"message":""}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := AppendError(nil, tc.e)
			if string(out) != tc.want {
				t.Fatalf("AppendError = %s, want %s", out, tc.want)
			}
			back, err := DecodeError(out)
			if err != nil {
				t.Fatalf("DecodeError rejects AppendError's output: %v", err)
			}
			if back.Code != tc.e.Code || back.Message != replaceInvalid(tc.e.Message) || string(back.Data) != string(tc.e.Data) {
				t.Errorf("round trip = %+v, want %+v", back, tc.e)
			}
			full := AppendErrorResponse(nil, []byte("9"), tc.e, []byte(`{"servant":"s1"}`))
			want := `{"jsonrpc":"2.0","id":9,"error":` + tc.want + `,"info":{"servant":"s1"}}`
			if string(full) != want {
				t.Errorf("AppendErrorResponse = %s, want %s", full, want)
			}
			var resp Response
			if err := ParseResponse(full, &resp); err != nil || string(resp.Error) != tc.want {
				t.Errorf("ParseResponse(AppendErrorResponse) = %v, Error %s", err, resp.Error)
			}
		})
	}
	if got := string(AppendErrorResponse(nil, nil, Errorf(ParseError, "p"), nil)); got != `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"p"}}` {
		t.Errorf("AppendErrorResponse with nil id = %s", got)
	}
}

func TestErrorfAndError(t *testing.T) {
	e := Errorf(Timeout, "call %s took %dms", "f", 200)
	if e.Code != Timeout || e.Message != "call f took 200ms" {
		t.Errorf("Errorf = %+v", e)
	}
	if got, want := e.Error(), "call f took 200ms (code -32003)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = e // *Error is an error
	if err.Error() == "" {
		t.Error("empty error text")
	}
}

func TestCodeName(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{
		{ParseError, "parse_error"},
		{InvalidRequest, "invalid_request"},
		{MethodNotFound, "method_not_found"},
		{InvalidParams, "invalid_params"},
		{InternalError, "internal_error"},
		{Unauthorized, "unauthorized"},
		{Overloaded, "overloaded"},
		{Timeout, "timeout"},
		{ServantLost, "servant_lost"},
		{Unavailable, "unavailable"},
		{ShuttingDown, "shutting_down"},
		{Cancelled, "cancelled"},
		{TooLarge, "too_large"},
		{Conflict, "conflict"},
		{-32099, "error"},
		{0, "error"},
		{42, "error"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s_%d", tc.want, tc.code), func(t *testing.T) {
			if got := CodeName(tc.code); got != tc.want {
				t.Errorf("CodeName(%d) = %q, want %q", tc.code, got, tc.want)
			}
		})
	}
}

func TestErrorCodesAreInTheirRanges(t *testing.T) {
	for _, c := range []int{Unauthorized, Overloaded, Timeout, ServantLost, Unavailable, ShuttingDown, Cancelled, TooLarge} {
		if c < -32099 || c > -32000 {
			t.Errorf("mserve code %d (%s) outside -32099..-32000", c, CodeName(c))
		}
	}
}
