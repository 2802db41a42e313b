package decl

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mserve/mserve/sdk/jsonrpc"
)

// What each type accepts, for error messages.
var typeHelp = map[string]string{
	"bool":      "true or false",
	"int":       "a whole number",
	"float":     "a number",
	"string":    "a string",
	"symbol":    "a symbol (1 to 255 letters, digits, '_', '.' or '-')",
	"date":      "a date string YYYY-MM-DD",
	"timestamp": "an RFC 3339 timestamp string such as 2026-01-02T09:30:00Z",
	"duration":  "a duration string such as 1h30m or 250ms",
	"bytes":     "a base64 string",
	"dict":      "an object",
	"list":      "an array",
	"any":       "any JSON value",
}

func (t Type) hasLen() bool {
	switch t.Name {
	case "string", "symbol", "bytes", "list", "dict":
		return true
	}
	return false
}

func (t Type) hasRange() bool {
	switch t.Name {
	case "int", "float", "date", "timestamp", "duration":
		return true
	}
	return false
}

func (t Type) hasPattern() bool { return t.Name == "string" || t.Name == "symbol" }

// ArgError says why an argument does not fit its parameter.
type ArgError struct {
	Param    string // the parameter's name
	Expects  string // its type and constraints, as declared
	Got      string // the value received, as JSON (shortened when long)
	Problem  string // what is wrong with it
	Position int    // index of the failing element inside a list; -1 otherwise
}

func (e *ArgError) Error() string {
	where := ""
	if e.Position >= 0 {
		where = fmt.Sprintf(" (element %d)", e.Position)
	}
	return fmt.Sprintf("parameter %q expects %s, got %s%s: %s", e.Param, e.Expects, e.Got, where, e.Problem)
}

func clip(raw []byte) string {
	const max = 80
	if len(raw) > max {
		return string(raw[:max]) + "…"
	}
	return string(raw)
}

// Check checks raw (one JSON value, as parsed by package jsonrpc) against
// the parameter's type and constraints. On success it returns the value as
// Go sees it: bool, int64, float64, string, time.Time (date, timestamp),
// time.Duration, []byte (bytes), or for list, dict and any the value
// decoded by encoding/json. On failure the error is an *ArgError.
func (p *Param) Check(raw []byte) (any, error) { return p.check(raw, true) }

// Validate is Check without the value: it skips decoding lists, dicts and
// any values into Go values, which only conditions need.
func (p *Param) Validate(raw []byte) error {
	_, err := p.check(raw, false)
	return err
}

func (p *Param) check(raw []byte, wantValue bool) (any, error) {
	v, err := p.convertValue(raw, wantValue)
	if err != nil {
		return nil, p.argErr(raw, err.Error(), -1)
	}
	if p.Range != nil {
		if (p.Range.lo != nil && compare(v, p.Range.lo) < 0) || (p.Range.hi != nil && compare(v, p.Range.hi) > 0) {
			return nil, p.argErr(raw, "out of range "+p.Range.String(), -1)
		}
	}
	if p.Len != nil {
		n := int64(length(p.Type, raw, v))
		if (p.Len.lo != nil && n < p.Len.lo.(int64)) || (p.Len.hi != nil && n > p.Len.hi.(int64)) {
			return nil, p.argErr(raw, fmt.Sprintf("its length %d is outside %s", n, p.Len.String()), -1)
		}
	}
	if p.Pattern != nil && !p.Pattern.MatchString(v.(string)) {
		return nil, p.argErr(raw, "it does not match the pattern", -1)
	}
	if p.Enum != nil {
		found := false
		for _, e := range p.Enum {
			if equal(v, e.value) {
				found = true
				break
			}
		}
		if !found {
			return nil, p.argErr(raw, "it is not one of the allowed values", -1)
		}
	}
	return v, nil
}

func (p *Param) argErr(raw []byte, problem string, pos int) *ArgError {
	return &ArgError{Param: p.Name, Expects: p.Expects(), Got: clip(raw), Problem: problem, Position: pos}
}

// convertValue checks raw against the parameter's type alone and, when
// wantValue is set, converts it.
func (p *Param) convertValue(raw []byte, wantValue bool) (any, error) {
	return convert(p.Type, raw, wantValue)
}

func convert(t Type, raw []byte, wantValue bool) (any, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("no value")
	}
	c := raw[0]
	if string(raw) == "null" && t.Name != "any" {
		return nil, fmt.Errorf("null is not %s", typeHelp[t.Name])
	}
	switch t.Name {
	case "any":
		return decodeAny(raw, wantValue)
	case "bool":
		switch string(raw) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	case "int":
		if c == '-' || isDigit(c) {
			return parseIntExact(raw)
		}
	case "float":
		if c == '-' || isDigit(c) {
			f, err := strconv.ParseFloat(string(raw), 64)
			if err != nil {
				return nil, fmt.Errorf("it does not fit in a 64-bit float")
			}
			return f, nil
		}
	case "string", "symbol", "date", "timestamp", "duration", "bytes":
		if c != '"' {
			break
		}
		s, err := jsonrpc.Unquote(raw)
		if err != nil {
			return nil, err
		}
		return convertString(t.Name, s)
	case "dict":
		if c == '{' {
			return decodeAny(raw, wantValue)
		}
	case "list":
		if c != '[' {
			break
		}
		var bad error
		i := 0
		var out []any
		jsonrpc.Elements(raw, func(el []byte) bool {
			v, err := convert(*t.Elem, el, wantValue)
			if err != nil {
				bad = fmt.Errorf("element %d (%s): %v", i, clip(el), err)
				return false
			}
			if wantValue {
				out = append(out, v)
			}
			i++
			return true
		})
		if bad != nil {
			return nil, bad
		}
		if out == nil && wantValue {
			out = []any{}
		}
		return out, nil
	}
	return nil, fmt.Errorf("not %s", typeHelp[t.Name])
}

func convertString(typ, s string) (any, error) {
	switch typ {
	case "symbol":
		if !isSymbol(s) {
			return nil, fmt.Errorf("not %s", typeHelp["symbol"])
		}
	case "date":
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return nil, fmt.Errorf("not %s", typeHelp["date"])
		}
		return d, nil
	case "timestamp":
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("not %s", typeHelp["timestamp"])
		}
		return ts, nil
	case "duration":
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("not %s", typeHelp["duration"])
		}
		return d, nil
	case "bytes":
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("not %s", typeHelp["bytes"])
		}
		return b, nil
	}
	return s, nil
}

// isSymbol reports whether s is a symbol: 1 to 255 ASCII letters, digits,
// '_', '.' or '-'. Spaces, quotes, ';' and every other character are
// refused, so a symbol can never carry code or a second statement.
func isSymbol(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func decodeAny(raw []byte, wantValue bool) (any, error) {
	if !wantValue {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// length is what len constraints measure: characters of a string, bytes
// of decoded bytes, elements of a list, members of a dict.
func length(t Type, raw []byte, v any) int {
	switch t.Name {
	case "string", "symbol":
		return utf8.RuneCountInString(v.(string))
	case "bytes":
		return len(v.([]byte))
	case "list":
		n := 0
		jsonrpc.Elements(raw, func([]byte) bool { n++; return true })
		return n
	case "dict":
		n := 0
		jsonrpc.Members(raw, func(_, _ []byte) bool { n++; return true })
		return n
	}
	return 0
}

func parseBound(t Type, s string) (any, error) {
	switch t.Name {
	case "int":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("not a whole number")
		}
		return n, nil
	case "float":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("not a number")
		}
		return f, nil
	default:
		return convertString(t.Name, s)
	}
}

// compare orders two values of the same range type.
func compare(a, b any) int {
	switch x := a.(type) {
	case int64:
		return cmp3(x, b.(int64))
	case float64:
		return cmp3(x, b.(float64))
	case time.Duration:
		return cmp3(x, b.(time.Duration))
	case time.Time:
		return x.Compare(b.(time.Time))
	}
	return 0
}

func cmp3[T int64 | float64 | time.Duration](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func equal(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	switch a.(type) {
	case []byte, []any, map[string]any:
		return false // enums hold scalars
	}
	return a == b
}

// parseIntExact reads a JSON number as an int64 from its decimal text, so
// that nothing is rounded: 1.0 and 1e3 are ints, 1.5 and
// 1.0000000000000001 are not.
func parseIntExact(raw []byte) (any, error) {
	s := string(raw)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || e > 400 || e < -400 {
			return nil, fmt.Errorf("it does not fit in 64 bits")
		}
		mant, exp = s[:i], e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := intPart + frac
	point := len(intPart) + exp // digits before the decimal point
	if point < 0 {
		point = 0
	}
	whole, rest := digits, ""
	if point < len(digits) {
		whole, rest = digits[:point], digits[point:]
	} else {
		whole += strings.Repeat("0", min(point-len(digits), 20))
		if point-len(digits) > 20 {
			return nil, fmt.Errorf("it does not fit in 64 bits")
		}
	}
	if strings.Trim(rest, "0") != "" {
		return nil, fmt.Errorf("it has a fraction; an int is never rounded")
	}
	whole = strings.TrimLeft(whole, "0")
	if whole == "" {
		whole = "0"
	}
	if neg {
		whole = "-" + whole
	}
	n, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("it does not fit in 64 bits")
	}
	return n, nil
}
