package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// rCap is the built-in rule that caps production writes below admin at 1000 rows.
const rCap = "production-writes-capped"

// capFixture is Gatehouse with the built-in policy plus a grant that lets writer@ write in
// production, so the built-in affected-rows limit (1000) applies to writer@ and not to the
// dba (admin). Table items holds 3000 rows.
type capFixture struct {
	p           *servertest.Proxy
	pg          *testkit.Postgres
	writer, dba string
}

func startCapFixture(t *testing.T) *capFixture {
	t.Helper()
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "app", `
CREATE TABLE items(id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
INSERT INTO items SELECT g, 0 FROM generate_series(1, 3000) g;
CREATE TABLE marks(id int);`)
	text := strings.Replace(string(policy.DefaultText()), "\ngrants:\n",
		"\ngrants:\n  - {name: prod-writer, subjects: [writer@corp.example], level: write}\n", 1)
	p := servertest.Start(t, servertest.Options{Upstream: pg, PolicyYAML: text, Environment: "prod"})
	return &capFixture{p: p, pg: pg,
		writer: p.Token(t, "writer@corp.example", "human"),
		dba:    p.Token(t, "dba@corp.example", "human", "dba")}
}

// state is items' row count and sum of v, plus the marks, read directly upstream.
func (f *capFixture) state(t testing.TB) string {
	t.Helper()
	return upstreamQuery(t, f.pg, "app", "SELECT (SELECT count(*) || '/' || sum(v) FROM items) || ' marks=' || (SELECT count(*) FROM marks)")
}

// overCap asserts err is the affected-rows refusal naming the rule and the limit.
func overCap(t testing.TB, what string, err error) {
	t.Helper()
	if pgCode(err) != "54000" || !strings.Contains(pgMessage(err), "1000 affected rows") || !strings.Contains(pgMessage(err), rCap) {
		t.Fatalf("%s: want 54000 naming the limit and rule %q, got %v", what, rCap, err)
	}
}

var capModes = []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec,
	pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeCacheDescribe}

func TestWriteCap(t *testing.T) {
	f := startCapFixture(t)
	writerDSN := f.p.DSN("writer@corp.example", f.writer, "main")

	t.Run("autocommit", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		c := connect(t, writerDSN)
		next := 2001 // ids the other subtests leave alone
		for _, m := range capModes {
			before := f.state(t)
			_, err := c.Exec(ctx, "DELETE FROM items WHERE id > $1", m, 0)
			overCap(t, fmt.Sprintf("%v: DELETE of every row", m), err)
			_, err = c.Exec(ctx, "UPDATE items SET v = v + 1 WHERE id > $1", m, 0)
			overCap(t, fmt.Sprintf("%v: UPDATE of every row", m), err)
			if now := f.state(t); now != before {
				t.Fatalf("%v: a refused write changed the table: %s -> %s", m, before, now)
			}
			if st := c.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("%v: transaction status after the refusal: %q, want I", m, st)
			}
			alive(ctx, t, c, m.String())

			// Under the cap: runs and is committed (seen upstream).
			tag, err := c.Exec(ctx, "DELETE FROM items WHERE id >= $1 AND id < $2", m, next, next+5)
			if err != nil || tag.RowsAffected() != 5 || tag.String() != "DELETE 5" {
				t.Fatalf("%v: DELETE of 5 rows: %v %v", m, tag, err)
			}
			var ids []int
			rows, _ := c.Query(ctx, "UPDATE items SET v = v + 1 WHERE id >= $1 AND id < $2 RETURNING id", m, next+5, next+8)
			ids, err = pgx.CollectRows(rows, pgx.RowTo[int])
			if err != nil || len(ids) != 3 {
				t.Fatalf("%v: UPDATE ... RETURNING of 3 rows: %v %v", m, ids, err)
			}
			next += 8
			if st := c.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("%v: transaction status after a capped write: %q, want I", m, st)
			}
		}
		n := len(capModes)
		want := fmt.Sprintf("%d/%d marks=0", 3000-5*n, 3*n)
		if got := f.state(t); got != want {
			t.Fatalf("writes under the cap were not committed: %s, want %s", got, want)
		}
	})

	t.Run("in-transaction", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		c := connect(t, writerDSN)
		for _, m := range capModes {
			before := f.state(t)
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO marks VALUES ($1)", m, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "UPDATE items SET v = v + 1 WHERE id <= $1", m, 10); err != nil {
				t.Fatalf("%v: UPDATE under the cap in a transaction: %v", m, err)
			}
			_, err = tx.Exec(ctx, "DELETE FROM items WHERE id > $1", m, 0)
			overCap(t, fmt.Sprintf("%v: DELETE of every row in a transaction", m), err)
			// Documented: the client's transaction is failed, as after any failed statement.
			if st := c.PgConn().TxStatus(); st != 'E' {
				t.Fatalf("%v: transaction status after the refusal: %q, want E", m, st)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); pgCode(err) != "25P02" {
				t.Fatalf("%v: the failed transaction must refuse further statements, got %v", m, err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if now := f.state(t); now != before {
				t.Fatalf("%v: the failed transaction changed the table: %s -> %s", m, before, now)
			}
			alive(ctx, t, c, m.String())

			// Under the cap inside BEGIN ... COMMIT: committed with the rest.
			tx, err = c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tag, err := tx.Exec(ctx, "UPDATE items SET v = v + 1 WHERE id <= $1", m, 10)
			if err != nil || tag.RowsAffected() != 10 {
				t.Fatalf("%v: UPDATE of 10 rows in a transaction: %v %v", m, tag, err)
			}
			if st := c.PgConn().TxStatus(); st != 'T' {
				t.Fatalf("%v: transaction status after a capped write: %q, want T", m, st)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			count, sum := splitState(t, before)
			if got, want := f.state(t), fmt.Sprintf("%d/%d marks=0", count, sum+10); got != want {
				t.Fatalf("%v: the committed transaction: %s, want %s", m, got, want)
			}
		}
	})

	t.Run("batch", func(t *testing.T) {
		// A pipeline of extended messages with one Sync: the writes after the first wait
		// for its count; an excess fails the implicit transaction, as any error would.
		ctx := ctxT(t, time.Minute)
		c := connect(t, writerDSN)
		before := f.state(t)
		b := &pgx.Batch{}
		b.Queue("UPDATE items SET v = v + 1 WHERE id <= $1", 20)
		b.Queue("DELETE FROM items WHERE id > $1", 0)
		b.Queue("INSERT INTO marks VALUES (1)")
		br := c.SendBatch(ctx, b)
		tag, err := br.Exec()
		if err != nil || tag.RowsAffected() != 20 {
			t.Fatalf("first write of the batch: %v %v", tag, err)
		}
		_, err = br.Exec()
		overCap(t, "second write of the batch", err)
		if _, err := br.Exec(); err == nil {
			t.Fatal("the write after the refused one ran")
		}
		_ = br.Close()
		if now := f.state(t); now != before {
			t.Fatalf("the refused batch changed the tables: %s -> %s", before, now)
		}
		alive(ctx, t, c, "batch")
	})

	t.Run("refused-when-not-enforceable", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		c := connect(t, writerDSN)
		before := f.state(t)
		// Several statements in one Query: the write's count and rollback would not be its
		// own, so the string is refused before anything runs.
		_, err := c.Exec(ctx, "INSERT INTO marks VALUES (7); DELETE FROM items WHERE id <= 2", pgx.QueryExecModeSimpleProtocol)
		if pgCode(err) != "42501" || !strings.Contains(pgMessage(err), "on its own") {
			t.Fatalf("multi-statement string with a capped write: %v", err)
		}
		if now := f.state(t); now != before {
			t.Fatalf("refused statements changed the tables: %s -> %s", before, now)
		}
		alive(ctx, t, c, "refusals")
	})

	t.Run("uncapped", func(t *testing.T) {
		// Admins are not capped by the built-in rule: their large write runs as before.
		ctx := ctxT(t, time.Minute)
		c := connect(t, f.p.DSN("dba@corp.example", f.dba, "main"))
		before := f.state(t)
		count, sum := splitState(t, before)
		for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			tag, err := c.Exec(ctx, "UPDATE items SET v = v + 1 WHERE id > $1", m, 0)
			if err != nil || tag.RowsAffected() != int64(count) {
				t.Fatalf("%v: admin UPDATE of every row: %v %v", m, tag, err)
			}
		}
		if got, want := f.state(t), fmt.Sprintf("%d/%d marks=0", count, sum+2*count); got != want {
			t.Fatalf("admin writes: %s, want %s", got, want)
		}
	})

	t.Run("psql", func(t *testing.T) {
		before := f.state(t)
		count, sum := splitState(t, before)
		script := `DELETE FROM items WHERE id > 0;
SELECT 'alive-1';
UPDATE items SET v = v + 1 WHERE id > 0;
SELECT 'alive-2';
BEGIN;
UPDATE items SET v = v + 1 WHERE id <= 4;
DELETE FROM items WHERE id > 0;
SELECT 'not-run';
ROLLBACK;
SELECT 'alive-3';
BEGIN;
UPDATE items SET v = v + 1 WHERE id <= 3;
COMMIT;
UPDATE items SET v = v + 1 WHERE id <= 2;
SELECT 'alive-4';
`
		res := runPsql(t, psqlDSN(f.p, "writer@corp.example", "main"), f.writer, script)
		errs := regexp.MustCompile(`(?m)^(?:psql:[^\n]*?)?ERROR:\s+(\w{5}): (.*)$`).FindAllStringSubmatch(res.stderr, -1)
		if len(errs) != 4 {
			t.Fatalf("psql: want 4 errors (3 over the cap, 1 in the failed transaction), got %d:\n%s", len(errs), res)
		}
		for i, code := range []string{"54000", "54000", "54000", "25P02"} {
			if errs[i][1] != code {
				t.Fatalf("psql error %d: want %s, got %s: %s\n%s", i, code, errs[i][1], errs[i][2], res)
			}
		}
		for i := 1; i <= 4; i++ {
			if !strings.Contains(res.stdout, "alive-"+strconv.Itoa(i)) {
				t.Fatalf("psql: session not usable (alive-%d missing):\n%s", i, res)
			}
		}
		if got, want := f.state(t), fmt.Sprintf("%d/%d marks=0", count, sum+5); got != want {
			t.Fatalf("psql: %s, want %s (only the committed writes under the cap)\n%s", got, want, res)
		}
	})

	t.Run("ledger", func(t *testing.T) {
		searchLedger(t, f.p, ledger.Query{Type: ledger.EventStatement, Identity: "writer@corp.example", Limit: 1000}, func(evs []ledger.Event) bool {
			refused, done := false, false
			for _, e := range evs {
				if e.SQLState == "54000" && e.Rule == rCap && e.Rows == 0 && strings.Contains(e.Message, "limit of 1000") {
					refused = true
				}
				if e.SQLState == "" && e.Rule == rCap && e.Rows == 5 {
					done = true
				}
			}
			return refused && done
		})
	})
}

// splitState reads "count/sum marks=n".
func splitState(t testing.TB, s string) (count, sum int) {
	t.Helper()
	if _, err := fmt.Sscanf(s, "%d/%d", &count, &sum); err != nil {
		t.Fatalf("state %q: %v", s, err)
	}
	return count, sum
}
