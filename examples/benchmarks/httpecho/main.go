// Command httpecho is the backend of the peer benchmark: a small, fast
// JSON-RPC 2.0 server over HTTP (net/http) whose one method, echo, answers
//
//	{"jsonrpc":"2.0","id":<id>,"result":<params[0], raw>}
//
// Any other method (mserve's rpc.hello and rpc.ping among them) is answered
// "method not found", which mserve takes as a plain JSON-RPC server with
// default settings. A batch (a JSON array of requests) is answered with the
// array of their responses, as JSON-RPC 2.0 asks. The same process sits
// behind HAProxy, nginx and mserve in examples/benchmarks/peers.sh.
//
//	httpecho -addr 127.0.0.1:7101
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"sync"

	"github.com/mserve/mserve/sdk/jsonrpc"
)

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func main() {
	addr := flag.String("addr", "127.0.0.1:7101", "address to listen on")
	flag.Parse()
	srv := &http.Server{Addr: *addr, Handler: http.HandlerFunc(serve)}
	log.Fatal(srv.ListenAndServe())
}

func serve(w http.ResponseWriter, r *http.Request) {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	body := (*bp)[:0]
	body, err := readAll(r.Body, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := make([]byte, 0, 64+len(body))
	if jsonrpc.IsBatch(body) {
		out = append(out, '[')
		if e := jsonrpc.SplitBatch(body, func(el []byte) {
			if len(out) > 1 {
				out = append(out, ',')
			}
			out = answer(out, el)
		}); e != nil {
			out = jsonrpc.AppendErrorResponse(out[:0], nil, e, nil)
		} else {
			out = append(out, ']')
		}
	} else {
		out = answer(out, body)
	}
	*bp = body
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	w.Write(out)
}

// answer appends the response to one request.
func answer(out, body []byte) []byte {
	var req jsonrpc.Request
	if e := jsonrpc.ParseRequest(body, &req); e != nil {
		return jsonrpc.AppendErrorResponse(out, req.ID, e, nil)
	}
	if req.Method != "echo" {
		return jsonrpc.AppendErrorResponse(out, req.ID, jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found: %q", req.Method), nil)
	}
	var x []byte
	if req.Params != nil && req.Params[0] == '[' {
		jsonrpc.Elements(req.Params, func(v []byte) bool { x = v; return false })
	}
	if x == nil {
		x = []byte("null")
	}
	return jsonrpc.AppendResponse(out, req.ID, x, nil, nil)
}

// readAll reads r into buf, growing it as needed.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) > 1<<20 {
			return buf, io.ErrShortBuffer
		}
	}
}
