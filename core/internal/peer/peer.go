// Package peer looks at a connection's far end without reading from it.
package peer

import "net"

// Closed reports whether the peer of nc has closed its side (or the
// connection failed), without blocking and without consuming anything.
// Bytes waiting to be read (a pipelined request) do not count: they may
// hide a close behind them, which is then seen once they are read.
func Closed(nc net.Conn) bool {
	n, eof, err := peek(nc)
	return err != nil || (n == 0 && eof)
}

// ClosedOrSent reports whether the peer of nc has closed it or sent
// something unasked: either way an idle keep-alive connection must not
// carry another request. It does not block or consume anything.
func ClosedOrSent(nc net.Conn) bool {
	n, eof, err := peek(nc)
	return err != nil || n > 0 || eof
}
