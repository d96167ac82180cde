package inspect

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// TestSkeletonShapeIsNormalize: whenever the skeleton vouches for a text whose Normalize
// replaced exactly its integer literals, every text of the same skeleton (the corpus with
// its integers changed every way a client could) normalizes to the same shape; and texts
// the skeleton must not vouch for have none.
func TestSkeletonShapeIsNormalize(t *testing.T) {
	sqls := []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 4242;", "SELECT abalance FROM pgbench_accounts WHERE aid = 4242",
		"UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 7", "INSERT INTO t VALUES (1, 2, 3)",
		"FETCH 5 FROM c", "MOVE 10 IN c", "SELECT -1", "SELECT 1-1", "SELECT a - 1 FROM t", "SELECT a -1 FROM t",
		"CREATE TABLE t (a varchar(10), b numeric(10,2))", "SELECT * FROM t LIMIT 5 OFFSET 10", "ALTER SEQUENCE s INCREMENT 5",
		"SELECT 1 ORDER BY 1", "SELECT a, count(*) FROM t GROUP BY 1", "SET work_mem = 65536", "SET statement_timeout TO 5",
		"SELECT 999999999", "SELECT 1::int4", "SELECT x[1:2] FROM t", "SELECT x[1] FROM t", "DELETE FROM t WHERE 1 = 1",
		"UPDATE t SET a = 1 WHERE 1 = 1", "SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM generate_series(1, 10)",
		"SELECT pg_sleep(1)", "SELECT pg_cancel_backend(123)", "SELECT pg_terminate_backend(123)", "SELECT lo_unlink(123)",
		"SELECT setval(s, 5)", "PREPARE p AS SELECT 1", "EXPLAIN (ANALYZE 1) DELETE FROM t", "CREATE SEQUENCE s START 5",
		"CLUSTER t", "SELECT 1 FROM t t1 JOIN t2 ON t1.a = t2.a2", "VALUES (1), (2)", "SELECT interval_col + 1 FROM t",
		"DECLARE c CURSOR FOR SELECT 1", "SELECT a FROM t WHERE a BETWEEN 1 AND 2", "SELECT CASE WHEN a = 1 THEN 2 ELSE 3 END FROM t",
		"SELECT a FROM t FETCH FIRST 5 ROWS ONLY", "SELECT a FROM t LIMIT ALL", "CREATE INDEX ON t (a) WITH (fillfactor = 70)",
		"ALTER TABLE t ALTER COLUMN a SET STATISTICS 100", "GRANT SELECT ON t TO r", "SELECT 1 + +2", "SELECT - 1",
		"SELECT a FROM t WHERE b = -5", "SELECT ALL 1", "SELECT 1 AS x1", "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (1) TO (10)",
		// pgbench's TPC-B-like script: negative deltas, whose sign Normalize takes with the constant.
		"UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 12345;",
		"UPDATE pgbench_tellers SET tbalance = tbalance + 17 WHERE tid = 3;",
		"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (5, 1, 12345, -4321, CURRENT_TIMESTAMP);",
		"SELECT 1 + -  2", "SELECT 2 ^ -1", "SELECT a[-1:2] FROM t", "SELECT x FROM t LIMIT -1", "SELECT -1::int",
		"SELECT - -1", "SELECT -(-1)", "SELECT a-1 FROM t", "SELECT a - -1 FROM t", "SELECT -1, -2, 3 - 4", "SELECT f(-1, - 2)",
		"SELECT * FROM t WHERE a IN (-1, -2) AND b BETWEEN -5 AND -1", "SELECT '-'::text, -1", "SELECT 1 FROM t WHERE a = -\n 7",
	}
	for _, c := range cases {
		sqls = append(sqls, c.sql)
	}
	digits := []func(string) string{
		func(s string) string { return "0" },
		func(s string) string { return "999999999" },
		func(s string) string { return strings.Repeat("7", len(s)) },
		func(s string) string { return "1" + s },
		func(s string) string { return "00" + s },
	}
	vouched := 0
	for _, sql := range sqls {
		sk := skeleton(sql)
		if sk == "" {
			continue
		}
		shape, err := pg_query.Normalize(sql)
		if err != nil || !asNormalized(sql, shape) {
			continue
		}
		vouched++
		for _, d := range digits {
			for which := -1; which < 3; which++ { // every literal, or only the first, second, third
				variant := rewriteIntegers(sql, func(k int, lit string) string {
					if which >= 0 && k != which {
						return lit
					}
					return d(lit)
				})
				if skeleton(variant) != sk {
					continue // grew past the digits the skeleton vouches for
				}
				got, err := pg_query.Normalize(variant)
				if err != nil || got != shape {
					t.Errorf("%q and %q share a skeleton, but normalize to %q and %q (%v)", sql, variant, shape, got, err)
				}
			}
		}
	}
	if vouched < 40 {
		t.Fatalf("only %d texts vouched for", vouched)
	}
	for _, sql := range []string{
		"SELECT 1.5", "SELECT .5", "SELECT 1e5", "SELECT 0x1f", "SELECT 1_000", "SELECT 2147483648", "SELECT '1'",
		`SELECT "a1" FROM t`, "SELECT $1", "SELECT 1 -- 2", "SELECT /* 1 */ 1", "SELECT E'\\x'", "SELECT $$1$$", "SELECT 1é",
	} {
		if sk := skeleton(sql); sk != "" {
			t.Errorf("%q has skeleton %q, want none", sql, sk)
		}
	}
	// The inspector uses it: texts of one skeleton are normalized by pg_query once.
	in := New(10)
	for _, id := range []string{"1", "22", "333"} {
		in.Inspect("SELECT abalance FROM pgbench_accounts WHERE aid = " + id)
	}
	if in.skeletons.len() != 1 || in.shapes.len() != 1 {
		t.Fatalf("%d skeletons, %d shapes, want 1 and 1", in.skeletons.len(), in.shapes.len())
	}
	// Negative literals too (pgbench's TPC-B deltas): one skeleton per sign pattern.
	for _, d := range []string{"-4321", "-7", "-5000"} {
		in.Inspect("UPDATE pgbench_accounts SET abalance = abalance + " + d + " WHERE aid = 12345;")
	}
	if in.skeletons.len() != 2 || in.shapes.len() != 2 {
		t.Fatalf("%d skeletons, %d shapes, want 2 and 2", in.skeletons.len(), in.shapes.len())
	}
}

// rewriteIntegers replaces the k-th integer literal lit of sql with f(k, lit).
func rewriteIntegers(sql string, f func(k int, lit string) string) string {
	var b strings.Builder
	last, k := 0, 0
	scanIntegers(sql, func(start, end int) {
		b.WriteString(sql[last:start])
		b.WriteString(f(k, sql[start:end]))
		k++
		last = end
	})
	b.WriteString(sql[last:])
	return b.String()
}
