package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestEventRowsTakeTheirHashFromTheRecord: the indexer leaves the hash column of the rows
// it stores empty (the record holds the hash), and a store opened again still finds the
// chain head and the last event before a time from the records, so the chain goes on.
// A new ledger has 16 KiB pages.
func TestEventRowsTakeTheirHashFromTheRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	key := testKey(t)
	l, err := New(ctx, s, Options{Instance: "gh-1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	var evs []*Event
	for i := 0; i < 20; i++ {
		ev := stmtEvent(fmt.Sprintf("user%d@corp", i%3), "SELECT", "SELECT 1", nil, nil)
		if err := l.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pageSize, stored, withHash int
	if err := s.DB().QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil || pageSize != ledgerPageSize {
		t.Fatalf("page size %d (%v), want %d", pageSize, err, ledgerPageSize)
	}
	if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*), COUNT(NULLIF(hash, '')) FROM ledger_events WHERE type = 'statement'`).Scan(&stored, &withHash); err != nil {
		t.Fatal(err)
	}
	if stored != len(evs) || withHash != 0 {
		t.Fatalf("%d statement rows, %d with a hash column; want %d, 0", stored, withHash, len(evs))
	}
	// The last record, and the last one before the last statement's time + 1ns, as the
	// records say.
	last := evs[len(evs)-1]
	var top, before Event
	if err := s.Scan(ctx, "gh-1", 0, 0, func(se StoredEvent) error {
		ev, err := decodeBody(se.Body)
		if err != nil {
			return err
		}
		if top = ev; !ev.Time.After(last.Time) {
			before = ev
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if before.Seq < last.Seq || top.Hash == "" || before.Hash == "" {
		t.Fatalf("records read back: top %d %q, before %d %q", top.Seq, top.Hash, before.Seq, before.Hash)
	}
	seq, hash, err := s.Head(ctx, "gh-1")
	if err != nil || seq != top.Seq || hash != top.Hash {
		t.Fatalf("head %d %q (%v), want %d %q", seq, hash, err, top.Seq, top.Hash)
	}
	bseq, bhash, err := s.LastBefore(ctx, "gh-1", last.Time.Add(time.Nanosecond))
	if err != nil || bseq != before.Seq || bhash != before.Hash {
		t.Fatalf("last before: %d %q (%v), want %d %q", bseq, bhash, err, before.Seq, before.Hash)
	}
	// The chain goes on from the head read back, and verifies.
	l, err = New(ctx, s, Options{Instance: "gh-1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, stmtEvent("next@corp", "SELECT", "SELECT 2", nil, nil)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, StoreSource{Store: s}, l.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 {
		t.Fatalf("verify: %+v", rep.Problems)
	}
}

// TestTermGroupsOfRotatingIdentities: events that rotate over more identities than
// termGroupScan are summed into one group per identity and segment, not one per event.
func TestTermGroupsOfRotatingIdentities(t *testing.T) {
	var s termSet
	s.m = map[termKey]termBounds{}
	d := &eventIndex{tokens: []string{tokTable + "t"}}
	const subjects = 50
	for i := 0; i < 1000; i++ {
		ev := &Event{Subject: fmt.Sprintf("user%d@corp", i%subjects), Instance: "a", Type: EventStatement}
		s.add(int64(i%256), int64(i), ev, d)
	}
	if len(s.groups) != subjects {
		t.Fatalf("%d groups, want %d", len(s.groups), subjects)
	}
	s.expand()
	// Per subject: its own term; shared by all: *, @:a, y:statement and the table token.
	if len(s.m) != subjects+4 {
		t.Fatalf("%d terms, want %d", len(s.m), subjects+4)
	}
	if b := s.m[termKey{tokSubject + "user7@corp", 0}]; b.min != 7 || b.max != 957 {
		t.Fatalf("bounds of user7: %+v, want 7..957", b)
	}
	if b := s.m[termKey{termAll, 0}]; b.min != 0 || b.max != 999 {
		t.Fatalf("bounds of all: %+v, want 0..999", b)
	}
}
