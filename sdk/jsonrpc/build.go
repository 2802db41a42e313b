package jsonrpc

import (
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s to dst as a JSON string. Control characters, quotes
// and backslashes are escaped; invalid UTF-8 becomes U+FFFD, so the output
// is always valid JSON.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendID appends a numeric id. Balancers and SDKs number their own calls
// with these.
func AppendID(dst []byte, id uint64) []byte { return strconv.AppendUint(dst, id, 10) }

// AppendRequest appends a request object. id is the raw id (nil makes a
// notification); params is raw JSON (nil omits it).
func AppendRequest(dst, id []byte, method string, params []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0"`...)
	if id != nil {
		dst = append(dst, `,"id":`...)
		dst = append(dst, id...)
	}
	dst = append(dst, `,"method":`...)
	dst = AppendString(dst, method)
	if params != nil {
		dst = append(dst, `,"params":`...)
		dst = append(dst, params...)
	}
	return append(dst, '}')
}

// AppendResponse appends a response object. id is the raw id (nil writes
// null, as the specification requires when the id could not be read).
// Exactly one of result and errObj should be set, both raw JSON; info, when
// not nil, is appended as the "info" member.
func AppendResponse(dst, id, result, errObj, info []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	if id == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, id...)
	}
	if errObj != nil {
		dst = append(dst, `,"error":`...)
		dst = append(dst, errObj...)
	} else {
		dst = append(dst, `,"result":`...)
		if result == nil {
			result = []byte("null")
		}
		dst = append(dst, result...)
	}
	if info != nil {
		dst = append(dst, `,"info":`...)
		dst = append(dst, info...)
	}
	return append(dst, '}')
}

// AppendError appends e as a JSON-RPC error object.
func AppendError(dst []byte, e *Error) []byte {
	dst = append(dst, `{"code":`...)
	dst = strconv.AppendInt(dst, int64(e.Code), 10)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, e.Message)
	if len(e.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, e.Data...)
	}
	return append(dst, '}')
}

// AppendErrorResponse appends a complete response carrying e.
func AppendErrorResponse(dst, id []byte, e *Error, info []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	if id == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, id...)
	}
	dst = append(dst, `,"error":`...)
	dst = AppendError(dst, e)
	if info != nil {
		dst = append(dst, `,"info":`...)
		dst = append(dst, info...)
	}
	return append(dst, '}')
}
