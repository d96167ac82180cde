package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

// The listener keeps one connection through idle probes, delivers notifications to the
// topic's subscribers (at commit, never for a rolled-back change), and resubscribes after the
// connection is cut, telling subscribers to resynchronise.
func TestListener(t *testing.T) {
	old := listenProbeEvery
	listenProbeEvery = 100 * time.Millisecond
	defer func() { listenProbeEvery = old }()
	pg := testkit.StartPostgres(t)
	ctx := context.Background()
	db, err := OpenPostgres(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if DialectOf(db) != Postgres {
		t.Fatal("dialect of a PostgreSQL store")
	}
	l, err := NewListener(pg.DSN("postgres"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var tokens, other atomic.Int32
	l.Subscribe("tokens", func() { tokens.Add(1) })
	l.Subscribe("other", func() { other.Add(1) })
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { l.Run(lctx); close(done) }()
	defer func() { cancel(); <-done }()
	wait := func(what string, cond func() bool) {
		t.Helper()
		for start := time.Now(); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("waited 10s for %s", what)
			}
		}
	}
	wait("listening and the first resync", func() bool { return l.Listening() && tokens.Load() == 1 && other.Load() == 1 })
	pid := l.BackendPID()
	time.Sleep(500 * time.Millisecond) // several idle probes
	if !l.Listening() || l.BackendPID() != pid {
		t.Fatalf("idle probes replaced the connection (pid %d, was %d)", l.BackendPID(), pid)
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Notify(ctx, Postgres, tx, "tokens"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := Notify(ctx, Postgres, db, "tokens"); err != nil {
		t.Fatal(err)
	}
	wait("the notification", func() bool { return tokens.Load() == 2 })
	time.Sleep(200 * time.Millisecond)
	if tokens.Load() != 2 || other.Load() != 1 {
		t.Fatalf("tokens %d (want 2: the rolled-back notification must not arrive), other %d (want 1)", tokens.Load(), other.Load())
	}

	if _, err := db.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, int(pid)); err != nil {
		t.Fatal(err)
	}
	wait("reconnection and resync", func() bool { return l.Listening() && l.BackendPID() != pid && other.Load() == 2 })
	if err := Notify(ctx, SQLite, nil, "tokens"); err != nil {
		t.Fatal(err)
	}
	if !IsUniqueViolation(errors.New("constraint failed: UNIQUE constraint failed: t.x")) || IsUniqueViolation(nil) {
		t.Fatal("IsUniqueViolation")
	}
}
