package main

import (
	"strconv"
	"testing"
)

// BenchmarkDispatch is the scale measurement as Go benchmarks:
//
//	go test -run '^$' -bench Dispatch -benchmem ./examples/benchmarks/scale
func BenchmarkDispatch(b *testing.B) {
	for _, a := range Algos {
		for _, n := range Sizes {
			b.Run(a+"/servants="+strconv.Itoa(n), func(b *testing.B) { Run(b, a, n) })
		}
	}
}
