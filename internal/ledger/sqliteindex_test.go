package ledger

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestSQLiteIndexReadYourWrites: every search sees the events recorded before it, although
// the indexes are built after the commit.
func TestSQLiteIndexReadYourWrites(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := New(ctx, s, Options{Instance: "ryw", Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	for i := 1; i <= 25; i++ {
		who := fmt.Sprintf("u%d@corp", i)
		record(t, l, stmtEvent(who, "SELECT", "SELECT email FROM public.customers WHERE id = ?", []string{"public.customers"}, map[string]string{"public.customers.email": "email"}))
		evs, err := s.Search(ctx, Query{Identity: who, Table: "customers", Text: "email"})
		if err != nil || len(evs) != 1 {
			t.Fatalf("search right after recording event %d: %d events, %v; want 1", i, len(evs), err)
		}
		readers, err := s.PIIReaders(ctx, "email", TimeRange{})
		if err != nil || len(readers) != i {
			t.Fatalf("email readers after %d events: %d, %v", i, len(readers), err)
		}
	}
	var hwm int64
	if err := s.DB().QueryRowContext(ctx, `SELECT seq FROM ledger_index_state WHERE instance = 'ryw'`).Scan(&hwm); err != nil || hwm != 25 {
		t.Fatalf("index high-water mark %d, %v; want 25", hwm, err)
	}
}

// TestSQLiteIndexCatchesUpAfterCrash: events whose chain commit landed but whose index rows
// did not (a crash between the two) are indexed when the store opens again, by the indexer
// on its own and exactly once.
func TestSQLiteIndexCatchesUpAfterCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(ctx, s, Options{Instance: "crash", Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := 1; i <= n; i++ {
		ev := stmtEvent(fmt.Sprintf("u%d@corp", i%4), "SELECT", "SELECT email FROM public.customers", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
		if i%10 == 0 {
			ev = stmtEvent("dba@corp", "DROP TABLE", "DROP TABLE public.old", []string{"public.old"}, nil)
		}
		record(t, l, ev)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Put the file in the state a crash right after the chain commits leaves: chain
	// complete, no index rows, high-water mark behind.
	raw, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	raw.ix.stop(ctx) // keep this handle from indexing again
	for _, q := range []string{
		`UPDATE ledger_events SET facets = NULL, text_id = NULL`, `DELETE FROM ledger_terms`,
		`DELETE FROM ledger_tables`, `DELETE FROM ledger_classes`, `DELETE FROM ledger_statements`, `DELETE FROM ledger_class_daily`,
		`UPDATE ledger_index_state SET seq = 0`,
	} {
		if _, err := raw.DB().ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.DB().Close()

	s2, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	var hwm int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := s2.DB().QueryRowContext(ctx, `SELECT seq FROM ledger_index_state WHERE instance = 'crash'`).Scan(&hwm); err != nil {
			t.Fatal(err)
		}
		if hwm == n {
			break
		}
	}
	if hwm != n {
		t.Fatalf("after reopening, the indexer reached seq %d by itself; want %d", hwm, n)
	}
	drops, err := s2.WhoDropped(ctx, "old", TimeRange{})
	if err != nil || len(drops) != n/10 {
		t.Fatalf("who dropped old: %d, %v; want %d", len(drops), err, n/10)
	}
	readers, err := s2.PIIReaders(ctx, "email", TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, r := range readers {
		total += r.Statements
	}
	if total != n-n/10 {
		t.Fatalf("email reads counted %d times; want %d (each event indexed exactly once)", total, n-n/10)
	}
	if evs, err := s2.Search(ctx, Query{Text: "old", Limit: 100}); err != nil || len(evs) != n/10 {
		t.Fatalf("text search after catch-up: %d, %v; want %d", len(evs), err, n/10)
	}
	assertRollupAgrees(t, s2, TimeRange{})
}

// TestSQLiteIndexShapes: the indexer derives the index once per event shape and sums segment
// terms per group of like events. Events whose shapes differ in one fact each (type,
// identity kind, statement kind, text, table, access, sensitive column or class),
// interleaved over three identities in the same segments, are each found by exactly the
// searches that match them, and limited searches return the newest matches.
func TestSQLiteIndexShapes(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := New(ctx, s, Options{Instance: "shapes", Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	base := func(who string) *Event {
		return stmtEvent(who, "SELECT", "SELECT alpha FROM public.t1", []string{"public.t1"}, nil)
	}
	shapes := []struct {
		name string
		make func(who string) *Event
	}{
		{"plain", base},
		{"email", func(who string) *Event {
			return stmtEvent(who, "SELECT", "SELECT alpha FROM public.t1", []string{"public.t1"}, map[string]string{"public.t1.alpha": "email"})
		}},
		{"ssn", func(who string) *Event {
			return stmtEvent(who, "SELECT", "SELECT alpha FROM public.t1", []string{"public.t1"}, map[string]string{"public.t1.alpha": "ssn"})
		}},
		{"email-other-column", func(who string) *Event {
			return stmtEvent(who, "SELECT", "SELECT alpha FROM public.t1", []string{"public.t1"}, map[string]string{"public.t1.gamma": "email"})
		}},
		{"t2", func(who string) *Event {
			return stmtEvent(who, "SELECT", "SELECT alpha FROM public.t1", []string{"public.t2"}, nil)
		}},
		{"update", func(who string) *Event {
			return stmtEvent(who, "UPDATE", "SELECT alpha FROM public.t1", []string{"public.t1"}, nil)
		}},
		{"agent", func(who string) *Event { ev := base(who); ev.IdentityKind = "agent"; return ev }},
		{"beta", func(who string) *Event {
			return stmtEvent(who, "SELECT", "SELECT beta FROM public.t1", []string{"public.t1"}, nil)
		}},
		{"intent", func(who string) *Event { ev := base(who); ev.Type = EventStatementIntent; return ev }},
	}
	who := []string{"u0@corp", "u1@corp", "u2@corp"}
	seqs := map[string][]int64{} // per shape, and per shape and identity, in recording order
	for i := 0; i < 300; i++ {
		sh := shapes[(i*7)%len(shapes)]
		w := who[(i/5)%len(who)]
		ev := sh.make(w)
		record(t, l, ev)
		seqs[sh.name] = append(seqs[sh.name], ev.Seq)
		seqs[sh.name+"/"+w] = append(seqs[sh.name+"/"+w], ev.Seq)
	}
	want := func(keys ...string) []int64 {
		var out []int64
		for _, k := range keys {
			out = append(out, seqs[k]...)
		}
		slices.Sort(out)
		slices.Reverse(out)
		return out
	}
	for _, c := range []struct {
		q    Query
		want []int64
	}{
		{Query{Class: "email"}, want("email", "email-other-column")},
		{Query{Class: "ssn"}, want("ssn")},
		{Query{Class: "pii"}, want("email", "ssn", "email-other-column")},
		{Query{Table: "t2"}, want("t2")},
		{Query{Table: "public.t1", StatementKind: "UPDATE"}, want("update")},
		{Query{IdentityKind: "agent"}, want("agent")},
		{Query{Text: "beta"}, want("beta")},
		{Query{Text: "alpha", Category: "write"}, want("update")},
		{Query{Type: EventStatementIntent}, want("intent")},
		{Query{Identity: "u1@corp", Class: "email"}, want("email/u1@corp", "email-other-column/u1@corp")},
		{Query{Identity: "u2@corp", Table: "t1", IdentityKind: "human", Type: EventStatement}, want("plain/u2@corp", "email/u2@corp", "ssn/u2@corp", "email-other-column/u2@corp", "update/u2@corp", "beta/u2@corp")},
	} {
		for _, limit := range []int{1000, 5} {
			q := c.q
			q.Limit = limit
			evs, err := s.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]int64, len(evs))
			for i, ev := range evs {
				got[i] = ev.Seq
			}
			w := c.want[:min(limit, len(c.want))]
			if len(w) == 0 || !slices.Equal(got, w) {
				t.Errorf("search %+v: seqs %v, want %v", q, got, w)
			}
		}
	}
	readers, err := s.PIIReaders(ctx, "email", TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range readers {
		if n := int64(len(want("email/"+r.Subject, "email-other-column/"+r.Subject))); r.Statements != n {
			t.Errorf("email reads of %s: %d, want %d", r.Subject, r.Statements, n)
		}
	}
	if len(readers) != len(who) {
		t.Errorf("email readers: %d, want %d", len(readers), len(who))
	}
}

// TestSQLiteIndexBackpressure: recording faster than the indexer stores does not run into
// the hard limit of the commit log (which refuses records, failing closed): past a fifth of
// it, appends wait for the indexer, which stops gathering commits and stores at once.
func TestSQLiteIndexBackpressure(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.jr.maxPending = 500 // soft limit 100; sessions below add at most 32 per batch
	l, err := New(ctx, s, Options{Instance: "bp", Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	const sessions, each = 32, 100
	errs := make(chan error, sessions)
	for w := 0; w < sessions; w++ {
		go func() {
			for i := 0; i < each; i++ {
				if err := l.Record(ctx, stmtEvent(fmt.Sprintf("w%d@corp", w), "SELECT", "SELECT 1", nil, nil)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < sessions; w++ {
		if err := <-errs; err != nil {
			t.Fatalf("record while the indexer lags: %v", err)
		}
	}
	evs, err := s.Search(ctx, Query{Limit: MaxLimit})
	if err != nil || len(evs) != sessions*each {
		t.Fatalf("search: %d events, %v; want %d", len(evs), err, sessions*each)
	}
}
