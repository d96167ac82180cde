#!/usr/bin/env bash
# Issue 9's goals in one table: pgbench (-S simple/extended/prepared, TPC-B, 1-client latency),
# a pgx batch, a long multi-statement string, 2M-row COPY and SELECT with masking, 1,000 idle
# sessions, connection churn and the embedded ledger's sustained rate — direct, through
# PgBouncer and through Gatehouse (default durability and `ledger.durability: every`), in one
# run. Called by `make bench` after the Go micro-benchmarks (and after `make build`).
# Everything runs on loopback against a throwaway cluster and is removed at the end.
# Knobs (environment): BENCH_DURATION (6s per pgbench workload and leg, in BENCH_ROUNDS (2) rounds), BENCH_SCALE (10), BENCH_CLIENTS (8),
# BENCH_ROWS (2000000), BENCH_IDLE (1000), BENCH_GATEHOUSE (bin/gatehouse: the binary to measure),
# BENCH_PROFILE=1 to write Gatehouse's CPU profile to BENCH_PROFILE_FILE (bin/gatehouse-cpu.pprof)
# and print its top five functions. Extra arguments go to test/bench (-only pgbench,latency,...).
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-duration "${BENCH_DURATION:-6s}" -rounds "${BENCH_ROUNDS:-2}" -scale "${BENCH_SCALE:-10}" -clients "${BENCH_CLIENTS:-8}"
      -rows "${BENCH_ROWS:-2000000}" -idle "${BENCH_IDLE:-1000}" -gatehouse "${BENCH_GATEHOUSE:-bin/gatehouse}")
if [ "${BENCH_PROFILE:-0}" = "1" ]; then args+=(-cpuprofile "${BENCH_PROFILE_FILE:-bin/gatehouse-cpu.pprof}"); fi
exec go run ./test/bench "${args[@]}" "$@"
