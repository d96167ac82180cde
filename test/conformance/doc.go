// Package conformance runs third-party client test suites through Gatehouse, as a user's own
// software would reach it: `make conformance` runs pgx v5's own test suite (the version in
// go.mod, from the module cache) against a throwaway PostgreSQL behind a Gatehouse instance,
// logged in as an allow-all identity whose results are not masked. The suite must pass except
// for the tests listed in pgxDirectOnly and the connection strings in pgxUnsetEnv, which need
// direct access to PostgreSQL by design. The tests carry the build tag conformance, so
// `go test ./...` does not run them unless asked.
package conformance
