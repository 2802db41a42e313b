package httpfront

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
)

// The HTTP server's own cost, net/http against fasthttp, with the same
// trivial JSON handler and the same client (keep-alive connections
// writing a prepared request and reading the response): the choice of
// server for the front end rests on this (docs/BENCHMARKS.md).
//
//	go test -run '^$' -bench Server -benchtime 2s ./core/httpfront

var (
	benchBody = []byte(`{"jsonrpc":"2.0","id":1,"method":"echo","params":["k1"]}`)
	benchResp = []byte(`{"jsonrpc":"2.0","id":1,"result":"k1","info":{"route":"k1","servant":"b1","elapsed_ns":100000,"execution_ns":50000}}`)
)

func BenchmarkServerNetHTTP(b *testing.B) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(benchResp)
	})}
	benchServer(b, func(ln net.Listener) { srv.Serve(ln) }, func() { srv.Close() })
}

func BenchmarkServerFasthttp(b *testing.B) {
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		_ = ctx.PostBody()
		ctx.Response.Header.SetContentType("application/json")
		ctx.Response.SetBodyRaw(benchResp)
	}, NoDefaultServerHeader: true}
	benchServer(b, func(ln net.Listener) { srv.Serve(ln) }, func() { srv.Shutdown() })
}

// benchServer serves on loopback and posts b.N requests over parallel
// keep-alive connections.
func benchServer(b *testing.B, serve func(net.Listener), stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go serve(ln)
	defer stop()
	req := []byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(benchBody)) + "\r\n\r\n" + string(benchBody))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
