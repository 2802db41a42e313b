package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/mserve/mserve/sdk/fuzzseed"
)

// FuzzReadFrame reads an arbitrary stream with a 64-byte limit. Every frame
// returned is within the limit, the frames re-encoded are a prefix of the
// input, and the error that ends the stream matches what follows that
// prefix.
func FuzzReadFrame(f *testing.F) {
	const limit = 64
	fuzzseed.Add(f, "FuzzReadFrame", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), limit)
		var re []byte
		var err error
		var dst []byte
		for n := 0; ; n++ {
			if n > len(data)/HeaderSize+1 {
				t.Fatalf("%d frames from %d bytes", n, len(data))
			}
			dst, err = r.ReadFrame(dst)
			if err != nil {
				if len(dst) != 0 {
					t.Fatalf("ReadFrame returned %d bytes with error %v", len(dst), err)
				}
				break
			}
			if len(dst) > limit {
				t.Fatalf("frame of %d bytes over the limit %d", len(dst), limit)
			}
			re = AppendFrame(re, dst)
			if !bytes.HasPrefix(data, re) {
				t.Fatalf("re-encoded frames are not a prefix of the input")
			}
		}
		rest := data[len(re):]
		var tl *FrameTooLargeError
		switch {
		case err == io.EOF:
			if len(rest) != 0 {
				t.Fatalf("io.EOF with %d bytes unread", len(rest))
			}
		case err == ErrTruncated:
			if len(rest) == 0 {
				t.Fatal("ErrTruncated at a frame boundary")
			}
			if len(rest) >= HeaderSize && int(binary.BigEndian.Uint32(rest)) <= len(rest)-HeaderSize {
				t.Fatalf("ErrTruncated, but a whole frame follows")
			}
		case err == ErrNotFramed:
			if len(re) != 0 {
				t.Fatal("ErrNotFramed after the first frame")
			}
			if c := data[0]; c != '{' && c != '[' && !(c >= 'A' && c <= 'Z') {
				t.Fatalf("ErrNotFramed for a stream starting %q", data[:HeaderSize])
			}
		case errors.As(err, &tl):
			if len(rest) < HeaderSize || binary.BigEndian.Uint32(rest) != tl.Size || tl.Size <= limit || tl.Limit != limit {
				t.Fatalf("wrong %v for header %q", err, rest[:min(len(rest), HeaderSize)])
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}
