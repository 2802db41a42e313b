package wire

import (
	"errors"
	"io"
	"sync"
	"syscall"
)

// ErrSlowReader is returned by Writer.End when the peer has not read enough
// of what was sent and the pending output passed the writer's limit. The
// writer closes the connection: a peer that does not read must not make
// the sender buffer without bound or stall others.
var ErrSlowReader = errors.New("peer is not reading: pending output exceeds the limit")

// ErrClosed is returned by Writer.End after the writer was closed.
var ErrClosed = errors.New("connection closed")

// who is writing to the connection.
type owner uint8

const (
	idle   owner = iota // nobody: the next End writes itself
	caller              // a caller of End, with a non-blocking write
	loop                // the Writer's goroutine, with blocking writes
)

// Writer coalesces frames written by many goroutines into few write system
// calls, and never makes a caller wait for a slow peer.
//
// Callers append whole frames to a shared pending buffer under a short lock
// (Begin/End). When nothing is being written, End tries one non-blocking
// write itself, which saves a goroutine hand-off on an idle connection;
// whatever that cannot write at once, and everything appended while a write
// is in progress, is written by the Writer's own goroutine. No lock is held
// across I/O.
type Writer struct {
	w      io.WriteCloser
	raw    syscall.RawConn // for non-blocking writes; nil when w has no file descriptor
	limit  int
	signal chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	pending []byte
	spare   []byte
	owner   owner
	err     error // set once: why the writer stopped taking frames
	closing bool  // flush what is pending, then close the connection
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
		done:    make(chan struct{}),
		pending: make([]byte, 0, 4096),
	}
	if sc, ok := w.(syscall.Conn); ok && nonBlockingWrites {
		wr.raw, _ = sc.SyscallConn()
	}
	go wr.run()
	return wr
}

// Begin locks the writer and returns the pending buffer; append whole frames
// to it and hand it back with End. Nothing may block between the two.
func (w *Writer) Begin() []byte {
	w.mu.Lock()
	return w.pending
}

// End stores the extended buffer and unlocks the writer; the frames are
// written now or soon. It returns the error that stopped the writer, if
// any; then the appended frames are discarded.
func (w *Writer) End(buf []byte) error { return w.EndLater(buf, nil) }

// EndLater is End for a goroutine that is working through a batch of input
// and will call f.Flush when the batch is done: rather than writing at
// once, it leaves the frames pending and registers w with f, so that all
// the frames the batch produces for w go out in one write. A nil f makes
// it End.
func (w *Writer) EndLater(buf []byte, f *Flusher) error {
	if w.err != nil {
		err := w.err
		w.pending = buf[:0]
		w.mu.Unlock()
		return err
	}
	w.pending = buf
	if len(buf) > w.limit {
		w.stopLocked(ErrSlowReader)
		w.mu.Unlock()
		w.w.Close()
		return ErrSlowReader
	}
	if w.owner != idle {
		w.mu.Unlock() // the active writer takes these frames too
		return nil
	}
	if f != nil {
		w.mu.Unlock()
		f.add(w)
		return nil
	}
	return w.writeLocked()
}

// flush writes what is pending if nobody else is writing.
func (w *Writer) flush() {
	w.mu.Lock()
	if w.err != nil || w.owner != idle || len(w.pending) == 0 {
		w.mu.Unlock()
		return
	}
	w.writeLocked()
}

// writeLocked starts writing the pending buffer: inline with one
// non-blocking write when possible, the rest by the Writer's goroutine.
// Caller holds w.mu with owner idle; writeLocked unlocks it.
func (w *Writer) writeLocked() error {
	if w.raw == nil {
		w.owner = loop
		w.mu.Unlock()
		w.kick()
		return nil
	}
	w.owner = caller
	out := w.pending
	w.pending, w.spare = w.spare[:0], nil
	w.mu.Unlock()

	n, err := writeNonBlocking(w.raw, out)

	w.mu.Lock()
	if err != nil {
		w.stopLocked(err)
		w.owner = loop // it sees closing and ends
		w.kick()
		w.mu.Unlock()
		w.w.Close()
		return nil // the frames were accepted; the connection failed afterwards
	}
	if n < len(out) {
		// What is left goes before anything appended meanwhile.
		rest := make([]byte, 0, len(out)-n+len(w.pending))
		rest = append(append(rest, out[n:]...), w.pending...)
		w.pending = rest
	} else {
		w.spare = out[:0]
	}
	if len(w.pending) > 0 || w.closing {
		w.owner = loop
		w.mu.Unlock()
		w.kick()
		return nil
	}
	w.owner = idle
	w.mu.Unlock()
	return nil
}

// Flusher collects the Writers a goroutine deferred output to with
// EndLater, and writes them all with Flush. It is used by one goroutine at
// a time.
type Flusher struct {
	ws []*Writer
}

func (f *Flusher) add(w *Writer) {
	for _, x := range f.ws {
		if x == w {
			return
		}
	}
	f.ws = append(f.ws, w)
}

// Flush writes the output deferred to every registered Writer and forgets
// them.
func (f *Flusher) Flush() {
	for i, w := range f.ws {
		w.flush()
		f.ws[i] = nil
	}
	f.ws = f.ws[:0]
}

// WriteFrame appends body as one frame.
func (w *Writer) WriteFrame(body []byte) error {
	return w.End(AppendFrame(w.Begin(), body))
}

// Close stops taking frames, waits until what is pending has been written,
// then closes the connection. It is safe to call more than once. A peer
// that does not read can make Close wait: set a write deadline on the
// connection first, or use Abort.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.err == nil {
		w.err = ErrClosed
	}
	w.closing = true
	if w.owner == idle {
		w.owner = loop
		w.kick()
	}
	w.mu.Unlock()
	<-w.done
	return nil
}

// Abort closes the connection at once, discarding pending output; a write
// in progress fails. It does not wait for the I/O goroutine.
func (w *Writer) Abort() {
	w.mu.Lock()
	w.stopLocked(ErrClosed)
	w.mu.Unlock()
	w.w.Close()
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

// stopLocked records err, drops pending output and makes the goroutine
// exit. Caller holds w.mu.
func (w *Writer) stopLocked(err error) {
	if w.err == nil {
		w.err = err
	}
	w.pending = nil
	w.closing = true
	if w.owner == idle {
		w.owner = loop
		w.kick()
	}
}

func (w *Writer) kick() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// run is the Writer's goroutine: it writes whatever it is handed, with
// blocking writes, until the pending buffer is empty, then gives the
// connection back to callers.
func (w *Writer) run() {
	defer close(w.done)
	for range w.signal {
		for {
			w.mu.Lock()
			if w.owner != loop { // a stale signal
				w.mu.Unlock()
				break
			}
			if len(w.pending) == 0 {
				w.owner = idle
				closing := w.closing
				w.mu.Unlock()
				if closing {
					w.w.Close()
					return
				}
				break
			}
			out := w.pending
			w.pending, w.spare = w.spare[:0], nil
			w.mu.Unlock()
			if _, err := w.w.Write(out); err != nil {
				w.mu.Lock()
				w.stopLocked(err)
				w.pending = nil
				w.owner = idle
				w.mu.Unlock()
				w.w.Close()
				return
			}
			w.mu.Lock()
			if cap(out) <= 1<<20 { // do not keep a burst's buffer forever
				w.spare = out[:0]
			}
			w.mu.Unlock()
		}
	}
}
