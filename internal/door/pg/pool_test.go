package pg

import (
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/upstream"
)

func withPool(p *upstream.Pool) envOpt { return func(e *env) { e.srv.Pool = p } }

// waitIdle waits until the pool holds n idle connections.
func waitIdle(t *testing.T, p *upstream.Pool, n int) {
	t.Helper()
	eventually(t, 10*time.Second, "the pool to hold the connection", func() bool { return p.Stats().Idle == n })
}

func closeConn(t *testing.T, c *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPoolReusesResetConnection: a session that ends with Terminate leaves its backend in the
// pool, reset; the next session of the same key gets that backend (same real PID) without
// anything of the first session; a session left in an open extended-protocol exchange is not
// pooled and its implicit transaction is not committed.
func TestPoolReusesResetConnection(t *testing.T) {
	pool := &upstream.Pool{MaxIdlePerKey: 1}
	e := startEnv(t, withPool(pool))
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	pid := c.PgConn().PID()
	if _, err := c.Exec(ctx, "set work_mem = '7MB'; prepare p1 as select 1; create temp table tt(x int); set app.tenant = 'acme'"); err != nil {
		t.Fatal(err)
	}
	closeConn(t, c)
	waitIdle(t, pool, 1)

	c2 := connect(t, e.dsn("alice", "main"))
	if got := c2.PgConn().PID(); got != pid {
		t.Fatalf("second session got backend %d, want the pooled %d", got, pid)
	}
	var wm string
	var prepared int
	var temp *string
	if err := c2.QueryRow(ctx, "select current_setting('work_mem'), (select count(*) from pg_prepared_statements where name = 'p1'), to_regclass('pg_temp.tt')::text").Scan(&wm, &prepared, &temp); err != nil {
		t.Fatal(err)
	}
	if wm == "7MB" || prepared != 0 || temp != nil {
		t.Fatalf("previous session visible: work_mem %s, %d prepared statements, temp table %v", wm, prepared, temp)
	}
	// A custom setting the previous session created keeps existing, with an empty value
	// (RESET cannot remove a placeholder): the README names this limit.
	var tenant *string
	if err := c2.QueryRow(ctx, "select current_setting('app.tenant', true)").Scan(&tenant); err != nil || tenant == nil || *tenant != "" {
		t.Fatalf("custom setting after reuse: %v %v, want the empty string", tenant, err)
	}
	if s := pool.Stats(); s.Reused != 1 || s.Opened != 1 || s.Idle != 0 {
		t.Fatalf("stats %+v", s)
	}
	closeConn(t, c2)
	waitIdle(t, pool, 1)

	// An idle pooled backend that the server ends (pg_terminate_backend, a restart) is found
	// dead at the next Get and replaced, not handed out.
	admin := connect(t, shared.DSN("postgres"))
	if _, err := admin.Exec(ctx, "select pg_terminate_backend($1)", int(pid)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the pooled backend to end", func() bool {
		var n int
		if err := admin.QueryRow(ctx, "select count(*) from pg_stat_activity where pid = $1", int(pid)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	c3 := connect(t, e.dsn("alice", "main"))
	var one int
	if err := c3.QueryRow(ctx, "select 1").Scan(&one); err != nil || c3.PgConn().PID() == pid {
		t.Fatalf("after the pooled backend ended: PID %d (was %d), %v", c3.PgConn().PID(), pid, err)
	}
	if s := pool.Stats(); s.Discards != 1 || s.Opened != 2 {
		t.Fatalf("stats %+v: want the dead connection discarded and a new one opened", s)
	}
}

// BenchmarkConnectSelectClose is a client that connects per task: connect, SELECT 1, close,
// through the door without and with the upstream pool, and direct (same run). CPU time of
// this process (the door and the client together) per connection is reported as cpu-µs/op.
func BenchmarkConnectSelectClose(b *testing.B) {
	for _, via := range []string{"direct", "gatehouse", "gatehouse-pooled"} {
		b.Run(via, func(b *testing.B) {
			dsn := shared.DSN("postgres")
			if via != "direct" {
				opts := []envOpt{func(e *env) { e.srv.Log = slog.New(slog.DiscardHandler) }}
				if via == "gatehouse-pooled" {
					opts = append(opts, withPool(&upstream.Pool{}))
				}
				dsn = startEnv(b, opts...).dsn("alice", "main")
			}
			ctx := context.Background()
			cpu0 := processCPU()
			for b.Loop() {
				c, err := pgx.Connect(ctx, dsn)
				if err != nil {
					b.Fatal(err)
				}
				var n int
				if err := c.QueryRow(ctx, "select 1", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
					b.Fatal(err)
				}
				if err := c.Close(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
