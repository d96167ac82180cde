//go:build linux

package pg

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/upstream"
)

// soleRelay returns the one relay the door runs.
func soleRelay(t *testing.T, e *env) *relay {
	t.Helper()
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	var rs []*relay
	for _, l := range e.srv.sessions {
		rs = append(rs, l...)
	}
	if len(rs) != 1 {
		t.Fatalf("%d relays registered, want 1", len(rs))
	}
	return rs[0]
}

// upstreamSock returns the raw socket reader of a relay's upstream connection.
func upstreamSock(t *testing.T, r *relay) *rawSock {
	t.Helper()
	ur, ok := r.ur.rd.(*upReader)
	if !ok {
		t.Fatalf("upstream reader is %T, want *upReader", r.ur.rd)
	}
	return ur.raw
}

// bigQuery is a result of rows*~100 bytes: past bulkAfter from 11,000 rows on.
func bigQuery(rows int) string {
	return fmt.Sprintf("select g, repeat('x', 90) from generate_series(1, %d) g", rows)
}

// pausedQuery is bigQuery with a pause of 50 ms every 5,000 rows (500 KB): the relay
// catches up and waits at each, so bulk reading is certain to start past bulkAfter.
func pausedQuery(rows int) string {
	return fmt.Sprintf("select g, repeat('x', 90) from generate_series(1, %d) g where g %% 5000 <> 0 or pg_sleep(0.05) is not null", rows)
}

// countRows runs q and returns its rows and the sum of its first column.
func countRows(ctx context.Context, t *testing.T, c *pgx.Conn, q string, mode pgx.QueryExecMode) (n, sum int64) {
	t.Helper()
	rows, err := c.Query(ctx, q, mode)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var g int64
		var s string
		if err := rows.Scan(&g, &s); err != nil {
			t.Fatal(err)
		}
		n++
		sum += g
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n, sum
}

// TestBulkReadingRelaysLargeResults: results large enough for bulk reading (rawSock.bulk)
// arrive whole in every protocol and as COPY output, with the small statements after them
// answered; the socket's low-water mark is back to the default after each; rows that
// trickle in after bulk reading began all arrive; a row limit and a cancel still end a
// streaming result; and a session that ends right after a large result leaves a backend the
// pool resets and hands to the next session.
func TestBulkReadingRelaysLargeResults(t *testing.T) {
	pool := &upstream.Pool{MaxIdlePerKey: 1}
	e := startEnv(t, withPool(pool))
	ctx := ctxT(t, 120*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	pid := c.PgConn().PID()
	rs := upstreamSock(t, soleRelay(t, e))
	afterEach := func(what string) {
		t.Helper()
		var one int
		if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("after %s: select 1: %d, %v", what, one, err)
		}
		if v, err := rs.lowat(); err != nil || v > 1 {
			t.Fatalf("after %s: upstream low-water mark %d (%v), want the default", what, v, err)
		}
	}

	const rows = 40_000
	for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
		raises := rs.raises.Load()
		n, sum := countRows(ctx, t, c, pausedQuery(rows), m)
		if n != rows || sum != rows*(rows+1)/2 {
			t.Fatalf("%v: %d rows summing to %d, want %d and %d", m, n, sum, rows, rows*(rows+1)/2)
		}
		if rs.raises.Load() == raises {
			t.Fatalf("%v: a result of %d rows was read without bulk reading", m, rows)
		}
		afterEach(m.String())
	}

	// COPY output is read the same way.
	var out bytes.Buffer
	raises := rs.raises.Load()
	if _, err := c.PgConn().CopyTo(ctx, &out, "copy ("+pausedQuery(rows)+") to stdout"); err != nil {
		t.Fatal(err)
	}
	if rs.raises.Load() == raises {
		t.Fatal("COPY output was read without bulk reading")
	}
	if lines := bytes.Count(out.Bytes(), []byte{'\n'}); lines != rows || !bytes.HasSuffix(out.Bytes(), []byte(fmt.Sprintf("%d\t%s\n", rows, strings.Repeat("x", 90)))) {
		t.Fatalf("COPY: %d lines, want %d", lines, rows)
	}
	afterEach("COPY")

	// Past bulkAfter, rows that then come one at a time, slower than bulkWait, all arrive.
	slow := "select g, case when g <= 2 then repeat('z', 700000) else 'row ' || g end from generate_series(1, 12) g where g <= 2 or pg_sleep(0.005) is not null"
	r2, err := c.Query(ctx, slow)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for r2.Next() {
		var g int
		var s string
		if err := r2.Scan(&g, &s); err != nil {
			t.Fatal(err)
		}
		if g > 2 && s != fmt.Sprint("row ", g) || g <= 2 && len(s) != 700000 {
			t.Fatalf("row %d: %d bytes", g, len(s))
		}
		got = append(got, g)
	}
	if err := r2.Err(); err != nil || fmt.Sprint(got) != "[1 2 3 4 5 6 7 8 9 10 11 12]" {
		t.Fatalf("slow rows after a bulk start: %v, %v", got, err)
	}
	afterEach("rows slower than bulkWait")

	// A row limit ends a large result and the rows after it are drained.
	r3, err := c.Query(ctx, "select g as limited_rows, repeat('x', 90) from generate_series(1, 1000000) g")
	if err != nil {
		t.Fatal(err)
	}
	for r3.Next() {
	}
	if err := r3.Err(); pgCode(err) != "54000" {
		t.Fatalf("row limit on a large result: %v, want 54000", err)
	}
	afterEach("a row limit")

	// A cancel ends a streaming result.
	rr := c.PgConn().ExecParams(ctx, bigQuery(5_000_000), nil, nil, nil, nil)
	read := 0
	for rr.NextRow() {
		if read++; read == 100_000 {
			if err := c.PgConn().CancelRequest(ctxT(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := rr.Close(); pgCode(err) != "57014" {
		t.Fatalf("cancelled stream after %d rows: %v, want 57014", read, err)
	}
	afterEach("a cancel")

	// The session ends right after a large result: its backend goes to the pool, and the
	// next session gets it, reset and answering.
	if n, _ := countRows(ctx, t, c, bigQuery(rows), pgx.QueryExecModeCacheStatement); n != rows {
		t.Fatalf("last result: %d rows", n)
	}
	closeConn(t, c)
	waitIdle(t, pool, 1)
	c2 := connect(t, e.dsn("alice", "main"))
	if got := c2.PgConn().PID(); got != pid {
		t.Fatalf("next session got backend %d, want the pooled %d", got, pid)
	}
	rs2 := upstreamSock(t, soleRelay(t, e))
	if v, err := rs2.lowat(); err != nil || v > 1 {
		t.Fatalf("pooled backend's low-water mark %d (%v), want the default", v, err)
	}
	if n, sum := countRows(ctx, t, c2, bigQuery(rows), pgx.QueryExecModeSimpleProtocol); n != rows || sum != rows*(rows+1)/2 {
		t.Fatalf("pooled backend: %d rows summing to %d", n, sum)
	}
	var s string
	if err := c2.QueryRow(ctx, "select 'small'").Scan(&s); err != nil || s != "small" {
		t.Fatalf("pooled backend after a large result: %q, %v", s, err)
	}
	if st := pool.Stats(); st.Reused != 1 {
		t.Fatalf("pool stats %+v, want one reuse", st)
	}
}

// BenchmarkLargeResult streams a 200,000-row SELECT (≈21 MB of DataRows) from PostgreSQL
// through the door to a pgconn client reading every row, with the upstream socket's bulk
// reading and without it (the relay's rawSock told to leave the low-water mark alone).
// Reported per MB of rows: the upstream reads that found nothing and waited for the poller
// (the relay's wake-ups), and the CPU time of this process (the door and the client, whose
// decoding dominates it; PostgreSQL runs apart).
func BenchmarkLargeResult(b *testing.B) {
	for _, bulk := range []bool{true, false} {
		name := "bulk"
		if !bulk {
			name = "plain"
		}
		b.Run(name, func(b *testing.B) {
			e := startEnv(b)
			ctx := context.Background()
			c, err := pgconn.Connect(ctx, e.dsn("alice", "main"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close(ctx)
			e.srv.mu.Lock()
			var rs *rawSock
			for _, l := range e.srv.sessions {
				for _, r := range l {
					if ur, ok := r.ur.rd.(*upReader); ok {
						rs = ur.raw
					}
				}
			}
			e.srv.mu.Unlock()
			if rs == nil {
				b.Fatal("no raw upstream socket")
			}
			if !bulk {
				rs.dl = nil
			}
			q := bigQuery(200_000)
			var bytes int64
			start := processCPU()
			for b.Loop() {
				rr := c.ExecParams(ctx, q, nil, nil, nil, nil)
				rows := 0
				for rr.NextRow() {
					for _, v := range rr.Values() {
						bytes += int64(len(v)) + 4
					}
					rows++
				}
				if _, err := rr.Close(); err != nil || rows != 200_000 {
					b.Fatalf("%d rows: %v", rows, err)
				}
			}
			mb := float64(bytes) / 1e6
			b.ReportMetric(float64(processCPU()-start)/mb, "cpu-ns/MB")
			b.ReportMetric(float64(rs.waits.Load())/mb, "upstream-waits/MB")
		})
	}
}
