package compat

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/lib/pq" // registers the "postgres" database/sql driver under test
)

// sqlState is the SQLSTATE of a server error from either Go driver, or "" when err is not
// one.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	var coder interface{ SQLState() string }
	if errors.As(err, &coder) {
		return coder.SQLState()
	}
	return ""
}

// testPgx drives pgx in every query mode it has: the simple protocol, the extended protocol
// with cached prepared statements (binary results), text results, describe/exec modes,
// pipelined batches with an error in the middle, binary and text COPY, and CancelRequest.
func testPgx(t *testing.T, f *fixture) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const table = "compat_pgx"
	f.makeTable(t, table)
	ep := f.client(t, "compat-pgx")
	cfg, err := pgx.ParseConfig(ep.DSN())
	if err != nil {
		t.Fatalf("pgx config: %v", err)
	}
	var notices []string
	var noticeMu sync.Mutex
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		noticeMu.Lock()
		defer noticeMu.Unlock()
		notices = append(notices, n.Severity+": "+n.Message)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgx connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, isTLS := conn.PgConn().Conn().(*tls.Conn); isTLS != (ep.SSLMode != "disable") {
		t.Errorf("pgx: connection TLS is %v with sslmode=%s", isTLS, ep.SSLMode)
	}

	// NoticeResponse and ParameterStatus pass through.
	if _, err := conn.Exec(ctx, "DO $$BEGIN RAISE NOTICE 'hello %', 42; END$$"); err != nil {
		t.Errorf("pgx DO with a notice: %v", err)
	}
	noticeMu.Lock()
	if strings.Join(notices, ";") != "NOTICE: hello 42" {
		t.Errorf("pgx notices: got %q, want one NOTICE: hello 42", notices)
	}
	noticeMu.Unlock()
	if _, err := conn.Exec(ctx, "SET application_name = 'compat-pgx-renamed'"); err != nil {
		t.Errorf("pgx SET application_name: %v", err)
	}
	if got := conn.PgConn().ParameterStatus("application_name"); got != "compat-pgx-renamed" {
		t.Errorf("pgx ParameterStatus application_name after SET: got %q", got)
	}

	// LISTEN/NOTIFY: a notification sent by another session arrives.
	if _, err := conn.Exec(ctx, "LISTEN compat_channel"); err != nil {
		t.Fatalf("pgx LISTEN: %v", err)
	}
	other, err := pgx.Connect(ctx, f.client(t, "compat-pgx-notifier").DSN())
	if err != nil {
		t.Fatalf("pgx second connection: %v", err)
	}
	if _, err := other.Exec(ctx, "SELECT pg_notify('compat_channel', 'payload-1')"); err != nil {
		t.Fatalf("pgx NOTIFY: %v", err)
	}
	other.Close(ctx)
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	note, err := conn.WaitForNotification(nctx)
	ncancel()
	if err != nil || note.Channel != "compat_channel" || note.Payload != "payload-1" {
		t.Errorf("pgx notification: got %+v, %v", note, err)
	}
	if _, err := conn.Exec(ctx, "UNLISTEN *"); err != nil {
		t.Errorf("pgx UNLISTEN: %v", err)
	}

	var n int
	var s string
	if err := conn.QueryRow(ctx, "SELECT 1+1, 'héllo'", pgx.QueryExecModeSimpleProtocol).Scan(&n, &s); err != nil || fmt.Sprint(n, " ", s) != wantSimple {
		t.Errorf("pgx simple query: got %d %q, %v", n, s, err)
	}
	results, err := conn.PgConn().Exec(ctx, "SELECT 'a'; SELECT 'b'; SELECT 'c'").ReadAll()
	if err != nil || len(results) != 3 || string(results[2].Rows[0][0]) != "c" {
		t.Errorf("pgx multi-statement query: %d results, %v", len(results), err)
	}

	// 20,000 rows streamed through the extended protocol in binary.
	rows, err := conn.Query(ctx, "SELECT g FROM generate_series(1, $1::int) AS g", 20000)
	if err != nil {
		t.Fatalf("pgx stream: %v", err)
	}
	var count, sum int64
	for rows.Next() {
		var g int64
		if err := rows.Scan(&g); err != nil {
			t.Fatalf("pgx stream scan: %v", err)
		}
		count++
		sum += g
	}
	if err := rows.Err(); err != nil || fmt.Sprint(count, " ", sum) != wantRows {
		t.Errorf("pgx stream: got %d rows summing to %d, %v", count, sum, err)
	}

	// The same parameterized statement in every mode; the cached statement runs several
	// times so pgx reuses its named server-side statement.
	const q = "SELECT $1::int + 1, $2::text || '!'"
	modes := []struct {
		name string
		args []any
	}{
		{"cache-statement", []any{41, "hi"}},
		{"cache-statement-again", []any{41, "hi"}},
		{"cache-statement-third", []any{41, "hi"}},
		{"cache-describe", []any{pgx.QueryExecModeCacheDescribe, 41, "hi"}},
		{"describe-exec", []any{pgx.QueryExecModeDescribeExec, 41, "hi"}},
		{"exec", []any{pgx.QueryExecModeExec, 41, "hi"}},
		{"simple-protocol", []any{pgx.QueryExecModeSimpleProtocol, 41, "hi"}},
		{"text-results", []any{pgx.QueryResultFormats{pgx.TextFormatCode, pgx.TextFormatCode}, 41, "hi"}},
		{"binary-results", []any{pgx.QueryResultFormats{pgx.BinaryFormatCode, pgx.BinaryFormatCode}, 41, "hi"}},
	}
	for _, m := range modes {
		n, s = 0, ""
		if err := conn.QueryRow(ctx, q, m.args...).Scan(&n, &s); err != nil || fmt.Sprint(n, " ", s) != wantParams {
			t.Errorf("pgx parameters (%s): got %d %q, %v", m.name, n, s, err)
		}
	}

	// A pipelined batch with a failure in the middle: the statements before it succeed,
	// the failure is reported, the rest are skipped, and the connection stays usable.
	batch := &pgx.Batch{}
	batch.Queue("SELECT $1::int", 1)
	batch.Queue("SELECT 1/$1::int", 0)
	batch.Queue("SELECT $1::int", 3)
	br := conn.SendBatch(ctx, batch)
	var b1, b3 int
	err1 := br.QueryRow().Scan(&b1)
	err2 := br.QueryRow().Scan(new(int))
	err3 := br.QueryRow().Scan(&b3)
	if err := br.Close(); sqlState(err) != "22012" && err != nil {
		t.Errorf("pgx batch close: %v", err)
	}
	if err1 != nil || b1 != 1 || sqlState(err2) != "22012" || err3 == nil {
		t.Errorf("pgx pipelined batch: first %d/%v, second %v (want 22012), third %d/%v (want skipped)", b1, err1, err2, b3, err3)
	}
	batch = &pgx.Batch{}
	for i := range 10 {
		batch.Queue("SELECT $1::int * 2", i)
	}
	br = conn.SendBatch(ctx, batch)
	for i := range 10 {
		var v int
		if err := br.QueryRow().Scan(&v); err != nil || v != i*2 {
			t.Errorf("pgx pipelined batch item %d: got %d, %v", i, v, err)
		}
	}
	if err := br.Close(); err != nil {
		t.Errorf("pgx batch close: %v", err)
	}

	// Transaction rolled back, then a committed row.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("pgx begin: %v", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", 11, "gone"); err != nil {
		t.Fatalf("pgx insert in transaction: %v", err)
	}
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = 11").Scan(&n); err != nil || n != 1 {
		t.Errorf("pgx: row inserted in the transaction not visible inside it: %d, %v", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("pgx rollback: %v", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", 10, "kept"); err != nil {
		t.Fatalf("pgx insert: %v", err)
	}

	// COPY in, binary (pgx's CopyFrom) and text (the raw protocol), then COPY out.
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{table}, []string{"id", "name"}, pgx.CopyFromRows([][]any{{1, "c1"}, {2, "c2"}}))
	if err != nil || copied != 2 {
		t.Errorf("pgx binary COPY FROM: %d rows, %v", copied, err)
	}
	tag, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("3\tc3\n"), "COPY "+table+" FROM STDIN")
	if err != nil || tag.RowsAffected() != 1 {
		t.Errorf("pgx text COPY FROM: %v, %v", tag, err)
	}
	var out bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, name FROM "+table+" WHERE id < 10 ORDER BY id) TO STDOUT WITH (FORMAT csv)"); err != nil {
		t.Errorf("pgx COPY TO: %v", err)
	}
	if got := strings.ReplaceAll(strings.TrimSpace(out.String()), "\n", "|"); got != wantCopyOut {
		t.Errorf("pgx COPY TO: got %q, want %q", got, wantCopyOut)
	}
	// A COPY that fails half way (a duplicate key) reports the error and leaves the
	// connection usable.
	_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("4\tc4\n1\tdup\n"), "COPY "+table+" FROM STDIN")
	if sqlState(err) != "23505" {
		t.Errorf("pgx COPY with a duplicate key: want 23505, got %v", err)
	}

	// Errors, then recovery on the same connection, in both protocols.
	if _, err := conn.Exec(ctx, "SELECT 1/0", pgx.QueryExecModeSimpleProtocol); sqlState(err) != "22012" {
		t.Errorf("pgx simple error: want 22012, got %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1/$1::int", 0); sqlState(err) != "22012" {
		t.Errorf("pgx extended error: want 22012, got %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT * FROM no_such_table"); sqlState(err) != "42P01" {
		t.Errorf("pgx error at Parse: want 42P01, got %v", err)
	}
	if err := conn.QueryRow(ctx, "SELECT 'ok'").Scan(&s); err != nil || s != "ok" {
		t.Errorf("pgx after errors: %q, %v", s, err)
	}
	if got := f.tableContents(t, table); got != wantTable {
		t.Errorf("upstream %s after pgx: got %q, want %q", table, got, wantTable)
	}
	if f.proxied {
		pgxDeny(ctx, t, conn)
	}

	// Cancel: a CancelRequest from pgx stops the sleep; the connection keeps working.
	const marker = "pgx-cancel"
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(30), '"+marker+"'")
		errc <- err
	}()
	f.waitSleeping(t, marker, 15*time.Second)
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatalf("pgx CancelRequest: %v", err)
	}
	select {
	case err := <-errc:
		if sqlState(err) != "57014" {
			t.Errorf("pgx cancel: want 57014, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pgx: pg_sleep(30) still running 10s after CancelRequest")
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("pgx cancel took %v", el)
	}
	if err := conn.QueryRow(ctx, "SELECT 'ok'").Scan(&s); err != nil || s != "ok" {
		t.Errorf("pgx after cancel: %q, %v", s, err)
	}
	f.sleepersGone(t, marker, 5*time.Second)
}

// pgxDeny checks the deny path in both protocols and in a pipeline: the denied statement
// fails with 42501, statements after it in the pipeline are skipped as after any error, and
// the connection keeps working.
func pgxDeny(ctx context.Context, t *testing.T, conn *pgx.Conn) {
	if _, err := conn.Exec(ctx, "SELECT * FROM compat_forbidden", pgx.QueryExecModeSimpleProtocol); sqlState(err) != "42501" {
		t.Errorf("pgx denied simple query: want 42501, got %v", err)
	}
	for i := range 3 {
		if _, err := conn.Exec(ctx, "SELECT * FROM compat_forbidden WHERE id = $1", 1); sqlState(err) != "42501" {
			t.Errorf("pgx denied extended query (run %d): want 42501, got %v", i, err)
		}
	}
	// In its default mode pgx prepares every statement of a batch before running any, so a
	// denied Parse fails the whole batch (as a parse error from PostgreSQL would). In exec mode the batch is one pipeline of Parse/Bind/Execute with a single Sync: the
	// statement before the denied one runs, the one after is skipped.
	cfg := conn.Config().Copy()
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	execConn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgx exec-mode connection: %v", err)
	}
	defer execConn.Close(context.Background())
	for _, c := range []*pgx.Conn{conn, execConn} {
		br := denyBatch(ctx, c)
		var b1 int
		err1 := br.QueryRow().Scan(&b1)
		err2 := br.QueryRow().Scan(new(int))
		err3 := br.QueryRow().Scan(new(int))
		_ = br.Close()
		if c == conn {
			if sqlState(err1) != "42501" || sqlState(err2) != "42501" || sqlState(err3) != "42501" {
				t.Errorf("pgx prepared batch with a denied statement: every result must carry 42501, got %v / %v / %v", err1, err2, err3)
			}
			continue
		}
		if err1 != nil || b1 != 1 || sqlState(err2) != "42501" || err3 == nil {
			t.Errorf("pgx pipelined batch with a denied statement: first %d/%v, second %v (want 42501), third %v (want skipped)", b1, err1, err2, err3)
		}
		var s string
		if err := c.QueryRow(ctx, "SELECT 'ok'").Scan(&s); err != nil || s != "ok" {
			t.Errorf("pgx after a denied batch: %q, %v", s, err)
		}
	}
	var s string
	if err := conn.QueryRow(ctx, "SELECT 'ok'").Scan(&s); err != nil || s != "ok" {
		t.Errorf("pgx after denials: %q, %v", s, err)
	}
}

// denyBatch sends a three-statement batch whose middle statement the policy denies.
func denyBatch(ctx context.Context, conn *pgx.Conn) pgx.BatchResults {
	batch := &pgx.Batch{}
	batch.Queue("SELECT $1::int", 1)
	batch.Queue("SELECT id FROM compat_forbidden WHERE id = $1", 1)
	batch.Queue("SELECT $1::int", 3)
	return conn.SendBatch(ctx, batch)
}

// testLibPQ drives lib/pq through database/sql: the simple protocol (no arguments), unnamed
// and named prepared statements with text and binary parameters, a rolled-back
// transaction, COPY FROM STDIN, errors with recovery, and context cancellation (which lib/pq
// turns into a CancelRequest).
func testLibPQ(t *testing.T, f *fixture) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const table = "compat_libpq"
	f.makeTable(t, table)
	ep := f.client(t, "compat-libpq")
	for _, binary := range []bool{false, true} {
		dsn := ep.DSN()
		if binary {
			dsn += " binary_parameters=yes"
		}
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatalf("lib/pq open: %v", err)
		}
		defer db.Close()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("lib/pq connect (binary_parameters=%v): %v", binary, err)
		}
		defer conn.Close()
		var n int
		var s string
		if err := conn.QueryRowContext(ctx, "SELECT 1+1, 'héllo'").Scan(&n, &s); err != nil || fmt.Sprint(n, " ", s) != wantSimple {
			t.Errorf("lib/pq simple query: got %d %q, %v", n, s, err)
		}
		if err := conn.QueryRowContext(ctx, "SELECT $1::int + 1, $2::text || '!'", 41, "hi").Scan(&n, &s); err != nil || fmt.Sprint(n, " ", s) != wantParams {
			t.Errorf("lib/pq parameters (binary_parameters=%v): got %d %q, %v", binary, n, s, err)
		}
		var raw []byte
		if err := conn.QueryRowContext(ctx, "SELECT $1::bytea", []byte{0, 1, 2, 255}).Scan(&raw); err != nil || !bytes.Equal(raw, []byte{0, 1, 2, 255}) {
			t.Errorf("lib/pq bytea parameter (binary_parameters=%v): got %v, %v", binary, raw, err)
		}
		stmt, err := conn.PrepareContext(ctx, "SELECT $1::int + 1, $2::text || '!'")
		if err != nil {
			t.Fatalf("lib/pq prepare: %v", err)
		}
		for i := range 7 {
			if err := stmt.QueryRowContext(ctx, 41, "hi").Scan(&n, &s); err != nil || fmt.Sprint(n, " ", s) != wantParams {
				t.Errorf("lib/pq named statement run %d: got %d %q, %v", i, n, s, err)
			}
		}
		stmt.Close()
		rows, err := conn.QueryContext(ctx, "SELECT g FROM generate_series(1, $1::int) AS g", 20000)
		if err != nil {
			t.Fatalf("lib/pq stream: %v", err)
		}
		var count, sum int64
		for rows.Next() {
			var g int64
			if err := rows.Scan(&g); err != nil {
				t.Fatalf("lib/pq stream scan: %v", err)
			}
			count++
			sum += g
		}
		if err := rows.Err(); err != nil || fmt.Sprint(count, " ", sum) != wantRows {
			t.Errorf("lib/pq stream: got %d rows summing to %d, %v", count, sum, err)
		}
		rows.Close()
		if _, err := conn.ExecContext(ctx, "SELECT 1/0"); sqlState(err) != "22012" {
			t.Errorf("lib/pq simple error: want 22012, got %v", err)
		}
		if _, err := conn.ExecContext(ctx, "SELECT 1/$1::int", 0); sqlState(err) != "22012" {
			t.Errorf("lib/pq extended error: want 22012, got %v", err)
		}
		if f.proxied {
			if _, err := conn.ExecContext(ctx, "SELECT * FROM compat_forbidden"); sqlState(err) != "42501" {
				t.Errorf("lib/pq denied simple query: want 42501, got %v", err)
			}
			if _, err := conn.ExecContext(ctx, "SELECT * FROM compat_forbidden WHERE id = $1", 1); sqlState(err) != "42501" {
				t.Errorf("lib/pq denied extended query: want 42501, got %v", err)
			}
		}
		if err := conn.QueryRowContext(ctx, "SELECT 'ok'").Scan(&s); err != nil || s != "ok" {
			t.Errorf("lib/pq after errors: %q, %v", s, err)
		}
		if binary {
			continue
		}

		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatalf("lib/pq begin: %v", err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", 11, "gone"); err != nil {
			t.Fatalf("lib/pq insert in transaction: %v", err)
		}
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+table+" WHERE id = 11").Scan(&n); err != nil || n != 1 {
			t.Errorf("lib/pq: row inserted in the transaction not visible inside it: %d, %v", n, err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatalf("lib/pq rollback: %v", err)
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", 10, "kept"); err != nil {
			t.Fatalf("lib/pq insert: %v", err)
		}
		tx, err = conn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatalf("lib/pq begin: %v", err)
		}
		cp, err := tx.PrepareContext(ctx, "COPY "+table+" (id, name) FROM STDIN")
		if err != nil {
			t.Fatalf("lib/pq COPY: %v", err)
		}
		for i := 1; i <= 3; i++ {
			if _, err := cp.ExecContext(ctx, i, fmt.Sprintf("c%d", i)); err != nil {
				t.Fatalf("lib/pq COPY row %d: %v", i, err)
			}
		}
		if _, err := cp.ExecContext(ctx); err != nil {
			t.Fatalf("lib/pq COPY end: %v", err)
		}
		if err := cp.Close(); err != nil {
			t.Fatalf("lib/pq COPY close: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatalf("lib/pq commit COPY: %v", err)
		}
		if got := f.tableContents(t, table); got != wantTable {
			t.Errorf("upstream %s after lib/pq: got %q, want %q", table, got, wantTable)
		}

		// Context cancellation: lib/pq sends a CancelRequest and abandons the connection.
		const marker = "libpq-cancel"
		cctx, ccancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := conn.ExecContext(cctx, "SELECT pg_sleep(30), '"+marker+"'")
			errc <- err
		}()
		f.waitSleeping(t, marker, 15*time.Second)
		ccancel()
		select {
		case err := <-errc:
			if err == nil {
				t.Error("lib/pq: a cancelled pg_sleep(30) returned no error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("lib/pq: pg_sleep(30) still running 10s after the context was cancelled")
		}
		if el := time.Since(start); el > 15*time.Second {
			t.Errorf("lib/pq cancel took %v", el)
		}
		f.sleepersGone(t, marker, 5*time.Second)
		if err := db.QueryRowContext(ctx, "SELECT 'ok'").Scan(&s); err != nil || s != "ok" {
			t.Errorf("lib/pq after cancel: %q, %v", s, err)
		}
	}
}
