package allow

import (
	"encoding/json"
	"strconv"

	"github.com/mserve/mserve/sdk/decl"
)

// OpenRPCVersion is the version of the OpenRPC specification Discover
// follows.
const OpenRPCVersion = "1.3.2"

// Discover returns the OpenRPC document describing the functions user may
// call: the answer to rpc.discover.
func (g *Gate) Discover(user, version string) []byte {
	type param struct {
		Name     string         `json:"name"`
		Required bool           `json:"required"`
		Schema   map[string]any `json:"schema"`
	}
	type result struct {
		Name   string         `json:"name"`
		Schema map[string]any `json:"schema"`
	}
	type method struct {
		Name           string  `json:"name"`
		Description    string  `json:"description,omitempty"`
		ParamStructure string  `json:"paramStructure"`
		Params         []param `json:"params"`
		Result         result  `json:"result"`
	}
	doc := struct {
		OpenRPC string            `json:"openrpc"`
		Info    map[string]string `json:"info"`
		Methods []method          `json:"methods"`
	}{OpenRPC: OpenRPCVersion, Info: map[string]string{"title": "mserve", "version": version}, Methods: []method{}}
	for _, f := range g.Functions(user) {
		m := method{Name: f.Decl.Name, ParamStructure: "either", Params: []param{}, Result: result{Name: "result", Schema: map[string]any{}}}
		if f.Decl.Where != "" {
			m.Description = "arguments must satisfy: " + f.Decl.Where
		}
		for _, p := range f.Decl.Params {
			m.Params = append(m.Params, param{Name: p.Name, Required: !p.Optional(), Schema: schema(&p)})
		}
		doc.Methods = append(doc.Methods, m)
	}
	b, _ := json.Marshal(doc)
	return b
}

// schema is the JSON Schema of a parameter.
func schema(p *decl.Param) map[string]any {
	s := typeSchema(p.Type)
	bound := func(key string, b string) {
		if b == "" {
			return
		}
		if n, err := strconv.ParseFloat(b, 64); err == nil {
			s[key] = n
		}
	}
	if p.Range != nil {
		switch p.Type.Name {
		case "int", "float":
			bound("minimum", p.Range.Lo)
			bound("maximum", p.Range.Hi)
		default:
			s["description"] = "from " + p.Range.String()
		}
	}
	if p.Len != nil {
		lo, hi := "minLength", "maxLength"
		switch p.Type.Name {
		case "list":
			lo, hi = "minItems", "maxItems"
		case "dict":
			lo, hi = "minProperties", "maxProperties"
		}
		bound(lo, p.Len.Lo)
		bound(hi, p.Len.Hi)
	}
	if p.Pattern != nil {
		s["pattern"] = p.Pattern.String()
	}
	if p.Enum != nil {
		vals := make([]json.RawMessage, len(p.Enum))
		for i, e := range p.Enum {
			vals[i] = e.Raw
		}
		s["enum"] = vals
	}
	if p.Default != nil {
		s["default"] = json.RawMessage(p.Default)
	}
	return s
}

func typeSchema(t decl.Type) map[string]any {
	switch t.Name {
	case "bool":
		return map[string]any{"type": "boolean"}
	case "int":
		return map[string]any{"type": "integer"}
	case "float":
		return map[string]any{"type": "number"}
	case "string":
		return map[string]any{"type": "string"}
	case "symbol":
		return map[string]any{"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,255}$"}
	case "date":
		return map[string]any{"type": "string", "format": "date"}
	case "timestamp":
		return map[string]any{"type": "string", "format": "date-time"}
	case "duration":
		return map[string]any{"type": "string", "description": "a duration such as 1h30m or 250ms"}
	case "bytes":
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	case "dict":
		return map[string]any{"type": "object"}
	case "list":
		return map[string]any{"type": "array", "items": typeSchema(*t.Elem)}
	}
	return map[string]any{}
}
