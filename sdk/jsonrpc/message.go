// Package jsonrpc reads and writes JSON-RPC 2.0 messages without decoding
// what it does not need: a request's params and a response's result stay the
// raw bytes they arrived as, so a balancer can forward them unchanged.
//
// The parser validates the whole message (RFC 8259 syntax, nesting up to
// MaxDepth) and the JSON-RPC 2.0 envelope rules; it allocates only for the
// method name and for keys or strings that carry escapes.
package jsonrpc

import (
	"bytes"
	"fmt"
	"strconv"
)

// Request is one parsed JSON-RPC 2.0 request. The byte slices alias the
// buffer given to ParseRequest.
type Request struct {
	ID     []byte // raw id (string, number or null); nil when absent: a notification
	Method string // the method name
	Params []byte // raw params (array or object); nil when absent
	Mserve []byte // raw "mserve" extension object (per-call options); nil when absent
}

// IsNotification reports whether the request carries no id, so that no
// response may be sent for it.
func (r *Request) IsNotification() bool { return r.ID == nil }

// Response is one parsed JSON-RPC 2.0 response. Exactly one of Result and
// Error is set. The byte slices alias the buffer given to ParseResponse.
type Response struct {
	ID     []byte // raw id
	Result []byte // raw result; nil when the call failed
	Error  []byte // raw error object; nil when the call succeeded
	Info   []byte // raw "info" object (mserve's extension); nil when absent
}

// keyIs reports whether the raw JSON key (quotes included) names want.
func keyIs(key []byte, want string) bool {
	if len(key) == len(want)+2 && string(key[1:len(key)-1]) == want {
		return true
	}
	if bytes.IndexByte(key, '\\') < 0 {
		return false
	}
	s, err := Unquote(key)
	return err == nil && s == want
}

// isString reports whether the raw JSON value v is a string equal to want,
// escapes decoded ("2\u002e0" is "2.0").
func isString(v []byte, want string) bool { return v[0] == '"' && keyIs(v, want) }

func firstByte(b []byte) byte {
	if i := skipSpace(b, 0); i < len(b) {
		return b[i]
	}
	return 0
}

// IsBatch reports whether b holds a JSON array, that is a batch.
func IsBatch(b []byte) bool { return firstByte(b) == '[' }

// ParseRequest parses the single request object b into r. On failure it
// returns a *Error with code ParseError when b is not JSON, or
// InvalidRequest when it is JSON but not a valid request; r.ID is still set
// when a valid id was found, so the error can be addressed to it.
func ParseRequest(b []byte, r *Request) *Error {
	*r = Request{}
	if firstByte(b) != '{' {
		if !Valid(b) {
			return parseError(b)
		}
		return &Error{Code: InvalidRequest, Message: "invalid request: expected a JSON object"}
	}
	var (
		version, method []byte
		problem         string
		seen            uint8
	)
	note := func(bit uint8, name string) bool {
		// Keep scanning after a duplicate: the rest of b must still be
		// validated (a broken body is a ParseError) and an id found later
		// must still be reported.
		if seen&bit != 0 && problem == "" {
			problem = fmt.Sprintf("duplicate member %q", name)
		}
		seen |= bit
		return true
	}
	err := Members(b, func(key, value []byte) bool {
		switch {
		case keyIs(key, "jsonrpc"):
			version = value
			return note(1, "jsonrpc")
		case keyIs(key, "method"):
			method = value
			return note(2, "method")
		case keyIs(key, "params"):
			r.Params = value
			return note(4, "params")
		case keyIs(key, "id"):
			r.ID = value
			return note(8, "id")
		case keyIs(key, "mserve"):
			r.Mserve = value
			return note(16, "mserve")
		}
		return true
	})
	if err != nil {
		r.ID = nil
		return parseError(b)
	}
	if problem == "" {
		problem = checkRequest(r, version, method)
	}
	if r.ID != nil && !validID(r.ID) {
		r.ID = nil
	}
	if problem != "" {
		return &Error{Code: InvalidRequest, Message: "invalid request: " + problem}
	}
	return nil
}

func checkRequest(r *Request, version, method []byte) string {
	switch {
	case version == nil:
		return `missing "jsonrpc": "2.0"`
	case !isString(version, "2.0"):
		return fmt.Sprintf(`"jsonrpc" must be "2.0", got %s`, clip(version))
	case method == nil:
		return `missing "method"`
	case method[0] != '"':
		return fmt.Sprintf(`"method" must be a string, got %s`, clip(method))
	case r.ID != nil && !validID(r.ID):
		return fmt.Sprintf(`"id" must be a string, number or null, got %s`, clip(r.ID))
	case r.Params != nil && r.Params[0] != '[' && r.Params[0] != '{':
		return fmt.Sprintf(`"params" must be an array or an object, got %s`, clip(r.Params))
	case r.Mserve != nil && r.Mserve[0] != '{':
		return fmt.Sprintf(`"mserve" must be an object, got %s`, clip(r.Mserve))
	}
	m, err := Unquote(method)
	if err != nil {
		return "method: " + err.Error()
	}
	if m == "" {
		return `"method" must not be empty`
	}
	r.Method = m
	return ""
}

func validID(id []byte) bool {
	c := id[0]
	return c == '"' || c == '-' || isDigit(c) || string(id) == "null"
}

// clip returns raw JSON shortened for an error message.
func clip(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

func parseError(b []byte) *Error {
	end, err := skipValue(b, skipSpace(b, 0), 0)
	if err == nil {
		err = syntaxErr(skipSpace(b, end), "unexpected data after the value")
	}
	return &Error{Code: ParseError, Message: "parse error: " + err.Error()}
}

// ParseResponse parses the single response object b into r. It returns an
// error when b is not a valid JSON-RPC 2.0 response.
func ParseResponse(b []byte, r *Response) error {
	*r = Response{}
	var version []byte
	var problem string
	err := Members(b, func(key, value []byte) bool {
		switch {
		case keyIs(key, "jsonrpc"):
			version = value
		case keyIs(key, "id"):
			r.ID = value
		case keyIs(key, "result"):
			r.Result = value
		case keyIs(key, "error"):
			r.Error = value
		case keyIs(key, "info"):
			r.Info = value
		}
		return true
	})
	switch {
	case err != nil:
		return err
	case version == nil || !isString(version, "2.0"):
		problem = `"jsonrpc" must be "2.0"`
	case r.ID == nil:
		problem = `missing "id"`
	case (r.Result == nil) == (r.Error == nil):
		problem = `exactly one of "result" and "error" must be present`
	case r.Error != nil && r.Error[0] != '{':
		problem = `"error" must be an object`
	case r.Info != nil && r.Info[0] != '{':
		problem = `"info" must be an object`
	}
	if problem != "" {
		return fmt.Errorf("invalid response: %s", problem)
	}
	return nil
}

// DecodeError decodes a raw JSON-RPC error object.
func DecodeError(raw []byte) (*Error, error) {
	e := &Error{}
	var code, msg []byte
	err := Members(raw, func(key, value []byte) bool {
		switch {
		case keyIs(key, "code"):
			code = value
		case keyIs(key, "message"):
			msg = value
		case keyIs(key, "data"):
			e.Data = append([]byte(nil), value...)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if code == nil || msg == nil || msg[0] != '"' {
		return nil, fmt.Errorf("invalid error object: needs an integer \"code\" and a string \"message\"")
	}
	c, err := strconv.Atoi(string(code))
	if err != nil {
		return nil, fmt.Errorf("invalid error object: code %s is not an integer", clip(code))
	}
	e.Code = c
	if e.Message, err = Unquote(msg); err != nil {
		return nil, err
	}
	return e, nil
}

// SplitBatch calls fn with each raw element of the batch b. An element that
// is not an object is still passed: ParseRequest answers it InvalidRequest.
func SplitBatch(b []byte, fn func(elem []byte)) *Error {
	err := Elements(b, func(elem []byte) bool { fn(elem); return true })
	if err != nil {
		return parseError(b)
	}
	return nil
}
