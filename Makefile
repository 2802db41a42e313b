# mserve — a load balancer for function calls.
# Only Go is needed: every target here builds with the go command alone.

GO      ?= go
BIN     ?= bin
FUZZTIME ?= 10s
BENCHTIME ?= 1s

.PHONY: all build plugins demo test test-short bench fuzz docs clean
.PHONY: bench-peers bench-locality bench-uneven bench-scale bench-report bench-doc

all: build

build: plugins
	$(GO) build -o $(BIN)/mserve ./cmd/mserve
	$(GO) build -o $(BIN)/quickstart-servant ./examples/quickstart

# The compiled dispatch plugins shipped in plugins/, one binary each.
plugins:
	@for d in plugins/*/; do n=$$(basename $$d); echo "$(GO) build -o $(BIN)/$$n ./plugins/$$n"; \
	  $(GO) build -o $(BIN)/$$n ./plugins/$$n || exit 1; done

# Start mserve with 3 local quickstart servants, make real calls, stop.
demo: build
	./examples/quickstart/demo.sh $(BIN)

# Everything CI runs: formatting, vet, all tests with the race detector.
test:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

# Micro-benchmarks of the hot paths (frame codec, JSON-RPC parsing, dispatch).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./sdk/... ./core/...

# Run every fuzz target for FUZZTIME each.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Regenerate the generated part of docs/configuration.md from the flags.
docs:
	$(GO) run ./cmd/mserve help config > /tmp/mserve-config.md
	awk 'BEGIN{skip=0} /<!-- BEGIN GENERATED/{while((getline l < "/tmp/mserve-config.md")>0) print l; skip=1; next} /<!-- END GENERATED/{skip=0; next} !skip' docs/configuration.md > /tmp/mserve-config-doc.md
	mv /tmp/mserve-config-doc.md docs/configuration.md

clean:
	rm -rf $(BIN)

# The benchmark issue's end-to-end benchmarks (examples/benchmarks/README.md;
# results in docs/BENCHMARKS.md). They need bash and curl; bench-peers also
# HAProxy, nginx and wrk, which it installs with apt-get when run as root.
bench-peers: build
	BIN=$(BIN) ./examples/benchmarks/peers.sh

bench-locality: build
	BIN=$(BIN) ./examples/benchmarks/locality.sh

bench-uneven: build
	BIN=$(BIN) ./examples/benchmarks/uneven.sh

bench-scale: build
	BIN=$(BIN) ./examples/benchmarks/scale.sh

# All of the above, then the plots and the generated tables of docs/BENCHMARKS.md.
bench-report: build
	BIN=$(BIN) ./examples/benchmarks/report.sh

# Only the plots and tables, from the results already in examples/benchmarks/results.
bench-doc:
	ONLY_DOC=1 ./examples/benchmarks/report.sh
