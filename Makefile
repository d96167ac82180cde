# Gatehouse — the two commands that matter: `make demo` and `make test`.
GO       ?= go
BIN      := bin/gatehouse
GOPATHBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOPATHBIN):$(PATH)

.PHONY: all deps build demo test lint unit bench fuzz clean conformance conformance-run

all: build

deps:
	@bash scripts/deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/gatehouse

demo: deps build
	./$(BIN) demo

lint:
	@test -z "$$(gofmt -l cmd internal test)" || { echo "gofmt needed:"; gofmt -l cmd internal test; exit 1; }
	$(GO) vet ./...
	staticcheck ./...

# The whole suite: unit, integration with throwaway PostgreSQL clusters and the real clients,
# then short fuzz runs over the wire decoders and the inspector (their seed corpora also run
# as ordinary tests above). The fuzz runs are bounded by a count of executions (about ten
# seconds each here), not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" failure when a -fuzztime duration ends (go.dev/issue/75804,
# fixed in Go 1.27). `make fuzz FUZZTIME=10m` still fuzzes each target for a duration.
# Last, pgx v5's own test suite through Gatehouse (`make conformance`, about a minute quiet).
test: deps lint
	$(GO) test -count=1 -timeout 25m ./...
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory conformance-run

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFrontendReader$$' -fuzztime $(or $(FUZZTIME),30000x) ./internal/door/pg
	$(GO) test -run '^$$' -fuzz '^FuzzBackendMessages$$' -fuzztime $(or $(FUZZTIME),50000x) ./internal/door/pg
	$(GO) test -run '^$$' -fuzz '^FuzzInspect$$' -fuzztime $(or $(FUZZTIME),80000x) ./internal/inspect
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),6000x) ./internal/policy

# pgx v5's own test suite (the version in go.mod) through Gatehouse, as an allow-all identity
# without masking (test/conformance, build tag conformance). The tests that need direct access
# to PostgreSQL by design, and the connection strings left unset, are listed there with why.
conformance: deps conformance-run

conformance-run:
	$(GO) test -count=1 -tags conformance -timeout 30m -v -run '^TestPgxSuite$$' ./test/conformance

# Performance, in under 10 minutes on a 2-core machine: the Go micro-benchmarks (200 ms
# each; the ledger's searches over 100,000 synthetic events instead of a million), then
# scripts/bench.sh's one table of issue 9's goals, direct vs PgBouncer vs Gatehouse.
# BENCHTIME and LEDGER_BENCH_EVENTS change the first part, BENCH_* the second (see the script).
bench: deps build
	GATEHOUSE_LEDGER_BENCH_EVENTS=$(or $(LEDGER_BENCH_EVENTS),100000) $(GO) test -run '^$$' -bench . -benchmem -benchtime $(or $(BENCHTIME),200ms) -timeout 30m ./internal/...
	bash scripts/bench.sh

clean:
	rm -rf bin
