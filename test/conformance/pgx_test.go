//go:build conformance

package conformance

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// pgxDirectOnly are pgx tests that cannot pass through any proxy that logs in upstream with
// its own credentials, each with the reason. They are skipped with go test -skip.
var pgxDirectOnly = []struct{ test, why string }{}

// pgxUnsetEnv are the connection strings pgx's suite reads besides PGX_TEST_DATABASE that this
// run leaves unset, so pgx itself skips the tests that need them, each with the reason. Set:
// PGX_TEST_DATABASE, PGX_TEST_TCP_CONN_STRING and PGX_TEST_PLAIN_PASSWORD_CONN_STRING (all
// Gatehouse over loopback TCP, which asks for a cleartext password).
var pgxUnsetEnv = []struct{ env, why string }{
	{"PGX_TEST_UNIX_SOCKET_CONN_STRING", "Gatehouse listens on TCP only"},
	{"PGX_TEST_MD5_PASSWORD_CONN_STRING", "another user with an MD5 password: Gatehouse asks every client for a token in cleartext"},
	{"PGX_TEST_SCRAM_PASSWORD_CONN_STRING", "another user with a SCRAM password: Gatehouse asks every client for a token in cleartext"},
	{"PGX_TEST_SCRAM_PLUS_CONN_STRING", "SCRAM with channel binding to the server's certificate, and asserts TLS on the upstream backend (pg_stat_ssl)"},
	{"PGX_TEST_TLS_CONN_STRING", "asserts that the upstream backend's own connection uses TLS (pg_stat_ssl), a fact of Gatehouse's upstream connection"},
	{"PGX_TEST_TLS_CLIENT_CONN_STRING", "client-certificate login as another user (pgx_sslcert)"},
	{"PGX_TEST_PGBOUNCER_CONN_STRING", "tests PgBouncer's own transaction-pooling behaviour"},
	{"PGX_TEST_CRATEDB_CONN_STRING", "tests CrateDB"},
	{"PGX_TEST_OAUTH", "PostgreSQL 18 OAuth login as another user"},
}

func TestPgxSuite(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "postgres", "CREATE DATABASE pgx_test")
	// pgx's testsetup/postgresql_setup.sql, the part that is not about other users.
	pg.Exec(t, "pgx_test", "CREATE EXTENSION hstore; CREATE EXTENSION ltree; CREATE DOMAIN uint64 AS numeric(20,0)")
	p := servertest.Start(t, servertest.Options{Upstream: pg, Configure: func(c *config.Config) {
		c.Targets[0].Database = "pgx_test"
	}})
	secret := p.Token(t, "pgx", "human")
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=pgx password=%s dbname=%s sslmode=disable", p.Port, secret, p.Target)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	src := pgxSource(ctx, t)
	var skip []string
	for _, s := range pgxDirectOnly {
		skip = append(skip, "^"+regexp.QuoteMeta(s.test)+"$")
	}
	args := []string{"test", "-count=1", "-v", "-timeout", "15m", "./..."}
	if len(skip) > 0 {
		args = append(args, "-skip", strings.Join(skip, "|"))
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = src
	cmd.Env = []string{"PGX_TEST_DATABASE=" + dsn, "PGX_TEST_TCP_CONN_STRING=" + dsn, "PGX_TEST_PLAIN_PASSWORD_CONN_STRING=" + dsn, "GOFLAGS=-mod=mod"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") { // nothing may point pgx at another server
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for _, u := range pgxUnsetEnv {
		t.Logf("not set: %s (%s)", u.env, u.why)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	logPath := os.Getenv("CONFORMANCE_LOG")
	if logPath == "" {
		logPath = filepath.Join(t.TempDir(), "pgx.log")
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pass, fail, skipped int
	var failed []string
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(logf, line)
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "--- PASS:"):
			pass++
		case strings.HasPrefix(trimmed, "--- SKIP:"):
			skipped++
		case strings.HasPrefix(trimmed, "--- FAIL:"):
			fail++
			failed = append(failed, trimmed)
		case strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "panic:"):
			t.Log(line)
		}
	}
	err = cmd.Wait()
	t.Logf("pgx suite through Gatehouse: %d passed, %d failed, %d skipped by pgx, %d listed as direct-only, in %s (log: %s)",
		pass, fail, skipped, len(pgxDirectOnly), time.Since(start).Round(time.Second), logPath)
	for _, f := range failed {
		t.Log(f)
	}
	if err != nil || fail > 0 {
		t.Fatalf("pgx's test suite failed through Gatehouse: %v", err)
	}
}

// pgxSource copies the pgx module this repository uses out of the module cache (which is
// read-only) into a temporary directory where its tests can be built and run.
func pgxSource(ctx context.Context, t *testing.T) string {
	t.Helper()
	dirOut, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/jackc/pgx/v5").Output()
	if err != nil {
		t.Fatalf("locate pgx in the module cache: %v", err)
	}
	dir := strings.TrimSpace(string(dirOut))
	if dir == "" {
		out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/jackc/pgx/v5").Output()
		if err != nil {
			t.Fatalf("download pgx: %v", err)
		}
		if m := regexp.MustCompile(`"Dir": "([^"]+)"`).FindSubmatch(out); m != nil {
			dir = string(m[1])
		}
	}
	dst := filepath.Join(t.TempDir(), "pgx")
	if out, err := exec.CommandContext(ctx, "cp", "-r", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy pgx source: %v: %s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "chmod", "-R", "u+w", dst).CombinedOutput(); err != nil {
		t.Fatalf("make pgx source writable: %v: %s", err, out)
	}
	return dst
}
