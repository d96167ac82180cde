package live

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// Two instances on one PostgreSQL store, without LISTEN (so by polling alone): each lists the
// other's sessions, a kill asked of B for a session on A ends it on A on behalf of who asked,
// and an instance that stops publishing drops out of the list once its heartbeat is stale.
func TestFleetSharedStore(t *testing.T) {
	pg := testkit.StartPostgres(t)
	ctx := context.Background()
	db, err := store.OpenPostgres(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	regA, regB := New(), New()
	a, err := NewFleet(ctx, regA, "ghA", db, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewFleet(ctx, regB, "ghB", db, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	fast := FleetTiming{PublishEvery: 50 * time.Millisecond, HeartbeatEvery: 200 * time.Millisecond, StaleAfter: time.Second, PollEvery: 100 * time.Millisecond}
	a.Timing, b.Timing = fast, fast
	if !a.Shared() || !b.Shared() {
		t.Fatal("fleets on a PostgreSQL store are not shared")
	}
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan struct{})
	go func() { a.Run(actx); close(aDone) }()
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	go b.Run(bctx)

	var endedBy atomic.Value
	e := regA.Add(Session{ID: "s1", Subject: "alice", Target: "main", Since: time.Now()}, func(by string) { endedBy.Store(by) })
	regB.Add(Session{ID: "s2", Subject: "bob", Target: "main", Since: time.Now()}, nil)
	waitFor(t, "B lists A's session", func() bool { s, ok := b.Get("s1"); return ok && s.Instance == "ghA" && s.Endable })
	waitFor(t, "A lists B's session", func() bool { s, ok := a.Get("s2"); return ok && s.Instance == "ghB" })
	if got := b.List(); len(got) != 2 {
		t.Fatalf("B lists %+v", got)
	}
	e.Count(Statement{Text: "SELECT 1", Decision: "allow", Rows: 3})
	waitFor(t, "B sees A's statement count", func() bool { s, _ := b.Get("s1"); return s.Statements == 1 && s.Rows == 3 })
	// Their activity travels with the heartbeat: B's overview sums both instances.
	e.Count(Statement{Text: "DROP TABLE t", Decision: "deny"})
	e.Count(Statement{Text: "ALTER TABLE t", Decision: "require_approval"})
	regB.Add(Session{ID: "s2b", Subject: "bob", Since: time.Now()}, nil).Count(Statement{Text: "SELECT 2", Decision: "allow"})
	waitFor(t, "B's activity sums A's and its own", func() bool {
		sum, each := b.Activity()
		return sum == Activity{Sessions: 3, Statements: 4, Refused: 1, Held: 1, Rate: sum.Rate, At: sum.At} && len(each) == 2 &&
			each[0].Instance == "ghB" && each[0].Statements == 1 && each[0].Sessions == 2 &&
			each[1].Instance == "ghA" && each[1].Statements == 3 && each[1].Refused == 1 && each[1].Held == 1 && each[1].Sessions == 1
	})
	// A publishes its rate (it samples it every turn): three statements within the last
	// seconds, then zero once it has been quiet.
	waitFor(t, "A's published rate falls to zero when it is quiet", func() bool { _, each := b.Activity(); return len(each) == 2 && each[1].Rate == 0 })
	if sum, _ := a.Activity(); sum.Statements != 4 || sum.Rate < 0 {
		t.Fatalf("A's view of the fleet's activity: %+v", sum)
	}

	if _, err := b.End(ctx, "s2", "sec"); err != ErrNotEndable {
		t.Fatalf("ending B's own unendable session: %v", err)
	}
	if _, err := a.End(ctx, "s2", "sec"); err != ErrNotEndable {
		t.Fatalf("ending B's unendable session through A: %v", err)
	}
	s, err := b.End(ctx, "s1", "sec")
	if err != nil || s.Subject != "alice" || s.Instance != "ghA" {
		t.Fatalf("ending A's session through B: %+v %v", s, err)
	}
	waitFor(t, "A ends the session on B's request", func() bool { by, _ := endedBy.Load().(string); return by == "sec" })
	e.Remove()
	waitFor(t, "B no longer lists the ended session", func() bool { _, ok := b.Get("s1"); return !ok })
	if _, err := b.End(ctx, "s1", "sec"); err != ErrNotFound {
		t.Fatalf("ending an ended session: %v", err)
	}

	// A stops: its row is withdrawn (or, were it killed, would go stale).
	regA.Add(Session{ID: "s3", Subject: "carol", Since: time.Now()}, func(string) {})
	waitFor(t, "B lists A's new session", func() bool { _, ok := b.Get("s3"); return ok })
	stopA()
	<-aDone
	waitFor(t, "B drops a stopped instance's sessions", func() bool { _, ok := b.Get("s3"); return !ok })
	if sum, each := b.Activity(); len(each) != 1 || sum.Statements != 1 || sum.Refused != 0 {
		t.Fatalf("B's activity still counts the stopped instance: %+v %+v", sum, each)
	}
	// A heartbeat that stops without a goodbye goes stale.
	if _, err := db.ExecContext(ctx, `INSERT INTO live_instances (instance, sessions, heartbeat) VALUES ('ghC', '[{"id":"s4","subject":"dave","endable":true}]', now())`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B lists C's session", func() bool { _, ok := b.Get("s4"); return ok })
	waitFor(t, "B drops C's session once its heartbeat is stale", func() bool { _, ok := b.Get("s4"); return !ok })
}

// The rate is measured between samples at least rateEvery apart, unknown from a single
// sample, and starts again after a quiet spell instead of averaging over it.
func TestRateMeter(t *testing.T) {
	var m rateMeter
	t0 := time.Unix(1000, 0)
	if r := m.rate(t0, 100); r != -1 {
		t.Fatalf("one sample: %v", r)
	}
	if r := m.rate(t0.Add(500*time.Millisecond), 150); r != -1 {
		t.Fatalf("samples closer than rateEvery: %v", r)
	}
	if r := m.rate(t0.Add(2*time.Second), 300); r != 100 {
		t.Fatalf("200 statements in 2 s: %v", r)
	}
	if r := m.rate(t0.Add(2500*time.Millisecond), 1000); r != 100 {
		t.Fatalf("within rateEvery the last interval's rate stands: %v", r)
	}
	if r := m.rate(t0.Add(4*time.Second), 1000); r != 350 {
		t.Fatalf("700 statements in 2 s: %v", r)
	}
	if r := m.rate(t0.Add(4*time.Second+rateStale+time.Second), 5000); r != -1 {
		t.Fatalf("after a quiet spell: %v", r)
	}
}

// On the embedded store (no shared db) the activity is this instance's alone.
func TestActivityLocal(t *testing.T) {
	reg := New()
	f, err := NewFleet(context.Background(), reg, "gh", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg.Add(Session{ID: "a", Since: time.Now()}, nil).Count(Statement{Decision: "deny"})
	sum, each := f.Activity()
	if each != nil || sum.Instance != "" || sum.Sessions != 1 || sum.Statements != 1 || sum.Refused != 1 || sum.Rate != -1 {
		t.Fatalf("local activity %+v %+v", sum, each)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
