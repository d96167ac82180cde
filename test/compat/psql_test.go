package compat

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testPsql drives the Debian psql: simple and multi-statement queries, PREPARE/EXECUTE,
// a rolled-back transaction, an error inside a transaction, \copy and COPY FROM STDIN /
// TO STDOUT, and Ctrl-C (SIGINT, which psql turns into a PQcancel CancelRequest).
func testPsql(t *testing.T, f *fixture) {
	psql := need(t, "psql")
	ep := f.client(t, "compat-psql")
	const table = "compat_psql"
	f.makeTable(t, table)
	dir := t.TempDir()
	csvIn := filepath.Join(dir, "in.csv")
	csvOut := filepath.Join(dir, "out.csv")
	if err := os.WriteFile(csvIn, []byte("1,c1\n2,c2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`\set VERBOSITY verbose
\conninfo
\pset tuples_only on
\pset format unaligned
SELECT 'simple=' || (1+1) || ' ' || 'héllo';
SELECT 'multi=a' \; SELECT 'multi=b' \; SELECT 'multi=c';
SELECT 'row=' || g FROM generate_series(1, 20000) AS g;
PREPARE p(int, text) AS SELECT 'param_text=' || ($1 + 1) || ' ' || $2 || '!';
EXECUTE p(41, 'hi');
DEALLOCATE p;
BEGIN;
INSERT INTO %[1]s VALUES (11, 'gone');
SELECT 'tx_inside=' || count(*) FROM %[1]s WHERE id = 11;
ROLLBACK;
INSERT INTO %[1]s VALUES (10, 'kept');
\copy %[1]s FROM '%[2]s' WITH (FORMAT csv)
COPY %[1]s FROM STDIN;
3	c3
\.
SELECT 'copy_in=' || count(*) FROM %[1]s WHERE id < 10;
\copy (SELECT id, name FROM %[1]s WHERE id < 10 ORDER BY id) TO '%[3]s' WITH (FORMAT csv)
COPY (SELECT 'copy_out=' || id || ',' || name FROM %[1]s WHERE id < 10 ORDER BY id) TO STDOUT;
SELECT 1/0;
SELECT 'recovered=ok';
BEGIN;
SELECT 1/0;
SELECT 'in_failed_tx=yes';
ROLLBACK;
SELECT 'after_failed_tx=ok';
`, table, csvIn, csvOut)
	if f.proxied {
		script += "SELECT * FROM compat_forbidden;\nSELECT 'after_deny=ok';\n"
	}
	scriptFile := filepath.Join(dir, "script.sql")
	if err := os.WriteFile(scriptFile, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runClient(t, ep, nil, 60*time.Second, psql, "-X", "-q", "-f", scriptFile)
	r.expect(t, "psql", f.withDeny(map[string]string{
		"simple":          wantSimple,
		"multi":           "a|b|c",
		"param_text":      wantParams,
		"tx_inside":       "1",
		"copy_in":         "3",
		"copy_out":        wantCopyOut,
		"recovered":       "ok",
		"in_failed_tx":    "",
		"after_failed_tx": "ok",
	}, "after_deny"))
	if f.proxied && (!strings.Contains(r.stderr, "42501") || !strings.Contains(r.stderr, "compat_forbidden is off limits")) {
		t.Errorf("psql: a denied statement must fail with 42501 and the policy's reason; stderr:\n%s", r.stderr)
	}
	checkRowSum(t, "psql", r.values["row"])
	if n := strings.Count(r.stderr, "22012"); n != 2 {
		t.Errorf("psql: want two division-by-zero errors (SQLSTATE 22012) on stderr, got %d:\n%s", n, r.stderr)
	}
	if !strings.Contains(r.stderr, "25P02") {
		t.Errorf("psql: a statement after an error in a transaction must fail with 25P02; stderr:\n%s", r.stderr)
	}
	if tlsUsed := strings.Contains(r.stdout, "SSL connection"); tlsUsed != (ep.SSLMode != "disable") {
		t.Errorf("psql: \\conninfo reports TLS %v with sslmode=%s:\n%s", tlsUsed, ep.SSLMode, firstLine(r.stdout))
	}
	out, err := os.ReadFile(csvOut)
	if err != nil {
		t.Fatalf("psql \\copy TO wrote nothing: %v", err)
	}
	if got := string(out); got != "1,c1\n2,c2\n3,c3\n" {
		t.Errorf("psql \\copy TO: got %q", got)
	}
	if got := f.tableContents(t, table); got != wantTable {
		t.Errorf("upstream %s after psql: got %q, want %q", table, got, wantTable)
	}

	t.Run("cancel", func(t *testing.T) { psqlCancel(t, f, psql, ep) })
	if f.proxied {
		t.Run("sslmodes", func(t *testing.T) { psqlSSLModes(t, psql, ep) })
		// PostgreSQL itself does not notice a vanished client during pg_sleep; Gatehouse must.
		t.Run("vanish", func(t *testing.T) { psqlVanish(t, f, psql, ep) })
	}
}

// psqlSSLModes connects with every libpq sslmode: disable works from loopback (cleartext
// tokens are allowed there), prefer — libpq's default — and require upgrade to TLS, and
// verify-ca / verify-full check Gatehouse's certificate against its CA.
func psqlSSLModes(t *testing.T, psql string, ep endpoint) {
	for _, mode := range []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"} {
		e := ep
		e.SSLMode = mode
		if mode != "verify-ca" && mode != "verify-full" {
			e.RootCert = ""
		}
		r := runClient(t, e, nil, 30*time.Second, psql, "-X", "-q", "-c", `\conninfo`, "-c", "SELECT 'mode=' || 'ok'")
		want := mode != "disable" && mode != "allow"
		if got := strings.Contains(r.stdout, "SSL connection"); got != want || !strings.Contains(r.stdout, "mode=ok") {
			t.Errorf("psql sslmode=%s: TLS %v (want %v); output:\n%s%s", mode, got, want, r.stdout, r.stderr)
		}
	}
}

// psqlVanish kills psql (SIGKILL, no Terminate, no cancel) while its query runs: the
// upstream query must be cancelled and its backend released within seconds, not left
// sleeping for 30 s.
func psqlVanish(t *testing.T, f *fixture, psql string, ep endpoint) {
	const marker = "psql-vanish"
	cmd := exec.Command(psql, "-X", "-q", "-c", "SELECT pg_sleep(30), '"+marker+"'")
	cmd.Env = append(cleanEnv(), ep.Env()...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start psql: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	f.waitSleeping(t, marker, 15*time.Second)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill psql: %v", err)
	}
	<-done
	f.sleepersGone(t, marker, 10*time.Second)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// psqlCancel starts a 30 s sleep in psql, waits until the upstream runs it, presses Ctrl-C
// and expects the statement cancelled (57014) within seconds and the upstream idle again.
func psqlCancel(t *testing.T, f *fixture, psql string, ep endpoint) {
	const marker = "psql-cancel"
	cmd := exec.Command(psql, "-X", "-q", "-v", "VERBOSITY=verbose", "-c", "SELECT pg_sleep(30), '"+marker+"'")
	cmd.Env = append(cleanEnv(), ep.Env()...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start psql: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	f.waitSleeping(t, marker, 15*time.Second)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("signal psql: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("psql still running 10s after Ctrl-C; stderr so far:\n%s", stderr.String())
	}
	elapsed := time.Since(start)
	if !strings.Contains(stderr.String(), "57014") {
		t.Errorf("psql Ctrl-C: want the statement cancelled with SQLSTATE 57014; stderr:\n%s", stderr.String())
	}
	if elapsed > 5*time.Second {
		t.Errorf("psql Ctrl-C took %v to cancel pg_sleep(30)", elapsed)
	}
	f.sleepersGone(t, marker, 5*time.Second)
}

// checkRowSum verifies the 20,000 streamed rows 1..20000 all arrived, in order.
func checkRowSum(t *testing.T, client string, rows []string) {
	t.Helper()
	if len(rows) != 20000 {
		t.Errorf("%s: got %d streamed rows, want 20000", client, len(rows))
		return
	}
	for i, v := range rows {
		if v != strconv.Itoa(i+1) {
			t.Errorf("%s: streamed row %d is %q, want %d", client, i, v, i+1)
			return
		}
	}
}
