// Package e2e tests Gatehouse end to end: a real `gatehouse serve` instance (servertest) in
// front of a throwaway PostgreSQL cluster, driven by real clients (pgx in every protocol
// mode, psql), with effects checked directly on the upstream.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// ctxT is a context bounded by d and by the test.
func ctxT(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a pgx connection that is closed when the test ends.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	c, err := tryConnect(dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func tryConnect(dsn string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return pgx.Connect(ctx, dsn)
}

// pgCode and pgMessage read a PostgreSQL error ("" when err is not one).
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	return ""
}

// alive proves the session still works.
func alive(ctx context.Context, t testing.TB, c *pgx.Conn, what string) {
	t.Helper()
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("%s: session unusable afterwards: %v", what, err)
	}
}

// upstreamQuery runs a query directly on the upstream (superuser) and returns the first
// column of the first row as text.
func upstreamQuery(t testing.TB, pg *testkit.Postgres, db, sql string) string {
	t.Helper()
	ctx := ctxT(t, 15*time.Second)
	c, err := pgx.Connect(ctx, pg.DSN(db))
	if err != nil {
		t.Fatalf("connect upstream: %v", err)
	}
	defer c.Close(context.Background())
	var s *string
	if err := c.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&s); err != nil {
		t.Fatalf("upstream %q: %v", sql, err)
	}
	if s == nil {
		return "<null>"
	}
	return *s
}

// psqlDSN is the proxy's DSN without the password (psql gets it from PGPASSWORD).
func psqlDSN(p *servertest.Proxy, user, db string) string {
	if db == "" {
		db = p.Target
	}
	return "host=localhost port=" + strconv.Itoa(p.Port) + " user=" + user + " dbname=" + db +
		" sslmode=verify-full sslrootcert=" + p.CAFile
}

// psqlResult is what one psql run printed.
type psqlResult struct {
	stdout, stderr string
	err            error
}

// runPsql runs psql with script on stdin (-f -), verbose errors (SQLSTATE shown) and no
// psqlrc, and returns what it printed.
func runPsql(t testing.TB, dsn, password, script string, args ...string) psqlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose", "-d", dsn}, args...)
	if len(args) == 0 {
		full = append(full, "-f", "-")
	}
	cmd := exec.CommandContext(ctx, "psql", full...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10", "PGAPPNAME=e2e-psql")
	cmd.Stdin = strings.NewReader(script)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return psqlResult{stdout: out.String(), stderr: errb.String(), err: err}
}

func (r psqlResult) String() string {
	return fmt.Sprintf("err=%v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
}
