package script

import (
	"encoding/json"
	"sort"

	lua "github.com/yuin/gopher-lua"
)

// decodeJSON turns raw JSON into a Lua value: objects and arrays become
// tables (arrays 1-based), numbers numbers, null nil.
func decodeJSON(L *lua.LState, raw []byte) lua.LValue {
	if len(raw) == 0 {
		return lua.LNil
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return lua.LNil
	}
	return toLua(L, v)
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := L.CreateTable(len(x), 0)
		for i, e := range x {
			t.RawSetInt(i+1, toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(x))
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // deterministic iteration order for scripts
		for _, k := range keys {
			t.RawSetString(k, toLua(L, x[k]))
		}
		return t
	}
	return lua.LNil
}
