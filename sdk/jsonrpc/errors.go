package jsonrpc

import (
	"encoding/json"
	"fmt"
)

// Standard JSON-RPC 2.0 error codes.
const (
	ParseError     = -32700 // the body is not JSON
	InvalidRequest = -32600 // JSON, but not a valid request object
	MethodNotFound = -32601 // the method is not declared, or not allowed for this caller
	InvalidParams  = -32602 // an argument does not match its declaration
	InternalError  = -32603 // a fault inside mserve or a servant
)

// mserve's own codes, in the range the specification reserves for
// implementation-defined server errors (-32000 to -32099).
const (
	Unauthorized = -32001 // credentials missing or wrong
	Overloaded   = -32002 // the queue is full; retry later
	Timeout      = -32003 // the call's deadline passed before a result came back
	ServantLost  = -32004 // the servant running the call went away; the call may or may not have run
	Unavailable  = -32005 // no servant serves this method
	ShuttingDown = -32006 // the balancer is stopping and takes no new calls
	Cancelled    = -32007 // the caller cancelled the call
	TooLarge     = -32008 // a frame or body exceeds the configured limit
	Conflict     = -32009 // a registration's name is held by a servant still connected; retry later
)

// Error is a JSON-RPC 2.0 error object. It is also a Go error, so a servant
// handler can return one to choose the code a client sees.
type Error struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Error formats the error as "message (code N)".
func (e *Error) Error() string { return fmt.Sprintf("%s (code %d)", e.Message, e.Code) }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeName returns a short lower-case name for a known error code, for
// logs, metrics and the query log; unknown codes give "error".
func CodeName(code int) string {
	switch code {
	case ParseError:
		return "parse_error"
	case InvalidRequest:
		return "invalid_request"
	case MethodNotFound:
		return "method_not_found"
	case InvalidParams:
		return "invalid_params"
	case InternalError:
		return "internal_error"
	case Unauthorized:
		return "unauthorized"
	case Overloaded:
		return "overloaded"
	case Timeout:
		return "timeout"
	case ServantLost:
		return "servant_lost"
	case Unavailable:
		return "unavailable"
	case ShuttingDown:
		return "shutting_down"
	case Cancelled:
		return "cancelled"
	case TooLarge:
		return "too_large"
	case Conflict:
		return "conflict"
	}
	return "error"
}
