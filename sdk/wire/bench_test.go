package wire

import (
	"io"
	"testing"
)

// cycle reads stream over and over, forever.
type cycle struct {
	stream []byte
	off    int
}

func (c *cycle) Read(p []byte) (int, error) {
	n := copy(p, c.stream[c.off:])
	c.off = (c.off + n) % len(c.stream)
	return n, nil
}

func BenchmarkReadFrame(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":17,"method":"proc1","params":["IBM"]}`)
	var stream []byte
	for range 1024 {
		stream = AppendFrame(stream, body)
	}
	r := NewReader(&cycle{stream: stream}, 0)
	var dst []byte
	b.SetBytes(int64(len(body) + HeaderSize))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = r.ReadFrame(dst); err != nil {
			b.Fatal(err)
		}
		if len(dst) != len(body) {
			b.Fatalf("frame of %d bytes", len(dst))
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":17,"result":{"sym":["IBM"],"price":[27.19]}}`)
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(body) + HeaderSize))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFrame(buf[:0], body)
	}
}

// discardConn is an io.WriteCloser that drops everything.
type discardConn struct{}

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (discardConn) Close() error                { return nil }

var _ io.WriteCloser = discardConn{}

func BenchmarkWriterThroughput(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":17,"result":{"sym":["IBM"],"price":[27.19]}}`)
	b.Run("sequential", func(b *testing.B) {
		w := NewWriter(discardConn{}, 0)
		defer w.Close()
		b.SetBytes(int64(len(body) + HeaderSize))
		b.ReportAllocs()
		for b.Loop() {
			if err := w.WriteFrame(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		w := NewWriter(discardConn{}, 0)
		defer w.Close()
		b.SetBytes(int64(len(body) + HeaderSize))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := w.WriteFrame(body); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
