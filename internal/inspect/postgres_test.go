package inspect

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testkit"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestReadsAgreeWithPostgres uses PostgreSQL itself as the judge of what writes: each
// statement runs in a READ ONLY transaction (then rolls back), where PostgreSQL refuses
// anything that would change data or schema with SQLSTATE 25006. Whatever PostgreSQL
// refuses there, the inspector must not call a read — unless it reports Locking
// (SELECT ... FOR UPDATE, which is a read that takes row locks, by design).
func TestReadsAgreeWithPostgres(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", `
		CREATE TABLE t (id int PRIMARY KEY, a int, b text);
		CREATE TABLE u (id int, a int);
		CREATE TABLE users (id int, email text, deleted bool);
		CREATE TABLE archive (id int, email text, deleted bool);
		CREATE SEQUENCE s;
		CREATE MATERIALIZED VIEW mv AS SELECT * FROM t;
		CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1';
		CREATE FUNCTION harmless(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
		CREATE PROCEDURE wipe() LANGUAGE sql AS 'DELETE FROM t';
		INSERT INTO t VALUES (1, 1, 'x'), (2, 2, 'y');
		INSERT INTO u VALUES (1, 1);
		INSERT INTO users VALUES (1, 'a@example.org', false);`)

	stmts := []string{
		"SELECT * FROM t",
		"TABLE t",
		"VALUES (1)",
		"SELECT count(*), max(a) FROM t WHERE a IN (SELECT a FROM u)",
		"WITH x AS (SELECT * FROM t) SELECT * FROM x",
		"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
		"WITH d AS (UPDATE t SET a = 0 RETURNING *) SELECT count(*) FROM d",
		"WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) INSERT INTO u SELECT id, a FROM d",
		"SELECT nextval('s')",
		"SELECT setval('s', 5)",
		"SELECT evil()",
		"SELECT harmless(1)",
		"EXPLAIN ANALYZE DELETE FROM t",
		"EXPLAIN (ANALYZE, COSTS off) UPDATE t SET a = 1",
		"EXPLAIN DELETE FROM t",
		"SELECT * INTO x FROM t",
		"CREATE TABLE x AS SELECT 1",
		"INSERT INTO archive SELECT * FROM users",
		"INSERT INTO t VALUES (100, 1, 'x') ON CONFLICT DO NOTHING",
		"UPDATE t SET a = 1 WHERE true",
		"DELETE FROM t USING u WHERE t.id = u.id",
		"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
		"TRUNCATE t",
		"DROP TABLE u",
		"dRoP/**/TABLE u",
		"CREATE INDEX ON t (a)",
		"ALTER TABLE t ADD COLUMN c int",
		"COMMENT ON TABLE t IS 'x'",
		"GRANT SELECT ON t TO PUBLIC",
		"CREATE ROLE someone",
		"REFRESH MATERIALIZED VIEW mv",
		"LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
		// (query_to_xml('DELETE ...') is refused by PostgreSQL itself: query_to_xml is stable,
		// and a stable function may not run DML; the inspector still calls it a DELETE.)
		"SELECT query_to_xml('SELECT * FROM t', true, true, '')",
		"DO $$ BEGIN DELETE FROM t; END $$",
		"CALL wipe()",
		"SELECT * FROM t FOR UPDATE",
		"SELECT set_config('search_path', 'public', false)",
		"SELECT txid_current()",
		"SELECT pg_notify('ch', 'x')",
		"NOTIFY ch",
		"SELECT lo_import('/etc/hostname')",
		"SELECT lo_create(0)",
		"SELECT pg_advisory_lock(1)",
		"SELECT now(), current_user, version(), lower('X'), coalesce(null, 1)",
		"SELECT $$DROP TABLE t$$, 'a;b'",
		"PREPARE p AS DELETE FROM t",
	}
	in := New(100)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	refused := 0
	for _, sql := range stmts {
		facts := in.Inspect(sql)
		if len(facts) != 1 {
			t.Fatalf("%q: %d statements", sql, len(facts))
		}
		st := facts[0]
		if _, err := conn.Exec(ctx, "BEGIN READ ONLY").ReadAll(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		_, runErr := conn.Exec(ctx, sql).ReadAll()
		if _, err := conn.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
			t.Fatalf("rollback after %q: %v", sql, err)
		}
		var pgErr *pgconn.PgError
		switch {
		case errors.As(runErr, &pgErr) && pgErr.Code == "25006":
			refused++
			if st.Category == Read && !st.Locking {
				t.Errorf("%q: PostgreSQL refuses it in a read-only transaction (%s), the inspector calls it %s/%s", sql, pgErr.Message, st.Kind, st.Category)
			}
		case runErr != nil:
			t.Errorf("%q: unexpected error %v (fixture out of date?)", sql, runErr)
		case st.Category == Read && strings.HasPrefix(st.Kind, "DROP"):
			t.Errorf("%q: a read that drops", sql)
		}
	}
	t.Logf("%d of %d statements refused as writes by PostgreSQL", refused, len(stmts))
	if refused < 20 {
		t.Fatalf("only %d statements were refused as writes: the read-only check is not working", refused)
	}
}
