package allow

import (
	"encoding/json"
	"reflect"
	"testing"
)

type openrpcDoc struct {
	OpenRPC string            `json:"openrpc"`
	Info    map[string]string `json:"info"`
	Methods []struct {
		Name           string `json:"name"`
		Description    string `json:"description"`
		ParamStructure string `json:"paramStructure"`
		Params         []struct {
			Name     string         `json:"name"`
			Required *bool          `json:"required"`
			Schema   map[string]any `json:"schema"`
		} `json:"params"`
		Result *struct {
			Name   string         `json:"name"`
			Schema map[string]any `json:"schema"`
		} `json:"result"`
	} `json:"methods"`
}

func discover(t *testing.T, g *Gate, user string) openrpcDoc {
	t.Helper()
	b := g.Discover(user, "v1.2.3")
	if !json.Valid(b) {
		t.Fatalf("Discover(%q) is not JSON: %s", user, b)
	}
	var doc openrpcDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenRPC != "1.3.2" || doc.Info["title"] != "mserve" || doc.Info["version"] != "v1.2.3" {
		t.Errorf("Discover(%q): openrpc %q, info %v", user, doc.OpenRPC, doc.Info)
	}
	if doc.Methods == nil {
		t.Errorf("Discover(%q): methods is not an array: %s", user, b)
	}
	return doc
}

var openrpcFile = lines(
	`order(side string in ["buy","sell"], qty int 1..1000, px float 0.5.., ref string len 1..8 /[A-Z]+/ = "X")`,
	`hdb(sym symbol, start date 2020-01-01.., end date, tags list<symbol> len ..3 = [], opts dict = {"a": 1}) idempotent where start <= end`,
	`misc(b bool, ts timestamp, ttl duration ..1h, blob bytes, v any, m list<list<int>>)`,
	`admin.reset()`,
	"user alice "+hashAlice+": order hdb misc",
	"user bob "+hashBob+": hdb",
)

func TestDiscover(t *testing.T) {
	g := newGate(t, openrpcFile, "s1")

	bob := discover(t, g, "bob")
	if len(bob.Methods) != 1 || bob.Methods[0].Name != "hdb" {
		t.Fatalf("bob's methods: %+v", bob.Methods)
	}
	if anon := discover(t, g, Anonymous); len(anon.Methods) != 0 {
		t.Errorf("anonymous sees %+v", anon.Methods)
	}
	if nobody := discover(t, g, "mallory"); len(nobody.Methods) != 0 {
		t.Errorf("an unknown user sees %+v", nobody.Methods)
	}

	doc := discover(t, g, "alice")
	var names []string
	for _, m := range doc.Methods {
		names = append(names, m.Name)
	}
	if !reflect.DeepEqual(names, []string{"order", "hdb", "misc"}) {
		t.Fatalf("alice's methods %v, want order hdb misc (file order, no admin.reset)", names)
	}
	type p = map[string]any
	want := map[string][]struct {
		name     string
		required bool
		schema   p
	}{
		"order": {
			{"side", true, p{"type": "string", "enum": []any{"buy", "sell"}}},
			{"qty", true, p{"type": "integer", "minimum": 1.0, "maximum": 1000.0}},
			{"px", true, p{"type": "number", "minimum": 0.5}},
			{"ref", false, p{"type": "string", "minLength": 1.0, "maxLength": 8.0, "pattern": "^(?:[A-Z]+)$", "default": "X"}},
		},
		"hdb": {
			{"sym", true, p{"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,255}$"}},
			{"start", true, p{"type": "string", "format": "date", "description": "from 2020-01-01.."}},
			{"end", true, p{"type": "string", "format": "date"}},
			{"tags", false, p{"type": "array", "items": p{"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,255}$"}, "maxItems": 3.0, "default": []any{}}},
			{"opts", false, p{"type": "object", "default": p{"a": 1.0}}},
		},
		"misc": {
			{"b", true, p{"type": "boolean"}},
			{"ts", true, p{"type": "string", "format": "date-time"}},
			{"ttl", true, p{"type": "string", "description": "from ..1h"}},
			{"blob", true, p{"type": "string", "contentEncoding": "base64"}},
			{"v", true, p{}},
			{"m", true, p{"type": "array", "items": p{"type": "array", "items": p{"type": "integer"}}}},
		},
	}
	for _, m := range doc.Methods {
		if m.ParamStructure != "either" || m.Result == nil || m.Result.Name == "" {
			t.Errorf("%s: paramStructure %q, result %+v", m.Name, m.ParamStructure, m.Result)
		}
		wantDesc := ""
		if m.Name == "hdb" {
			wantDesc = "arguments must satisfy: start <= end"
		}
		if m.Description != wantDesc {
			t.Errorf("%s: description %q, want %q", m.Name, m.Description, wantDesc)
		}
		wp := want[m.Name]
		if len(m.Params) != len(wp) {
			t.Errorf("%s: %d params, want %d", m.Name, len(m.Params), len(wp))
			continue
		}
		for i, prm := range m.Params {
			w := wp[i]
			if prm.Name != w.name || prm.Required == nil || *prm.Required != w.required {
				t.Errorf("%s param %d: name %q required %v, want %q %v", m.Name, i, prm.Name, prm.Required, w.name, w.required)
			}
			if !reflect.DeepEqual(prm.Schema, w.schema) {
				t.Errorf("%s.%s schema\n got %v\nwant %v", m.Name, prm.Name, prm.Schema, w.schema)
			}
		}
	}
}

func TestDiscoverWithoutFile(t *testing.T) {
	g := newGate(t, "", "s1", "s2")
	if doc := discover(t, g, Anonymous); len(doc.Methods) != 0 {
		t.Errorf("before announcements: %+v", doc.Methods)
	}
	g.Announce("s2", []string{"b(x int)"})
	g.Announce("s1", []string{"a(x int 0..9 = 1)"})
	doc := discover(t, g, "anyone")
	if len(doc.Methods) != 2 || doc.Methods[0].Name != "a" || doc.Methods[1].Name != "b" {
		t.Fatalf("methods %+v, want a (from s1) then b", doc.Methods)
	}
	if s := doc.Methods[0].Params[0].Schema; s["default"] != 1.0 || s["maximum"] != 9.0 {
		t.Errorf("a.x schema %v", s)
	}
}
