package core

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// AddServant and RemoveServant keep names unique and leave servants
// configured at launch alone; a removed servant's name is free again.
func TestAddAndRemoveServantRefusals(t *testing.T) {
	b, err := New(Config{NativeAddr: "127.0.0.1:0", Servants: []ServantSpec{{Name: "r1", Addr: "127.0.0.1:1"}}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	wantErr := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v; want one saying %q", what, err, want)
		}
	}
	wantErr("AddServant before Start", b.AddServant(ServantSpec{Name: "d1", Addr: "127.0.0.1:1"}), "not running")
	start(t, b)
	wantErr("AddServant under a launch servant's name", b.AddServant(ServantSpec{Name: "r1", Addr: "127.0.0.1:2"}), "already in the balancer")
	wantErr("AddServant with a bad address", b.AddServant(ServantSpec{Name: "d0", Addr: "no port"}), `"d0"`)
	if err := b.AddServant(ServantSpec{Name: "d1", Addr: "127.0.0.1:1"}); err != nil {
		t.Fatalf("AddServant(d1): %v", err)
	}
	wantErr("AddServant twice", b.AddServant(ServantSpec{Name: "d1", Addr: "127.0.0.1:2"}), "already in the balancer")
	wantErr("RemoveServant of a launch servant", b.RemoveServant("r1", nil), "configured at launch")
	wantErr("RemoveServant of an unknown name", b.RemoveServant("nobody", nil), "no servant named")
	if err := b.RemoveServant("d1", errors.New("test")); err != nil {
		t.Fatalf("RemoveServant(d1): %v", err)
	}
	wantErr("RemoveServant twice", b.RemoveServant("d1", nil), "no servant named")
	if s, _ := b.Servant("d1"); s != nil {
		t.Error("d1 still in the engine after RemoveServant")
	}
	if s, _ := b.Servant("r1"); s == nil {
		t.Error("r1 left the engine")
	}
	if err := b.AddServant(ServantSpec{Name: "d1", Addr: "127.0.0.1:2"}); err != nil {
		t.Errorf("AddServant(d1) after its removal: %v", err)
	}
}
