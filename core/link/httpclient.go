package link

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mserve/mserve/core/internal/peer"
)

// httpClient POSTs JSON-RPC bodies to one URL over keep-alive HTTP/1.1
// connections of its own: one request at a time per connection, idle
// connections kept for the next call. It does what net/http's Transport
// would for this one job, without its shared pool lock, per-request
// goroutines and header maps: the request head is built once, and a
// response is parsed from the connection's reader into one buffer.
type httpClient struct {
	addr     string      // host:port to dial
	tls      *tls.Config // nil for http://
	head     []byte      // request head up to "Content-Length: "
	maxBody  int         // largest response body accepted
	maxIdle  int         // idle connections kept
	dialWait time.Duration
	// probeAfter: a connection idle this long is checked for a close by
	// the server before it carries a request (one non-blocking peek).
	probeAfter time.Duration

	mu   sync.Mutex
	idle []*httpConn
}

// httpConn is one keep-alive connection.
type httpConn struct {
	nc        net.Conn // as dialled (TCP), under TLS when https
	raw       net.Conn // the TCP connection, for peer.ClosedOrSent
	br        *bufio.Reader
	buf       []byte    // request, then response body; reused
	idleSince time.Time // when it was last put back
}

// newHTTPClient returns a client for rawURL (http:// or https://).
func newHTTPClient(rawURL string, maxBody int, dialWait time.Duration) (*httpClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	c := &httpClient{maxBody: maxBody, maxIdle: 1024, dialWait: dialWait, probeAfter: time.Millisecond}
	host := u.Host
	switch u.Scheme {
	case "http":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
	case "https":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
		c.tls = &tls.Config{ServerName: u.Hostname()}
	default:
		return nil, fmt.Errorf("URL %q: want http:// or https://", rawURL)
	}
	c.addr = host
	c.head = fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mserve\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: ", u.RequestURI(), u.Host)
	return c, nil
}

// errStaleConn is a kept connection that ended before any of the response
// came: the server may have closed it before the request reached it, or
// read the request and died.
var errStaleConn = errors.New("kept connection closed by the server")

// errNotSent is a kept connection that failed while the request was being
// written: the server cannot have run an incomplete request.
var errNotSent = errors.New("kept connection failed before the request was sent")

// post sends body and returns the response's status code and body (a
// fresh slice, the caller's to keep). ctx ending abandons the request and
// closes its connection. A request that failed on a kept connection goes
// once more on a new one if it was not sent whole, or if it was and the
// connection ended before any of the response came, only when idempotent:
// the server may have run it (net/http does the same for a POST).
// Kept connections idle for probeAfter are checked first, so that one
// the server closed while idle is not used.
func (c *httpClient) post(ctx context.Context, body []byte, idempotent bool) (int, []byte, error) {
	for attempt := 0; ; attempt++ {
		hc, reused, err := c.get(ctx)
		if err != nil {
			return 0, nil, err
		}
		stop := context.AfterFunc(ctx, func() { hc.nc.Close() })
		status, out, keep, err := c.exchange(hc, body, reused)
		interrupted := !stop()
		if err != nil || !keep || interrupted {
			hc.nc.Close()
		} else {
			c.put(hc)
		}
		if interrupted && err != nil {
			return 0, nil, ctx.Err()
		}
		if attempt == 0 && (errors.Is(err, errNotSent) || errors.Is(err, errStaleConn) && idempotent) {
			continue
		}
		return status, out, err
	}
}

// get takes an idle connection or dials a new one.
func (c *httpClient) get(ctx context.Context) (*httpConn, bool, error) {
	for {
		c.mu.Lock()
		n := len(c.idle)
		if n == 0 {
			c.mu.Unlock()
			break
		}
		hc := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		if time.Since(hc.idleSince) < c.probeAfter || !peer.ClosedOrSent(hc.raw) {
			return hc, true, nil
		}
		hc.nc.Close()
	}
	d := net.Dialer{Timeout: c.dialWait}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, false, err
	}
	hc := &httpConn{nc: nc, raw: nc}
	if c.tls != nil {
		tc := tls.Client(nc, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, false, err
		}
		hc.nc = tc
	}
	hc.br = bufio.NewReaderSize(hc.nc, 4096)
	return hc, false, nil
}

// put keeps a connection for the next call.
func (c *httpClient) put(hc *httpConn) {
	hc.idleSince = time.Now()
	c.mu.Lock()
	if len(c.idle) < c.maxIdle {
		c.idle = append(c.idle, hc)
		hc = nil
	}
	c.mu.Unlock()
	if hc != nil {
		hc.nc.Close()
	}
}

// close closes the idle connections. A nil client (an unusable URL) has
// none.
func (c *httpClient) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, hc := range idle {
		hc.nc.Close()
	}
}

// exchange writes one request and reads its response. keep reports
// whether the connection may carry another request.
func (c *httpClient) exchange(hc *httpConn, body []byte, reused bool) (status int, out []byte, keep bool, err error) {
	req := append(hc.buf[:0], c.head...)
	req = strconv.AppendInt(req, int64(len(body)), 10)
	req = append(req, "\r\n\r\n"...)
	req = append(req, body...)
	hc.buf = req
	if _, err := hc.nc.Write(req); err != nil {
		if reused {
			return 0, nil, false, fmt.Errorf("%w: %w", errNotSent, err)
		}
		return 0, nil, false, err
	}
	status, out, keep, err = readResponse(hc.br, c.maxBody)
	if err != nil && reused && hc.br.Buffered() == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) && status == 0 {
		return 0, nil, false, errStaleConn
	}
	return status, out, keep, err
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// readResponse reads one HTTP/1.x response for a POST: status line,
// headers, and a body delimited by Content-Length, chunked encoding or the
// end of the connection, of at most maxBody bytes. Interim 1xx responses
// are skipped. keep reports whether the connection may be reused.
func readResponse(br *bufio.Reader, maxBody int) (status int, body []byte, keep bool, err error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, nil, false, err
		}
		proto, rest, ok := bytes.Cut(line, []byte(" "))
		if !ok || !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(rest) < 3 {
			return 0, nil, false, fmt.Errorf("malformed HTTP status line %q", clip(line))
		}
		status, err = strconv.Atoi(string(rest[:3]))
		if err != nil || status < 100 || status > 999 || (len(rest) > 3 && rest[3] != ' ') {
			return 0, nil, false, fmt.Errorf("malformed HTTP status line %q", clip(line))
		}
		keep = string(proto) == "HTTP/1.1"
		length, chunked := -1, false
		for {
			h, err := readLine(br)
			if err != nil {
				return status, nil, false, err
			}
			if len(h) == 0 {
				break
			}
			name, value, ok := bytes.Cut(h, []byte(":"))
			if !ok {
				return status, nil, false, fmt.Errorf("malformed HTTP header line %q", clip(h))
			}
			value = bytes.TrimSpace(value)
			switch {
			case asciiEqualFold(name, "Content-Length"):
				n, err := strconv.Atoi(string(value))
				if err != nil || n < 0 || (length >= 0 && n != length) {
					return status, nil, false, fmt.Errorf("bad Content-Length %q", clip(value))
				}
				length = n
			case asciiEqualFold(name, "Transfer-Encoding"):
				chunked = asciiEqualFold(value, "chunked")
				if !chunked {
					return status, nil, false, fmt.Errorf("unsupported Transfer-Encoding %q", clip(value))
				}
			case asciiEqualFold(name, "Connection"):
				if asciiEqualFold(value, "close") {
					keep = false
				} else if asciiEqualFold(value, "keep-alive") {
					keep = true
				}
			}
		}
		if status >= 100 && status < 200 {
			continue // interim response; the real one follows
		}
		var r io.Reader
		switch {
		case chunked:
			r = httputil.NewChunkedReader(br)
		case length >= 0:
			if length > maxBody {
				return status, nil, false, fmt.Errorf("response of %d bytes; the limit is %d", length, maxBody)
			}
			body = make([]byte, length)
			if _, err := io.ReadFull(br, body); err != nil {
				return status, nil, false, err
			}
			return status, body, keep, nil
		default: // delimited by the end of the connection
			r, keep = br, false
		}
		body, err = io.ReadAll(io.LimitReader(r, int64(maxBody)+1))
		if err != nil {
			return status, nil, false, err
		}
		if len(body) > maxBody {
			return status, nil, false, fmt.Errorf("response of more than %d bytes", maxBody)
		}
		if chunked { // the trailer section, if any, ends with an empty line
			for {
				t, err := readLine(br)
				if err != nil {
					return status, nil, false, err
				}
				if len(t) == 0 {
					break
				}
			}
		}
		return status, body, keep, nil
	}
}

// readLine returns one CRLF- (or LF-) terminated line without its end. The
// slice is valid until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("HTTP header line longer than %d bytes", br.Size())
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// clip shortens b for an error message.
func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}
