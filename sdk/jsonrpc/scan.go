package jsonrpc

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of arrays and objects the scanner accepts.
// Deeper documents are refused before any work is done on them, so a hostile
// body such as ten thousand '[' cannot exhaust the stack or the CPU.
const MaxDepth = 64

// SyntaxError reports malformed JSON: where it was found and what was wrong.
type SyntaxError struct {
	Offset int    // byte offset into the document
	Msg    string // what was expected or found
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

func syntaxErr(off int, format string, args ...any) error {
	return &SyntaxError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// errTooDeep is wrapped in a SyntaxError when MaxDepth is exceeded.
var errTooDeep = errors.New("nesting too deep")

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// Valid reports whether b is exactly one JSON value (with optional
// surrounding whitespace) nested no deeper than MaxDepth.
func Valid(b []byte) bool {
	end, err := skipValue(b, skipSpace(b, 0), 0)
	return err == nil && skipSpace(b, end) == len(b)
}

// skipValue validates the JSON value starting at b[i] (no leading space) and
// returns the index just past it.
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, syntaxErr(i, "unexpected end of input, expected a value")
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{':
		return skipObject(b, i, depth+1)
	case c == '[':
		return skipArray(b, i, depth+1)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	default:
		return i, syntaxErr(i, "unexpected %s, expected a value", describe(b, i))
	}
}

func describe(b []byte, i int) string {
	if i >= len(b) {
		return "end of input"
	}
	r, _ := utf8.DecodeRune(b[i:])
	return strconv.QuoteRune(r)
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, syntaxErr(i, "invalid literal, expected %s", lit)
	}
	return i + len(lit), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func skipNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return i, syntaxErr(i, "invalid number %q", b[start:min(i+1, len(b))])
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return i, syntaxErr(i, "invalid number: expected digit after decimal point")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return i, syntaxErr(i, "invalid number: expected digit in exponent")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

// skipString validates the string starting at the quote b[i] and returns the
// index past its closing quote.
func skipString(b []byte, i int) (int, error) {
	start := i
	i++
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(b) {
				return i, syntaxErr(i, "unterminated escape in string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex4(b[i+2:i+6]) {
					return i, syntaxErr(i, `invalid \u escape in string`)
				}
				i += 6
			default:
				return i, syntaxErr(i, "invalid escape %q in string", b[i:i+2])
			}
		case c < 0x20:
			return i, syntaxErr(i, "control character %#02x in string", c)
		default:
			i++
		}
	}
	return start, syntaxErr(start, "unterminated string")
}

func isHex4(h []byte) bool {
	for _, c := range h {
		if !(isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
			return false
		}
	}
	return true
}

func skipArray(b []byte, i, depth int) (int, error) {
	if depth > MaxDepth {
		return i, &SyntaxError{Offset: i, Msg: fmt.Sprintf("%v (limit %d)", errTooDeep, MaxDepth)}
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = skipValue(b, i, depth); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, syntaxErr(i, "unexpected end of input in array")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return i + 1, nil
		default:
			return i, syntaxErr(i, "unexpected %s in array, expected ',' or ']'", describe(b, i))
		}
	}
}

func skipObject(b []byte, i, depth int) (int, error) {
	if depth > MaxDepth {
		return i, &SyntaxError{Offset: i, Msg: fmt.Sprintf("%v (limit %d)", errTooDeep, MaxDepth)}
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, syntaxErr(i, "unexpected %s in object, expected a string key", describe(b, i))
		}
		var err error
		if i, err = skipString(b, i); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return i, syntaxErr(i, "unexpected %s after object key, expected ':'", describe(b, i))
		}
		i = skipSpace(b, i+1)
		if i, err = skipValue(b, i, depth); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, syntaxErr(i, "unexpected end of input in object")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, syntaxErr(i, "unexpected %s in object, expected ',' or '}'", describe(b, i))
		}
	}
}

// Members calls fn for each member of the JSON object b, in document order,
// with the raw key (quotes included) and the raw value. b must be an object;
// the whole object is validated before fn sees any member past an error.
// Iteration stops early when fn returns false.
func Members(b []byte, fn func(key, value []byte) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return syntaxErr(i, "expected an object")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		if skipSpace(b, i+1) != len(b) {
			return syntaxErr(i+1, "unexpected data after object")
		}
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return syntaxErr(i, "unexpected %s in object, expected a string key", describe(b, i))
		}
		ks := i
		var err error
		if i, err = skipString(b, i); err != nil {
			return err
		}
		key := b[ks:i]
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return syntaxErr(i, "unexpected %s after object key, expected ':'", describe(b, i))
		}
		i = skipSpace(b, i+1)
		vs := i
		if i, err = skipValue(b, i, 1); err != nil {
			return err
		}
		if !fn(key, b[vs:i]) {
			return nil
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return syntaxErr(i, "unexpected end of input in object")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			if skipSpace(b, i+1) != len(b) {
				return syntaxErr(i+1, "unexpected data after object")
			}
			return nil
		default:
			return syntaxErr(i, "unexpected %s in object, expected ',' or '}'", describe(b, i))
		}
	}
}

// Elements calls fn for each element of the JSON array b, in order, with
// its raw bytes. Iteration stops early when fn returns false.
func Elements(b []byte, fn func(elem []byte) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return syntaxErr(i, "expected an array")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		if skipSpace(b, i+1) != len(b) {
			return syntaxErr(i+1, "unexpected data after array")
		}
		return nil
	}
	for {
		vs := i
		var err error
		if i, err = skipValue(b, i, 1); err != nil {
			return err
		}
		if !fn(b[vs:i]) {
			return nil
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return syntaxErr(i, "unexpected end of input in array")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			if skipSpace(b, i+1) != len(b) {
				return syntaxErr(i+1, "unexpected data after array")
			}
			return nil
		default:
			return syntaxErr(i, "unexpected %s in array, expected ',' or ']'", describe(b, i))
		}
	}
}

// Unquote returns the string value of the raw JSON string s (quotes
// included). Strings without escapes are converted with a single copy.
func Unquote(s []byte) (string, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", syntaxErr(0, "expected a string")
	}
	body := s[1 : len(s)-1]
	simple := true
	for _, c := range body {
		if c == '\\' || c == '"' || c < 0x20 || c >= utf8.RuneSelf {
			simple = false
			break
		}
	}
	if simple {
		return string(body), nil
	}
	return unquoteSlow(s)
}

func unquoteSlow(s []byte) (string, error) {
	if end, err := skipString(s, 0); err != nil || end != len(s) {
		if err == nil {
			err = syntaxErr(end, "unexpected data after string")
		}
		return "", err
	}
	out := make([]byte, 0, len(s))
	for i := 1; i < len(s)-1; {
		c := s[i]
		if c != '\\' {
			r, size := utf8.DecodeRune(s[i:])
			out = utf8.AppendRune(out, r) // invalid UTF-8 becomes U+FFFD
			i += size
			continue
		}
		switch s[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if r >= 0xD800 && r < 0xDC00 && i+6 <= len(s)-1 && s[i] == '\\' && s[i+1] == 'u' {
				if lo := hex4(s[i+2 : i+6]); lo >= 0xDC00 && lo < 0xE000 {
					out = utf8.AppendRune(out, (r-0xD800)<<10+(lo-0xDC00)+0x10000)
					i += 6
					continue
				}
			}
			if r >= 0xD800 && r < 0xE000 {
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, s[i+1])
		}
		i += 2
	}
	return string(out), nil
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case isDigit(c):
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// ValueEnd validates the JSON value that starts at b[i] (after optional
// whitespace) and returns the index just past it.
func ValueEnd(b []byte, i int) (int, error) { return skipValue(b, skipSpace(b, i), 0) }
