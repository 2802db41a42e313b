package jsonrpc

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/mserve/mserve/sdk/fuzzseed"
)

// depth returns the deepest nesting of arrays and objects in the valid JSON
// document b.
func depth(b []byte) int {
	d, most, inStr, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case inStr && c == '"':
			inStr = false
		case inStr:
		case c == '"':
			inStr = true
		case c == '[' || c == '{':
			d++
			most = max(most, d)
		case c == ']' || c == '}':
			d--
		}
	}
	return most
}

// stdValid is json.Valid with MaxDepth applied.
func stdValid(b []byte) bool { return json.Valid(b) && depth(b) <= MaxDepth }

func checkIDShape(t *testing.T, id []byte) {
	t.Helper()
	if id == nil {
		return
	}
	if !json.Valid(id) {
		t.Fatalf("ID %q is not valid JSON", id)
	}
	switch c := id[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9', string(id) == "null":
	default:
		t.Fatalf("ID %q is not a string, number or null", id)
	}
}

func FuzzParseRequest(f *testing.F) {
	fuzzseed.Add(f, "FuzzParseRequest", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, b []byte) {
		var req Request
		e := ParseRequest(b, &req)
		valid := json.Valid(b)
		if e != nil {
			switch {
			case e.Code != ParseError && e.Code != InvalidRequest:
				t.Fatalf("code %d, want ParseError or InvalidRequest", e.Code)
			case !valid && e.Code != ParseError:
				t.Fatalf("encoding/json rejects the body but the code is %d: %s", e.Code, e.Message)
			case valid && depth(b) <= MaxDepth && e.Code == ParseError:
				t.Fatalf("ParseError for valid JSON: %s", e.Message)
			case e.Code == ParseError && req.ID != nil:
				t.Fatalf("ID %q reported for a body that is not JSON", req.ID)
			case req.Method != "":
				t.Fatalf("Method %q set on failure", req.Method)
			case stdValid(b) && wantRequest(b):
				t.Fatalf("rejected a valid request: %s", e.Message)
			}
			checkIDShape(t, req.ID)
			return
		}
		if !valid {
			t.Fatalf("accepted a body encoding/json rejects")
		}
		if !wantRequest(b) {
			t.Fatalf("accepted a request that breaks the rules")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("accepted, but encoding/json cannot decode it as an object: %v", err)
		}
		var version, method string
		if err := json.Unmarshal(m["jsonrpc"], &version); err != nil || version != "2.0" {
			t.Fatalf("accepted with jsonrpc %s", m["jsonrpc"])
		}
		if err := json.Unmarshal(m["method"], &method); err != nil || method != req.Method {
			t.Fatalf("Method = %q, encoding/json decodes %q (%v)", req.Method, method, err)
		}
		if req.Method == "" {
			t.Fatal("accepted an empty method")
		}
		for _, c := range []struct {
			name string
			got  []byte
		}{{"id", req.ID}, {"params", req.Params}, {"mserve", req.Mserve}} {
			want, ok := m[c.name]
			if ok != (c.got != nil) || !bytes.Equal(c.got, want) {
				t.Fatalf("%s = %q, encoding/json finds %q (present %v)", c.name, c.got, want, ok)
			}
			if c.got != nil && !json.Valid(c.got) {
				t.Fatalf("%s %q is not valid JSON", c.name, c.got)
			}
		}
		checkIDShape(t, req.ID)
		if req.Params != nil && req.Params[0] != '[' && req.Params[0] != '{' {
			t.Fatalf("params %q is not an array or object", req.Params)
		}
		if req.Mserve != nil && req.Mserve[0] != '{' {
			t.Fatalf("mserve %q is not an object", req.Mserve)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	fuzzseed.Add(f, "FuzzParseResponse", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, b []byte) {
		var resp Response
		err := ParseResponse(b, &resp)
		if err != nil {
			if stdValid(b) && wantResponse(b) {
				t.Fatalf("rejected a valid response: %v", err)
			}
			return
		}
		if !wantResponse(b) {
			t.Fatalf("accepted a response that breaks the rules")
		}
		if !stdValid(b) {
			t.Fatalf("accepted a body encoding/json rejects")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("accepted, but encoding/json cannot decode it as an object: %v", err)
		}
		var version string
		if err := json.Unmarshal(m["jsonrpc"], &version); err != nil || version != "2.0" {
			t.Fatalf("accepted with jsonrpc %s", m["jsonrpc"])
		}
		_, hasResult := m["result"]
		_, hasError := m["error"]
		if hasResult == hasError {
			t.Fatalf("accepted with result present %v and error present %v", hasResult, hasError)
		}
		for _, c := range []struct {
			name string
			got  []byte
		}{{"id", resp.ID}, {"result", resp.Result}, {"error", resp.Error}, {"info", resp.Info}} {
			want, ok := m[c.name]
			if ok != (c.got != nil) || !bytes.Equal(c.got, want) {
				t.Fatalf("%s = %q, encoding/json finds %q (present %v)", c.name, c.got, want, ok)
			}
		}
		if resp.Error != nil && resp.Error[0] != '{' {
			t.Fatalf("error %q is not an object", resp.Error)
		}
		if resp.Info != nil && resp.Info[0] != '{' {
			t.Fatalf("info %q is not an object", resp.Info)
		}
		if resp.Error != nil {
			var raw map[string]json.RawMessage
			json.Unmarshal(resp.Error, &raw)
			var code int
			var msg string
			stdOK := raw["code"] != nil && raw["code"][0] != 'n' && json.Unmarshal(raw["code"], &code) == nil && json.Unmarshal(raw["message"], &msg) == nil &&
				raw["message"][0] == '"'
			e, derr := DecodeError(resp.Error)
			switch {
			case derr == nil && !stdOK:
				t.Fatalf("DecodeError(%s) = %v, encoding/json cannot decode code and message", resp.Error, e)
			case derr != nil && stdOK:
				t.Fatalf("DecodeError(%s) failed (%v), encoding/json finds %d %q", resp.Error, derr, code, msg)
			case derr == nil && (e.Code != code || e.Message != msg):
				t.Fatalf("DecodeError = %d %q, encoding/json %d %q", e.Code, e.Message, code, msg)
			}
		}
	})
}

func FuzzValid(f *testing.F) {
	fuzzseed.Add(f, "FuzzValid", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Valid(b)
		if want := stdValid(b); got != want {
			t.Fatalf("Valid = %v, encoding/json (depth %d, limit %d) says %v", got, depth(b), MaxDepth, want)
		}
		end, err := ValueEnd(b, 0)
		if got {
			if err != nil || skipSpace(b, end) != len(b) {
				t.Fatalf("Valid but ValueEnd = %d, %v", end, err)
			}
		} else if err == nil && skipSpace(b, end) == len(b) {
			t.Fatalf("not Valid but ValueEnd consumed everything")
		}
	})
}

func FuzzSplitBatch(f *testing.F) {
	fuzzseed.Add(f, "FuzzSplitBatch", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, b []byte) {
		if !IsBatch(b) {
			return // callers only split what IsBatch calls a batch
		}
		var got [][]byte
		e := SplitBatch(b, func(el []byte) { got = append(got, el) })
		var want []json.RawMessage
		stdErr := json.Unmarshal(b, &want)
		if e != nil {
			if e.Code != ParseError {
				t.Fatalf("code %d, want ParseError", e.Code)
			}
			if stdErr == nil && depth(b) <= MaxDepth {
				t.Fatalf("encoding/json splits %q but SplitBatch says %s", b, e.Message)
			}
			return
		}
		if stdErr != nil || depth(b) > MaxDepth {
			t.Fatalf("SplitBatch accepted %q; encoding/json: %v", b, stdErr)
		}
		if len(got) != len(want) {
			t.Fatalf("%d elements, encoding/json finds %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("element %d = %q, encoding/json %q", i, got[i], want[i])
			}
		}
	})
}

func FuzzUnquote(f *testing.F) {
	fuzzseed.Add(f, "FuzzUnquote", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Unquote(b)
		var std string
		stdErr := json.Unmarshal(b, &std)
		quoted := len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"'
		switch {
		case err == nil && !quoted:
			t.Fatalf("Unquote accepted %q, which is not a quoted string", b)
		case err == nil && stdErr != nil:
			t.Fatalf("Unquote(%q) = %q, but encoding/json fails: %v", b, got, stdErr)
		case err == nil && got != std:
			t.Fatalf("Unquote(%q) = %q, encoding/json %q", b, got, std)
		case err != nil && stdErr == nil && quoted:
			t.Fatalf("Unquote(%q) failed (%v), encoding/json gives %q", b, err, std)
		}
		if err == nil && !utf8.ValidString(got) {
			t.Fatalf("Unquote(%q) = %q is not valid UTF-8", b, got)
		}
	})
}

func FuzzAppendString(f *testing.F) {
	fuzzseed.Add(f, "FuzzAppendString", func(b []byte) { f.Add(string(b)) })
	f.Fuzz(func(t *testing.T, s string) {
		prefix := []byte(`{"k":`)
		out := AppendString(append([]byte(nil), prefix...), s)
		if !bytes.HasPrefix(out, prefix) {
			t.Fatalf("dst prefix clobbered: %q", out)
		}
		out = out[len(prefix):]
		if !json.Valid(out) || !Valid(out) {
			t.Fatalf("AppendString(%q) = %q is not valid JSON", s, out)
		}
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("AppendString(%q) decodes to %q", s, back)
		}
		if want := replaceInvalid(s); back != want {
			t.Fatalf("AppendString(%q) decodes to %q, want %q", s, back, want)
		}
		if u, err := Unquote(out); err != nil || u != back {
			t.Fatalf("Unquote(%q) = %q, %v; want %q", out, u, err, back)
		}
	})
}

// topMembers returns the members of the JSON object b in document order,
// keys unescaped by encoding/json, or ok=false when b is not an object.
func topMembers(b []byte) (keys []string, vals []json.RawMessage, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		keys = append(keys, tok.(string))
		vals = append(vals, v)
	}
	return keys, vals, true
}

// wantRequest applies the JSON-RPC 2.0 request rules with encoding/json's
// reading of b, which must be valid JSON within MaxDepth.
func wantRequest(b []byte) bool {
	keys, vals, ok := topMembers(b)
	if !ok {
		return false
	}
	seen := map[string]json.RawMessage{}
	for i, k := range keys {
		switch k {
		case "jsonrpc", "method", "params", "id", "mserve":
			if _, dup := seen[k]; dup {
				return false
			}
			seen[k] = vals[i]
		}
	}
	var version, method string
	if v := seen["jsonrpc"]; v == nil || v[0] != '"' || json.Unmarshal(v, &version) != nil || version != "2.0" {
		return false
	}
	if m := seen["method"]; m == nil || m[0] != '"' || json.Unmarshal(m, &method) != nil || method == "" {
		return false
	}
	if id, ok := seen["id"]; ok {
		if c := id[0]; c != '"' && c != '-' && (c < '0' || c > '9') && string(id) != "null" {
			return false
		}
	}
	if p, ok := seen["params"]; ok && p[0] != '[' && p[0] != '{' {
		return false
	}
	if m, ok := seen["mserve"]; ok && m[0] != '{' {
		return false
	}
	return true
}

// wantResponse applies the response rules ParseResponse documents, with
// encoding/json's reading of b (valid JSON within MaxDepth).
func wantResponse(b []byte) bool {
	keys, vals, ok := topMembers(b)
	if !ok {
		return false
	}
	last := map[string]json.RawMessage{}
	for i, k := range keys {
		last[k] = vals[i]
	}
	var version string
	if v := last["jsonrpc"]; v == nil || v[0] != '"' || json.Unmarshal(v, &version) != nil || version != "2.0" {
		return false
	}
	_, hasID := last["id"]
	_, hasResult := last["result"]
	e, hasError := last["error"]
	info, hasInfo := last["info"]
	return hasID && hasResult != hasError && (!hasError || e[0] == '{') && (!hasInfo || info[0] == '{')
}
