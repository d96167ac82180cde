package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// Rule names of the built-in policy (internal/policy/default.yaml) and of the engine.
const (
	rDrop    = "no-drop-or-truncate-in-production"
	rWhere   = "no-update-or-delete-without-where"
	rFunc    = "no-dangerous-functions"
	rRole    = "no-role-change"
	rDDL     = "production-schema-changes-need-approval"
	rLevel   = "access-level"
	rUnknown = "unknown-statement"
)

// guardFixture is one Gatehouse with the built-in policy (plus a row-capped identity) in
// front of one upstream holding two targets over the same database: "main" (prod) and
// "dev" (dev), each mapping access levels to least-privileged upstream roles.
type guardFixture struct {
	p   *servertest.Proxy
	pg  *testkit.Postgres
	tmp string // a directory the upstream server can write to; must stay empty

	dba, alice, bot, capped string // token secrets
}

const cappedRule = `
  - name: capped-reporting
    when: identity.subject == "capped@corp.example" && statement.category == "read"
    action: allow
    max_rows: 10
`

func startGuardFixture(t *testing.T) *guardFixture {
	t.Helper()
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "postgres", "CREATE ROLE app_ro NOLOGIN; CREATE ROLE app_rw NOLOGIN")
	pg.Exec(t, "app", `
CREATE TABLE customers(id int PRIMARY KEY, name text);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5) g;
CREATE TABLE orders(id int PRIMARY KEY, customer_id int REFERENCES customers, amount int);
INSERT INTO orders SELECT g, 1 + g % 5, g * 10 FROM generate_series(1, 20) g;
CREATE TABLE marks(id int);
CREATE TABLE big_report AS SELECT g AS n FROM generate_series(1, 100) g;
CREATE PROCEDURE wipe() LANGUAGE sql AS $$ DELETE FROM orders $$;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_rw;`)
	text := string(policy.DefaultText())
	if !strings.Contains(text, "\nrules:\n") {
		t.Fatal("default policy has no rules section to extend")
	}
	text = strings.Replace(text, "\nrules:\n", "\nrules:\n"+strings.TrimPrefix(cappedRule, "\n"), 1)
	roles := map[string]string{"read": "app_ro", "write": "app_rw"}
	p := servertest.Start(t, servertest.Options{Upstream: pg, PolicyYAML: text, Environment: "prod",
		Configure: func(cfg *config.Config) {
			cfg.Targets[0].Roles = roles
			dev := cfg.Targets[0]
			dev.Name, dev.Environment = "dev", "dev"
			cfg.Targets = append(cfg.Targets, dev)
		}})
	f := &guardFixture{p: p, pg: pg, tmp: t.TempDir()}
	f.dba = p.Token(t, "dba@corp.example", "human", "dba")
	f.alice = p.Token(t, "alice@corp.example", "human")
	f.bot = p.Token(t, "support-bot", "agent")
	f.capped = p.Token(t, "capped@corp.example", "human")
	return f
}

// snapshotSQL reads everything a hazard could change, as one line of text.
const snapshotSQL = `SELECT concat_ws(' | ',
 (SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY 1) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')),
 (SELECT count(*) || '/' || sum(amount) FROM public.orders),
 (SELECT count(*) FROM public.customers),
 (SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '-') FROM public.marks),
 (SELECT count(*) FROM pg_rules WHERE schemaname = 'public'),
 (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace),
 (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),
 (SELECT count(*) FROM pg_views WHERE schemaname = 'public'),
 (SELECT count(*) FROM pg_largeobject_metadata),
 (SELECT string_agg(rolname || ':' || rolsuper, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_'),
 (SELECT coalesce(relacl::text, '-') || relrowsecurity FROM pg_class WHERE oid = 'public.orders'::regclass),
 (SELECT count(*) FROM pg_db_role_setting),
 (SELECT count(*) FROM pg_extension),
 (SELECT coalesce(obj_description('public.orders'::regclass), '-')),
 (SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'))`

// snapshot reads the upstream state through a direct superuser connection.
func (f *guardFixture) snapshot(t testing.TB) string {
	t.Helper()
	return upstreamQuery(t, f.pg, "app", snapshotSQL)
}

// assertTmpEmpty proves no file was written by the server into the fixture's directory.
func (f *guardFixture) assertTmpEmpty(t testing.TB, what string) {
	t.Helper()
	ents, err := os.ReadDir(f.tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Fatalf("%s: the server wrote %s into %s", what, ents[0].Name(), f.tmp)
	}
}

// hazard is one statement that must be refused; rule is the rule named in the refusal for
// each persona ("" = not tried with that persona).
type hazard struct {
	sql      string
	dbaProd  string // group dba (admin level) on production: only the rules protect
	aliceDev string // a human without groups on dev: write level ("" for what the built-in
	// policy lets such an engineer do outside production: DDL on the database's objects,
	// DO/CALL, TRUNCATE, UPDATE/DELETE without WHERE; see TestDevelopmentOutsideProduction)
}

func (f *guardFixture) hazards() []hazard {
	su := f.pg.User
	out := filepath.Join(f.tmp, "out")
	return []hazard{
		// case, comments, quoting, qualification, unicode escapes
		{"dRoP/**/TABLE orders", rDrop, ""},
		{"-- c\nDROP TABLE orders", rDrop, ""},
		{"/* x */ truncate orders", rDrop, ""},
		{`DROP TABLE "public"."orders"`, rDrop, ""},
		{"DROP TABLE public.orders", rDrop, ""},
		{`DROP TABLE U&"ord\0065rs"`, rDrop, ""},
		{"DROP TABLE IF EXISTS nothing_here, orders", rDrop, ""},
		{"TRUNCATE TABLE orders CASCADE", rDrop, ""},
		{"DROP SCHEMA public CASCADE", rDrop, ""},
		{"DROP OWNED BY app_rw", rDrop, rLevel},
		// multi-statement strings: nothing of the string may run
		{"INSERT INTO marks VALUES (101); DROP TABLE orders", rDrop, ""},
		{"SELECT 1; TRUNCATE orders", rDrop, ""},
		{"INSERT INTO marks VALUES (102); DELETE FROM orders", rWhere, ""},
		{"BEGIN; DELETE FROM orders; COMMIT", rWhere, ""},
		// writes hidden in CTEs, EXPLAIN ANALYZE, PREPARE, COPY
		{"WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", rWhere, ""},
		{"WITH x AS (UPDATE orders SET amount = 0 RETURNING 1) SELECT count(*) FROM x", rWhere, ""},
		{"EXPLAIN ANALYZE DELETE FROM orders", rWhere, ""},
		{"EXPLAIN (ANALYZE, FORMAT JSON) UPDATE orders SET amount = 0", rWhere, ""},
		{"PREPARE d AS DELETE FROM orders", rWhere, ""},
		{"COPY (DELETE FROM orders RETURNING *) TO STDOUT", rWhere, ""},
		// UPDATE/DELETE without a narrowing WHERE
		{"UPDATE orders SET amount = 0", rWhere, ""},
		{"UPDATE orders SET amount = 0 WHERE true", rWhere, ""},
		{"UPDATE orders SET amount = 0 WHERE 1=1", rWhere, ""},
		{"UPDATE orders SET amount = 0 WHERE 'a' = 'a'", rWhere, ""},
		{"DELETE FROM orders WHERE id = id", rWhere, ""},
		{"DELETE FROM orders WHERE NOT false", rWhere, ""},
		{"DELETE FROM orders WHERE id = 1 OR true", rWhere, ""},
		{"DELETE FROM orders USING customers", rWhere, ""},
		{"DELETE FROM ONLY orders", rWhere, ""},
		{`delete from "orders"`, rWhere, ""},
		// WHEREs that fold to TRUE for every row (constant folding over three-valued logic)
		{"DELETE FROM orders WHERE coalesce(true, id = 1)", rWhere, ""},
		{"DELETE FROM orders WHERE coalesce(NULL, true)", rWhere, ""},
		{"DELETE FROM orders WHERE nullif(true, true) IS NULL", rWhere, ""},
		{"DELETE FROM orders WHERE CASE WHEN true THEN true END", rWhere, ""},
		{"DELETE FROM orders WHERE CASE WHEN id = 1 THEN true ELSE true END", rWhere, ""},
		{"DELETE FROM orders WHERE greatest(true, id = 1)", rWhere, ""},
		{"DELETE FROM orders WHERE (id = 1) IS NOT FALSE OR true", rWhere, ""},
		// IS NOT NULL on NOT NULL columns (the gate asks the catalog)
		{"DELETE FROM orders WHERE id IS NOT NULL", rWhere, ""},
		{"UPDATE orders SET amount = 0 WHERE orders.id IS NOT NULL AND NOT (id IS NULL)", rWhere, ""},
		{"DELETE FROM orders o USING customers c WHERE o.id IS NOT NULL", rWhere, ""},
		{"WITH d AS (DELETE FROM orders WHERE id IS NOT NULL RETURNING 1) SELECT count(*) FROM d", rWhere, ""},
		// functions that read files, run SQL from strings or touch large objects
		{"SELECT pg_read_file('/etc/passwd')", rFunc, rLevel},
		{"SELECT pg_catalog.pg_read_file('/etc/passwd')", rFunc, rLevel},
		{`SELECT "pg_read_file"('/etc/passwd')`, rFunc, rLevel},
		{`SELECT U&"pg_read_fil\0065"('/etc/passwd')`, rFunc, rLevel},
		{"SELECT * FROM pg_read_file('/etc/passwd')", rFunc, rLevel},
		{"SELECT pg_read_binary_file('/etc/passwd')", rFunc, rLevel},
		{"SELECT pg_read_file(setting || '/postgresql.conf') FROM pg_settings WHERE name = 'data_directory'", rFunc, rLevel},
		{"EXPLAIN ANALYZE SELECT pg_read_file('/etc/passwd')", rFunc, rLevel},
		{"PREPARE d2 AS SELECT pg_read_file('/etc/passwd')", rFunc, rLevel},
		{"SELECT pg_ls_dir('.')", rFunc, rLevel},
		{"SELECT 1 FROM orders, LATERAL (SELECT pg_read_file('/etc/passwd')) f", rFunc, rLevel},
		{"SELECT pg_read_file($1::text)", rFunc, rLevel},
		{"SELECT pg_stat_file('postgresql.conf')", rFunc, rLevel},
		{"SELECT lo_import('/etc/passwd')", rFunc, rLevel},
		{fmt.Sprintf("SELECT lo_export(lo_from_bytea(0, 'x'), '%s')", out), rFunc, rLevel},
		{fmt.Sprintf("SELECT pg_catalog.lo_export(1, '%s')", out), rFunc, rLevel},
		{"SELECT query_to_xml('delete from orders', true, true, '')", rFunc, rFunc},
		{"SELECT xmlagg(x) FROM query_to_xml('select 1', true, true, '') x", rFunc, rFunc},
		{"SELECT table_to_xml('orders', true, true, '')", rFunc, rFunc},
		{"SELECT dblink_exec('dbname=app', 'drop table orders')", rFunc, rLevel},
		// role changes
		{"SET ROLE " + su, rRole, rLevel},
		{"SET LOCAL ROLE " + su, rRole, rLevel},
		{"SET SESSION ROLE " + su, rRole, rLevel},
		{"SET role = '" + su + "'", rRole, rLevel},
		{"SET SESSION AUTHORIZATION " + su, rRole, rLevel},
		{"RESET ROLE", rRole, rLevel},
		{"RESET SESSION AUTHORIZATION", rRole, rLevel},
		{"SELECT set_config('role', '" + su + "', false)", rRole, rLevel},
		{"SELECT pg_catalog.set_config('role', '" + su + "', false)", rRole, rLevel},
		{"SELECT set_config('ro' || 'le', '" + su + "', false)", rRole, rLevel},
		{"DISCARD ALL", rRole, rLevel},
		{"SELECT * FROM orders; SET ROLE " + su, rRole, rLevel},
		// programs and server files
		{fmt.Sprintf("COPY orders TO PROGRAM 'touch %s'", out), rFunc, rLevel},
		{fmt.Sprintf("COPY (SELECT 1) TO PROGRAM 'touch %s'", out), rFunc, rLevel},
		{"COPY marks FROM PROGRAM 'echo 1'", rFunc, rLevel},
		{fmt.Sprintf("COPY orders TO '%s'", out), rFunc, rLevel},
		{"COPY marks FROM '/etc/hostname'", rFunc, rLevel},
		// procedural code (in production below admin: unknown, refused; in dev, development work)
		{"DO $$ BEGIN DELETE FROM orders; END $$", "", ""},
		{"DO $body$ BEGIN EXECUTE 'DROP TABLE orders'; END $body$", "", ""},
		{"CALL wipe()", "", ""},
		// schema changes in production, privileges and server administration below admin
		{"CREATE RULE r AS ON INSERT TO marks DO INSTEAD DELETE FROM orders", rDDL, ""},
		{"ALTER TABLE orders RENAME TO orders2", rDDL, ""},
		{"ALTER TABLE orders DROP COLUMN amount", rDDL, ""},
		{"CREATE FUNCTION evil() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$", rDDL, ""},
		{"CREATE FUNCTION f2() RETURNS void LANGUAGE sql AS $$ DELETE FROM orders $$", rDDL, ""},
		{"CREATE TRIGGER t BEFORE INSERT ON marks FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()", rDDL, ""},
		{"CREATE VIEW v AS SELECT * FROM orders", rDDL, ""},
		{"CREATE TABLE stolen AS SELECT * FROM orders", rDDL, ""},
		{"SELECT * INTO stolen FROM orders", rDDL, ""},
		{"COMMENT ON TABLE orders IS 'x'", rDDL, ""},
		{"GRANT ALL ON orders TO PUBLIC", "", ""},
		{"ALTER SYSTEM SET work_mem = '1MB'", "", rLevel},
		{"VACUUM FULL orders", "", ""},
		{"ALTER ROLE app_ro SUPERUSER", "", rLevel},
		{"ALTER DATABASE app SET role = '" + su + "'", rRole, rLevel},
		{"ALTER DATABASE app SET session_authorization = '" + su + "'", rRole, rLevel},
		{"ALTER ROLE app_ro SET role = '" + su + "'", rRole, rLevel},
		{"ALTER ROLE ALL IN DATABASE app SET role TO " + su, rRole, rLevel},
		{"ALTER TABLE orders ENABLE ROW LEVEL SECURITY", "", ""},
		{"CREATE EXTENSION IF NOT EXISTS pageinspect", "", rLevel},
		{"LOAD 'plpgsql'", "", rLevel},
		{"SELECT pg_reload_conf()", "", rLevel},
		{"SELECT lo_from_bytea(0, 'x')", "", rLevel},
		{"SELECT set_config('log_statement', 'none', false)", "", rLevel},
	}
}

// mode is one way a client can send a statement.
type mode struct {
	name string
	run  func(ctx context.Context, c *pgx.Conn, sql string) error
}

var modes = []mode{
	{"simple", func(ctx context.Context, c *pgx.Conn, sql string) error {
		_, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		return err
	}},
	{"extended", func(ctx context.Context, c *pgx.Conn, sql string) error {
		return c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
	}},
	{"cached-prepared", func(ctx context.Context, c *pgx.Conn, sql string) error {
		rows, err := c.Query(ctx, sql, pgx.QueryExecModeCacheStatement)
		if err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}},
	{"prepare", func(ctx context.Context, c *pgx.Conn, sql string) error {
		_, err := c.Prepare(ctx, "hazard", sql)
		return err
	}},
	{"pipeline", pipelineHazard},
}

// pipelineHazard pipelines an insert, the hazard and another insert before one Sync, as
// pgx and pgJDBC batch; PostgreSQL skips to Sync after an error and rolls the implicit
// transaction back, so neither insert may survive.
func pipelineHazard(ctx context.Context, c *pgx.Conn, sql string) error {
	pl := c.PgConn().StartPipeline(ctx)
	pl.SendQueryParams("INSERT INTO marks VALUES (900)", nil, nil, nil, nil)
	pl.SendQueryParams(sql, nil, nil, nil, nil)
	pl.SendQueryParams("INSERT INTO marks VALUES (901)", nil, nil, nil, nil)
	if err := pl.Sync(); err != nil {
		return fmt.Errorf("pipeline sync: %w", err)
	}
	var hazardErr error
	for range 6 {
		r, err := pl.GetResults()
		if err != nil {
			if hazardErr == nil {
				hazardErr = err
			}
			continue
		}
		if rr, ok := r.(*pgconn.ResultReader); ok {
			if res := rr.Read(); res.Err != nil && hazardErr == nil {
				hazardErr = res.Err
			}
			continue
		}
		if _, ok := r.(*pgconn.PipelineSync); ok || r == nil {
			break
		}
	}
	if err := pl.Close(); err != nil {
		return fmt.Errorf("close pipeline: %w (hazard: %v)", err, hazardErr)
	}
	return hazardErr
}

// denied checks a refusal: SQLSTATE 42501 naming the rule.
func denied(err error, rule string) bool {
	return pgCode(err) == "42501" && strings.Contains(pgMessage(err), `"`+rule+`"`)
}

func TestGuardrails(t *testing.T) {
	f := startGuardFixture(t)
	before := f.snapshot(t)
	personas := []struct {
		name, user, secret, target string
		rule                       func(h hazard) string
	}{
		{"dba-prod", "dba@corp.example", f.dba, "main", func(h hazard) string { return h.dbaProd }},
		{"alice-dev", "alice@corp.example", f.alice, "dev", func(h hazard) string { return h.aliceDev }},
	}
	var report []string
	for _, ps := range personas {
		t.Run("pgx/"+ps.name, func(t *testing.T) {
			ctx := ctxT(t, 3*time.Minute)
			since := time.Now()
			refusals := 0
			c := connect(t, f.p.DSN(ps.user, ps.secret, ps.target))
			for _, h := range f.hazards() {
				rule := ps.rule(h)
				if rule == "" {
					continue
				}
				blocked := true
				for _, m := range modes {
					err := m.run(ctx, c, h.sql)
					refusals++
					if !denied(err, rule) {
						blocked = false
						t.Errorf("%s %s: %q: want 42501 naming %q, got %v", ps.name, m.name, h.sql, rule, err)
					}
					alive(ctx, t, c, m.name+" "+h.sql)
				}
				if now := f.snapshot(t); now != before {
					t.Fatalf("%s: %q changed the database:\nbefore %s\nafter  %s", ps.name, h.sql, before, now)
				}
				f.assertTmpEmpty(t, h.sql)
				report = append(report, fmt.Sprintf("%-9s %-7s %-40s %s", ps.name, map[bool]string{true: "BLOCKED", false: "PASSED"}[blocked], rule, strings.ReplaceAll(h.sql, "\n", `\n`)))
			}
			// Every refusal is in the ledger, with its rule and SQLSTATE, without raw literals.
			evs := searchLedger(t, f.p, ledger.Query{Type: ledger.EventStatement, Identity: ps.user, From: since, Limit: 10000},
				func(evs []ledger.Event) bool {
					n := 0
					for _, ev := range evs {
						if ev.Decision != "allow" && ev.Decision != "" {
							n++
						}
					}
					return n >= refusals
				})
			for _, ev := range evs {
				if ev.Decision == "allow" || ev.Decision == "" {
					continue
				}
				if ev.Rule == "" || ev.SQLState != "42501" {
					t.Fatalf("ledger refusal without rule or SQLSTATE: %+v", ev)
				}
				for _, st := range ev.Statements {
					if strings.Contains(st.Redacted, "/etc/passwd") {
						t.Fatalf("ledger keeps a raw literal: %q", st.Redacted)
					}
				}
			}
		})
		t.Run("psql/"+ps.name, func(t *testing.T) {
			var args, rules []string
			for i, h := range f.hazards() {
				if r := ps.rule(h); r != "" {
					args = append(args, "-c", h.sql, "-c", fmt.Sprintf("SELECT 'alive-%d'", i))
					rules = append(rules, r)
				}
			}
			res := runPsql(t, psqlDSN(f.p, ps.user, ps.target), ps.secret, "", args...)
			errs := regexp.MustCompile(`(?m)^(?:psql:[^\n]*?)?ERROR:\s+(\w{5}): (.*)$`).FindAllStringSubmatch(res.stderr, -1)
			if len(errs) != len(rules) {
				t.Fatalf("psql: want %d errors, got %d:\n%s", len(rules), len(errs), res)
			}
			for i, e := range errs {
				if e[1] != "42501" || !strings.Contains(e[2], `"`+rules[i]+`"`) {
					t.Errorf("psql error %d: want 42501 naming %q, got %s: %s", i, rules[i], e[1], e[2])
				}
			}
			if n := strings.Count(res.stdout, "alive-"); n != len(rules) {
				t.Fatalf("psql: session did not stay usable: %d of %d alive markers\n%s", n, len(rules), res)
			}
			if now := f.snapshot(t); now != before {
				t.Fatalf("psql %s changed the database:\nbefore %s\nafter  %s", ps.name, before, now)
			}
			f.assertTmpEmpty(t, "psql")
		})
	}

	t.Run("psql-backslash-semicolon", func(t *testing.T) {
		// psql sends "a\; b" as one Query message: both statements reach the gate together.
		res := runPsql(t, psqlDSN(f.p, "dba@corp.example", "main"), f.dba,
			"INSERT INTO marks VALUES (103) \\; DROP TABLE orders;\nSELECT 'alive';\n")
		if !strings.Contains(res.stderr, "42501") || !strings.Contains(res.stderr, rDrop) || !strings.Contains(res.stdout, "alive") {
			t.Fatalf("psql \\; : want the whole string refused and the session alive:\n%s", res)
		}
		if now := f.snapshot(t); now != before {
			t.Fatalf("psql \\; changed the database:\nbefore %s\nafter  %s", before, now)
		}
	})

	t.Run("prepared-then-execute", func(t *testing.T) {
		// A refused PREPARE leaves nothing to EXECUTE; a harmless PREPARE is fine and its
		// EXECUTE runs.
		ctx := ctxT(t, time.Minute)
		c := connect(t, f.p.DSN("dba@corp.example", f.dba, "main"))
		if _, err := c.Exec(ctx, "PREPARE wipe_all AS DELETE FROM orders"); !denied(err, rWhere) {
			t.Fatalf("PREPARE DELETE without WHERE: %v", err)
		}
		// The gate never saw wipe_all prepared, so EXECUTE of it is opaque: held in
		// production (42501) before the server could say it does not exist (26000).
		if _, err := c.Exec(ctx, "EXECUTE wipe_all"); !denied(err, "production-opaque-code-needs-approval") && pgCode(err) != "26000" {
			t.Fatalf("EXECUTE of the refused statement: want 42501 or 26000, got %v", err)
		}
		if _, err := c.Exec(ctx, "PREPARE one_order(int) AS SELECT amount FROM orders WHERE id = $1"); err != nil {
			t.Fatal(err)
		}
		var amount int
		if err := c.QueryRow(ctx, "EXECUTE one_order(3)", pgx.QueryExecModeSimpleProtocol).Scan(&amount); err != nil || amount != 30 {
			t.Fatalf("EXECUTE of a harmless prepared statement: %d, %v", amount, err)
		}
		// Protocol-level: the refused Parse leaves no statement; a later Bind to it fails.
		if _, err := c.Prepare(ctx, "proto_wipe", "DELETE FROM orders WHERE $1::int IS NULL OR true"); !denied(err, rWhere) {
			t.Fatalf("protocol Prepare of DELETE ... OR true: %v", err)
		}
		err := c.PgConn().ExecPrepared(ctx, "proto_wipe", [][]byte{[]byte("1")}, nil, nil).Read().Err
		if err == nil {
			t.Fatal("Bind to a refused protocol-level statement succeeded")
		}
		alive(ctx, t, c, "execute")
		if now := f.snapshot(t); now != before {
			t.Fatalf("changed the database:\nbefore %s\nafter  %s", before, now)
		}
	})

	t.Run("legitimate-work", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		// A DBA's ordinary work in dev, including DDL and DROP of their own scratch table.
		dba := connect(t, f.p.DSN("dba@corp.example", f.dba, "dev"))
		for _, sql := range []string{
			"CREATE TABLE scratch(a int)",
			"DROP TABLE scratch",
		} {
			if _, err := dba.Exec(ctx, sql); err != nil {
				t.Fatalf("dba in dev: %q refused: %v", sql, err)
			}
		}
		for _, sql := range []string{
			"SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id",
			"UPDATE orders SET amount = amount + 1 WHERE id = 3",
			"UPDATE orders SET amount = amount - 1 WHERE id = 3",
			"DELETE FROM orders USING customers WHERE orders.customer_id = customers.id AND customers.id = -1",
		} {
			if _, err := dba.Exec(ctx, sql); err != nil {
				t.Fatalf("dba in dev, simple: %q refused: %v", sql, err)
			}
			if err := dba.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err; err != nil {
				t.Fatalf("dba in dev, extended: %q refused: %v", sql, err)
			}
		}
		// A write-level human in dev: ordinary narrow writes.
		alice := connect(t, f.p.DSN("alice@corp.example", f.alice, "dev"))
		for _, sql := range []string{
			"INSERT INTO marks VALUES (500)",
			"UPDATE marks SET id = 501 WHERE id = 500",
			"DELETE FROM marks WHERE id = 501",
			// IS NOT NULL on a nullable column narrows (on a NOT NULL one it is refused)
			"DELETE FROM marks WHERE id IS NOT NULL",
			"UPDATE orders SET amount = amount WHERE customer_id IS NOT NULL",
			"SELECT $q$; DROP TABLE orders; $q$",
			"/* /* nested */ DROP TABLE orders */ SELECT 1",
		} {
			if _, err := alice.Exec(ctx, sql); err != nil {
				t.Fatalf("alice in dev: %q refused: %v", sql, err)
			}
		}
		// An analyst (read level) in production: reads, transactions, session settings.
		an := connect(t, f.p.DSN("alice@corp.example", f.alice, "main"))
		var n int
		if err := an.QueryRow(ctx, "SELECT count(*) FROM orders WHERE amount > $1", 50).Scan(&n); err != nil || n != 15 {
			t.Fatalf("analyst read in prod: %d, %v", n, err)
		}
		for _, sql := range []string{"BEGIN", "SET LOCAL statement_timeout = '5s'", "TABLE orders", "COMMIT", "SHOW search_path"} {
			if _, err := an.Exec(ctx, sql); err != nil {
				t.Fatalf("analyst in prod: %q refused: %v", sql, err)
			}
		}
		if now := f.snapshot(t); now != before {
			t.Fatalf("legitimate work left a change:\nbefore %s\nafter  %s", before, now)
		}
	})

	t.Run("read-level-cannot-write", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		for _, who := range []struct{ user, secret, target string }{
			{"support-bot", f.bot, "main"},
			{"support-bot", f.bot, "dev"},
			{"alice@corp.example", f.alice, "main"},
		} {
			c := connect(t, f.p.DSN(who.user, who.secret, who.target))
			for _, m := range modes {
				if err := m.run(ctx, c, "INSERT INTO marks VALUES (104)"); !denied(err, rLevel) {
					t.Errorf("%s on %s, %s: INSERT: want access-level refusal, got %v", who.user, who.target, m.name, err)
				}
			}
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil || n != 20 {
				t.Fatalf("%s read: %d, %v", who.user, n, err)
			}
		}
		if now := f.snapshot(t); now != before {
			t.Fatalf("read-level identities changed the database:\nbefore %s\nafter  %s", before, now)
		}
	})

	t.Run("least-privilege-upstream-role", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		for _, tc := range []struct{ user, secret, target, want string }{
			{"alice@corp.example", f.alice, "main", "app_ro"}, // human in prod: read
			{"alice@corp.example", f.alice, "dev", "app_rw"},  // human in dev: write
			{"support-bot", f.bot, "dev", "app_ro"},           // agent: read everywhere
			{"dba@corp.example", f.dba, "main", f.pg.User},    // admin: no admin role mapped
		} {
			c := connect(t, f.p.DSN(tc.user, tc.secret, tc.target))
			var cur string
			if err := c.QueryRow(ctx, "SELECT current_user").Scan(&cur); err != nil || cur != tc.want {
				t.Errorf("%s on %s: current_user %q, %v; want %q", tc.user, tc.target, cur, err, tc.want)
			}
		}
		// The role really is least privilege upstream: its own privileges, not the gate's.
		for _, tc := range []struct {
			user, secret, target string
			insert               bool
		}{
			{"alice@corp.example", f.alice, "main", false},
			{"alice@corp.example", f.alice, "dev", true},
		} {
			c := connect(t, f.p.DSN(tc.user, tc.secret, tc.target))
			var can bool
			if err := c.QueryRow(ctx, "SELECT has_table_privilege('public.orders', 'INSERT')").Scan(&can); err != nil || can != tc.insert {
				t.Errorf("%s on %s: upstream role may INSERT = %v (%v), want %v", tc.user, tc.target, can, err, tc.insert)
			}
		}
	})

	t.Run("max-rows", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		c := connect(t, f.p.DSN("capped@corp.example", f.capped, "main"))
		for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
			rows, err := c.Query(ctx, "SELECT n FROM big_report ORDER BY n", m)
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for rows.Next() {
				got++
			}
			err = rows.Err()
			if got > 10 || pgCode(err) != "54000" || !strings.Contains(pgMessage(err), "10 rows") || !strings.Contains(pgMessage(err), "capped-reporting") {
				t.Fatalf("%v: want an error after at most 10 rows naming the rule, got %d rows, %v", m, got, err)
			}
			alive(ctx, t, c, "max_rows")
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM big_report").Scan(&n); err != nil || n != 100 {
			t.Fatalf("a small result under the cap: %d, %v", n, err)
		}
	})

	t.Run("known-gaps", func(t *testing.T) { knownGaps(t, f, before) })

	t.Logf("adversarial corpus through the proxy (pgx simple/extended/cached-prepared/prepare/pipeline + psql):\n%s", strings.Join(report, "\n"))
}
