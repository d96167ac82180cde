package e2e

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
	"github.com/gatehouse/gatehouse/internal/upstream"
)

// poolPolicy gives agents read access and humans admin, so the two run as different upstream
// roles (the target maps read to pool_reader and admin to pool_admin).
const poolPolicy = `version: 1
grants:
  - name: agents-read
    kinds: [agent]
    level: read
  - name: humans-admin
    kinds: [human]
    level: admin
rules: []
masking:
  default: none
`

// TestPoolSessionIsolation: an upstream connection reused by a later session shows nothing of
// the session before it (each kind of session state a client can leave behind is tried), is
// never handed to a session of another upstream role, and a connection left in a state the
// pool cannot vouch for (an extended-protocol exchange without its Sync, COPY in progress) is
// closed rather than reused — without committing what the client left unfinished.
func TestPoolSessionIsolation(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: poolPolicy, Configure: func(c *config.Config) {
		c.Targets[0].Roles = map[string]string{"read": "pool_reader", "admin": "pool_admin"}
		c.Pool.MaxIdlePerKey, c.Pool.MaxIdle = 1, 4
	}})
	up := p.Upstream
	up.Exec(t, "app", `CREATE ROLE pool_reader NOLOGIN; CREATE ROLE pool_admin NOLOGIN; CREATE ROLE pool_other NOLOGIN;
		CREATE TABLE pool_t(x int); GRANT ALL ON pool_t TO PUBLIC;
		CREATE SEQUENCE pool_seq; GRANT ALL ON SEQUENCE pool_seq TO PUBLIC`)
	pool := p.Instance.Pool()
	if pool == nil {
		t.Fatal("the pool is off by default")
	}
	ctx := ctxT(t, 2*time.Minute)
	ann := p.DSN("ann", p.Token(t, "ann", "human"), "")
	bot := p.DSN("bot", p.Token(t, "bot", "agent"), "")
	simple := pgx.QueryExecModeSimpleProtocol

	// Session A leaves every kind of session state behind.
	a := connect(t, ann)
	pidA := a.PgConn().PID()
	tzFresh := a.PgConn().ParameterStatus("TimeZone")
	for _, sql := range []string{
		"PREPARE sql_prepared AS SELECT 1",
		"CREATE TEMP TABLE pool_temp(x int)",
		"SET work_mem = '7MB'",
		"SET search_path = pg_catalog",
		"SELECT set_config('app.tenant', 'acme', false)",
		"SET TIME ZONE 'Pacific/Auckland'",
		"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"LISTEN pool_chan",
		"SELECT pg_advisory_lock(4242)",
		"SELECT nextval('public.pool_seq')",
		"DECLARE pool_cur CURSOR WITH HOLD FOR SELECT 1",
		"SET ROLE pool_other",
	} {
		if _, err := a.Exec(ctx, sql, simple); err != nil {
			t.Fatalf("session A: %s: %v", sql, err)
		}
	}
	if _, err := a.PgConn().Prepare(ctx, "protocol_prepared", "SELECT 2", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitPoolIdle(t, pool, 1)

	// Session B, same identity and so the same role, gets A's backend, reset.
	b := connect(t, ann)
	if b.PgConn().PID() != pidA {
		t.Fatalf("session B got backend %d, want the pooled %d", b.PgConn().PID(), pidA)
	}
	if got := b.PgConn().ParameterStatus("TimeZone"); got != tzFresh {
		t.Errorf("TimeZone reported to B %q, want %q", got, tzFresh)
	}
	type probe struct{ what, sql, want string }
	for _, pr := range []probe{
		{"SQL prepared statements", "SELECT count(*)::text FROM pg_prepared_statements", "0"},
		{"temp tables", "SELECT coalesce(to_regclass('pg_temp.pool_temp')::text, 'none')", "none"},
		{"work_mem", "SELECT current_setting('work_mem')", "4MB"},
		{"search_path", "SELECT current_setting('search_path')", `"$user", public`},
		{"custom setting value", "SELECT coalesce(nullif(current_setting('app.tenant', true), ''), 'unset')", "unset"},
		{"time zone", "SELECT (current_setting('TimeZone') = '" + tzFresh + "')::text", "true"},
		{"session characteristics", "SELECT current_setting('transaction_isolation')", "read committed"},
		{"LISTEN registrations", "SELECT count(*)::text FROM pg_listening_channels()", "0"},
		{"advisory locks", "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0"},
		{"cursors", "SELECT count(*)::text FROM pg_cursors", "0"},
		{"role set with SET ROLE", "SELECT current_user::text", "pool_admin"},
	} {
		var got string
		if err := b.QueryRow(ctx, pr.sql, simple).Scan(&got); err != nil {
			t.Errorf("%s: %v", pr.what, err)
		} else if got != pr.want {
			t.Errorf("%s: the next session sees %q, want %q", pr.what, got, pr.want)
		}
	}
	for _, sql := range []string{"SELECT currval('public.pool_seq')", "SELECT lastval()"} {
		if _, err := b.Exec(ctx, sql, simple); pgCode(err) != "55000" {
			t.Errorf("%s in the next session: want 55000 (not yet defined in this session), got %v", sql, err)
		}
	}
	if err := b.PgConn().ExecPrepared(ctx, "protocol_prepared", nil, nil, nil).Read().Err; pgCode(err) != "26000" {
		t.Errorf("protocol-level prepared statement of the previous session: want 26000, got %v", err)
	}
	// A's advisory lock is free, and a notification on A's channel does not reach B.
	other := connect(t, up.DSN("app"))
	var locked bool
	if err := other.QueryRow(ctx, "SELECT pg_try_advisory_lock(4242)").Scan(&locked); err != nil || !locked {
		t.Errorf("advisory lock of the previous session still held: %v %v", locked, err)
	}
	if _, err := other.Exec(ctx, "NOTIFY pool_chan, 'for A only'"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if n, err := b.WaitForNotification(wctx); err == nil {
		t.Errorf("the next session received the previous session's notification %+v", n)
	}
	cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitPoolIdle(t, pool, 1)

	// Another role never gets that connection.
	c := connect(t, bot)
	var role string
	if err := c.QueryRow(ctx, "SELECT current_user::text", simple).Scan(&role); err != nil || role != "pool_reader" {
		t.Fatalf("agent session runs as %q (%v), want pool_reader", role, err)
	}
	if c.PgConn().PID() == pidA {
		t.Fatal("a session of role pool_reader got the pooled connection of role pool_admin")
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitPoolIdle(t, pool, 2) // one backend per role

	// A session that ends inside a transaction block: its backend is closed (the transaction
	// is aborted, not committed), as PgBouncer does; the next session gets another backend.
	tx := connect(t, ann)
	if tx.PgConn().PID() != pidA {
		t.Fatalf("session in a transaction got backend %d, want the pooled %d", tx.PgConn().PID(), pidA)
	}
	for _, sql := range []string{"BEGIN", "INSERT INTO public.pool_t VALUES (1)"} {
		if _, err := tx.Exec(ctx, sql, simple); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitBackendGone(t, up, pidA)
	if s := pool.Stats(); s.Idle != 1 {
		t.Fatalf("a backend left inside a transaction was kept: %+v", s)
	}

	// An extended-protocol exchange left without its Sync: the connection is closed and the
	// implicit transaction is not committed.
	d := connect(t, ann)
	if d.PgConn().PID() == pidA {
		t.Fatal("the backend closed after a transaction block was handed out again")
	}
	pidD := d.PgConn().PID()
	fe := d.PgConn().Frontend()
	fe.Send(&pgproto3.Parse{Query: "INSERT INTO public.pool_t VALUES (2)"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Flush{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	receiveUntil(ctx, t, d.PgConn(), func(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.CommandComplete); return ok })
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A COPY FROM STDIN in progress: closed too.
	e := connect(t, ann)
	if e.PgConn().PID() == pidD {
		t.Fatal("the connection left without its Sync was reused")
	}
	pidE := e.PgConn().PID()
	e.PgConn().Frontend().Send(&pgproto3.Query{String: "COPY public.pool_t FROM STDIN"})
	if err := e.PgConn().Frontend().Flush(); err != nil {
		t.Fatal(err)
	}
	receiveUntil(ctx, t, e.PgConn(), func(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.CopyInResponse); return ok })
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f := connect(t, ann)
	if f.PgConn().PID() == pidE {
		t.Fatal("the connection left in COPY was reused")
	}
	if n := upstreamQuery(t, up, "app", "SELECT count(*)::text FROM pool_t"); n != "0" {
		t.Fatalf("pool_t has %s rows: an unfinished write was committed", n)
	}
	// Neither backend is left running.
	waitBackendGone(t, up, pidD)
	waitBackendGone(t, up, pidE)
}

// waitBackendGone waits until the upstream backend pid has ended.
func waitBackendGone(t *testing.T, up *testkit.Postgres, pid uint32) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for upstreamQuery(t, up, "app", "SELECT count(*)::text FROM pg_stat_activity WHERE pid = "+itoa(pid)) != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("backend %d, which the pool had to close, is still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPoolIdle waits until the pool holds n idle connections.
func waitPoolIdle(t *testing.T, pool *upstream.Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for pool.Stats().Idle != n {
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d idle connections, want %d (%+v)", pool.Stats().Idle, n, pool.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receiveUntil reads raw messages until done says stop.
func receiveUntil(ctx context.Context, t *testing.T, pc *pgconn.PgConn, done func(pgproto3.BackendMessage) bool) {
	t.Helper()
	for {
		m, err := pc.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if er, ok := m.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("error: %s %s", er.Code, er.Message)
		}
		if done(m) {
			return
		}
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
