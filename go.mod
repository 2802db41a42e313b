module github.com/mserve/mserve

go 1.26

require (
	github.com/expr-lang/expr v1.17.8 // indirect
	github.com/yuin/gopher-lua v1.1.2 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
)
