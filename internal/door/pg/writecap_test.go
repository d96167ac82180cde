package pg

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/gate"
)

// startCapEnv caps every statement mentioning capped_t at 3 affected rows; capped_t holds
// ids 1..10.
func startCapEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	e := startEnv(t, opts...)
	e.policy.extra = func(in gate.Input) (gate.Decision, bool) {
		if strings.Contains(in.Statement.Text, "capped_t") {
			return gate.Decision{Action: gate.Allow, Rule: "three", MaxAffectedRows: 3}, true
		}
		return gate.Decision{}, false
	}
	shared.Exec(t, "postgres", "DROP TABLE IF EXISTS capped_t; CREATE TABLE capped_t(id int); INSERT INTO capped_t SELECT generate_series(1, 10)")
	return e
}

func cappedCount(t *testing.T) int {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	c, err := pgx.Connect(ctx, shared.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM capped_t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// untilReady reads until ReadyForQuery and returns the SQLSTATEs of the errors seen and the
// transaction status.
func untilReady(t *testing.T, fe *pgproto3.Frontend) (codes []string, status byte) {
	t.Helper()
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("waiting for ReadyForQuery: %v (errors so far %v)", err, codes)
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			codes = append(codes, m.Code)
		case *pgproto3.ReadyForQuery:
			return codes, m.TxStatus
		}
	}
}

func send(t *testing.T, fe *pgproto3.Frontend, ms ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range ms {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteCapRefusals: what the door cannot hold back or count is refused or rolled back,
// never run uncapped, and the session goes on.
func TestWriteCapRefusals(t *testing.T) {
	e := startCapEnv(t)

	t.Run("partial-execute", func(t *testing.T) {
		_, fe := rawLogin(t, e, "alice")
		send(t, fe,
			&pgproto3.Parse{Query: "DELETE FROM capped_t WHERE id <= 2 RETURNING id"},
			&pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{})
		codes, st := untilReady(t, fe)
		if len(codes) != 1 || codes[0] != "42501" || st != 'I' {
			t.Fatalf("Execute for part of the rows: errors %v, status %c", codes, st)
		}
		if n := cappedCount(t); n != 10 {
			t.Fatalf("refused Execute deleted rows: %d left", n)
		}
	})

	t.Run("after-error-before-sync", func(t *testing.T) {
		// PostgreSQL skips everything after the failed Parse until Sync: the capped Execute
		// must not leave the relay waiting for an answer that never comes.
		_, fe := rawLogin(t, e, "alice")
		send(t, fe, &pgproto3.Parse{Query: "SELEC oops"}, &pgproto3.Flush{})
		m, err := fe.Receive()
		if er, ok := m.(*pgproto3.ErrorResponse); err != nil || !ok || er.Code != "42601" {
			t.Fatalf("want the syntax error first, got %T %v", m, err)
		}
		send(t, fe, &pgproto3.Parse{Query: "DELETE FROM capped_t WHERE id <= 2"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		if codes, st := untilReady(t, fe); len(codes) != 0 || st != 'I' {
			t.Fatalf("skipped capped write: errors %v, status %c", codes, st)
		}
		send(t, fe, &pgproto3.Query{String: "DELETE FROM capped_t WHERE id <= 2"})
		if codes, st := untilReady(t, fe); len(codes) != 0 || st != 'I' {
			t.Fatalf("capped write under the limit afterwards: errors %v, status %c", codes, st)
		}
		if n := cappedCount(t); n != 8 {
			t.Fatalf("want 8 rows left (only the last DELETE ran), got %d", n)
		}
		shared.Exec(t, "postgres", "INSERT INTO capped_t VALUES (1), (2)")
	})

	t.Run("uncountable", func(t *testing.T) {
		// A CTE's write completes as SELECT: its count is not the rows changed.
		c, err := pgx.Connect(ctxT(t, 10*time.Second), e.dsn("alice", "main"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		ctx := ctxT(t, 10*time.Second)
		for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			var n int
			err := c.QueryRow(ctx, "WITH d AS (DELETE FROM capped_t WHERE id <= $1 RETURNING 1) SELECT count(*) FROM d", m, 1).Scan(&n)
			if pgCode(err) != "42501" || !strings.Contains(pgMessage(err), "rolled back") {
				t.Fatalf("%v: write in a CTE: %v %v", m, n, err)
			}
			if n := cappedCount(t); n != 10 {
				t.Fatalf("%v: the uncountable write was not rolled back: %d left", m, n)
			}
		}
	})

	t.Run("prepared", func(t *testing.T) {
		// PREPARE changes nothing and runs; its EXECUTE is the capped write.
		c, err := pgx.Connect(ctxT(t, 10*time.Second), e.dsn("alice", "main"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		ctx := ctxT(t, 10*time.Second)
		if _, err := c.Exec(ctx, "PREPARE wipe(int) AS DELETE FROM capped_t WHERE id > $1"); err != nil {
			t.Fatalf("PREPARE of a capped write: %v", err)
		}
		if _, err := c.Exec(ctx, "EXECUTE wipe(0)"); pgCode(err) != "54000" {
			t.Fatalf("EXECUTE over the cap: %v", err)
		}
		if tag, err := c.Exec(ctx, "EXECUTE wipe(8)"); err != nil || tag.RowsAffected() != 2 {
			t.Fatalf("EXECUTE under the cap: %v %v", tag, err)
		}
		if n := cappedCount(t); n != 8 {
			t.Fatalf("want 8 rows left, got %d", n)
		}
		shared.Exec(t, "postgres", "INSERT INTO capped_t VALUES (9), (10)")
	})

	t.Run("insert-select", func(t *testing.T) {
		c, err := pgx.Connect(ctxT(t, 10*time.Second), e.dsn("alice", "main"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		ctx := ctxT(t, 10*time.Second)
		_, err = c.Exec(ctx, "INSERT INTO capped_t SELECT id FROM capped_t WHERE id > $1", 0)
		if pgCode(err) != "54000" || !strings.Contains(pgMessage(err), `rule "three"`) {
			t.Fatalf("INSERT ... SELECT of 10 rows: %v", err)
		}
		if tag, err := c.Exec(ctx, "INSERT INTO capped_t SELECT id FROM capped_t WHERE id <= $1", 3); err != nil || tag.RowsAffected() != 3 {
			t.Fatalf("INSERT ... SELECT of 3 rows: %v %v", tag, err)
		}
		if n := cappedCount(t); n != 13 {
			t.Fatalf("want 13 rows, got %d", n)
		}
		evs := e.rec.statements("INSERT INTO capped_t SELECT id FROM capped_t WHERE id > $1")
		if len(evs) == 0 || evs[len(evs)-1].SQLState != "54000" || evs[len(evs)-1].Rows != 0 {
			t.Fatalf("ledger: want the refusal recorded with 54000, got %+v", evs)
		}
	})
}

// TestWriteCapMaskedReturning: a capped simple Query runs as extended messages; its
// RETURNING rows still get the RowDescription a simple Query has and are still masked.
func TestWriteCapMaskedReturning(t *testing.T) {
	m := &ssnMasker{}
	e := startCapEnv(t, func(e *env) { e.srv.Gate.Masker = m })
	shared.Exec(t, "postgres", "ALTER TABLE capped_t ADD COLUMN ssn text DEFAULT '123-45-6789'")
	c, err := pgx.Connect(ctxT(t, 10*time.Second), e.dsn("alice", "main"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx := ctxT(t, 20*time.Second)
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		rows, err := c.Query(ctx, "UPDATE capped_t SET id = id WHERE id = $1 RETURNING id, ssn", mode, i+1)
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			ID  int
			SSN string
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil || len(got) != 1 || got[0].ID != i+1 || got[0].SSN != "***-**-****" {
			t.Fatalf("%v: capped UPDATE ... RETURNING: %+v %v", mode, got, err)
		}
		if fields := rows.FieldDescriptions(); len(fields) != 2 || fields[1].Name != "ssn" {
			t.Fatalf("%v: columns: %+v", mode, fields)
		}
		_, err = c.Exec(ctx, "UPDATE capped_t SET ssn = ssn WHERE id > $1 RETURNING ssn", mode, 0)
		if pgCode(err) != "54000" {
			t.Fatalf("%v: over the cap with RETURNING: %v", mode, err)
		}
	}
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
}
