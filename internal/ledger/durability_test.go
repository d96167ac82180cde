package ledger

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/uring"
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
	s, dir := openTestSQLite(t)
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
		// Whenever an Ack has answered, every earlier one must have answered already. The
		// scan goes from the newest down: an earlier Ack checked after a later one was seen
		// answered must be answered too (scanning upwards, an earlier Ack could answer just
		// after its own check and be taken for late).
		answered := make([]bool, len(acks))
		for n := 0; n < len(acks); {
			later := -1
			for i := len(acks) - 1; i >= n; i-- {
				if answered[i] {
					if later < 0 {
						later = i
					}
					continue
				}
				select {
				case <-acks[i].Ready():
					if err := acks[i].Wait(ctx); err != nil {
						t.Fatal(err)
					}
					answered[i] = true
					if later < 0 {
						later = i
					}
				default:
					if later >= 0 {
						t.Fatalf("round %d: ack %d answered before ack %d", round, later, i)
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
		if uring.KernelAllows() && s.jr.ring.Syncs() == 0 {
			t.Fatal("the log was synced without its io_uring (a thread blocked in fdatasync)")
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
// synced is still left to the writer, and under "every" nothing is committed inline by
// Submit (Record, whose caller waits anyway, commits and syncs its own record). While
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
		// Record's caller waits anyway: with no commit under way it commits (and syncs) its
		// own record, with no hand-off to the writer goroutine.
		// (Most of them: the writer goroutine's tick may hold the chain at that moment.)
		inline = 0
		for range 20 {
			a := l.submit(ctx, plain(), false, true)
			if a.Answered() {
				inline++
			}
			if err := a.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if inline < 10 {
			t.Fatalf("durability every: %d of 20 waiting callers' synced records committed by the caller, want most", inline)
		}
	})
}

// TestConcurrentSubmittersShareOneWrite: plain reads whose sessions finish together share
// one group commit (one write(2) of the commit log), not only one fdatasync: the inline
// leader lets the submitters that are ready to run queue behind it before it writes. On
// one core, without that, every Record would be a commit of its own.
func TestConcurrentSubmittersShareOneWrite(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{CheckpointEvery: 1 << 30})
	var commits, events atomic.Int64
	l.ObserveCommits(func(c Commit, n int, _ time.Duration, err error) {
		if c == CommitWritten && err == nil {
			commits.Add(1)
			events.Add(int64(n))
		}
	})
	const sessions, each = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for w := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := l.Record(ctx, stmtEvent(fmt.Sprintf("s%d", w), "SELECT", "SELECT 1", nil, nil)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if events.Load() != sessions*each {
		t.Fatalf("%d records went through written commits, want %d", events.Load(), sessions*each)
	}
	t.Logf("%d records in %d written commits", events.Load(), commits.Load())
	if per := float64(events.Load()) / float64(commits.Load()); per < 4 {
		t.Fatalf("%d records in %d commits (%.1f per write): concurrent submitters did not share writes", events.Load(), commits.Load(), per)
	}
	if rep := verifyStore(t, l, s); !rep.OK {
		t.Fatalf("chain:\n%s", rep)
	}
}

// TestInlineLeaderLeavesSyncsToTheWriter: a submitter leading the commit inline writes the
// records queued before the first one that must be fdatasync'd and leaves that one, and
// everything behind it, to the writer goroutine, so no session waits inside Submit for an
// fdatasync; the Acks still answer in order.
func TestInlineLeaderLeavesSyncsToTheWriter(t *testing.T) {
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{CheckpointEvery: 1 << 30})
	type commit struct {
		c Commit
		n int
	}
	var mu sync.Mutex
	var seen []commit
	l.ObserveCommits(func(c Commit, n int, _ time.Duration, err error) {
		mu.Lock()
		seen = append(seen, commit{c, n})
		mu.Unlock()
	})
	denied := stmtEvent("alice", "SELECT", "SELECT 2", nil, nil)
	denied.Decision = "deny"
	evs := []*Event{stmtEvent("alice", "SELECT", "SELECT 1", nil, nil), denied, stmtEvent("alice", "SELECT", "SELECT 3", nil, nil)}
	var acks []*Ack
	l.chainMu.Lock()
	l.qmu.Lock()
	for _, ev := range evs {
		ev.Time = time.Now().UTC()
		a := &Ack{finished: l.finished}
		acks = append(acks, a)
		l.queue = append(l.queue, request{ev: ev, ack: a, sync: l.opts.Durability.mustSync(ev)})
	}
	l.qmu.Unlock()
	empty := l.drain(maxInlineRounds, true, true)
	mu.Lock()
	inline := append([]commit(nil), seen...)
	mu.Unlock()
	l.chainMu.Unlock()
	if empty || !acks[0].Answered() || acks[1].Answered() || acks[2].Answered() {
		t.Fatalf("inline leader: queue left empty %v, answered %v %v %v; want only the plain read before the refusal", empty, acks[0].Answered(), acks[1].Answered(), acks[2].Answered())
	}
	if len(inline) != 1 || inline[0] != (commit{CommitWritten, 1}) {
		t.Fatalf("inline leader committed %v, want one written commit of one record", inline)
	}
	l.wakeWriter()
	for i, a := range acks {
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if evs[i].Seq != int64(i+1) {
			t.Fatalf("record %d has seq %d", i, evs[i].Seq)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[1] != (commit{CommitSynced, 2}) {
		t.Fatalf("commits %v, want the refusal and the read behind it synced by the writer", seen)
	}
}

// blockedCheckpoints is a store whose checkpoint appends wait for release (or their
// context), to see who waits for them.
type blockedCheckpoints struct {
	Store
	release chan struct{}
}

func (b *blockedCheckpoints) Append(ctx context.Context, recs []Record, cps []Checkpoint, c Commit) error {
	if len(cps) > 0 {
		select {
		case <-b.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return b.Store.Append(ctx, recs, cps, c)
}

// TestDueCheckpointIsTheWritersWork: a checkpoint that falls due with a plain read is
// signed and stored by the writer goroutine after the read is answered; neither the read's
// Ack nor its Submit waits for it.
func TestDueCheckpointIsTheWritersWork(t *testing.T) {
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	bs := &blockedCheckpoints{Store: s, release: make(chan struct{})}
	l := newLedger(t, &testStore{Store: bs, dir: dir}, Options{CheckpointEvery: 2, WriteTimeout: 2 * time.Second})
	for i := range 2 {
		a := l.Submit(ctx, stmtEvent("alice", "SELECT", "SELECT 1", nil, nil))
		if !a.Answered() {
			t.Fatalf("read %d: Submit returned before its record was written", i)
		}
		if err := a.Wait(ctx); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if err := l.Healthy(); err != nil {
		t.Fatalf("a read waited for a checkpoint: %v", err)
	}
	close(bs.release)
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cps, err := s.Checkpoints(ctx, "gh-1")
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, cp := range cps {
		seqs = append(seqs, cp.Seq)
	}
	if !slices.Equal(seqs, []int64{2}) {
		t.Fatalf("checkpoints at %v, want one at 2", seqs)
	}
}
