package ledger

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDurabilityClassifiesRecords(t *testing.T) {
	plain := stmtEvent("alice", "SELECT", "SELECT 1", nil, nil)
	write := stmtEvent("alice", "INSERT", "INSERT INTO t VALUES ($1)", []string{"t"}, nil)
	sensitive := stmtEvent("alice", "SELECT", "SELECT email FROM c", []string{"c"}, map[string]string{"c.email": "email"})
	denied := stmtEvent("alice", "DROP TABLE", "DROP TABLE t", []string{"t"}, nil)
	denied.Decision = "deny"
	approved := stmtEvent("alice", "ALTER TABLE", "ALTER TABLE t ADD c int", []string{"t"}, nil)
	approved.ApprovalID = "apr-1"
	intent := stmtEvent("alice", "INSERT", "INSERT INTO t VALUES ($1)", []string{"t"}, nil)
	intent.Type = EventStatementIntent
	cases := []struct {
		name string
		ev   *Event
		sync bool
	}{
		{"plain read", plain, false},
		{"completed write", write, false},
		{"session end", &Event{Type: EventSessionEnd}, false},
		{"sensitive read", sensitive, true},
		{"refusal", denied, true},
		{"statement run under an approval", approved, true},
		{"intent", intent, true},
		{"login", &Event{Type: EventSessionStart, Decision: "allow"}, true},
		{"failed login", &Event{Type: EventLoginFailed}, true},
		{"approval", &Event{Type: EventApprovalApproved}, true},
		{"admin", &Event{Type: EventAdmin}, true},
		{"policy reload", &Event{Type: EventPolicyReload}, true},
		{"token", &Event{Type: EventTokenCreate}, true},
		{"unknown type", &Event{Type: "something.new"}, true},
	}
	for _, c := range cases {
		if got := DurabilitySensitive.mustSync(c.ev); got != c.sync {
			t.Errorf("sensitive: %s: synced before its Ack = %v, want %v", c.name, got, c.sync)
		}
		if !DurabilityEvery.mustSync(c.ev) {
			t.Errorf("every: %s is not synced before its Ack", c.name)
		}
	}
	if _, err := ParseDurability("always"); err == nil {
		t.Error("ParseDurability accepted an unknown contract")
	}
}

// TestDurabilitySensitiveWritesPlainRecordsWithoutWaitingForSync uses a disk whose syncs
// fail: under "sensitive" a plain read is acknowledged once written (it needs no sync),
// a sensitive one is refused, and the failing background sync then fails the ledger closed
// until the disk heals; under "every" the plain read is refused too.
func TestDurabilitySensitiveWritesPlainRecordsWithoutWaitingForSync(t *testing.T) {
	ctx := context.Background()
	plain := func() *Event { return stmtEvent("alice", "SELECT", "SELECT 1", nil, nil) }
	open := func(t *testing.T, d Durability) (*SQLiteStore, *Ledger) {
		dir := t.TempDir()
		s, err := OpenSQLite(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		l := newLedger(t, &testStore{Store: s, dir: dir}, Options{Durability: d, WriteTimeout: time.Second, CheckpointEvery: 1 << 30})
		return s, l
	}

	t.Run("sensitive", func(t *testing.T) {
		s, l := open(t, DurabilitySensitive)
		record(t, l, plain())
		// Written records get synced by themselves, with no later commit to carry them.
		waitFor(t, "the written record to be synced", func() bool {
			s.wmu.Lock()
			defer s.wmu.Unlock()
			return s.jr.sgen == s.jr.wgen
		})
		s.setSyncFault(errors.New("injected: the disk fails"))
		if err := l.Record(ctx, plain()); err != nil {
			t.Fatalf("a plain read waited for a sync: %v", err)
		}
		if err := l.Record(ctx, stmtEvent("alice", "SELECT", "SELECT email FROM c", []string{"c"}, map[string]string{"c.email": "email"})); err == nil {
			t.Fatal("a sensitive read was acknowledged without a sync")
		}
		// The background sync of the plain read fails too: nothing more is taken.
		var err error
		waitFor(t, "the ledger to refuse records after a failed background sync", func() bool {
			err = l.Record(ctx, plain())
			return err != nil
		})
		if l.Healthy() == nil {
			t.Fatalf("ledger healthy after refusing a record: %v", err)
		}
		s.setSyncFault(nil)
		waitFor(t, "the ledger to recover", func() bool { return l.Healthy() == nil })
		record(t, l, plain())
		if rep := verifyStore(t, l, s); !rep.OK {
			t.Fatalf("chain:\n%s", rep)
		}
	})
	t.Run("every", func(t *testing.T) {
		s, l := open(t, DurabilityEvery)
		record(t, l, plain())
		s.setSyncFault(errors.New("injected: the disk fails"))
		if err := l.Record(ctx, plain()); err == nil {
			t.Fatal("durability every acknowledged a plain read without a sync")
		}
	})
}

// TestAcksAnswerInSubmissionOrder mixes records that are only written with records that
// are synced: no Ack may answer before one submitted earlier.
func TestAcksAnswerInSubmissionOrder(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{})
	for round := 0; round < 20; round++ {
		var acks []*Ack
		for i := 0; i < 200; i++ {
			ev := stmtEvent("alice", "SELECT", "SELECT 1", nil, nil)
			if i%7 == 3 {
				ev.Decision = "deny"
			}
			acks = append(acks, l.Submit(ctx, ev))
		}
		// Whenever an Ack has answered, every earlier one must have answered already.
		answered := make([]bool, len(acks))
		for n := 0; n < len(acks); {
			for i := n; i < len(acks); i++ {
				select {
				case err := <-acks[i].Ready():
					if err != nil {
						t.Fatal(err)
					}
					answered[i] = true
				default:
				}
			}
			for i := n; i < len(acks); i++ {
				if answered[i] {
					for j := n; j < i; j++ {
						if !answered[j] {
							t.Fatalf("round %d: ack %d answered before ack %d", round, i, j)
						}
					}
				}
			}
			for n < len(acks) && answered[n] {
				n++
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// TestRecordWrittenThenSync is the transaction-block intent path: RecordWritten answers once
// the record is written (a disk whose syncs fail does not stop it), and Sync answers only
// once everything written is fdatasync'd, failing the ledger closed when it cannot be; under
// "every" RecordWritten syncs like Record.
func TestRecordWrittenThenSync(t *testing.T) {
	ctx := context.Background()
	intent := func() *Event {
		ev := stmtEvent("alice", "UPDATE", "UPDATE t SET a = $1 WHERE id = $2", []string{"t"}, nil)
		ev.Type = EventStatementIntent
		return ev
	}
	open := func(t *testing.T, d Durability) (*SQLiteStore, *Ledger) {
		dir := t.TempDir()
		s, err := OpenSQLite(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		l := newLedger(t, &testStore{Store: s, dir: dir}, Options{Durability: d, WriteTimeout: time.Second, CheckpointEvery: 1 << 30})
		return s, l
	}
	synced := func(s *SQLiteStore) bool {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		return s.jr.sgen == s.jr.wgen
	}

	t.Run("sensitive", func(t *testing.T) {
		s, l := open(t, DurabilitySensitive)
		for range 3 {
			if err := l.RecordWritten(ctx, intent()); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !synced(s) {
			t.Fatal("Sync answered with written records not yet synced")
		}
		if err := l.Sync(ctx); err != nil {
			t.Fatalf("Sync with nothing to sync: %v", err)
		}

		s.setSyncFault(errors.New("injected: the disk fails"))
		if err := l.RecordWritten(ctx, intent()); err != nil {
			t.Fatalf("RecordWritten waited for a sync: %v", err)
		}
		if err := l.Sync(ctx); err == nil {
			t.Fatal("Sync answered although the written intent could not be synced")
		}
		if l.Healthy() == nil {
			t.Fatal("ledger healthy after a failed Sync")
		}
		s.setSyncFault(nil)
		waitFor(t, "the ledger to recover", func() bool { return l.Healthy() == nil })
		if err := l.RecordWritten(ctx, intent()); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if rep := verifyStore(t, l, s); !rep.OK {
			t.Fatalf("chain:\n%s", rep)
		}
	})
	t.Run("every", func(t *testing.T) {
		s, l := open(t, DurabilityEvery)
		s.setSyncFault(errors.New("injected: the disk fails"))
		if err := l.RecordWritten(ctx, intent()); err == nil {
			t.Fatal("durability every acknowledged an intent without a sync")
		}
	})
}

// TestPlainReadLeadsTheCommitInline: under "sensitive", a plain read submitted while no
// commit is under way is written by its submitter itself, so Submit returns an Ack that has
// already answered (no hand-off to the writer goroutine and back); a record that must be
// synced is still left to the writer, and under "every" nothing is committed inline. While
// the chain is held by other work, Submit does not wait for it: the record is queued and
// answered after it.
func TestPlainReadLeadsTheCommitInline(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T, d Durability) (*SQLiteStore, *Ledger) {
		dir := t.TempDir()
		s, err := OpenSQLite(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, newLedger(t, &testStore{Store: s, dir: dir}, Options{Durability: d, CheckpointEvery: 1 << 30})
	}
	plain := func() *Event { return stmtEvent("alice", "SELECT", "SELECT 1", nil, nil) }

	t.Run("sensitive", func(t *testing.T) {
		s, l := open(t, DurabilitySensitive)
		for i := range 200 {
			ev := plain()
			a := l.Submit(ctx, ev)
			if !a.Answered() {
				t.Fatalf("record %d: Submit of a plain read returned before its record was written", i)
			}
			if err := a.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if ev.Seq != int64(i+1) {
				t.Fatalf("record %d has seq %d", i, ev.Seq)
			}
		}
		denied := plain()
		denied.Decision = "deny"
		if err := l.Record(ctx, denied); err != nil {
			t.Fatal(err)
		}

		// Another holder of the chain (a checkpoint, retention, a commit under way): Submit
		// queues and returns at once; the record is answered once the holder lets go.
		held, release := make(chan struct{}), make(chan struct{})
		go l.onWriter(ctx, func() error { close(held); <-release; return nil })
		<-held
		last := plain()
		a := l.Submit(ctx, last)
		if a.Answered() {
			t.Fatal("a record was answered while the chain was held")
		}
		close(release)
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if last.Seq != 202 {
			t.Fatalf("last record has seq %d, want 202", last.Seq)
		}
		if rep := verifyStore(t, l, s); !rep.OK {
			t.Fatalf("chain:\n%s", rep)
		}
	})
	t.Run("every", func(t *testing.T) {
		_, l := open(t, DurabilityEvery)
		// The writer goroutine commits; the Ack answers after an fdatasync, never inside
		// Submit. (Checked over many records: one could race the writer.)
		inline := 0
		for range 50 {
			a := l.Submit(ctx, plain())
			if a.Answered() {
				inline++
			}
			if err := a.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if inline == 50 {
			t.Fatal("durability every: every record was answered inside Submit")
		}
	})
}
