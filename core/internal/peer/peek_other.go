//go:build !unix

package peer

import "net"

// peek cannot look into a connection on this platform: it reports nothing.
func peek(net.Conn) (int, bool, error) { return 0, false, nil }
