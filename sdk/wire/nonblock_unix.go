//go:build unix

package wire

import "syscall"

const nonBlockingWrites = true

// writeNonBlocking writes as much of b as the socket takes without
// blocking and returns how much that was.
func writeNonBlocking(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return true
			case e != nil:
				werr = e
				return true
			case m == 0:
				return true
			}
		}
		return true
	})
	if werr != nil {
		return n, werr
	}
	return n, err
}
