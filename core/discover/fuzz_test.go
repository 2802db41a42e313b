package discover_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/mserve/mserve/sdk/fuzzseed"

	"github.com/mserve/mserve/core"
	"github.com/mserve/mserve/core/discover"
	"github.com/mserve/mserve/sdk/announce"
)

// FuzzDecode: any name and value give a servant or an error, never a
// panic; an accepted servant has a valid name, an address mserve accepts
// (core.ParseServants reads it back as one servant with that address), no
// negative slots and no empty tag, and what announce writes for it decodes
// to the same servant. Each seed file is the servant's name, a newline,
// and the key's value.
func FuzzDecode(f *testing.F) {
	fuzzseed.Add(f, "FuzzDecode", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, raw []byte) {
		name, value, _ := bytes.Cut(raw, []byte("\n"))
		s, err := discover.Decode(string(name), value)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if announce.CheckName(s.Name) != nil || s.Name != string(name) || s.Slots < 0 || slices.Contains(s.Tags, "") {
			t.Fatalf("accepted %+v", s)
		}
		specs, err := core.ParseServants(s.Addr)
		if err != nil || len(specs) != 1 || specs[0].Addr != s.Addr {
			t.Fatalf("accepted addr %q that mserve reads as %+v (%v)", s.Addr, specs, err)
		}
		again, err := json.Marshal(announce.Servant{Addr: s.Addr, Slots: s.Slots, Tags: s.Tags})
		if err != nil {
			t.Fatal(err)
		}
		s2, err := discover.Decode(s.Name, again)
		if err != nil || s2.Addr != s.Addr || s2.Slots != s.Slots || !slices.Equal(s2.Tags, s.Tags) {
			t.Fatalf("announce's encoding of %+v, %s, decodes to %+v (%v)", s, again, s2, err)
		}
	})
}
