package compat

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testkit"
	"github.com/jackc/pgx/v5"
)

// endpoint is everything a client needs to reach the database under test. Every client gets
// it the same way (PG* environment variables, or a DSN built from them), so switching the
// whole suite between a direct cluster and the proxy is one function.
type endpoint struct {
	Host     string
	Port     int
	User     string
	Password string
	DB       string
	SSLMode  string
	RootCert string
}

// DSN is the libpq keyword form, understood by pgx, lib/pq and libpq itself.
func (e endpoint) DSN() string {
	var b strings.Builder
	fmt.Fprintf(&b, "host=%s port=%d user=%s password=%s dbname=%s sslmode=%s", e.Host, e.Port, quoteDSN(e.User), quoteDSN(e.Password), quoteDSN(e.DB), e.SSLMode)
	if e.RootCert != "" {
		fmt.Fprintf(&b, " sslrootcert=%s", quoteDSN(e.RootCert))
	}
	return b.String()
}

func quoteDSN(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Env is the endpoint as libpq environment variables; the Java and Node programs read the
// same variables, so no secret ever appears on a command line.
func (e endpoint) Env() []string {
	env := []string{
		"PGHOST=" + e.Host,
		"PGPORT=" + strconv.Itoa(e.Port),
		"PGUSER=" + e.User,
		"PGPASSWORD=" + e.Password,
		"PGDATABASE=" + e.DB,
		"PGSSLMODE=" + e.SSLMode,
		"PGCONNECT_TIMEOUT=10",
		"PGAPPNAME=gatehouse-compat",
	}
	if e.RootCert != "" {
		env = append(env, "PGSSLROOTCERT="+e.RootCert)
	}
	return env
}

// fixture is one database under test: an endpoint factory for clients plus the upstream
// cluster, reached directly as superuser, that checks what the clients claim happened.
type fixture struct {
	name string
	// proxied is true when a Gatehouse sits between the clients and the upstream; some
	// behaviours (a vanished client's query cancelled upstream) are the proxy's own.
	proxied    bool
	upstream   *testkit.Postgres
	upstreamDB string
	// client returns an endpoint for a fresh identity called name.
	client func(t *testing.T, name string) endpoint
}

// startDirect is the baseline: the clients talk straight to a throwaway cluster. It proves
// that the client programs and their expectations are right, so a failure through the proxy
// points at the proxy.
func startDirect(t *testing.T) *fixture {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	return &fixture{
		name:       "direct",
		upstream:   pg,
		upstreamDB: "app",
		client: func(t *testing.T, name string) endpoint {
			return endpoint{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password, DB: "app", SSLMode: "disable"}
		},
	}
}

// denyEnv tells a client program whether to exercise the deny path (only a proxy with the
// compat policy denies anything).
func (f *fixture) denyEnv() string {
	if f.proxied {
		return "COMPAT_DENY=1"
	}
	return "COMPAT_DENY=0"
}

// withDeny adds the deny-path expectations to want when the fixture enforces the policy.
func (f *fixture) withDeny(want map[string]string, keys ...string) map[string]string {
	for _, k := range keys {
		if f.proxied {
			if strings.HasPrefix(k, "after") {
				want[k] = "ok"
			} else {
				want[k] = "42501"
			}
		} else {
			want[k] = ""
		}
	}
	return want
}

// superQuery runs one query on the upstream as superuser and returns the first column of
// every row as text, for verifying what a client did.
func (f *fixture) superQuery(t *testing.T, sql string, args ...any) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, f.upstream.DSN(f.upstreamDB))
	if err != nil {
		t.Fatalf("superuser connect: %v", err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("superuser query %q: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatalf("superuser query %q: %v", sql, err)
		}
		out = append(out, fmt.Sprint(vals[0]))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("superuser query %q: %v", sql, err)
	}
	return out
}

// superExec runs statements on the upstream as superuser.
func (f *fixture) superExec(t *testing.T, sql string) {
	t.Helper()
	f.upstream.Exec(t, f.upstreamDB, sql)
}

// makeTable creates the table one client's test writes to, readable and writable by any
// role (the proxy may connect upstream as a different role than the superuser).
func (f *fixture) makeTable(t *testing.T, table string) {
	t.Helper()
	f.superExec(t, fmt.Sprintf("DROP TABLE IF EXISTS %[1]s; CREATE TABLE %[1]s (id int PRIMARY KEY, name text NOT NULL); GRANT ALL ON %[1]s TO PUBLIC", table))
}

// tableContents is id:name pairs in id order, comma separated.
func (f *fixture) tableContents(t *testing.T, table string) string {
	t.Helper()
	got := f.superQuery(t, fmt.Sprintf("SELECT coalesce(string_agg(id || ':' || name, ',' ORDER BY id), '') FROM %s", table))
	return strings.Join(got, "")
}

// sleepersGone waits until no backend is running the marked pg_sleep any more; a cancel that
// never reached the upstream leaves it sleeping for 30 s.
func (f *fixture) sleepersGone(t *testing.T, marker string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := f.superQuery(t, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()", marker)
		if n[0] == "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream is still running the %s pg_sleep %v after the client cancelled it: the cancel did not reach the right backend", marker, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSleeping waits until the upstream is running the marked pg_sleep.
func (f *fixture) waitSleeping(t *testing.T, marker string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := f.superQuery(t, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()", marker)
		if n[0] != "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream never started the %s pg_sleep within %v", marker, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// repoRoot is the module root, found from this file's location so tests run from any
// working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// need finds a client program or fails with how to get it: a missing client is a broken
// machine, not a reason to skip.
func need(t *testing.T, path string) string {
	t.Helper()
	if filepath.IsAbs(path) {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s is missing: run `make deps` (it installs every client the compatibility tests drive)", path)
		}
		return path
	}
	p, err := exec.LookPath(path)
	if err != nil {
		t.Fatalf("%s is not installed: run `make deps` (it installs every client the compatibility tests drive)", path)
	}
	return p
}

// result is what a client program printed: key=value lines, repeated keys in order.
type result struct {
	values map[string][]string
	stdout string
	stderr string
}

// get is the values of key joined by "|".
func (r result) get(key string) string { return strings.Join(r.values[key], "|") }

func parseResult(stdout, stderr string) result {
	r := result{values: map[string][]string{}, stdout: stdout, stderr: stderr}
	for _, line := range strings.Split(stdout, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		r.values[k] = append(r.values[k], v)
	}
	return r
}

// expect compares every wanted key with what the client printed and reports all mismatches
// at once, with the client's whole output for diagnosis.
func (r result) expect(t *testing.T, client string, want map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad []string
	for _, k := range keys {
		if got := r.get(k); got != want[k] {
			bad = append(bad, fmt.Sprintf("  %s: got %q, want %q", k, got, want[k]))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s printed unexpected results:\n%s\n--- stdout ---\n%s\n--- stderr ---\n%s", client, strings.Join(bad, "\n"), r.stdout, r.stderr)
	}
}

// runClient runs a client program with the endpoint in its environment and fails the test
// if it does not exit 0 within timeout.
func runClient(t *testing.T, ep endpoint, extraEnv []string, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	r, err := runClientErr(t, ep, extraEnv, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n--- stdout ---\n%s\n--- stderr ---\n%s", filepath.Base(name), strings.Join(args, " "), err, r.stdout, r.stderr)
	}
	return r
}

// runClientErr is runClient that hands a failed exit back to the caller.
func runClientErr(t *testing.T, ep endpoint, extraEnv []string, timeout time.Duration, name string, args ...string) (result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cleanEnv(), ep.Env()...)
	cmd.Env = append(cmd.Env, extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("did not finish within %v (%w)", timeout, err)
	}
	return parseResult(stdout.String(), stderr.String()), err
}

// cleanEnv is the test's environment without any PG* variables that could point a client
// somewhere else (such as the server that happens to run on this machine).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
