package script

import (
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// TestRouterResults checks how a routing function's result becomes the
// routing string: strings as they are, nil as "", numbers as their text
// (as Lua's tostring and the expr router write them: 1234567, not
// 1.234567e+06).
func TestRouterResults(t *testing.T) {
	tests := []struct{ ret, want string }{
		{`"IBM"`, "IBM"},
		{`""`, ""},
		{`nil`, ""},
		{`call.args[1]`, "IBM"},
		{`call.method .. ":" .. call.args[1]`, "proc1:IBM"},
		{`42`, "42"},
		{`1.5`, "1.5"},
		{`-3`, "-3"},
		{`call.args[2]`, "7"},
		{`999999`, "999999"},
		{`1234567`, "1234567"},
		{`tostring(1234567)`, "1234567"},
		{`2^40`, "1099511627776"},
	}
	for _, tc := range tests {
		t.Run(tc.ret, func(t *testing.T) {
			src := `mserve.route("r", function(call) return ` + tc.ret + ` end)`
			h := newHost(t, Config{Files: []string{writeScript(t, t.TempDir(), "r.lua", src)}, Budget: time.Second})
			fb := &fixedRouter{route: "fallback"}
			got, err := NewRouter(h, "r", fb).Route(&dispatch.Call{Method: "proc1", Params: []byte(`["IBM",7]`)})
			if err != nil || got != tc.want {
				t.Errorf("return %s routes %q, %v; want %q", tc.ret, got, err, tc.want)
			}
			if fb.n.Load() != 0 {
				t.Errorf("the fallback routed")
			}
		})
	}
}
