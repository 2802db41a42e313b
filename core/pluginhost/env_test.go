package pluginhost

import (
	"os"
	"slices"
	"testing"
)

// Config.Env is added to the plugin's environment, after mserve's own.
func TestPluginEnvironment(t *testing.T) {
	t.Setenv("MSERVE_TEST_OWN", "kept")
	h := &Host{cfg: Config{Path: "/bin/true", Env: []string{"MSERVE_ETCD=h1:2379", "MSERVE_ETCD_PREFIX=/p"}}}
	env := h.command().Env
	for _, want := range []string{"MSERVE_TEST_OWN=kept", "MSERVE_ETCD=h1:2379", "MSERVE_ETCD_PREFIX=/p"} {
		if !slices.Contains(env, want) {
			t.Errorf("plugin environment lacks %s", want)
		}
	}
	if i := slices.Index(env, "MSERVE_ETCD=h1:2379"); i < len(os.Environ()) {
		t.Errorf("Config.Env at %d, before mserve's own environment (%d entries): it must come after, to win", i, len(os.Environ()))
	}
	if env := (&Host{cfg: Config{Path: "/bin/true"}}).command().Env; env != nil {
		t.Errorf("without Config.Env the plugin's environment is set: %v", env)
	}
}
