package jsonrpc

import (
	"strings"
	"testing"
)

var (
	typicalRequest = []byte(`{"jsonrpc":"2.0","id":17,"method":"proc1","params":["IBM"]}`)
	// a request whose params are about 1 KB of mixed JSON
	largeRequest = []byte(`{"jsonrpc":"2.0","id":18,"method":"insert","params":[` +
		strings.TrimSuffix(strings.Repeat(`{"sym":"IBM","px":27.19,"size":100,"tags":["a","b\n"]},`, 19), ",") + `]}`)
	typicalResponse = []byte(`{"jsonrpc":"2.0","id":17,"result":{"sym":["IBM","IBM"],"price":[27.19,27.2]},` +
		`"info":{"route":"IBM","servant":"s1","elapsed_ns":412000,"execution_ns":398000,"backlog":0,"remaining":0,"handler_ns":25285}}`)
)

func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{{"typical", typicalRequest}, {"params_1KB", largeRequest}} {
		b.Run(bc.name, func(b *testing.B) {
			var req Request
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if e := ParseRequest(bc.in, &req); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
}

func BenchmarkParseResponse(b *testing.B) {
	var resp Response
	b.SetBytes(int64(len(typicalResponse)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseResponse(typicalResponse, &resp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendRequest(b *testing.B) {
	params := []byte(`["IBM"]`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	var id uint64
	for b.Loop() {
		id++
		idb := AppendID(make([]byte, 0, 20), id)
		buf = AppendRequest(buf[:0], idb, "proc1", params)
	}
}

func BenchmarkAppendString(b *testing.B) {
	s := "a plain method name with \"quotes\" and a newline\n"
	buf := make([]byte, 0, 128)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendString(buf[:0], s)
	}
}

func BenchmarkValid(b *testing.B) {
	b.SetBytes(int64(len(largeRequest)))
	b.ReportAllocs()
	for b.Loop() {
		if !Valid(largeRequest) {
			b.Fatal("invalid")
		}
	}
}
