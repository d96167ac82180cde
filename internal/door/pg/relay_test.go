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

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctxT(t, 10*time.Second), dsn)
	if err != nil {
		t.Fatalf("connect through gatehouse: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

var modes = []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe}

func TestQueriesInEveryMode(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main", "application_name=relaytest"))
	for _, m := range modes {
		var n int
		var s string
		if err := c.QueryRow(ctx, "select $1::int + 1, $2::text", m, 41, "hello").Scan(&n, &s); err != nil {
			t.Fatalf("%v: %v", m, err)
		}
		if n != 42 || s != "hello" {
			t.Fatalf("%v: got %d %q", m, n, s)
		}
		rows, err := c.Query(ctx, "select g, repeat('x', g) from generate_series(1, 200) g", m)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for rows.Next() {
			count++
		}
		if rows.Err() != nil || count != 200 {
			t.Fatalf("%v: %d rows, %v", m, count, rows.Err())
		}
	}
	// Multi-statement simple query: every result reaches the client.
	res, err := c.PgConn().Exec(ctx, "select 1; select 2, 3; create temp table tt(a int); insert into tt values (1),(2)").ReadAll()
	if err != nil || len(res) != 4 || string(res[1].Rows[0][1]) != "3" || res[3].CommandTag.RowsAffected() != 2 {
		t.Fatalf("multi-statement: %v %+v", err, res)
	}
	ev := e.rec.statements("insert into tt")
	if len(ev) != 1 || ev[0].Via != string(gate.ViaQuery) || ev[0].ApplicationName != "relaytest" || ev[0].Subject != "alice" {
		t.Fatalf("multi-statement query recorded as %+v", ev)
	}
	if ev[0].Rows != 1+1+2 {
		t.Errorf("rows recorded %d, want 4", ev[0].Rows)
	}
	// Executes are recorded with their rows.
	ex := e.rec.statements("generate_series(1, 200)")
	if len(ex) != len(modes) {
		t.Fatalf("generate_series recorded %d times, want %d", len(ex), len(modes))
	}
	for _, ev := range ex {
		if ev.Rows != 200 || ev.Bytes == 0 {
			t.Errorf("recorded rows=%d bytes=%d via %s", ev.Rows, ev.Bytes, ev.Via)
		}
	}
	if e.srv.Sessions() != 1 {
		t.Errorf("Sessions() = %d, want 1", e.srv.Sessions())
	}
}

func TestDenySimpleAndExtended(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	shared.Exec(t, "postgres", "create table if not exists forbidden_table(a int); create table if not exists deny_log(a int); truncate deny_log")
	c := connect(t, e.dsn("alice", "main"))
	for _, m := range modes {
		_, err := c.Exec(ctx, "select * from forbidden_table", m)
		if pgCode(err) != "42501" || !strings.Contains(pgMessage(err), "forbidden_table is off limits") || !strings.Contains(pgMessage(err), "no-forbidden") {
			t.Fatalf("%v: want 42501 deny, got %v", m, err)
		}
		var one int
		if err := c.QueryRow(ctx, "select 1", m).Scan(&one); err != nil || one != 1 {
			t.Fatalf("%v: session unusable after deny: %v", m, err)
		}
	}
	// A hold is refused the same way, naming the approval request.
	_, err := c.Exec(ctx, "delete from approval_table")
	if pgCode(err) != "42501" || !strings.Contains(pgMessage(err), "ap-1") {
		t.Fatalf("hold: %v", err)
	}
	// A deny in a multi-statement string refuses all of it.
	_, err = c.PgConn().Exec(ctx, "insert into deny_log values (1); select * from forbidden_table").ReadAll()
	if pgCode(err) != "42501" {
		t.Fatalf("multi-statement deny: %v", err)
	}
	// Inside a transaction the deny aborts it, as a failing statement would.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into deny_log values (2)"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select * from forbidden_table"); pgCode(err) != "42501" {
		t.Fatalf("deny in tx: %v", err)
	}
	if _, err := tx.Exec(ctx, "select 1"); pgCode(err) != "25P02" {
		t.Fatalf("after deny in tx want 25P02 (transaction aborted), got %v", err)
	}
	if c.PgConn().TxStatus() != 'E' {
		t.Fatalf("tx status %c, want E", c.PgConn().TxStatus())
	}
	_ = tx.Rollback(ctx)
	var n int
	if err := c.QueryRow(ctx, "select count(*) from deny_log").Scan(&n); err != nil || n != 0 {
		t.Fatalf("deny_log has %d rows (%v), want 0", n, err)
	}
	denied := e.rec.statements("forbidden_table")
	if len(denied) < len(modes)+1 {
		t.Fatalf("denied statements recorded %d", len(denied))
	}
	for _, ev := range denied {
		if ev.Decision != "deny" || ev.SQLState != "42501" {
			t.Errorf("denied statement recorded as %s/%s", ev.Decision, ev.SQLState)
		}
	}
}

func TestDenyMidPipelineRollsBack(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	shared.Exec(t, "postgres", "create table if not exists forbidden_table(a int); create table if not exists pipe_log(a int); truncate pipe_log")
	c := connect(t, e.dsn("alice", "main"))
	pc := c.PgConn()
	p := pc.StartPipeline(ctx)
	p.SendQueryParams("insert into pipe_log values (1)", nil, nil, nil, nil)
	p.SendQueryParams("select * from forbidden_table where a = $1", [][]byte{[]byte("1")}, nil, nil, nil)
	p.SendQueryParams("insert into pipe_log values (3)", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.SendQueryParams("select count(*) from pipe_log", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 8 {
		r, err := p.GetResults()
		if err != nil {
			got = append(got, "err:"+pgCode(err))
			continue
		}
		switch rr := r.(type) {
		case *pgconn.ResultReader:
			res := rr.Read()
			if res.Err != nil {
				got = append(got, "err:"+pgCode(res.Err))
			} else if len(res.Rows) > 0 {
				got = append(got, "rows:"+string(res.Rows[0][0]))
			} else {
				got = append(got, "ok")
			}
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		case nil:
			got = append(got, "nil")
		}
		if len(got) >= 2 && got[len(got)-1] == "sync" && strings.Contains(strings.Join(got, ","), "rows:") {
			break
		}
	}
	if err := p.Close(); err != nil {
		t.Fatalf("close pipeline: %v", err)
	}
	s := strings.Join(got, ",")
	if !strings.HasPrefix(s, "ok,err:42501") || !strings.Contains(s, "sync,rows:0,sync") {
		t.Fatalf("pipeline results %s: want the insert, the deny, the rest skipped to Sync, and the implicit transaction rolled back", s)
	}
	var one int
	if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatalf("session unusable after pipeline deny: %v", err)
	}
}

func TestExecuteIsRechecked(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	var closed bool
	e.policy.extra = func(in gate.Input) (gate.Decision, bool) {
		if closed && in.Via == gate.ViaExecute && strings.Contains(in.Statement.Text, "business_hours") {
			return gate.Decision{Action: gate.Deny, Rule: "after-hours", Message: "closed now"}, true
		}
		return gate.Decision{}, false
	}
	c := connect(t, e.dsn("alice", "main"))
	if _, err := c.Prepare(ctx, "bh", "select 'business_hours', $1::int"); err != nil {
		t.Fatal(err)
	}
	var s string
	var n int
	if err := c.QueryRow(ctx, "bh", 1).Scan(&s, &n); err != nil {
		t.Fatal(err)
	}
	closed = true
	err := c.QueryRow(ctx, "bh", 2).Scan(&s, &n)
	if pgCode(err) != "42501" || !strings.Contains(pgMessage(err), "closed now") {
		t.Fatalf("execute after policy change: %v", err)
	}
	closed = false
	if err := c.QueryRow(ctx, "bh", 3).Scan(&s, &n); err != nil || n != 3 {
		t.Fatalf("prepared statement unusable after a denied execute: %v", err)
	}
}

func TestCopyInAndOut(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	pc := c.PgConn()
	if _, err := pc.Exec(ctx, "create temp table cp(a int, b text)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	for i := range 5000 {
		fmt.Fprintf(&in, "%d\trow %d\n", i, i)
	}
	tag, err := pc.CopyFrom(ctx, bytes.NewReader(in.Bytes()), "copy cp from stdin")
	if err != nil || tag.RowsAffected() != 5000 {
		t.Fatalf("copy in: %v %v", tag, err)
	}
	var out bytes.Buffer
	tag, err = pc.CopyTo(ctx, &out, "copy cp to stdout")
	if err != nil || tag.RowsAffected() != 5000 || !bytes.Equal(out.Bytes(), in.Bytes()) {
		t.Fatalf("copy out: %v %v (%d bytes)", tag, err, out.Len())
	}
	// A failing COPY FROM (bad data) reports the error and the session goes on.
	_, err = pc.CopyFrom(ctx, strings.NewReader("notanumber\tx\n"), "copy cp from stdin")
	if pgCode(err) != "22P02" {
		t.Fatalf("bad copy: %v", err)
	}
	// COPY is gated like any statement.
	if _, err := pc.CopyTo(ctx, &out, "copy (select 1 from forbidden_table) to stdout"); pgCode(err) != "42501" {
		t.Fatalf("denied copy: %v", err)
	}
	// Extended-protocol COPY via pgx's CopyFrom.
	n, err := c.CopyFrom(ctx, pgx.Identifier{"cp"}, []string{"a", "b"}, pgx.CopyFromRows([][]any{{1, "x"}, {2, "y"}}))
	if err != nil || n != 2 {
		t.Fatalf("pgx CopyFrom: %d %v", n, err)
	}
	ev := e.rec.statements("copy cp to stdout")
	if len(ev) != 1 || ev[0].Rows != 5000 || ev[0].Bytes < int64(in.Len()) {
		t.Fatalf("copy out recorded as %+v", ev)
	}
}

func TestListenNotifyAndNotices(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	var notices []string
	cfg, err := pgx.ParseConfig(e.dsn("alice", "main"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	listener, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "listen gh_chan"); err != nil {
		t.Fatal(err)
	}
	if _, err := listener.Exec(ctx, "do $$ begin raise notice 'hello from plpgsql'; end $$"); err != nil {
		t.Fatal(err)
	}
	if len(notices) != 1 || notices[0] != "hello from plpgsql" {
		t.Fatalf("notices %q", notices)
	}
	talker := connect(t, e.dsn("bob", "main"))
	if _, err := talker.Exec(ctx, "select pg_notify('gh_chan', 'ping')"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(wctx)
	if err != nil || n.Channel != "gh_chan" || n.Payload != "ping" {
		t.Fatalf("notification: %+v %v", n, err)
	}
	// ParameterStatus changes reach the client.
	if _, err := listener.Exec(ctx, "set application_name = 'renamed'"); err != nil {
		t.Fatal(err)
	}
	if got := listener.PgConn().ParameterStatus("application_name"); got != "renamed" {
		t.Fatalf("application_name parameter status %q", got)
	}
}

func TestCancelReachesUpstream(t *testing.T) {
	e := startEnv(t)
	c := connect(t, e.dsn("alice", "main"))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Exec(ctx, "select pg_sleep(30)")
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("pg_sleep(30) not cancelled: %v after %v", err, time.Since(start))
	}
	// pgx closes a connection whose context ended; a raw cancel through pgconn keeps it.
	c2 := connect(t, e.dsn("alice", "main"))
	done := make(chan error, 1)
	go func() {
		_, err := c2.PgConn().Exec(context.Background(), "select pg_sleep(30) /* cancel-marker */").ReadAll()
		done <- err
	}()
	// A cancel that reaches the upstream before the query runs there cancels nothing, so
	// wait until the upstream shows the query active rather than for a fixed time.
	watcher := connect(t, shared.DSN("postgres"))
	wctx := ctxT(t, 15*time.Second)
	eventually(t, 10*time.Second, "pg_sleep(30) to run upstream", func() bool {
		var n int
		if err := watcher.QueryRow(wctx, "select count(*) from pg_stat_activity where state = 'active' and query like '%cancel-marker%' and pid <> pg_backend_pid()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	if err := c2.PgConn().CancelRequest(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if pgCode(err) != "57014" {
			t.Fatalf("cancelled query: want 57014, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel request did not stop pg_sleep(30)")
	}
	var one int
	if err := c2.QueryRow(ctxT(t, 5*time.Second), "select 1").Scan(&one); err != nil {
		t.Fatalf("session after cancel: %v", err)
	}
}

func TestMaskingHook(t *testing.T) {
	m := &ssnMasker{}
	e := startEnv(t, func(e *env) { e.srv.Gate.Masker = m })
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	for _, mode := range modes {
		var name, ssn string
		if err := c.QueryRow(ctx, "select 'ann'::text as name, '123-45-6789'::text as ssn", mode).Scan(&name, &ssn); err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		if name != "ann" || ssn != "***-**-****" {
			t.Fatalf("%v: got %q %q, want the ssn masked", mode, name, ssn)
		}
	}
	// A prepared statement executed without Describe still gets masked (pgconn ExecPrepared
	// after Prepare, the way JDBC and pipelines do it).
	pc := c.PgConn()
	if _, err := pc.Prepare(ctx, "m1", "select '987-65-4321'::text as ssn, 7 as n", nil); err != nil {
		t.Fatal(err)
	}
	res := pc.ExecPrepared(ctx, "m1", nil, nil, nil).Read()
	if res.Err != nil || string(res.Rows[0][0]) != "***-**-****" {
		t.Fatalf("prepared: %v %q", res.Err, res.Rows)
	}
	ev := e.rec.statements("987-65-4321")
	if len(ev) != 1 || ev[0].ValuesMasked != 1 {
		t.Fatalf("masked count recorded: %+v", ev)
	}
}

func TestMaxRows(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		rows, err := c.Query(ctx, "select g as limited_rows from generate_series(1, 5000000) g", m)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		err = rows.Err()
		if pgCode(err) != "54000" || !strings.Contains(pgMessage(err), "row limit of 5") || n > 5 {
			t.Fatalf("%v: want 54000 after at most 5 rows, got %d rows, %v", m, n, err)
		}
		var one int
		if err := c.QueryRow(ctx, "select 1", m).Scan(&one); err != nil {
			t.Fatalf("%v: session after row limit: %v", m, err)
		}
	}
	// Under the limit nothing changes.
	var cnt int
	if err := c.QueryRow(ctx, "select count(*) from (select 1 as limited_rows) s").Scan(&cnt); err != nil || cnt != 1 {
		t.Fatal(err)
	}
	ev := e.rec.statements("generate_series(1, 5000000)")
	if len(ev) != 2 || ev[0].SQLState != "54000" || ev[0].Rows != 5 {
		t.Fatalf("row limit recorded as %+v", ev)
	}
}

func TestLedgerFailureFailsClosed(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	e.rec.fail.Store(true)
	for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		var one int
		err := c.QueryRow(ctx, "select 1", m).Scan(&one)
		if pgCode(err) != "58000" || !strings.Contains(pgMessage(err), "audit ledger") {
			t.Fatalf("%v: ledger down: want 58000, got %v", m, err)
		}
	}
	e.rec.fail.Store(false)
	var one int
	if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatalf("after ledger recovers: %v", err)
	}
}

// A validator that cannot check (its store is down) must not end live sessions: that says
// nothing about the identity. Once it can check again, a revocation made meanwhile ends the
// session as usual.
func TestRevalidationSurvivesUncheckableIdentity(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("carol", "main"))
	e.valid.unreachable.Store(true)
	eventually(t, 10*time.Second, "five failed identity checks (there are no more once the session is ended)", func() bool { return e.valid.failedChecks.Load() >= 5 })
	if _, err := c.Exec(ctx, "select 1"); err != nil {
		t.Fatalf("session ended while its identity could not be checked: %v", err)
	}
	e.valid.revoked.Store("carol", true)
	e.valid.unreachable.Store(false)
	start := time.Now()
	var err error
	for time.Since(start) < 5*time.Second {
		if _, err = c.Exec(ctx, "select 1"); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("session of a token revoked during the outage still works once the validator can check again")
	}
	if pgCode(err) != "57P01" && !c.IsClosed() {
		t.Fatalf("revoked session: %v", err)
	}
}

func TestRevokedTokenEndsSession(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("carol", "main"))
	other := connect(t, e.dsn("alice", "main"))
	e.valid.revoked.Store("carol", true)
	start := time.Now()
	var err error
	for time.Since(start) < 5*time.Second {
		if _, err = c.Exec(ctx, "select 1"); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("session of a revoked token still works")
	}
	if pgCode(err) != "57P01" && !c.IsClosed() {
		t.Fatalf("revoked session: %v", err)
	}
	if _, err := other.Exec(ctx, "select 1"); err != nil {
		t.Fatalf("other session affected: %v", err)
	}
	eventually(t, 5*time.Second, "session end recorded", func() bool {
		for _, ev := range e.rec.ofType(ledger.EventSessionEnd) {
			if ev.Subject == "carol" && strings.Contains(ev.Message, "revoked") {
				return true
			}
		}
		return false
	})
}

// TestRoundTripAllocatesOnlyTheGates: relaying a statement whose shape the relay has seen
// allocates nothing of the relay's own. A round trip allocates exactly what the gate's
// checks and its record allocate when called directly with the same statement (the gate's
// allocations are the gate's to cut; masking's are left out, they are the masker's).
func TestRoundTripAllocatesOnlyTheGates(t *testing.T) {
	ctx := context.Background()
	for _, tc := range roundTrips(t) {
		if tc.masker != nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			r, once := tc.start(t)
			relayed := testing.AllocsPerRun(500, once)
			g := r.srv.Gate
			direct := testing.AllocsPerRun(500, func() {
				for _, via := range tc.checks {
					c := g.Check(ctx, r.sess, tc.text, via)
					if via != gate.ViaParse {
						g.Finish(ctx, r.sess, c, gate.Outcome{Rows: 1, Bytes: 20})
					}
				}
			})
			if relayed != direct {
				t.Errorf("a round trip allocates %v times, the gate's checks and record alone %v: the relay allocates %v per round trip", relayed, direct, relayed-direct)
			}
		})
	}
}
