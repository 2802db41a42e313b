//go:build unix

package peer

import (
	"errors"
	"net"
	"syscall"
)

// peek looks at one byte waiting on nc with MSG_PEEK|MSG_DONTWAIT: n is 1
// when a byte waits, eof when the peer closed with nothing waiting, err
// when the connection failed. A connection it cannot look into (not a
// syscall.Conn) reports nothing.
func peek(nc net.Conn) (n int, eof bool, err error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var buf [1]byte
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		var e error
		n, _, e = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case e == nil:
			eof = n == 0
		case errors.Is(e, syscall.EAGAIN) || errors.Is(e, syscall.EINTR):
			n = 0
		default:
			n, rerr = 0, e
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	return n, eof, err
}
