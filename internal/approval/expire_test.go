package approval

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/store"
)

// expiredEvents returns the approval.expired events recorded, by request id.
func (r *memRecorder) expiredEvents() map[string][]ledger.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]ledger.Event{}
	for _, e := range r.events {
		if e.Type == ledger.EventApprovalExpired {
			out[e.ApprovalID] = append(out[e.ApprovalID], e)
		}
	}
	return out
}

// rawStatus is the status column as stored, before lapses are applied on read.
func rawStatus(t *testing.T, s *Store, id string) Status {
	t.Helper()
	var st string
	if err := s.queryRow(context.Background(), `SELECT status FROM approval_requests WHERE id = ?`, id).Scan(&st); err != nil {
		t.Fatalf("read status of %s: %v", id, err)
	}
	return Status(st)
}

// A pending request past request_ttl and an approval past valid_for each put exactly one
// approval.expired event on the ledger, saying which deadline lapsed; denied and used
// requests never expire; reads show lapses before any sweep.
func TestExpiryRecordedOnce(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	unanswered, _ := f.s.Hold(ctx, f.held(alice, "DROP TABLE a"))
	unused, _ := f.s.Hold(ctx, f.held(alice, "DROP TABLE b"))
	usedH := f.held(alice, "DROP TABLE c")
	used, _ := f.s.Hold(ctx, usedH)
	denied, _ := f.s.Hold(ctx, f.held(alice, "DROP TABLE d"))
	for _, id := range []string{unused.ApprovalID, used.ApprovalID} {
		if _, err := f.s.Approve(ctx, id, bob, "go"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.s.Deny(ctx, denied.ApprovalID, bob, "no"); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.s.Use(ctx, used.ApprovalID, usedH); !ok || err != nil {
		t.Fatalf("use: %v %v", ok, err)
	}
	if n, err := f.s.Expire(ctx); n != 0 || err != nil {
		t.Fatalf("expire before any deadline: %d %v", n, err)
	}

	// The approval's window passes. A read-only store (the CLI's) shows it expired before
	// any sweep, without changing the row or recording anything.
	f.clk.Advance(time.Hour)
	reader, err := Open(ctx, f.s.db, Options{Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := reader.Get(ctx, unused.ApprovalID); err != nil || r.Status != Expired {
		t.Fatalf("lapsed approval read as %+v %v", r, err)
	}
	if l, err := reader.List(ctx, Filter{Status: Expired}); err != nil || len(l) != 1 || l[0].ID != unused.ApprovalID {
		t.Fatalf("expired list before the sweep: %+v %v", l, err)
	}
	if l, _ := reader.List(ctx, Filter{Status: Approved}); len(l) != 0 {
		t.Fatalf("lapsed approval listed as approved: %+v", l)
	}
	if _, err := reader.Expire(ctx); err == nil {
		t.Fatal("a store without a ledger expired requests")
	}
	if st := rawStatus(t, f.s, unused.ApprovalID); st != Approved {
		t.Fatalf("a read changed the row to %s", st)
	}
	if n, err := f.s.Expire(ctx); n != 1 || err != nil {
		t.Fatalf("expire the unused approval: %d %v", n, err)
	}
	if st := rawStatus(t, f.s, unused.ApprovalID); st != Expired {
		t.Fatalf("swept approval stored as %s", st)
	}

	// The request nobody answered lapses after request_ttl.
	f.clk.Advance(23*time.Hour + time.Second)
	if n, err := f.s.Expire(ctx); n != 1 || err != nil {
		t.Fatalf("expire the unanswered request: %d %v", n, err)
	}
	for range 3 {
		if n, err := f.s.Expire(ctx); n != 0 || err != nil {
			t.Fatalf("sweep after everything lapsed: %d %v", n, err)
		}
	}

	got := f.rec.expiredEvents()
	if len(got) != 2 || len(got[unanswered.ApprovalID]) != 1 || len(got[unused.ApprovalID]) != 1 {
		t.Fatalf("expired events = %+v", got)
	}
	ttl, vf := got[unanswered.ApprovalID][0], got[unused.ApprovalID][0]
	for _, c := range []struct {
		ev       ledger.Event
		text     string
		deadline string
	}{{ttl, "DROP TABLE a", "request_ttl lapsed at 2026-03-02T09:00:00Z: nobody approved"},
		{vf, "DROP TABLE b", "valid_for lapsed at 2026-03-01T10:00:00Z: approved by bob@corp.example (human)"}} {
		e := c.ev
		if e.Subject != alice.Subject || e.IdentityKind != "human" || e.Target != "main" || e.Environment != "prod" || e.Database != "app" ||
			e.Rule != "hold-drops" || len(e.Statements) != 1 || e.Statements[0].Redacted != c.text || e.Statements[0].Fingerprint == "" ||
			!strings.HasPrefix(e.Message, c.deadline) {
			t.Fatalf("expired event = %+v", e)
		}
	}
	for id, want := range map[string]Status{used.ApprovalID: Used, denied.ApprovalID: Denied, unanswered.ApprovalID: Expired} {
		if st := rawStatus(t, f.s, id); st != want {
			t.Fatalf("%s stored as %s, want %s", id, st, want)
		}
	}
	if l, _ := f.s.List(ctx, Filter{Status: Expired}); len(l) != 2 {
		t.Fatalf("expired list = %+v", l)
	}
}

// A lapse the ledger refuses is not taken: the row is given back and the next sweep records it.
func TestUnrecordedExpiryIsRetried(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	d, _ := f.s.Hold(ctx, f.held(alice, "DROP TABLE orders"))
	f.clk.Advance(25 * time.Hour)
	f.rec.fail.Store(true)
	if n, err := f.s.Expire(ctx); n != 0 || err == nil {
		t.Fatalf("expire without ledger: %d %v", n, err)
	}
	if st := rawStatus(t, f.s, d.ApprovalID); st != Pending {
		t.Fatalf("unrecorded lapse stored as %s", st)
	}
	f.rec.fail.Store(false)
	if n, err := f.s.Expire(ctx); n != 1 || err != nil {
		t.Fatalf("retry: %d %v", n, err)
	}
	if got := f.rec.expiredEvents(); len(got[d.ApprovalID]) != 1 {
		t.Fatalf("expired events = %+v", got)
	}
}

// Several stores on separate handles to one database (instances sharing a store) sweep at
// once: every lapse is recorded by exactly one of them.
func testExpiryRaceRecordsOnce(t *testing.T, dbs ...*sql.DB) {
	ctx := context.Background()
	f := newFixture(t)
	var stores []*Store
	for range 2 {
		for _, db := range dbs {
			s, err := Open(ctx, db, Options{Recorder: f.rec, Key: f.s.key, Now: f.clk.Now, Settings: f.s.settings})
			if err != nil {
				t.Fatal(err)
			}
			stores = append(stores, s)
		}
	}
	const n = 30
	want := map[string]bool{}
	for i := range n {
		h := f.held(alice, fmt.Sprintf("DROP TABLE t%d", i))
		d, err := stores[i%len(stores)].Hold(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := stores[(i+1)%len(stores)].Approve(ctx, d.ApprovalID, bob, ""); err != nil {
				t.Fatal(err)
			}
		}
		want[d.ApprovalID] = true
	}
	f.clk.Advance(25 * time.Hour)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	start := make(chan struct{})
	for _, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 5 {
				k, err := s.Expire(ctx)
				if err != nil {
					t.Errorf("concurrent expire: %v", err)
					return
				}
				mu.Lock()
				total += k
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	got := f.rec.expiredEvents()
	if total != n || len(got) != n {
		t.Fatalf("sweepers claimed %d lapses and recorded events for %d requests, want %d", total, len(got), n)
	}
	for id, evs := range got {
		if !want[id] || len(evs) != 1 {
			t.Fatalf("request %s: %d expired events", id, len(evs))
		}
	}
}

func TestExpiryRaceRecordsOnceSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	var dbs []*sql.DB
	for range 2 {
		db, err := store.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	testExpiryRaceRecordsOnce(t, dbs...)
}

func TestSweepEvery(t *testing.T) {
	for _, c := range []struct {
		ttl, valid, want time.Duration
	}{{24 * time.Hour, time.Hour, time.Minute}, {time.Minute, 2 * time.Second, time.Second}, {time.Minute, 5 * time.Minute, 6 * time.Second}} {
		if got := sweepEvery(Settings{RequestTTL: c.ttl, ValidFor: c.valid}); got != c.want {
			t.Fatalf("sweepEvery(%v, %v) = %v, want %v", c.ttl, c.valid, got, c.want)
		}
	}
}
