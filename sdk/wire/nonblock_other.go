//go:build !unix

package wire

import (
	"errors"
	"syscall"
)

const nonBlockingWrites = false

func writeNonBlocking(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("non-blocking writes are not supported on this platform")
}
