package jsonrpc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unsafe"
)

// rawEq compares raw JSON slices, telling nil (absent) from present.
func rawEq(got []byte, want string, present bool) bool {
	if !present {
		return got == nil
	}
	return got != nil && string(got) == want
}

// wantRaw is an expected raw member: absent when !ok.
type wantRaw struct {
	v  string
	ok bool
}

func present(v string) wantRaw { return wantRaw{v, true} }

var absent = wantRaw{}

func (w wantRaw) String() string {
	if !w.ok {
		return "<absent>"
	}
	return w.v
}

func show(b []byte) string {
	if b == nil {
		return "<absent>"
	}
	return string(b)
}

// aliases reports whether sub lies inside buf's memory.
func aliases(sub, buf []byte) bool {
	if len(sub) == 0 || len(buf) == 0 {
		return false
	}
	s, b := uintptr(unsafe.Pointer(&sub[0])), uintptr(unsafe.Pointer(&buf[0]))
	return s >= b && s+uintptr(len(sub)) <= b+uintptr(len(buf))
}

func TestParseRequestAccepts(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		method string
		id     wantRaw
		params wantRaw
		mserve wantRaw
	}{
		{"typical positional call", `{"jsonrpc":"2.0","id":17,"method":"proc1","params":["IBM"]}`,
			"proc1", present(`17`), present(`["IBM"]`), absent},
		{"named params keep their exact bytes", `{"jsonrpc":"2.0","method":"f","params":{ "a" : [1, 2.50e3],"b":"\u00e9" },"id":"x"}`,
			"f", present(`"x"`), present(`{ "a" : [1, 2.50e3],"b":"\u00e9" }`), absent},
		{"no params", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, "ping", present(`1`), absent, absent},
		{"empty params array", `{"jsonrpc":"2.0","id":1,"method":"f","params":[]}`, "f", present(`1`), present(`[]`), absent},
		{"empty params object", `{"jsonrpc":"2.0","id":1,"method":"f","params":{}}`, "f", present(`1`), present(`{}`), absent},
		{"notification has no id", `{"jsonrpc":"2.0","method":"log","params":["x"]}`, "log", absent, present(`["x"]`), absent},
		{"null id is not a notification", `{"jsonrpc":"2.0","id":null,"method":"f"}`, "f", present(`null`), absent, absent},
		{"string id", `{"jsonrpc":"2.0","id":"abc-1","method":"f"}`, "f", present(`"abc-1"`), absent, absent},
		{"string id with escapes stays raw", `{"jsonrpc":"2.0","id":"a\"b\u0063","method":"f"}`, "f", present(`"a\"b\u0063"`), absent, absent},
		{"negative fractional id stays raw", `{"jsonrpc":"2.0","id":-1.50e3,"method":"f"}`, "f", present(`-1.50e3`), absent, absent},
		{"zero id", `{"jsonrpc":"2.0","id":0,"method":"f"}`, "f", present(`0`), absent, absent},
		{"huge id stays raw", `{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"f"}`, "f", present(`123456789012345678901234567890`), absent, absent},
		{"members in any order", `{"params":[1],"method":"f","id":2,"jsonrpc":"2.0"}`, "f", present(`2`), present(`[1]`), absent},
		{"whitespace everywhere", " \r\n\t{ \"jsonrpc\" : \"2.0\" ,\n\"id\" :\t3 , \"method\" : \"f\" } \n", "f", present(`3`), absent, absent},
		{"unknown members are ignored", `{"jsonrpc":"2.0","id":1,"method":"f","extra":{"jsonrpc":1,"method":2},"x":[]}`, "f", present(`1`), absent, absent},
		{"escaped member names", `{"\u006asonrpc":"2.0","\u006dethod":"m","p\u0061rams":[1],"\u0069d":1,"ms\u0065rve":{}}`,
			"m", present(`1`), present(`[1]`), present(`{}`)},
		{"escaped jsonrpc version", `{"jsonrpc":"2\u002e0","id":1,"method":"f"}`, "f", present(`1`), absent, absent},
		{"escaped method value", `{"jsonrpc":"2.0","id":1,"method":"m\u00e9thode\/x"}`, "méthode/x", present(`1`), absent, absent},
		{"method with a surrogate pair", `{"jsonrpc":"2.0","id":1,"method":"\ud83d\ude00"}`, "😀", present(`1`), absent, absent},
		{"method with raw UTF-8", `{"jsonrpc":"2.0","id":1,"method":"größe"}`, "größe", present(`1`), absent, absent},
		{"reserved rpc. method is parsed like any other", `{"jsonrpc":"2.0","method":"rpc.cancel","params":[7]}`, "rpc.cancel", absent, present(`[7]`), absent},
		{"mserve extension", `{"jsonrpc":"2.0","id":1,"method":"sleep","params":[500],"mserve":{"timeout_ms":200}}`,
			"sleep", present(`1`), present(`[500]`), present(`{"timeout_ms":200}`)},
		{"params nested to the depth limit", `{"jsonrpc":"2.0","id":1,"method":"f","params":` + nest(MaxDepth-1, "1") + `}`,
			"f", present(`1`), present(nest(MaxDepth-1, "1")), absent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			var req Request
			if e := ParseRequest(in, &req); e != nil {
				t.Fatalf("ParseRequest(%s) failed: %v", tc.in, e)
			}
			if req.Method != tc.method {
				t.Errorf("Method = %q, want %q", req.Method, tc.method)
			}
			if !rawEq(req.ID, tc.id.v, tc.id.ok) {
				t.Errorf("ID = %s, want %s", show(req.ID), tc.id)
			}
			if !rawEq(req.Params, tc.params.v, tc.params.ok) {
				t.Errorf("Params = %s, want %s", show(req.Params), tc.params)
			}
			if !rawEq(req.Mserve, tc.mserve.v, tc.mserve.ok) {
				t.Errorf("Mserve = %s, want %s", show(req.Mserve), tc.mserve)
			}
			if req.IsNotification() != !tc.id.ok {
				t.Errorf("IsNotification() = %v, want %v", req.IsNotification(), !tc.id.ok)
			}
			for name, b := range map[string][]byte{"ID": req.ID, "Params": req.Params, "Mserve": req.Mserve} {
				if b != nil && !aliases(b, in) {
					t.Errorf("%s is a copy; it must alias the input buffer", name)
				}
			}
		})
	}
}

func TestParseRequestRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		code int
		msg  string  // substring the message must contain
		id   wantRaw // the id still reported so the error can be addressed
	}{
		// not JSON at all: ParseError
		{"empty body", ``, ParseError, "invalid JSON at byte 0: unexpected end of input", absent},
		{"only whitespace", "  \n", ParseError, "invalid JSON at byte 3: unexpected end of input", absent},
		{"plain text", `hello`, ParseError, `invalid JSON at byte 0: unexpected 'h'`, absent},
		{"truncated object", `{"jsonrpc":"2.0","id":1,"method":"f"`, ParseError, "unexpected end of input in object", absent},
		{"trailing comma", `{"jsonrpc":"2.0","id":1,"method":"f",}`, ParseError, "expected a string key", absent},
		{"garbage after the object", `{"jsonrpc":"2.0","id":1,"method":"f"} x`, ParseError, "invalid JSON at byte 38: unexpected data after the value", absent},
		{"two objects", `{"jsonrpc":"2.0","id":1,"method":"f"}{}`, ParseError, "at byte 37: unexpected data after the value", absent},
		{"single-quoted strings", `{'jsonrpc':'2.0'}`, ParseError, "expected a string key", absent},
		{"raw control character in method", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\tb\"}", ParseError, "control character", absent},
		{"invalid escape in key", `{"jsonrpc":"2.0","\q":1,"method":"f"}`, ParseError, "invalid escape", absent},
		{"leading zero id", `{"jsonrpc":"2.0","id":01,"method":"f"}`, ParseError, "expected ',' or '}'", absent},
		{"params nested past the depth limit", `{"jsonrpc":"2.0","id":1,"method":"f","params":` + nest(MaxDepth, "1") + `}`,
			ParseError, "nesting too deep (limit 64)", absent},
		{"ten thousand brackets", strings.Repeat("[", 10000), ParseError, "nesting too deep", absent},
		{"id is not reported when the body is not JSON", `{"id":7,"jsonrpc":"2.0","method":"f"`, ParseError, "end of input", absent},
		{"duplicate member followed by broken JSON is still a parse error",
			`{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"f",!}`, ParseError, "expected a string key", absent},
		{"duplicate id followed by truncation is still a parse error", `{"id":1,"id":2,"jsonrpc":`, ParseError, "end of input", absent},
		// JSON, but not a request: InvalidRequest
		{"array of numbers", `[1]`, InvalidRequest, "expected a JSON object", absent},
		{"number", `1`, InvalidRequest, "expected a JSON object", absent},
		{"string", `"x"`, InvalidRequest, "expected a JSON object", absent},
		{"null", ` null `, InvalidRequest, "expected a JSON object", absent},
		{"empty object", `{}`, InvalidRequest, `missing "jsonrpc": "2.0"`, absent},
		{"missing jsonrpc", `{"id":1,"method":"f"}`, InvalidRequest, `missing "jsonrpc"`, present(`1`)},
		{"jsonrpc 1.0", `{"jsonrpc":"1.0","id":1,"method":"f"}`, InvalidRequest, `"jsonrpc" must be "2.0", got "1.0"`, present(`1`)},
		{"jsonrpc as a number", `{"jsonrpc":2.0,"id":1,"method":"f"}`, InvalidRequest, `"jsonrpc" must be "2.0", got 2.0`, present(`1`)},
		{"jsonrpc number that looks like the string", `{"jsonrpc":12.03,"id":1,"method":"f"}`, InvalidRequest, `got 12.03`, present(`1`)},
		{"jsonrpc with a space", `{"jsonrpc":"2.0 ","id":1,"method":"f"}`, InvalidRequest, `got "2.0 "`, present(`1`)},
		{"jsonrpc null", `{"jsonrpc":null,"id":1,"method":"f"}`, InvalidRequest, `got null`, present(`1`)},
		{"long jsonrpc value is clipped", `{"jsonrpc":"` + strings.Repeat("x", 100) + `","id":1,"method":"f"}`, InvalidRequest, `got "` + strings.Repeat("x", 63) + "…", present(`1`)},
		{"missing method", `{"jsonrpc":"2.0","id":1}`, InvalidRequest, `missing "method"`, present(`1`)},
		{"method is a number", `{"jsonrpc":"2.0","id":1,"method":1}`, InvalidRequest, `"method" must be a string, got 1`, present(`1`)},
		{"method is null", `{"jsonrpc":"2.0","id":1,"method":null}`, InvalidRequest, `"method" must be a string, got null`, present(`1`)},
		{"method is an array", `{"jsonrpc":"2.0","id":1,"method":["f"]}`, InvalidRequest, `"method" must be a string, got ["f"]`, present(`1`)},
		{"method is empty", `{"jsonrpc":"2.0","id":1,"method":""}`, InvalidRequest, `"method" must not be empty`, present(`1`)},
		{"method name in different case", `{"jsonrpc":"2.0","id":1,"Method":"f"}`, InvalidRequest, `missing "method"`, present(`1`)},
		{"params is a string", `{"jsonrpc":"2.0","id":1,"method":"f","params":"IBM"}`, InvalidRequest, `"params" must be an array or an object, got "IBM"`, present(`1`)},
		{"params is a number", `{"jsonrpc":"2.0","id":1,"method":"f","params":3}`, InvalidRequest, `"params" must be an array or an object, got 3`, present(`1`)},
		{"params is null", `{"jsonrpc":"2.0","id":1,"method":"f","params":null}`, InvalidRequest, `"params" must be an array or an object, got null`, present(`1`)},
		{"params is true", `{"jsonrpc":"2.0","id":1,"method":"f","params":true}`, InvalidRequest, `got true`, present(`1`)},
		{"id is an object", `{"jsonrpc":"2.0","id":{"a":1},"method":"f"}`, InvalidRequest, `"id" must be a string, number or null, got {"a":1}`, absent},
		{"id is an array", `{"jsonrpc":"2.0","id":[1],"method":"f"}`, InvalidRequest, `"id" must be a string, number or null, got [1]`, absent},
		{"id is true", `{"jsonrpc":"2.0","id":true,"method":"f"}`, InvalidRequest, `got true`, absent},
		{"id is false", `{"jsonrpc":"2.0","id":false,"method":"f"}`, InvalidRequest, `got false`, absent},
		{"invalid id is dropped even when something else is wrong", `{"jsonrpc":"1.0","id":{},"method":"f"}`, InvalidRequest, `"jsonrpc" must be "2.0"`, absent},
		{"mserve is not an object", `{"jsonrpc":"2.0","id":1,"method":"f","mserve":[1]}`, InvalidRequest, `"mserve" must be an object, got [1]`, present(`1`)},
		{"duplicate method", `{"jsonrpc":"2.0","id":1,"method":"f","method":"g"}`, InvalidRequest, `duplicate member "method"`, present(`1`)},
		{"duplicate method, one escaped", `{"jsonrpc":"2.0","id":1,"method":"f","\u006dethod":"f"}`, InvalidRequest, `duplicate member "method"`, present(`1`)},
		{"duplicate jsonrpc", `{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"f"}`, InvalidRequest, `duplicate member "jsonrpc"`, present(`1`)},
		{"duplicate params", `{"jsonrpc":"2.0","id":1,"method":"f","params":[],"params":{}}`, InvalidRequest, `duplicate member "params"`, present(`1`)},
		{"duplicate id", `{"jsonrpc":"2.0","id":1,"method":"f","id":1}`, InvalidRequest, `duplicate member "id"`, present(`1`)},
		{"duplicate mserve", `{"jsonrpc":"2.0","id":1,"method":"f","mserve":{},"mserve":{}}`, InvalidRequest, `duplicate member "mserve"`, present(`1`)},
		{"first problem is reported", `{"jsonrpc":"1.0","method":"f","method":"g","id":1}`, InvalidRequest, `duplicate member "method"`, present(`1`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := Request{Method: "stale", ID: []byte("stale")}
			e := ParseRequest([]byte(tc.in), &req)
			if e == nil {
				t.Fatalf("ParseRequest(%.100s) accepted it: %+v", tc.in, req)
			}
			if e.Code != tc.code {
				t.Errorf("code = %d (%s), want %d (%s); message %q", e.Code, CodeName(e.Code), tc.code, CodeName(tc.code), e.Message)
			}
			if !strings.Contains(e.Message, tc.msg) {
				t.Errorf("message %q does not contain %q", e.Message, tc.msg)
			}
			wantPrefix := map[int]string{ParseError: "parse error: ", InvalidRequest: "invalid request: "}[tc.code]
			if !strings.HasPrefix(e.Message, wantPrefix) {
				t.Errorf("message %q does not start with %q", e.Message, wantPrefix)
			}
			if !rawEq(req.ID, tc.id.v, tc.id.ok) {
				t.Errorf("ID = %s, want %s", show(req.ID), tc.id)
			}
			if req.Method != "" {
				t.Errorf("Method = %q after a failed parse, want empty", req.Method)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		id      wantRaw
		result  wantRaw
		errObj  wantRaw
		info    wantRaw
		wantErr string
	}{
		{"result", `{"jsonrpc":"2.0","id":1,"result":{"sym":["IBM"], "px" : [1.5]}}`, present(`1`), present(`{"sym":["IBM"], "px" : [1.5]}`), absent, absent, ""},
		{"null result is a result", `{"jsonrpc":"2.0","id":"a","result":null}`, present(`"a"`), present(`null`), absent, absent, ""},
		{"error", `{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"nope"}}`, present(`2`), absent, present(`{"code":-32601,"message":"nope"}`), absent, ""},
		{"null id with error", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`, present(`null`), absent, present(`{"code":-32700,"message":"x"}`), absent, ""},
		{"info", `{"id":3,"info":{"route":"IBM","handler_ns":5},"result":[],"jsonrpc":"2.0"}`, present(`3`), present(`[]`), absent, present(`{"route":"IBM","handler_ns":5}`), ""},
		{"escaped member names", `{"\u006asonrpc":"2.0","\u0069d":4,"r\u0065sult":1,"\u0069nfo":{}}`, present(`4`), present(`1`), absent, present(`{}`), ""},
		{"unknown members ignored", `{"jsonrpc":"2.0","id":5,"result":true,"extra":[1,2]}`, present(`5`), present(`true`), absent, absent, ""},
		{"escaped version", `{"jsonrpc":"2\u002e0","id":6,"result":1}`, present(`6`), present(`1`), absent, absent, ""},
		{"missing jsonrpc", `{"id":1,"result":1}`, absent, absent, absent, absent, `invalid response: "jsonrpc" must be "2.0"`},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"result":1}`, absent, absent, absent, absent, `"jsonrpc" must be "2.0"`},
		{"version as number", `{"jsonrpc":2.0,"id":1,"result":1}`, absent, absent, absent, absent, `"jsonrpc" must be "2.0"`},
		{"missing id", `{"jsonrpc":"2.0","result":1}`, absent, absent, absent, absent, `missing "id"`},
		{"both result and error", `{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"x"}}`, absent, absent, absent, absent, `exactly one of "result" and "error"`},
		{"neither result nor error", `{"jsonrpc":"2.0","id":1}`, absent, absent, absent, absent, `exactly one of "result" and "error"`},
		{"error is a string", `{"jsonrpc":"2.0","id":1,"error":"boom"}`, absent, absent, absent, absent, `"error" must be an object`},
		{"error is null", `{"jsonrpc":"2.0","id":1,"error":null}`, absent, absent, absent, absent, `"error" must be an object`},
		{"info is an array", `{"jsonrpc":"2.0","id":1,"result":1,"info":[]}`, absent, absent, absent, absent, `"info" must be an object`},
		{"info is null", `{"jsonrpc":"2.0","id":1,"result":1,"info":null}`, absent, absent, absent, absent, `"info" must be an object`},
		{"not an object", `[{"jsonrpc":"2.0","id":1,"result":1}]`, absent, absent, absent, absent, "expected an object"},
		{"not JSON", `{"jsonrpc":"2.0","id":1,"result":}`, absent, absent, absent, absent, "invalid JSON at byte"},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"result":1}x`, absent, absent, absent, absent, "unexpected data after object"},
		{"too deep result", `{"jsonrpc":"2.0","id":1,"result":` + nest(MaxDepth, "") + `}`, absent, absent, absent, absent, "nesting too deep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			var resp Response
			err := ParseResponse(in, &resp)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseResponse error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseResponse failed: %v", err)
			}
			for _, c := range []struct {
				field string
				got   []byte
				want  wantRaw
			}{{"ID", resp.ID, tc.id}, {"Result", resp.Result, tc.result}, {"Error", resp.Error, tc.errObj}, {"Info", resp.Info, tc.info}} {
				if !rawEq(c.got, c.want.v, c.want.ok) {
					t.Errorf("%s = %s, want %s", c.field, show(c.got), c.want)
				}
				if c.got != nil && !aliases(c.got, in) {
					t.Errorf("%s is a copy; it must alias the input buffer", c.field)
				}
			}
		})
	}
}

func TestParseResponseSyntaxErrorType(t *testing.T) {
	var resp Response
	err := ParseResponse([]byte(`{"jsonrpc":"2.0","id":1,"result":tru}`), &resp)
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("error = %v (%T), want a *SyntaxError", err, err)
	}
	if se.Offset != 33 {
		t.Errorf("Offset = %d, want 33 (the bad literal)", se.Offset)
	}
}

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		code    int
		msg     string
		data    wantRaw
		wantErr string
	}{
		{"code and message", `{"code":-32601,"message":"method not found"}`, MethodNotFound, "method not found", absent, ""},
		{"positive code", `{"code":42,"message":"x"}`, 42, "x", absent, ""},
		{"data is kept raw", `{"code":-32000,"message":"m","data":{"a": [1, 2]}}`, -32000, "m", present(`{"a": [1, 2]}`), ""},
		{"escaped message", `{"message":"caf\u00e9 \"q\"\n","code":1}`, 1, "café \"q\"\n", absent, ""},
		{"escaped member names", `{"\u0063ode":7,"m\u0065ssage":"x","d\u0061ta":null}`, 7, "x", present(`null`), ""},
		{"unknown members ignored", `{"code":1,"message":"x","extra":true}`, 1, "x", absent, ""},
		{"empty message", `{"code":1,"message":""}`, 1, "", absent, ""},
		{"missing code", `{"message":"x"}`, 0, "", absent, `needs an integer "code" and a string "message"`},
		{"missing message", `{"code":1}`, 0, "", absent, `needs an integer "code" and a string "message"`},
		{"message is a number", `{"code":1,"message":2}`, 0, "", absent, `a string "message"`},
		{"code is fractional", `{"code":1.5,"message":"x"}`, 0, "", absent, "code 1.5 is not an integer"},
		{"code has an exponent", `{"code":1e3,"message":"x"}`, 0, "", absent, "code 1e3 is not an integer"},
		{"code is a string", `{"code":"1","message":"x"}`, 0, "", absent, `code "1" is not an integer`},
		{"code overflows", `{"code":99999999999999999999999,"message":"x"}`, 0, "", absent, "is not an integer"},
		{"not an object", `[1]`, 0, "", absent, "expected an object"},
		{"not JSON", `{"code":1,`, 0, "", absent, "invalid JSON"},
		{"nil input", ``, 0, "", absent, "expected an object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			e, err := DecodeError(in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("DecodeError = %v, %v; want error containing %q", e, err, tc.wantErr)
				}
				if e != nil {
					t.Errorf("DecodeError returned %v together with an error", e)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeError failed: %v", err)
			}
			if e.Code != tc.code || e.Message != tc.msg {
				t.Errorf("got code %d message %q, want %d %q", e.Code, e.Message, tc.code, tc.msg)
			}
			if !rawEq(e.Data, tc.data.v, tc.data.ok) {
				t.Errorf("Data = %s, want %s", show(e.Data), tc.data)
			}
			if e.Data != nil && aliases(e.Data, in) {
				t.Errorf("Data aliases the input; it must be a copy")
			}
		})
	}
}

func TestIsBatch(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"array", `[{"jsonrpc":"2.0"}]`, true},
		{"array after whitespace", " \r\n\t[", true},
		{"empty array", `[]`, true},
		{"object", `{"jsonrpc":"2.0"}`, false},
		{"empty input", ``, false},
		{"only whitespace", "   ", false},
		{"string holding a bracket", `"["`, false},
		{"garbage before bracket", `x[`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsBatch([]byte(tc.in)); got != tc.want {
				t.Errorf("IsBatch(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestSplitBatch(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		msg  string // non-empty: a ParseError containing this is expected
	}{
		{"two requests", `[{"jsonrpc":"2.0","id":1,"method":"a"}, {"jsonrpc":"2.0","method":"b"}]`,
			[]string{`{"jsonrpc":"2.0","id":1,"method":"a"}`, `{"jsonrpc":"2.0","method":"b"}`}, ""},
		{"non-objects are passed through", `[1, "x" ,null,[ ]]`, []string{`1`, `"x"`, `null`, `[ ]`}, ""},
		{"empty batch yields nothing", `[]`, nil, ""},
		{"empty batch with spaces", " [ \n ] ", nil, ""},
		{"nested batch is one element", `[[{"a":1}]]`, []string{`[{"a":1}]`}, ""},
		{"truncated", `[{"jsonrpc":"2.0","method":"a"},`, nil, "parse error: invalid JSON at byte 32: unexpected end of input"},
		{"trailing comma", `[1,]`, nil, "at byte 3: unexpected ']', expected a value"},
		{"missing separator", `[1 2]`, nil, "at byte 3: unexpected '2' in array"},
		{"data after the batch", `[1] x`, nil, "at byte 4: unexpected data after the value"},
		{"element nested too deep", `[` + nest(MaxDepth, "") + `]`, nil, "nesting too deep"},
		{"broken element", `[{"a":}]`, nil, "at byte 6: unexpected '}', expected a value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			e := SplitBatch([]byte(tc.in), func(el []byte) { got = append(got, string(el)) })
			if tc.msg != "" {
				// fn may have seen elements before the error; callers discard them.
				if e == nil || e.Code != ParseError || !strings.Contains(e.Message, tc.msg) {
					t.Fatalf("SplitBatch = %v, want ParseError containing %q", e, tc.msg)
				}
				return
			}
			if e != nil {
				t.Fatalf("SplitBatch failed: %v", e)
			}
			if len(got) != len(tc.want) || strings.Join(got, "\x00") != strings.Join(tc.want, "\x00") {
				t.Errorf("elements = %q, want %q", got, tc.want)
			}
			var req Request
			for _, el := range got {
				if el[0] != '{' {
					if e := ParseRequest([]byte(el), &req); e == nil || e.Code != InvalidRequest {
						t.Errorf("ParseRequest(%s) = %v, want InvalidRequest for a non-object element", el, e)
					}
				}
			}
		})
	}
}

func TestParseRequestReusesNothingFromPreviousCall(t *testing.T) {
	var req Request
	if e := ParseRequest([]byte(`{"jsonrpc":"2.0","id":1,"method":"f","params":[1],"mserve":{}}`), &req); e != nil {
		t.Fatal(e)
	}
	if e := ParseRequest([]byte(`{"jsonrpc":"2.0","method":"g"}`), &req); e != nil {
		t.Fatal(e)
	}
	if req.ID != nil || req.Params != nil || req.Mserve != nil || req.Method != "g" {
		t.Errorf("fields leaked from the previous parse: %+v", req)
	}
	var resp Response
	if err := ParseResponse([]byte(`{"jsonrpc":"2.0","id":1,"result":1,"info":{}}`), &resp); err != nil {
		t.Fatal(err)
	}
	if err := ParseResponse([]byte(`{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"x"}}`), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Result != nil || resp.Info != nil || !bytes.Equal(resp.ID, []byte("2")) {
		t.Errorf("fields leaked from the previous parse: %+v", resp)
	}
}
