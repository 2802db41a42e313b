package link

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mserve/mserve/sdk/fuzzseed"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		status  int
		body    string
		keep    bool
		errHas  string
		maxBody int
	}{
		{name: "content length, kept", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello", status: 200, body: "hello", keep: true},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", status: 200, body: "{}"},
		{name: "HTTP/1.0 closes", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", status: 200, body: "{}"},
		{name: "HTTP/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", status: 200, body: "{}", keep: true},
		{name: "chunked with a trailer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n", status: 200, body: "abcde", keep: true},
		{name: "until the connection ends", in: "HTTP/1.1 200 OK\r\n\r\nuntil-eof", status: 200, body: "until-eof"},
		{name: "interim response skipped", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", keep: true},
		{name: "LF line ends, header case", in: "HTTP/1.1 500 Oops\ncontent-LENGTH: 3\n\nerr", status: 500, body: "err", keep: true},
		{name: "no body", in: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", status: 204, body: "", keep: true},
		{name: "body too large", in: "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", maxBody: 10, errHas: "11 bytes; the limit is 10"},
		{name: "chunked too large", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n", maxBody: 10, errHas: "more than 10 bytes"},
		{name: "not HTTP", in: "SSH-2.0-OpenSSH\r\n", errHas: "malformed HTTP status line"},
		{name: "bad status", in: "HTTP/1.1 2x0 OK\r\n\r\n", errHas: "malformed HTTP status line"},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", errHas: "bad Content-Length"},
		{name: "two lengths that differ", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", errHas: "bad Content-Length"},
		{name: "unknown transfer encoding", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", errHas: "unsupported Transfer-Encoding"},
		{name: "header without a colon", in: "HTTP/1.1 200 OK\r\nnonsense\r\n\r\n", errHas: "malformed HTTP header line"},
		{name: "cut short", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", errHas: "EOF"},
		{name: "a header line too long", in: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n", errHas: "longer than 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxBody := tt.maxBody
			if maxBody == 0 {
				maxBody = 1 << 20
			}
			status, body, keep, err := readResponse(bufio.NewReaderSize(strings.NewReader(tt.in), 4096), maxBody)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("error %v, want one saying %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.status || string(body) != tt.body || keep != tt.keep {
				t.Errorf("got %d %q keep=%v, want %d %q keep=%v", status, body, keep, tt.status, tt.body, tt.keep)
			}
		})
	}
}

func TestHTTPClientKeepsConnections(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.URL.RequestURI() != "/rpc?x=1" {
			http.Error(w, "bad request "+r.Method+" "+r.URL.RequestURI(), 400)
			return
		}
		b := make([]byte, r.ContentLength)
		r.Body.Read(b)
		w.Write(b)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := newHTTPClient(srv.URL+"/rpc?x=1", 1<<20, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for i := range 20 {
		status, body, err := c.post(context.Background(), []byte(`{"n":1}`), false)
		if err != nil || status != 200 || string(body) != `{"n":1}` {
			t.Fatalf("post %d: %d %q %v", i, status, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 20 sequential posts, want 1 kept", n)
	}
}

// TestHTTPClientKeptConnectionEnds covers a kept connection that ends
// under a request: one the server closed while idle is seen before use and
// replaced, whatever the call; one that ends after the server read the
// request is retried only for an idempotent call, since the server may have
// run it.
func TestHTTPClientKeptConnectionEnds(t *testing.T) {
	tests := []struct {
		name       string
		dropAfter  bool // the first connection reads the second request, then closes without answering
		idempotent bool
		wantErr    bool
		wantReqs   int64 // requests the server read
		wantConns  int64
	}{
		{name: "closed while idle", wantReqs: 2, wantConns: 2},
		{name: "dropped after the request, not idempotent", dropAfter: true, wantErr: true, wantReqs: 2, wantConns: 1},
		{name: "dropped after the request, idempotent", dropAfter: true, idempotent: true, wantReqs: 3, wantConns: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var conns, reqs atomic.Int64
			firstClosed := make(chan struct{})
			go func() {
				for {
					nc, err := ln.Accept()
					if err != nil {
						return
					}
					first := conns.Add(1) == 1
					go func() {
						defer nc.Close()
						br := bufio.NewReader(nc)
						for n := 1; ; n++ {
							req, err := http.ReadRequest(br)
							if err != nil {
								return
							}
							req.Body.Close()
							reqs.Add(1)
							if first && tt.dropAfter && n == 2 {
								nc.Close()
								close(firstClosed)
								return
							}
							nc.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
							if first && !tt.dropAfter { // closes once idle, as keep-alive timeouts do
								nc.Close()
								close(firstClosed)
								return
							}
						}
					}()
				}
			}()
			c, err := newHTTPClient("http://"+ln.Addr().String()+"/", 1<<20, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			if !tt.dropAfter {
				c.probeAfter = 0 // check every kept connection before use
			} else {
				c.probeAfter = time.Hour // the connection is alive when taken
			}
			if status, body, err := c.post(context.Background(), []byte(`{}`), tt.idempotent); err != nil || status != 200 || string(body) != "ok" {
				t.Fatalf("first post: %d %q %v", status, body, err)
			}
			if !tt.dropAfter {
				<-firstClosed
			}
			status, body, err := c.post(context.Background(), []byte(`{}`), tt.idempotent)
			if tt.wantErr != (err != nil) || (err == nil && (status != 200 || string(body) != "ok")) {
				t.Fatalf("second post: %d %q %v; want error %v", status, body, err, tt.wantErr)
			}
			if got := reqs.Load(); got != tt.wantReqs {
				t.Errorf("the server read %d requests, want %d", got, tt.wantReqs)
			}
			if got := conns.Load(); got != tt.wantConns {
				t.Errorf("%d connections, want %d", got, tt.wantConns)
			}
		})
	}
}

func TestHTTPClientCancel(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	c, err := newHTTPClient(srv.URL, 1<<20, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := c.post(ctx, []byte(`{}`), false); err != context.DeadlineExceeded {
		t.Errorf("error %v, want the context's", err)
	}
}

func TestNewHTTPClientRefusesOtherSchemes(t *testing.T) {
	for _, u := range []string{"ftp://x/", "://", "unix:///tmp/s"} {
		if _, err := newHTTPClient(u, 1, time.Second); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// FuzzReadResponse: any bytes give a response or an error, never a panic,
// and a body is never larger than the limit.
func FuzzReadResponse(f *testing.F) {
	fuzzseed.Add(f, "FuzzReadResponse", func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, in []byte) {
		status, body, _, err := readResponse(bufio.NewReaderSize(strings.NewReader(string(in)), 4096), 1024)
		if err == nil && (len(body) > 1024 || status < 200 || status > 999) {
			t.Fatalf("accepted status %d with %d bytes", status, len(body))
		}
	})
}
