// Package wire implements mserve's native framing. A stream is a sequence of
// frames; each frame is a 4-byte big-endian length followed by that many
// bytes of body, and the body is one JSON-RPC 2.0 message (a request, a
// response or a batch). Many calls are in flight on one connection at once;
// they are told apart by their JSON-RPC ids.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of a frame's length prefix in bytes.
const HeaderSize = 4

// DefaultMaxFrame is the largest frame body accepted when no limit is set.
const DefaultMaxFrame = 4 << 20

// FrameTooLargeError is returned when a frame's declared length exceeds the
// reader's limit. The stream cannot be resynchronised after it: close it.
type FrameTooLargeError struct {
	Size  uint32 // the length the header declared
	Limit int    // the reader's limit
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the limit of %d bytes", e.Size, e.Limit)
}

// ErrNotFramed is returned when a stream starts with what looks like an HTTP
// request or bare JSON instead of a length prefix: a client speaking the
// wrong protocol to the native port.
var ErrNotFramed = errors.New("stream is not length-prefixed frames (HTTP or bare JSON sent to the native port?)")

// ErrTruncated is returned when the stream ends inside a frame.
var ErrTruncated = errors.New("connection closed in the middle of a frame")

// readBuffer is a Reader's buffer: large enough to take a burst of small
// frames in one read, small enough for ten thousand idle connections.
// Frames larger than it are read straight into their own buffer.
const readBuffer = 16 << 10

// Reader reads frames from a stream.
type Reader struct {
	r     *bufio.Reader
	limit int
	first bool
	hdr   [HeaderSize]byte

	// OnHeader, when set, is called after a frame's header has been read
	// and before its body is: a server sets a deadline for the body there,
	// so that a frame trickling in byte by byte cannot hold a connection.
	OnHeader func()
}

// NewReader returns a Reader over r that refuses frames longer than limit
// bytes (DefaultMaxFrame when limit <= 0).
func NewReader(r io.Reader, limit int) *Reader {
	if limit <= 0 {
		limit = DefaultMaxFrame
	}
	return &Reader{r: bufio.NewReaderSize(r, readBuffer), limit: limit, first: true}
}

// Limit returns the largest frame body the reader accepts.
func (r *Reader) Limit() int { return r.limit }

// Buffered returns the number of bytes already read from the stream but not
// yet returned in a frame. A caller may use it to batch work: while it is
// positive, the next ReadFrame will not block on the network.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// HasFrame reports whether a whole frame is already buffered, so that
// ReadFrame will return without waiting for the network. A reader working
// through a burst of frames flushes its deferred output when this turns
// false.
func (r *Reader) HasFrame() bool {
	n := r.r.Buffered()
	if n < HeaderSize {
		return false
	}
	hdr, err := r.r.Peek(HeaderSize)
	if err != nil {
		return false
	}
	return n-HeaderSize >= int(binary.BigEndian.Uint32(hdr))
}

// ReadFrame reads the next frame and appends its body to dst[:0], returning
// the extended slice. It returns io.EOF at a clean end of stream,
// ErrTruncated when the stream ends inside a frame, *FrameTooLargeError when
// the header declares more than the limit, and ErrNotFramed when the first
// bytes of the stream are clearly not a frame header.
func (r *Reader) ReadFrame(dst []byte) ([]byte, error) {
	hdr := r.hdr[:]
	if _, err := io.ReadFull(r.r, hdr); err != nil {
		if err == io.ErrUnexpectedEOF {
			return dst[:0], ErrTruncated
		}
		return dst[:0], err
	}
	if r.first {
		r.first = false
		if looksUnframed(r.hdr) {
			return dst[:0], ErrNotFramed
		}
	}
	n := binary.BigEndian.Uint32(hdr)
	if int64(n) > int64(r.limit) {
		return dst[:0], &FrameTooLargeError{Size: n, Limit: r.limit}
	}
	if r.OnHeader != nil {
		r.OnHeader()
	}
	if cap(dst) < int(n) {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if _, err := io.ReadFull(r.r, dst); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return dst[:0], ErrTruncated
		}
		return dst[:0], err
	}
	return dst, nil
}

// looksUnframed reports whether a stream's first four bytes look like an
// HTTP method or the start of a JSON document rather than a length.
func looksUnframed(h [HeaderSize]byte) bool {
	if h[0] == '{' || h[0] == '[' {
		return true
	}
	for i, c := range h {
		if (c < 'A' || c > 'Z') && (i == 0 || c != ' ') { // "GET " and "PUT " end in a space
			return false
		}
	}
	return true // "GET ", "POST", "PUT ", "HEAD"… as a length would be > 1 GB anyway
}

// BeginFrame reserves a frame header at the end of dst and returns dst and
// the header's offset. Append the body, then call EndFrame.
func BeginFrame(dst []byte) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0), start
}

// EndFrame writes the length of the body appended since BeginFrame into the
// header at start. It fails, and truncates dst back to start, when the body
// is longer than limit (DefaultMaxFrame when limit <= 0).
func EndFrame(dst []byte, start, limit int) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultMaxFrame
	}
	n := len(dst) - start - HeaderSize
	if n > limit {
		return dst[:start], &FrameTooLargeError{Size: uint32(min(n, 1<<32-1)), Limit: limit}
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n))
	return dst, nil
}

// AppendFrame appends body to dst as one frame.
func AppendFrame(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}
