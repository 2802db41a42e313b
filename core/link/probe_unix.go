//go:build unix

package link

import (
	"net"
	"syscall"
)

// closedByPeer reports whether the peer has closed nc or sent something
// unasked (either way an idle keep-alive connection must not carry another
// request), without blocking and without consuming anything.
func closedByPeer(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var gone bool
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, e := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = n > 0 || (n == 0 && e == nil) || (e != nil && e != syscall.EAGAIN && e != syscall.EINTR)
		return true
	})
	return gone || err != nil
}
