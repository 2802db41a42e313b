package peer

import (
	"net"
	"testing"

	"github.com/mserve/mserve/core/internal/testkit"
)

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestPeek(t *testing.T) {
	tests := []struct {
		name         string
		peer         func(t *testing.T, c net.Conn) // what the far end does
		closed, sent bool
	}{
		{"an open, quiet peer", func(*testing.T, net.Conn) {}, false, false},
		{"a peer that sent bytes (a pipelined request)", func(t *testing.T, c net.Conn) {
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}, false, true},
		{"a peer that closed (ClosedOrSent counts it too)", func(_ *testing.T, c net.Conn) { c.Close() }, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := pair(t)
			tt.peer(t, s)
			if tt.sent { // until it has arrived (a read would consume it)
				testkit.WaitFor(t, func() bool { return ClosedOrSent(c) }, "what the peer did to arrive")
			}
			if got := Closed(c); got != tt.closed {
				t.Errorf("Closed = %v, want %v", got, tt.closed)
			}
			if got := ClosedOrSent(c); got != tt.sent {
				t.Errorf("ClosedOrSent = %v, want %v", got, tt.sent)
			}
			// Nothing was consumed: a byte sent is still there to read.
			if tt.sent && !tt.closed {
				b := make([]byte, 1)
				if n, err := c.Read(b); n != 1 || b[0] != 'x' {
					t.Errorf("read %d %q %v after peeking, want the byte sent", n, b[:n], err)
				}
			}
		})
	}
	t.Run("a connection that is not a socket reports nothing", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		b.Close()
		if Closed(a) || ClosedOrSent(a) {
			t.Error("a net.Pipe end was looked into")
		}
	})
}
