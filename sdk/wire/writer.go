package wire

import (
	"errors"
	"io"
	"sync"
)

// ErrSlowReader is returned by Writer.End when the peer has not read enough
// of what was sent and the pending output passed the writer's limit. The
// writer closes the connection: a peer that does not read must not make
// the sender buffer without bound or stall others.
var ErrSlowReader = errors.New("peer is not reading: pending output exceeds the limit")

// ErrClosed is returned by Writer.End after the writer was closed.
var ErrClosed = errors.New("connection closed")

// Writer coalesces frames written by many goroutines into few write system
// calls. Callers append to a shared pending buffer under a short lock; one
// goroutine owned by the Writer does all I/O, so no caller ever blocks on the
// network and no lock is held across a write.
type Writer struct {
	w       io.WriteCloser
	limit   int
	signal  chan struct{}
	mu      sync.Mutex
	pending []byte
	err     error
	done    chan struct{}
}

// NewWriter starts a Writer on w. Pending output beyond limit bytes
// (16 MiB when limit <= 0) closes the connection with ErrSlowReader.
func NewWriter(w io.WriteCloser, limit int) *Writer {
	if limit <= 0 {
		limit = 16 << 20
	}
	wr := &Writer{
		w:       w,
		limit:   limit,
		signal:  make(chan struct{}, 1),
		pending: make([]byte, 0, 4096),
		done:    make(chan struct{}),
	}
	go wr.loop()
	return wr
}

// Begin locks the writer and returns the pending buffer; append whole frames
// to it and hand it back with End. Nothing may block between the two.
func (w *Writer) Begin() []byte {
	w.mu.Lock()
	return w.pending
}

// End stores the extended buffer, unlocks the writer and wakes its I/O
// goroutine. It returns the error that closed the writer, if any; then the
// appended frames are discarded.
func (w *Writer) End(buf []byte) error {
	if w.err != nil {
		err := w.err
		w.pending = buf[:0]
		w.mu.Unlock()
		return err
	}
	w.pending = buf
	over := len(buf) > w.limit
	if over {
		w.err = ErrSlowReader
		w.pending = nil
	}
	w.mu.Unlock()
	if over {
		w.w.Close()
		return ErrSlowReader
	}
	select {
	case w.signal <- struct{}{}:
	default:
	}
	return nil
}

// WriteFrame appends body as one frame.
func (w *Writer) WriteFrame(body []byte) error {
	return w.End(AppendFrame(w.Begin(), body))
}

// Close stops the writer after flushing what is pending, then closes the
// underlying connection. It is safe to call more than once.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.err == nil {
		w.err = ErrClosed
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
	<-w.done
	return nil
}

// Done is closed when the writer's goroutine has ended (the connection is
// closed or failed).
func (w *Writer) Done() <-chan struct{} { return w.done }

// Err returns the error that stopped the writer, or nil while it runs.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Writer) loop() {
	defer close(w.done)
	spare := make([]byte, 0, 4096)
	for range w.signal {
		w.mu.Lock()
		out := w.pending
		w.pending = spare[:0]
		stop := w.err != nil
		w.mu.Unlock()
		if len(out) > 0 {
			if _, err := w.w.Write(out); err != nil {
				w.fail(err)
				return
			}
		}
		if stop {
			w.w.Close()
			return
		}
		if cap(out) > 1<<20 { // do not keep a burst's buffer forever
			out = make([]byte, 0, 4096)
		}
		spare = out[:0]
	}
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.pending = nil
	w.mu.Unlock()
	w.w.Close()
}

// Abort closes the connection at once, discarding pending output; a write
// in progress fails. It does not wait for the I/O goroutine.
func (w *Writer) Abort() {
	w.mu.Lock()
	if w.err == nil {
		w.err = ErrClosed
	}
	w.pending = nil
	w.mu.Unlock()
	w.w.Close()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}
