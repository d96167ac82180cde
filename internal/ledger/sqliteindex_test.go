package ledger

import (
	"context"
	"database/sql"
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
		`DELETE FROM ledger_class_agg`, `DELETE FROM ledger_class_run`, `DELETE FROM ledger_class_readers`,
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

// piiReadersByScan is the reference answer of PIIReaders for completed statements: every
// event of every chain decoded, its class rows derived as the indexer derives them, and
// counted when they read class in tr. The SQLite store keeps no per-event rows for those
// (index_agg.go), so its answer is checked against this.
func piiReadersByScan(t *testing.T, st Store, class string, tr TimeRange) []IdentityCount {
	t.Helper()
	ctx := context.Background()
	from, to := tr.bounds()
	insts, err := st.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[[2]string]*IdentityCount{}
	for _, inst := range insts {
		err := st.Scan(ctx, inst, 0, 0, func(se StoredEvent) error {
			ev, err := decodeBody(se.Body)
			if err != nil {
				return err
			}
			ns := ev.Time.UnixNano()
			if ev.Type != EventStatement || ev.Decision != "allow" || ns < from || ns >= to {
				return nil
			}
			_, classes, _, _ := indexRows(&ev)
			for _, c := range classes {
				if c.class != class || c.category != "read" {
					continue
				}
				k := [2]string{ev.Subject, ev.IdentityKind}
				tm := ev.Time.UTC()
				ic := counts[k]
				if ic == nil {
					counts[k] = &IdentityCount{Subject: ev.Subject, IdentityKind: ev.IdentityKind, Statements: 1, First: tm, Last: tm}
					continue
				}
				ic.Statements++
				if tm.Before(ic.First) {
					ic.First = tm
				}
				if tm.After(ic.Last) {
					ic.Last = tm
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var out []IdentityCount
	for _, ic := range counts {
		out = append(out, *ic)
	}
	slices.SortFunc(out, func(a, b IdentityCount) int {
		if a.Statements != b.Statements {
			return int(b.Statements - a.Statements)
		}
		if a.Subject != b.Subject {
			if a.Subject < b.Subject {
				return -1
			}
			return 1
		}
		if a.IdentityKind < b.IdentityKind {
			return -1
		}
		if a.IdentityKind > b.IdentityKind {
			return 1
		}
		return 0
	})
	return out
}

// TestClassCountsPerSecond: the SQLite store counts completed sensitive reads per second
// (index_agg.go) and answers who read personal data exactly for any range — whole days,
// whole seconds and the partial seconds at its ends — also after retention cut the
// chain in the middle of a second that some identity's reads straddle.
func TestClassCountsPerSecond(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := &testStore{Store: s, dir: dir}
	l := newLedger(t, ts, Options{CheckpointEvery: 7})
	// 300 reads 230 ms apart (about 69 s) around midnight three days ago, by three
	// identities, every 5th refused, every 4th a write; then some a day later.
	day0 := time.Now().UTC().Truncate(24 * time.Hour).Add(-3 * 24 * time.Hour)
	start := day0.Add(-30 * time.Second)
	var times []time.Time
	for i := 0; i < 300; i++ {
		kind := "SELECT"
		if i%4 == 3 {
			kind = "UPDATE"
		}
		ev := stmtEvent(fmt.Sprintf("u%d@corp", i%3), kind, "SELECT email FROM public.customers WHERE id = ?", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
		ev.Time = start.Add(time.Duration(i) * 230 * time.Millisecond)
		if i%5 == 4 {
			ev.Decision = "deny"
		}
		if i >= 250 {
			ev.Time = ev.Time.Add(24 * time.Hour)
		}
		times = append(times, ev.Time)
		record(t, l, ev)
	}
	check := func(when string) {
		t.Helper()
		ranges := []TimeRange{
			{},
			{From: start, To: start.Add(5 * 24 * time.Hour)},
			{From: start.Add(1500 * time.Millisecond), To: day0.Add(3*time.Second + 700*time.Millisecond)},
			{From: day0.Add(-10*time.Second - 100*time.Millisecond), To: day0.Add(24*time.Hour + 5*time.Second + 1)},
			{From: times[40].Add(-time.Nanosecond), To: times[41].Add(time.Nanosecond)},
			{From: times[100], To: times[100]},
			{From: times[10].Add(-300 * time.Millisecond)},
			{To: times[200].Add(10 * time.Millisecond)},
		}
		for _, tr := range ranges {
			for _, class := range []string{"pii", "email"} {
				got, err := s.PIIReaders(ctx, class, tr)
				if err != nil {
					t.Fatal(err)
				}
				want := piiReadersByScan(t, s, class, tr)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s: readers of %s in %v..%v:\n got %+v\nwant %+v", when, class, tr.From, tr.To, got, want)
				}
			}
		}
		var total int64
		all, _ := s.PIIReaders(ctx, "pii", TimeRange{})
		for _, ic := range all {
			total += ic.Statements
		}
		if total == 0 {
			t.Fatalf("%s: no reads counted", when)
		}
	}
	check("recorded")
	// Retention through the event at times[57] (between two reads of one second).
	if _, err := l.Retain(ctx, times[57].Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.PIIReaders(ctx, "pii", TimeRange{To: times[57].Add(time.Millisecond)}); len(got) != 0 {
		t.Errorf("readers before the retention cut: %+v; want none", got)
	}
	check("after retention")
}

// TestStoreBatchesStoredBefore: the indexer stores events several per INSERT with row ids
// of its own; a batch holding events stored before (the commit log replayed after a crash)
// falls back to storing row by row, skips those, and every event is stored and found once.
func TestStoreBatchesStoredBefore(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var rows []eventRow
	for i := 0; i < 50; i++ {
		ev := stmtEvent(fmt.Sprintf("u%d@corp", i%4), "SELECT", "SELECT email FROM public.customers WHERE id = ?", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
		ev.Instance, ev.Seq, ev.Time = "replay", int64(i+1), start.Add(time.Duration(i)*time.Second)
		ev.SessionID, ev.Hash = "s1", fmt.Sprintf("%064x", i)
		body, ok := appendCanonicalEvent(nil, ev)
		if !ok {
			t.Fatal("encode event")
		}
		rows = append(rows, rowOf(ev, body))
	}
	x := s.ix
	x.mu.Lock()
	// Seqs 14..21 stored without their index, as opening a store stores a crashed writer's
	// commit log.
	err = func() error {
		tx, err := s.DB().BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := storeLogged(ctx, func(q string) (*sql.Stmt, error) { return tx.PrepareContext(ctx, q) }, rows[13:21], nil); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if err == nil {
		err = x.storeBatches(ctx, []logBatch{{rows: rows[:30]}}) // 14..21 stored before
	}
	if err == nil {
		err = x.storeBatches(ctx, []logBatch{{rows: rows[25:]}}) // 26..30 stored before
	}
	x.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var n, distinct int
	if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT seq) FROM ledger_events WHERE instance = 'replay'`).Scan(&n, &distinct); err != nil || n != 50 || distinct != 50 {
		t.Fatalf("events stored: %d (%d distinct), %v; want 50", n, distinct, err)
	}
	evs, err := s.Search(ctx, Query{Class: "email", Limit: MaxLimit})
	if err != nil || len(evs) != 50 {
		t.Fatalf("search after the replays: %d events, %v; want 50", len(evs), err)
	}
	for i, ev := range evs {
		if ev.Seq != int64(50-i) {
			t.Fatalf("search result %d is seq %d; want %d", i, ev.Seq, 50-i)
		}
	}
	got, err := s.PIIReaders(ctx, "email", TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	if want := piiReadersByScan(t, s, "email", TimeRange{}); fmt.Sprint(got) != fmt.Sprint(want) || len(got) != 4 || got[0].Statements+got[1].Statements+got[2].Statements+got[3].Statements != 50 {
		t.Fatalf("email readers after the replays:\n got %+v\nwant %+v", got, want)
	}
}
