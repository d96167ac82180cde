package gate_test

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// countingLedger is the real ledger, counting how the gate records intents: synced
// (Record), written only (RecordWritten) and the Sync barriers.
type countingLedger struct {
	*ledger.Ledger
	synced, written, barriers int
}

func (c *countingLedger) Record(ctx context.Context, ev *ledger.Event) error {
	if ev.Type == gate.EventStatementIntent {
		c.synced++
	}
	return c.Ledger.Record(ctx, ev)
}

func (c *countingLedger) RecordWritten(ctx context.Context, ev *ledger.Event) error {
	c.written++
	return c.Ledger.RecordWritten(ctx, ev)
}

func (c *countingLedger) Sync(ctx context.Context) error {
	c.barriers++
	return c.Ledger.Sync(ctx)
}

// TestIntentsInsideABlockAreSyncedBeforeItEnds walks statements through a session whose
// door says it is inside a transaction block (or not) and checks how each intent is made
// durable: written only for a transactional change inside the block, synced on its own
// for anything with effects a rollback does not undo and for anything outside a block, and
// a Sync barrier before whatever may end the block once written intents are pending.
func TestIntentsInsideABlockAreSyncedBeforeItEnds(t *testing.T) {
	g, led := newGate(t)
	rec := &countingLedger{Ledger: led}
	g.Recorder = rec
	ctx := context.Background()
	s := session("dev", identity.Service)
	if d, err := g.OpenSession(ctx, s); err != nil || d.Action != gate.Allow {
		t.Fatalf("open: %+v %v", d, err)
	}
	steps := []struct {
		inBlock bool
		sql     string
		// want: what the step adds to synced intents, written intents and barriers.
		synced, written, barriers int
		endsBlock                 bool
	}{
		{false, "BEGIN", 0, 0, 0, false},
		{true, "UPDATE accounts SET balance = balance + 1 WHERE id = 1", 0, 1, 0, false},
		{true, "SELECT balance FROM accounts WHERE id = 1", 0, 0, 0, false},
		{true, "INSERT INTO history (id, delta) VALUES (1, 1)", 0, 1, 0, false},
		{true, "SAVEPOINT a", 0, 0, 0, false},
		{true, "CREATE TABLE scratch (id int)", 0, 1, 0, false},
		// Effects that outlive a rollback: synced before forwarding (covering the rest).
		{true, "INSERT INTO history (id, delta) VALUES (nextval('s'), 1)", 1, 0, 0, false},
		{true, "UPDATE accounts SET balance = 0 WHERE id = 2", 0, 1, 0, false},
		{true, "SELECT pg_advisory_lock(1)", 1, 0, 0, false},
		{true, "DELETE FROM history WHERE id = 3", 0, 1, 0, false},
		// The block ends: its written intents are synced first.
		{true, "COMMIT", 0, 0, 1, true},
		{false, "BEGIN", 0, 0, 0, false},
		{true, "UPDATE accounts SET balance = 1 WHERE id = 1", 0, 1, 0, false},
		{true, "PREPARE TRANSACTION 'p1'", 0, 0, 1, true},
		{false, "BEGIN", 0, 0, 0, false},
		{true, "UPDATE accounts SET balance = 1 WHERE id = 1", 0, 1, 0, false},
		// A string that ends the block and writes after it: its own intent is synced.
		{true, "COMMIT; UPDATE accounts SET balance = 2 WHERE id = 1", 1, 0, 0, true},
		{true, "UPDATE accounts SET balance = 1 WHERE id = 1", 0, 1, 0, false},
		{true, "ROLLBACK", 0, 0, 1, true},
		// Not known to be in a block: every intent is synced, nothing is pending.
		{false, "UPDATE accounts SET balance = 3 WHERE id = 1", 1, 0, 0, false},
		{false, "COMMIT", 0, 0, 0, true},
		{true, "COMMIT AND CHAIN", 0, 0, 0, true},
	}
	for i, st := range steps {
		synced, written, barriers := rec.synced, rec.written, rec.barriers
		s.SetTransactionBlock(st.inBlock)
		c := g.Check(ctx, s, st.sql, gate.ViaQuery)
		if !c.Allowed() {
			t.Fatalf("step %d %q: refused: %+v", i, st.sql, c.Decision)
		}
		got := [3]int{rec.synced - synced, rec.written - written, rec.barriers - barriers}
		if want := [3]int{st.synced, st.written, st.barriers}; got != want {
			t.Errorf("step %d %q (in block %v): synced intents, written intents, barriers = %v, want %v", i, st.sql, st.inBlock, got, want)
		}
		if c.EndsBlock() != st.endsBlock {
			t.Errorf("step %d %q: EndsBlock = %v, want %v", i, st.sql, c.EndsBlock(), st.endsBlock)
		}
	}
}
