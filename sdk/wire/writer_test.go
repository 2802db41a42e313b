package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// failsafe bounds waits that only time out when the code under test is
// broken; nothing sleeps to let something happen.
const failsafe = 10 * time.Second

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(failsafe):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestWriterConcurrentFramesArriveIntact(t *testing.T) {
	for _, transport := range []string{"tcp", "pipe"} {
		t.Run(transport, func(t *testing.T) {
			var a, b net.Conn
			if transport == "tcp" {
				a, b = tcpPair(t)
			} else {
				a, b = net.Pipe()
				t.Cleanup(func() { a.Close(); b.Close() })
			}
			const goroutines, perG = 16, 200
			w := NewWriter(a, 0)

			type rec struct {
				frames []string
				err    error
			}
			got := make(chan rec, 1)
			go func() {
				fs, err := readAll(NewReader(b, 0))
				got <- rec{fs, err}
			}()

			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perG {
						// Varying lengths so that frames straddle write boundaries.
						body := fmt.Sprintf("g%02d-%04d-%s", g, i, strings.Repeat("x", (g*perG+i)%97))
						if err := w.WriteFrame([]byte(body)); err != nil {
							t.Errorf("WriteFrame: %v", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			var res rec
			select {
			case res = <-got:
			case <-time.After(failsafe):
				t.Fatal("reader did not finish")
			}
			if res.err != io.EOF {
				t.Fatalf("reader ended with %v, want io.EOF after Close", res.err)
			}
			if len(res.frames) != goroutines*perG {
				t.Fatalf("read %d frames, want %d", len(res.frames), goroutines*perG)
			}
			next := make([]int, goroutines)
			for _, f := range res.frames {
				var g, i int
				if _, err := fmt.Sscanf(f, "g%02d-%04d-", &g, &i); err != nil {
					t.Fatalf("mangled frame %q", f)
				}
				if want := fmt.Sprintf("g%02d-%04d-%s", g, i, strings.Repeat("x", (g*perG+i)%97)); f != want {
					t.Fatalf("frame %q, want %q", f, want)
				}
				if i != next[g] {
					t.Fatalf("goroutine %d: frame %d arrived when %d was expected", g, i, next[g])
				}
				next[g]++
			}
		})
	}
}

func TestWriterCloseFlushesPending(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := NewWriter(a, 0)
	const n = 100
	for i := range n {
		if err := w.WriteFrame([]byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing has been read yet: the pipe holds the writer's goroutine,
	// so these frames are pending when Close starts.
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	frames, err := readAll(NewReader(b, 0))
	if err != io.EOF {
		t.Fatalf("reader ended with %v, want io.EOF", err)
	}
	if len(frames) != n {
		t.Fatalf("got %d frames, want %d", len(frames), n)
	}
	for i, f := range frames {
		if f != strconv.Itoa(i) {
			t.Fatalf("frame %d = %q", i, f)
		}
	}
	waitClosed(t, closed, "Close to return")
	waitClosed(t, w.Done(), "Done")
	if err := w.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err() after Close = %v, want ErrClosed", err)
	}
	if err := w.WriteFrame([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteFrame after Close = %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestWriterSlowReader(t *testing.T) {
	a, b := net.Pipe() // b is never read
	defer b.Close()
	const limit, body = 1024, 100
	w := NewWriter(a, limit)
	frame := make([]byte, body)
	var err error
	written := 0
	for written < 1000 {
		if err = w.WriteFrame(frame); err != nil {
			break
		}
		written++
	}
	if !errors.Is(err, ErrSlowReader) {
		t.Fatalf("after %d frames WriteFrame = %v, want ErrSlowReader", written, err)
	}
	// The I/O goroutine takes at most one batch (itself at most limit bytes)
	// before blocking on the pipe for good; after that, pending output
	// passing the limit must fail End.
	if most := 2*limit/(body+HeaderSize) + 2; written > most {
		t.Errorf("%d frames accepted before ErrSlowReader, want at most %d", written, most)
	}
	waitClosed(t, w.Done(), "the writer to stop after ErrSlowReader")
	if err := w.Err(); !errors.Is(err, ErrSlowReader) {
		t.Errorf("Err() = %v, want ErrSlowReader", err)
	}
	if err := w.WriteFrame(frame); !errors.Is(err, ErrSlowReader) {
		t.Errorf("WriteFrame after the failure = %v, want ErrSlowReader", err)
	}
	// The connection was closed: the peer sees the end of the stream.
	if _, err := b.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer read = %v, want io.EOF", err)
	}
}

func TestWriterAbortDoesNotBlock(t *testing.T) {
	a, b := net.Pipe() // b is never read, so the writer's goroutine is stuck in Write
	defer b.Close()
	w := NewWriter(a, 0)
	for range 10 {
		if err := w.WriteFrame([]byte("pending")); err != nil {
			t.Fatal(err)
		}
	}
	aborted := make(chan struct{})
	go func() { w.Abort(); close(aborted) }()
	waitClosed(t, aborted, "Abort to return")
	waitClosed(t, w.Done(), "the writer's goroutine to end after Abort")
	if err := w.WriteFrame([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteFrame after Abort = %v, want ErrClosed", err)
	}
	if _, err := b.Read(make([]byte, 64)); err != io.EOF {
		t.Errorf("peer read after Abort = %v, want io.EOF (pending output discarded)", err)
	}
	w.Abort() // a second Abort is harmless
	if err := w.Close(); err != nil {
		t.Errorf("Close after Abort = %v", err)
	}
}

func TestWriterWriteErrorStopsIt(t *testing.T) {
	a, b := net.Pipe()
	b.Close() // every write on a fails
	w := NewWriter(a, 0)
	if err := w.WriteFrame([]byte("x")); err != nil {
		t.Fatalf("the first WriteFrame only queues; got %v", err)
	}
	waitClosed(t, w.Done(), "the writer to stop after a write error")
	if err := w.Err(); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Err() = %v, want the write error", err)
	}
	if err := w.WriteFrame([]byte("y")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("WriteFrame after a write error = %v, want it", err)
	}
}

// gatedConn records writes; the first Write waits for release.
type gatedConn struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	writes  [][]byte
	closed  bool
}

func (g *gatedConn) Write(p []byte) (int, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		<-g.release
	}
	g.mu.Lock()
	g.writes = append(g.writes, append([]byte(nil), p...))
	g.mu.Unlock()
	return len(p), nil
}

func (g *gatedConn) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	return nil
}

func TestWriterCoalescesFramesIntoFewWrites(t *testing.T) {
	g := &gatedConn{entered: make(chan struct{}), release: make(chan struct{})}
	w := NewWriter(g, 0)
	if err := w.WriteFrame([]byte("first")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, g.entered, "the first write")
	// The I/O goroutine is busy: these 50 frames must go out together.
	for i := range 50 {
		if err := w.WriteFrame([]byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	close(g.release)
	w.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.writes) != 2 {
		t.Errorf("%d writes, want 2 (the first frame, then the 50 coalesced)", len(g.writes))
	}
	var all []byte
	for _, p := range g.writes {
		all = append(all, p...)
	}
	frames, err := readAll(NewReader(strings.NewReader(string(all)), 0))
	if err != io.EOF || len(frames) != 51 || frames[0] != "first" || frames[50] != "49" {
		t.Errorf("frames %q, err %v", frames, err)
	}
	if !g.closed {
		t.Error("Close did not close the underlying connection")
	}
}

func TestWriterBeginEndWithBeginFrame(t *testing.T) {
	a, b := tcpPair(t)
	w := NewWriter(a, 0)
	buf, start := BeginFrame(w.Begin())
	buf = append(buf, `{"jsonrpc":"2.0","id":1,"result":"ok"}`...)
	buf, err := EndFrame(buf, start, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.End(buf); err != nil {
		t.Fatal(err)
	}
	// A refused frame leaves nothing behind.
	buf, start = BeginFrame(w.Begin())
	buf = append(buf, strings.Repeat("x", 20)...)
	buf, err = EndFrame(buf, start, 10)
	if err == nil {
		t.Fatal("EndFrame accepted a frame over its limit")
	}
	if err := w.End(buf); err != nil {
		t.Fatal(err)
	}
	w.Close()
	frames, err := readAll(NewReader(b, 0))
	if err != io.EOF || len(frames) != 1 || frames[0] != `{"jsonrpc":"2.0","id":1,"result":"ok"}` {
		t.Errorf("frames %q, err %v", frames, err)
	}
}

// writeRecorder is an io.WriteCloser without a file descriptor that records
// each Write.
type writeRecorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (r *writeRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	r.mu.Unlock()
	return len(p), nil
}

func (r *writeRecorder) Close() error { return nil }

func TestWriterEndLaterWaitsForFlush(t *testing.T) {
	rec := &writeRecorder{}
	w := NewWriter(rec, 0)
	var f Flusher
	for i := range 10 {
		buf := AppendFrame(w.Begin(), []byte(strconv.Itoa(i)))
		if err := w.EndLater(buf, &f); err != nil {
			t.Fatal(err)
		}
	}
	f.Flush()
	f.Flush() // a second Flush has nothing registered
	w.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.writes) != 1 {
		t.Fatalf("%d writes, want the deferred frames in one", len(rec.writes))
	}
	frames, err := readAll(NewReader(strings.NewReader(string(rec.writes[0])), 0))
	if err != io.EOF || len(frames) != 10 || frames[0] != "0" || frames[9] != "9" {
		t.Errorf("frames %q, err %v", frames, err)
	}
}

func TestWriterEndLaterNilFlusherIsEnd(t *testing.T) {
	a, b := tcpPair(t)
	w := NewWriter(a, 0)
	if err := w.EndLater(AppendFrame(w.Begin(), []byte("now")), nil); err != nil {
		t.Fatal(err)
	}
	// No Flush and no Close: the frame must arrive anyway.
	b.SetReadDeadline(time.Now().Add(failsafe))
	got, err := NewReader(b, 0).ReadFrame(nil)
	if err != nil || string(got) != "now" {
		t.Fatalf("ReadFrame = %q, %v", got, err)
	}
	w.Close()
}

func TestFlusherWritesEveryRegisteredWriter(t *testing.T) {
	const conns, perConn = 3, 20
	var f Flusher
	var writers []*Writer
	var peers []net.Conn
	for range conns {
		a, b := tcpPair(t)
		writers = append(writers, NewWriter(a, 0))
		peers = append(peers, b)
	}
	for i := range perConn {
		for c, w := range writers {
			buf := AppendFrame(w.Begin(), []byte(fmt.Sprintf("c%d-%d", c, i)))
			if err := w.EndLater(buf, &f); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.Flush()
	for c, b := range peers {
		b.SetReadDeadline(time.Now().Add(failsafe))
		r := NewReader(b, 0)
		for i := range perConn {
			got, err := r.ReadFrame(nil)
			if want := fmt.Sprintf("c%d-%d", c, i); err != nil || string(got) != want {
				t.Fatalf("conn %d frame %d = %q, %v; want %q", c, i, got, err, want)
			}
		}
	}
	for _, w := range writers {
		w.Close()
	}
}

func TestWriterTCPBacklogKeepsOrder(t *testing.T) {
	// More than the socket buffers hold: inline non-blocking writes come up
	// short and the Writer's goroutine must carry on in order.
	a, b := tcpPair(t)
	w := NewWriter(a, 0)
	const n, size = 256, 32 << 10
	body := []byte(strings.Repeat("z", size))
	for i := range n {
		copy(body, fmt.Sprintf("%06d", i))
		if err := w.WriteFrame(body); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	b.SetReadDeadline(time.Now().Add(failsafe))
	r := NewReader(b, 0)
	for i := range n {
		got, err := r.ReadFrame(nil)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := fmt.Sprintf("%06d", i); len(got) != size || string(got[:6]) != want {
			t.Fatalf("frame %d starts %q (len %d), want %q", i, got[:min(6, len(got))], len(got), want)
		}
	}
	if _, err := r.ReadFrame(nil); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
	waitClosed(t, closed, "Close")
}

func TestWriterTCPSlowReader(t *testing.T) {
	a, b := tcpPair(t) // b is never read
	_ = b
	const limit = 64 << 10
	w := NewWriter(a, limit)
	body := make([]byte, 16<<10)
	var err error
	// The kernel's socket buffers absorb some megabytes first; after that,
	// pending output must pass the limit and stop the writer.
	for i := 0; i < 64<<20/len(body); i++ {
		if err = w.WriteFrame(body); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrSlowReader) {
		t.Fatalf("WriteFrame = %v, want ErrSlowReader", err)
	}
	waitClosed(t, w.Done(), "the writer to stop")
	if err := w.WriteFrame(body); !errors.Is(err, ErrSlowReader) {
		t.Errorf("after the failure: %v, want ErrSlowReader", err)
	}
}

func TestWriterEndLaterAfterStop(t *testing.T) {
	tests := []struct {
		name string
		stop func(w *Writer)
	}{
		{"after Close", func(w *Writer) { w.Close() }},
		{"after Abort", func(w *Writer) { w.Abort() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &writeRecorder{}
			w := NewWriter(rec, 0)
			var f Flusher
			if err := w.EndLater(AppendFrame(w.Begin(), []byte("kept?")), &f); err != nil {
				t.Fatal(err)
			}
			tc.stop(w)
			if err := w.EndLater(AppendFrame(w.Begin(), []byte("late")), &f); !errors.Is(err, ErrClosed) {
				t.Errorf("EndLater after stop = %v, want ErrClosed", err)
			}
			f.Flush() // harmless on a stopped writer
			waitClosed(t, w.Done(), "the writer to stop")
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, p := range rec.writes {
				if strings.Contains(string(p), "late") {
					t.Errorf("a frame given after the writer stopped was written: %q", p)
				}
			}
		})
	}
}
