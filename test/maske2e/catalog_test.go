package maske2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// cells runs sql and returns its rows with NULL spelled "NULL", so a masked-to-NULL integer
// shows.
func cells(ctx context.Context, c *pgx.Conn, sql string, opts ...any) ([][]string, error) {
	rows, err := c.Query(ctx, sql, opts...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = "NULL"
			if v != nil {
				row[i] = fmt.Sprint(v)
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// TestCatalogOfSessionDatabase is issue 13's catalog repro: a masked DBA on another database
// of the target (dbname=shop@main) creates tables during the session. The catalog the
// session reads is rescanned after the DDL (and again after the COMMIT of a transaction that
// ran DDL), so integers named like addresses come back as they are — in rows, in
// row_to_json and in COPY — while a text column of people's names created the same way is
// masked, COPY included; and inside the creating transaction, before any scan can see the
// table, an integer is still not masked for its name alone.
func TestCatalogOfSessionDatabase(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "postgres", "CREATE DATABASE shop")
	pg.Exec(t, "shop", "CREATE TABLE existing(id int, note text); INSERT INTO existing VALUES (1, 'x')")
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "staging", Upstream: pg})
	dba := p.Token(t, "dba", "service", "dba")
	ctx := ctxT(t, 3*time.Minute)
	c, err := pgx.Connect(ctx, p.DSN("dba", dba, "shop@main"))
	if err != nil {
		t.Fatalf("connect to shop@main: %v", err)
	}
	defer c.Close(context.Background())

	exec := func(sql string) {
		t.Helper()
		if _, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	expect := func(sql, want string, opts ...any) {
		t.Helper()
		rows, err := cells(ctx, c, sql, opts...)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, strings.Join(r, ","))
		}
		if strings.Join(got, ";") != want {
			t.Errorf("%s (%v) = %q, want %q", sql, opts, strings.Join(got, ";"), want)
		}
	}
	copyOut := func(sql string) string {
		t.Helper()
		var buf bytes.Buffer
		if _, err := c.PgConn().CopyTo(ctx, &buf, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return buf.String()
	}

	// The session's catalog exists before the DDL (as in a session that ran anything).
	expect("SELECT id, note FROM existing", "1,x")

	exec("CREATE TABLE p(city_id int, zip int, street int)")
	exec("INSERT INTO p VALUES (7, 12345, 42)")
	for _, mode := range []any{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		expect("SELECT * FROM p", "7,12345,42", mode)
		expect("SELECT city_id, zip, street FROM p", "7,12345,42", mode)
		expect("SELECT row_to_json(p)::text FROM p", `{"city_id":7,"zip":12345,"street":42}`, mode)
	}
	if got := copyOut("COPY p TO STDOUT"); got != "7\t12345\t42\n" {
		t.Errorf("COPY p = %q", got)
	}

	// The rescan classifies what it sees: people's names created in the session are masked.
	exec("CREATE TABLE people(id int, full_name text)")
	exec("INSERT INTO people VALUES (1, 'Maria Garcia')")
	for _, out := range []string{copyOut("COPY people TO STDOUT"), copyOut("COPY (SELECT full_name FROM people) TO STDOUT")} {
		if strings.Contains(out, "Maria") || strings.Contains(out, "Garcia") || out == "" {
			t.Errorf("COPY of a name column created in the session: %q", out)
		}
	}
	rows, err := cells(ctx, c, "SELECT full_name FROM people")
	if err != nil || len(rows) != 1 || strings.Contains(rows[0][0], "Garcia") {
		t.Errorf("SELECT full_name: %v %v", rows, err)
	}

	// A table created in a transaction: the scans the DDL triggers cannot see it until
	// COMMIT; its integers are not masked for their names meanwhile, and after COMMIT the
	// catalog knows it (COPY works).
	exec("BEGIN")
	exec("CREATE TABLE q(zip int, street int, city text)")
	exec("INSERT INTO q VALUES (10115, 5, 'Berlin')")
	expect("SELECT zip, street FROM q", "10115,5")
	exec("COMMIT")
	expect("SELECT zip, street FROM q", "10115,5")
	if got := copyOut("COPY q (zip, street) TO STDOUT"); got != "10115\t5\n" {
		t.Errorf("COPY q after COMMIT = %q", got)
	}
	rows, err = cells(ctx, c, "SELECT * FROM q")
	if err != nil || len(rows) != 1 || len(rows[0]) != 3 || rows[0][0] != "10115" || rows[0][1] != "5" || rows[0][2] == "Berlin" {
		t.Errorf("SELECT * FROM q: %v %v, want the integers raw and the city masked", rows, err)
	}
}
