package main

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestServe(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"echo", `{"jsonrpc":"2.0","id":1,"method":"echo","params":[{"a":1},2]}`,
			`{"jsonrpc":"2.0","id":1,"result":{"a":1}}`},
		{"no params", `{"jsonrpc":"2.0","id":"x","method":"echo"}`,
			`{"jsonrpc":"2.0","id":"x","result":null}`},
		{"other method", `{"jsonrpc":"2.0","id":2,"method":"rpc.hello"}`,
			`{"jsonrpc":"2.0","id":2,"error":{"code":-32601,`},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"echo","params":["a"]}, {"jsonrpc":"2.0","id":2,"method":"echo","params":["b"]}]`,
			`[{"jsonrpc":"2.0","id":1,"result":"a"},{"jsonrpc":"2.0","id":2,"result":"b"}]`},
		{"batch with a bad element", `[{"jsonrpc":"2.0","id":1,"method":"echo","params":[3]},7]`,
			`[{"jsonrpc":"2.0","id":1,"result":3},{"jsonrpc":"2.0","id":null,"error":{"code":-32600,`},
		{"broken batch", `[{"jsonrpc":"2.0","id":1,"method":"echo"},`,
			`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			serve(w, httptest.NewRequest("POST", "/", strings.NewReader(tt.body)))
			got := w.Body.String()
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("answer %s, want %s…", got, tt.want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}
