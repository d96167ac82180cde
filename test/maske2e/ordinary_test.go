package maske2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// ordinarySteps create ordinary (non-sensitive) data in the session and read it back every
// way that once went wrong: lineage through CTE column lists and `*`, whole-row and JSON
// values, composite literals, RETURNING of rows, COPY of whole-row expansions and record
// sets, and errors that quote values or column names.
var ordinarySteps = []string{
	"CREATE TABLE g(f int, t int, label text)",
	"INSERT INTO g VALUES (1, 2, 'x'), (3, 4, 'y')",
	"CREATE TABLE department(id int, parent_department int, name text)",
	"INSERT INTO department VALUES (0, NULL, 'ROOT'), (1, 0, 'A'), (2, 1, 'B'), (3, 2, 'C')",
	"CREATE VIEW v AS SELECT * FROM g",
	"CREATE TYPE fullname AS (first text, last text)",
	"CREATE TABLE k(a int PRIMARY KEY, b text CHECK (b <> 'bad'))",
	"INSERT INTO k VALUES (1, 'ok')",
	"WITH s(a, b, c) AS (SELECT * FROM g) SELECT * FROM s ORDER BY a",
	"WITH s(a) AS (SELECT * FROM g) SELECT a, t, label FROM s ORDER BY a",
	"WITH RECURSIVE subdepartment(level, id, parent_department, name) AS (SELECT 1, * FROM department WHERE name = 'A' UNION ALL SELECT sd.level + 1, d.* FROM department AS d, subdepartment AS sd WHERE d.parent_department = sd.id) SELECT * FROM subdepartment ORDER BY name",
	"SELECT * FROM (SELECT 1 AS one, * FROM g) x(o, p) ORDER BY p",
	"SELECT row_to_json(q) FROM (SELECT * FROM g) q ORDER BY 1::text",
	"SELECT json_agg(q ORDER BY f) FROM (SELECT * FROM g) q",
	"SELECT v FROM v ORDER BY 1::text",
	"SELECT (g).*, g FROM g ORDER BY f",
	"BEGIN",
	"INSERT INTO g VALUES (5, 6, 'z') RETURNING g",
	"INSERT INTO g VALUES (7, 8, 'w') RETURNING (g), *",
	"ROLLBACK",
	"SELECT row('Joe', 'Blow')::fullname, '(Joe,Blow)'::fullname, ('(Joe,Blow)'::fullname).first",
	"SELECT 'abc'::smallint FROM g",
	"CREATE VIEW vx WITH (security_barrier = 100) AS SELECT * FROM g",
	"CREATE TABLE gx WITH (\"Fillfactor\" = 10) AS SELECT * FROM g",
	"INSERT INTO k VALUES (1, 'again')",
	"INSERT INTO k VALUES (2, 'bad')",
	"COPY (SELECT (g).* FROM g ORDER BY f) TO STDOUT",
	"COPY (SELECT * FROM unnest((SELECT array_agg(g ORDER BY f) FROM g))) TO STDOUT (FORMAT csv)",
	"COPY (SELECT * FROM jsonb_to_recordset((SELECT jsonb_agg(g ORDER BY f) FROM g)) AS x(f int, label text)) TO STDOUT",
	"COPY (SELECT * FROM ROWS FROM (unnest(ARRAY[1, 2]), unnest(ARRAY['a', 'b'])) AS r(n, s)) TO STDOUT",
	"COPY (WITH s(a, b, c) AS (SELECT * FROM g) SELECT * FROM s ORDER BY a) TO STDOUT",
	"COPY g TO STDOUT",
	// Temporary tables, which the catalog never sees: classed by their column names.
	"CREATE TEMP TABLE fullname_t (first text, last text)",
	"INSERT INTO fullname_t VALUES ('Joe', 'Blow')",
	"CREATE FUNCTION last_of(fullname_t) RETURNS text LANGUAGE sql AS $$ SELECT $1.last $$",
	"SELECT last_of(f), f, row_to_json(f) FROM fullname_t f",
	"CREATE TEMP TABLE tt1 AS SELECT * FROM g LIMIT 1",
	"CREATE TEMP TABLE tt2 () INHERITS (tt1)",
	"INSERT INTO tt2 VALUES (33, 44, 'z')",
	"SELECT row_to_json(tt2::tt1) FROM tt2",
	"-- a comment first\nCREATE TEMP TABLE tt3 () INHERITS (tt2)",
	"INSERT INTO tt3 VALUES (55, 66, 'w')",
	"SELECT row_to_json(tt3::tt2::tt1) FROM tt3",
	"WITH RECURSIVE s(level, a, b, c) AS (SELECT 1, * FROM tt1 UNION ALL SELECT level + 1, t.* FROM tt2 t, s WHERE s.level < 2) SELECT * FROM s ORDER BY level",
	"COPY (SELECT * FROM tt2) TO STDOUT",
	"COPY k FROM STDIN",
}

// TestOrdinaryValuesUntouched: a DBA under the built-in policy (masked) creates ordinary
// tables and reads them back through Gatehouse, in the target's database and in another
// database of the target (dbname=other@main); every value and every error must be what
// PostgreSQL gives directly, in the simple protocol and in binary.
func TestOrdinaryValuesUntouched(t *testing.T) {
	pg := testkit.StartPostgres(t)
	for _, db := range []string{"app", "other", "ref_main", "ref_other"} {
		pg.Exec(t, "postgres", "CREATE DATABASE "+db)
	}
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "dev", Upstream: pg})
	ctx := ctxT(t, 3*time.Minute)
	token := p.Token(t, "dba", "service", "dba")
	for _, db := range []string{"main", "other@main"} {
		t.Run(db, func(t *testing.T) {
			via, err := pgconn.Connect(ctx, p.DSN("dba", token, db))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = via.Close(context.Background()) })
			direct, err := pgconn.Connect(ctx, pg.DSN("ref_"+strings.TrimSuffix(db, "@main")))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = direct.Close(context.Background()) })
			for _, step := range ordinarySteps {
				got, want := outcome(ctx, via, step), outcome(ctx, direct, step)
				if got != want {
					t.Errorf("%s\n through Gatehouse: %s\n directly:          %s", step, got, want)
				}
			}
		})
	}
}

// outcome runs one statement and describes everything the client gets: rows (simple
// protocol, and binary through the extended protocol for a SELECT) or COPY data, or the
// error with its detail.
func outcome(ctx context.Context, c *pgconn.PgConn, sql string) string {
	var b bytes.Buffer
	var err error
	switch {
	case strings.HasSuffix(sql, "FROM STDIN"):
		// The row misses a column: `missing data for column "b"`.
		_, err = c.CopyFrom(ctx, strings.NewReader("3\n"), sql)
	case strings.HasPrefix(sql, "COPY"):
		_, err = c.CopyTo(ctx, &b, sql)
	default:
		var res []*pgconn.Result
		res, err = c.Exec(ctx, sql).ReadAll()
		for _, r := range res {
			writeRows(&b, r.Rows)
		}
		if err == nil && strings.HasPrefix(sql, "SELECT") {
			rr := c.ExecParams(ctx, sql, nil, nil, nil, []int16{1})
			b.WriteString("binary:\n")
			for rr.NextRow() {
				writeRows(&b, [][][]byte{rr.Values()})
			}
			_, err = rr.Close()
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		fmt.Fprintf(&b, "ERROR %s %s: %q detail %q", pe.Severity, pe.Code, pe.Message, pe.Detail)
	} else if err != nil {
		fmt.Fprintf(&b, "ERROR %v", err)
	}
	return b.String()
}

func writeRows(b *bytes.Buffer, rows [][][]byte) {
	for _, row := range rows {
		for i, v := range row {
			if i > 0 {
				b.WriteString(" | ")
			}
			if v == nil {
				b.WriteString("NULL")
			} else {
				fmt.Fprintf(b, "%q", v)
			}
		}
		b.WriteString("\n")
	}
}
