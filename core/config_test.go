package core

import (
	"slices"
	"strings"
	"testing"

	"github.com/mserve/mserve/sdk/fuzzseed"
)

func TestParseServants(t *testing.T) {
	tests := []struct {
		name string
		list string
		want []ServantSpec
		err  string // part of the error; "" for none
	}{
		{name: "native servants, named and not, with options",
			list: "10.0.0.5:7001, gpu1@10.0.0.6:7001?slots=4&tag=gpu&tag=big",
			want: []ServantSpec{{Name: "10.0.0.5:7001", Addr: "10.0.0.5:7001"},
				{Name: "gpu1", Addr: "10.0.0.6:7001", Slots: 4, Tags: []string{"gpu", "big"}}}},
		{name: "an HTTP servant with a cap on requests in flight",
			list: "py@http://10.0.0.7:8000/rpc?slots=16&conns=2",
			want: []ServantSpec{{Name: "py", Addr: "http://10.0.0.7:8000/rpc", Slots: 16, Conns: 2}}},
		{name: "an unnamed https servant is named by its URL",
			list: "https://h:443/",
			want: []ServantSpec{{Name: "https://h:443/", Addr: "https://h:443/"}}},
		{name: "conns on a native servant", list: "s@127.0.0.1:7001?conns=2", err: "conns applies to http:// and https:// servants only"},
		{name: "conns not a positive number", list: "http://h:1/?conns=0", err: `conns must be a positive number, got "0"`},
		{name: "slots not a number", list: "h:1?slots=x", err: `slots must be a positive number, got "x"`},
		{name: "an unknown option names the known ones", list: "h:1?slot=2", err: `unknown option "slot" (known: slots, tag, conns)`},
		{name: "a port out of range", list: "h:70000", err: `port "70000" is not a number from 1 to 65535`},
		{name: "no host", list: ":7001", err: `missing host`},
		{name: "a host that is no host name", list: "n@@h:1", err: `host "@h": "@" cannot be in a host name or IP address`},
		{name: "an IPv6 address", list: "[::1]:7001", want: []ServantSpec{{Name: "[::1]:7001", Addr: "[::1]:7001"}}},
		{name: "an empty name", list: "@h:1", err: "empty name before '@'"},
		{name: "a URL with no host", list: "http:///x", err: "bad URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseServants(tt.list)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, equalSpec) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func equalSpec(a, b ServantSpec) bool {
	return a.Name == b.Name && a.Addr == b.Addr && a.Slots == b.Slots && a.Conns == b.Conns && slices.Equal(a.Tags, b.Tags)
}

// FuzzParseServants: any list gives servants or an error naming the
// entry, never a panic; accepted servants have a name, no negative
// counts, conns only over HTTP, and read back the same from their own
// spelling.
func FuzzParseServants(f *testing.F) {
	fuzzseed.Add(f, "FuzzParseServants", func(b []byte) { f.Add(string(b)) })
	f.Fuzz(func(t *testing.T, list string) {
		specs, err := ParseServants(list)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "servant ") {
				t.Fatalf("error %q does not name the entry", err)
			}
			return
		}
		for _, s := range specs {
			if s.Name == "" || s.Addr == "" || s.Slots < 0 || s.Conns < 0 || (s.Conns > 0 && !isHTTP(s.Addr)) {
				t.Fatalf("accepted %+v from %q", s, list)
			}
			again, err := ParseServants(s.Addr)
			if err != nil || len(again) != 1 || again[0].Addr != s.Addr {
				t.Fatalf("%q, accepted, reads back as %+v (%v)", s.Addr, again, err)
			}
		}
	})
}
