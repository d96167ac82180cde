package gate_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// flakyRecorder is a ledger that can be switched off and on.
type flakyRecorder struct {
	mu   sync.Mutex
	down bool
	evs  []*ledger.Event
}

func (r *flakyRecorder) Record(_ context.Context, ev *ledger.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errors.New("no space left on device")
	}
	r.evs = append(r.evs, ev)
	return nil
}

func (r *flakyRecorder) Submit(ctx context.Context, ev *ledger.Event) *ledger.Ack {
	return ledger.AnsweredAck(r.Record(ctx, ev))
}

func (r *flakyRecorder) Healthy() error { return nil }

// TestDeferredSessionEvents: a session that ends, a login that fails and a refused
// connection while the ledger cannot write are kept and recorded, with their own time, once
// it writes again.
func TestDeferredSessionEvents(t *testing.T) {
	rec := &flakyRecorder{down: true}
	g := &gate.Gate{Recorder: rec}
	ctx := context.Background()
	s := &gate.Session{ID: "s1", Identity: &identity.Identity{Subject: "alice", Kind: identity.Human}, StartedAt: time.Now().Add(-time.Minute)}
	g.CloseSession(ctx, s, "client disconnected")
	g.LoginFailed(ctx, &gate.Session{ClientAddr: "127.0.0.1:5"}, "mallory", "wrong token")
	g.SessionRefused(ctx, s, "unknown-target", `target "nosuch" does not exist`)
	if n := g.Deferred(); n != 3 {
		t.Fatalf("records kept during the outage = %d, want 3", n)
	}
	ended := time.Now()
	if n, err := g.FlushDeferred(ctx); n != 0 || err == nil {
		t.Fatalf("flush while still down = %d, %v", n, err)
	}
	rec.mu.Lock()
	rec.down = false
	rec.mu.Unlock()
	time.Sleep(10 * time.Millisecond)
	if n, err := g.FlushDeferred(ctx); n != 3 || err != nil || g.Deferred() != 0 {
		t.Fatalf("flush after the outage = %d, %v (left %d)", n, err, g.Deferred())
	}
	want := []ledger.EventType{ledger.EventSessionEnd, ledger.EventLoginFailed, ledger.EventSessionStart}
	for i, ev := range rec.evs {
		if ev.Type != want[i] || ev.Time.After(ended) {
			t.Errorf("record %d = %s at %v, want %s from before the outage ended", i, ev.Type, ev.Time, want[i])
		}
	}
}
