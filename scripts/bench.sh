#!/usr/bin/env bash
# pgbench -S through nothing, PgBouncer and Gatehouse in one run; prints TPS and ratios.
# Called by `make bench` after the Go micro-benchmarks (and after `make build`).
# Everything runs on loopback against a throwaway cluster and is removed at the end.
# Knobs (environment): BENCH_DURATION (default 10s per run), BENCH_SCALE (10), BENCH_CLIENTS (8),
# BENCH_TLS=1 to add a Gatehouse leg with client TLS. Extra arguments go to test/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-duration "${BENCH_DURATION:-10s}" -scale "${BENCH_SCALE:-10}" -clients "${BENCH_CLIENTS:-8}" -gatehouse bin/gatehouse)
if [ "${BENCH_TLS:-0}" = "1" ]; then args+=(-tls); fi
exec go run ./test/bench "${args[@]}" "$@"
