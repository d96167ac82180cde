package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// TestDevelopmentOutsideProduction: with the built-in policy, an ordinary engineer (kind
// human, no group) does ordinary development work on a dev target — DDL on the database's
// objects, temporary tables, ANALYZE/VACUUM, TRUNCATE, DO blocks, function and procedure
// calls, UPDATE/DELETE without WHERE (recorded like everything) — while role changes,
// server files and programs, the other dangerous functions and the server's own
// administration stay refused (issue 12, item 2).
func TestDevelopmentOutsideProduction(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "dev"})
	secret := p.Token(t, "dev@corp.example", "human")
	since := time.Now()
	work := []string{
		"CREATE TEMP TABLE scratch(a int)",
		"INSERT INTO scratch VALUES (1), (2)",
		"CREATE TABLE widgets(id int PRIMARY KEY, name text)",
		"CREATE TYPE pair AS (a int, b text)",
		"CREATE VIEW widget_names AS SELECT name FROM widgets",
		"CREATE INDEX ON widgets (name)",
		"COMMENT ON TABLE widgets IS 'things'",
		"ALTER TABLE widgets ADD COLUMN size int",
		"CREATE FUNCTION add_one(int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN $1 + 1; END $$",
		"CREATE PROCEDURE fill() LANGUAGE sql AS $$ INSERT INTO widgets VALUES (1, 'a', 1), (2, 'b', 2) $$",
		"CALL fill()",
		"SELECT add_one(41)",
		"DO $$ BEGIN PERFORM add_one(1); END $$",
		"ANALYZE widgets",
		"VACUUM widgets",
		"UPDATE widgets SET size = 0",
		"DELETE FROM widgets",
		"TRUNCATE widgets",
		"SET work_mem = '8MB'",
		"RESET work_mem",
		"DROP VIEW widget_names",
		"DROP TABLE widgets",
	}
	refused := map[string]string{
		"CREATE ROLE intruder SUPERUSER":             rLevel,
		"SET ROLE postgres":                          rLevel,
		"SELECT pg_read_file('/etc/hostname')":       rLevel,
		"COPY scratch TO PROGRAM 'cat'":              rLevel,
		"ALTER SYSTEM SET work_mem = '1MB'":          rLevel,
		"SELECT pg_reload_conf()":                    rLevel,
		"SELECT pg_terminate_backend(1), add_one(1)": rUnknown,
		"CREATE EXTENSION IF NOT EXISTS pageinspect": rLevel,
		"CREATE DATABASE elsewhere":                  rLevel,
	}
	var args []string
	for _, sql := range work {
		args = append(args, "-c", sql)
	}
	res := runPsql(t, psqlDSN(p, "dev@corp.example", ""), secret, "", append([]string{"-v", "ON_ERROR_STOP=1"}, args...)...)
	if res.err != nil || strings.Contains(res.stderr, "ERROR") {
		t.Fatalf("development work refused:\n%s", res)
	}
	for sql, rule := range refused {
		res := runPsql(t, psqlDSN(p, "dev@corp.example", ""), secret, "", "-c", sql)
		if !strings.Contains(res.stderr, "42501") || !strings.Contains(res.stderr, `"`+rule+`"`) {
			t.Errorf("%s: want 42501 naming %q:\n%s", sql, rule, res)
		}
	}
	// The mass delete ran, and is on record.
	searchLedger(t, p, ledger.Query{Type: ledger.EventStatement, Identity: "dev@corp.example", From: since, Limit: 1000},
		func(evs []ledger.Event) bool {
			for _, ev := range evs {
				for _, st := range ev.Statements {
					if st.Kind == "DELETE" && ev.Decision == "allow" && ev.SQLState == "" {
						return true
					}
				}
			}
			return false
		})
}

// TestSyntaxErrorAsPostgresSaysIt: a statement that does not parse is not forwarded;
// the client gets what PostgreSQL would say — SQLSTATE 42601, the parser's message and the
// position it points at, so psql draws the same caret (issue 12, item 1).
func TestSyntaxErrorAsPostgresSaysIt(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod"})
	secret := p.Token(t, "analyst@corp.example", "human")
	ctx := ctxT(t, time.Minute)
	c := connect(t, p.DSN("analyst@corp.example", secret, ""))
	for _, sql := range []string{"SELEC 1", "SELECT 1 FROM", "SELECT 'x' || ;", "SELECT 1; SELECT (2"} {
		direct := p.Upstream.ExecContext(ctx, "app", sql)
		_, err := c.Exec(ctx, sql)
		var got, want *pgconn.PgError
		if !errors.As(err, &got) || !errors.As(direct, &want) {
			t.Fatalf("%q: through Gatehouse %v, directly %v", sql, err, direct)
		}
		if got.Code != "42601" || got.Message != want.Message || got.Position != want.Position {
			t.Errorf("%q: through Gatehouse %s %q at %d, directly %s %q at %d", sql, got.Code, got.Message, got.Position, want.Code, want.Message, want.Position)
		}
		alive(ctx, t, c, sql)
	}
	script := "SELECT 'before';\nSELECT 1 FROM WHERE;\nSELECT 'after';\n"
	got := runPsql(t, psqlDSN(p, "analyst@corp.example", ""), secret, script, "-v", "VERBOSITY=default", "-f", "-")
	if !strings.Contains(got.stderr, `ERROR:  syntax error at or near "WHERE"`) || !strings.Contains(got.stderr, "LINE 1: SELECT 1 FROM WHERE;") ||
		!strings.Contains(got.stdout, "before") || !strings.Contains(got.stdout, "after") {
		t.Fatalf("psql:\n%s", got)
	}
}

// TestStandardConformingStringsStayOn: Gatehouse reads string literals as PostgreSQL does
// with standard_conforming_strings on. With it off, PostgreSQL reads a backslash before a
// quote as an escape, so the same text would be other statements to each: turning it off
// is refused (0A000) whatever the policy, even for an allow-all identity.
func TestStandardConformingStringsStayOn(t *testing.T) {
	p := servertest.Start(t, servertest.Options{Environment: "dev"}) // permissive policy
	secret := p.Token(t, "all@corp.example", "service")
	ctx := ctxT(t, time.Minute)
	c := connect(t, p.DSN("all@corp.example", secret, ""))
	for _, sql := range []string{
		"SET standard_conforming_strings = off",
		"SET LOCAL standard_conforming_strings TO false",
		"SELECT set_config('standard_conforming_strings', 'off', false)",
		"ALTER ROLE CURRENT_USER SET standard_conforming_strings = off",
		"ALTER DATABASE app SET standard_conforming_strings = off",
	} {
		if _, err := c.Exec(ctx, sql); pgCode(err) != "0A000" || !strings.Contains(pgMessage(err), `"standard-conforming-strings"`) {
			t.Errorf("%s: want 0A000 naming standard-conforming-strings, got %v", sql, err)
		}
		alive(ctx, t, c, sql)
	}
	var scs string
	if err := c.QueryRow(ctx, "SHOW standard_conforming_strings").Scan(&scs); err != nil || scs != "on" {
		t.Fatalf("standard_conforming_strings: %q %v", scs, err)
	}
	if _, err := c.Exec(ctx, "SET standard_conforming_strings = on"); err != nil {
		t.Fatalf("turning it on: %v", err)
	}
	if got := upstreamQuery(t, p.Upstream, "app", "SELECT count(*)::text FROM pg_db_role_setting"); got != "0" {
		t.Fatalf("a role or database setting was stored: %s", got)
	}
}
