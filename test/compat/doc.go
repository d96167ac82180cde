// Package compat proves that real PostgreSQL clients — psql, pgx, lib/pq, psycopg2,
// psycopg 3, pgJDBC, node-postgres and pgbench — work through Gatehouse unchanged. The tests
// drive the actual client programs (as subprocesses, or in-process for the Go drivers) over
// TLS through a running proxy and check every answer against the upstream cluster, because a
// protocol relay is only as good as the least forgiving client it carries.
//
// The package holds no production code; everything lives in its _test.go files.
package compat
