package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestAddrNeverRepeatsAndIsFree(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		addr := Test(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is not free: %v", addr, err)
		}
		ln.Close()
	}
}

func TestPortAndErrors(t *testing.T) {
	tests := []struct {
		host    string
		wantErr bool
	}{
		{"127.0.0.1", false},
		{"::1", false},
		{"192.0.2.1", true}, // TEST-NET-1: not an address of this machine
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			port, err := Port(tt.host)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Port(%q) = %d, want an error", tt.host, port)
				}
				return
			}
			if err != nil {
				if tt.host == "::1" {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				t.Fatal(err)
			}
			if port <= 0 || port > 65535 {
				t.Fatalf("Port(%q) = %d", tt.host, port)
			}
		})
	}
}

// Addr never hands out an address twice, even when the kernel offers it
// again: with every loopback port already handed out, it gives up.
func TestAddrSkipsHandedOut(t *testing.T) {
	handedOut.Lock()
	saved := handedOut.addrs
	all := make(map[string]bool, 65535)
	for p := 1; p <= 65535; p++ {
		all[net.JoinHostPort("127.0.0.1", strconv.Itoa(p))] = true
	}
	handedOut.addrs = all
	handedOut.Unlock()
	t.Cleanup(func() {
		handedOut.Lock()
		handedOut.addrs = saved
		handedOut.Unlock()
	})
	if addr, err := Loopback(); err == nil {
		t.Fatalf("Loopback() = %s, which was handed out already", addr)
	}
}
