package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/store"
)

// TestUpgradeToSegmentTerms opens a ledger written at schema version 10 (per-event search
// index rows and full text, no segment terms): after the upgrade every search still finds
// its events, and the auditor questions still answer from the rows they had.
func TestUpgradeToSegmentTerms(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, SQLiteFile)
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db, "ledger", sqliteMigrations[:10]); err != nil {
		t.Fatal(err)
	}
	// Events as the version-10 indexer stored them.
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	const n = 3000 // more than one segment and one backfill batch
	for i := 1; i <= n; i++ {
		ev := stmtEvent(fmt.Sprintf("user%d@corp", i%7), "SELECT", fmt.Sprintf("SELECT id FROM public.t%d WHERE id = ?", i%5), []string{fmt.Sprintf("public.t%d", i%5)}, nil)
		switch {
		case i%100 == 0:
			ev = stmtEvent("dba@corp", "DROP TABLE", "DROP TABLE public.old", []string{"public.old"}, nil)
		case i%10 == 0:
			ev = stmtEvent("reader@corp", "SELECT", "SELECT email FROM public.customers", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
		}
		ev.Instance, ev.Seq, ev.Time, ev.SessionID = "old", int64(i), start.Add(time.Duration(i)*time.Second), fmt.Sprintf("s%d", i/50)
		ev.Hash = fmt.Sprintf("%064x", i)
		body, ok := appendCanonicalEvent(nil, ev)
		if !ok {
			t.Fatal("encode event")
		}
		ns := ev.Time.UnixNano()
		res, err := db.ExecContext(ctx, `INSERT INTO ledger_events(instance, seq, time_ns, type, subject, identity_kind, target, environment, decision, session, hash, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			ev.Instance, ev.Seq, ns, string(ev.Type), ev.Subject, ev.IdentityKind, ev.Target, ev.Environment, ev.Decision, ev.SessionID, ev.Hash, string(body))
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		tables, classes, stmts, text := indexRows(ev)
		for _, tr := range tables {
			mustExec(t, db, `INSERT INTO ledger_tables(instance, seq, time_ns, subject, identity_kind, decision, tbl, name, kind, category, access, type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				ev.Instance, ev.Seq, ns, ev.Subject, ev.IdentityKind, ev.Decision, tr.tbl, tr.name, tr.kind, tr.category, tr.access, string(ev.Type))
		}
		for _, c := range classes {
			mustExec(t, db, `INSERT INTO ledger_classes(instance, seq, time_ns, subject, identity_kind, decision, class, col, category, type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				ev.Instance, ev.Seq, ns, ev.Subject, ev.IdentityKind, ev.Decision, c.class, c.column, c.category, string(ev.Type))
			mustExec(t, db, classDailySQL(sqliteSQL), c.class, c.category, ev.Decision, floorDiv(ns, dayNS), ev.Subject, ev.IdentityKind, 1, ns, ns)
		}
		for _, st := range stmts {
			mustExec(t, db, `INSERT INTO ledger_statements(instance, seq, time_ns, kind, category, type) VALUES (?, ?, ?, ?, ?, ?)`, ev.Instance, ev.Seq, ns, st.kind, st.category, string(ev.Type))
		}
		mustExec(t, db, `INSERT INTO ledger_fts(rowid, text) VALUES (?, ?)`, id, text)
	}
	mustExec(t, db, `INSERT INTO ledger_index_state(instance, seq) VALUES ('old', ?)`, n)
	db.Close()

	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatalf("open a version-10 ledger: %v", err)
	}
	defer s.Close()
	// Recording goes on while the old events are backfilled.
	l, err := New(ctx, s, Options{Instance: "new", Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	late := stmtEvent("late@corp", "SELECT", "SELECT 1 FROM public.t3", []string{"public.t3"}, nil)
	late.Time = start.Add(time.Duration(n+1) * time.Second)
	record(t, l, late)
	count := func(q Query) int {
		t.Helper()
		q.Limit = MaxLimit
		evs, err := s.Search(ctx, q)
		if err != nil {
			t.Fatalf("search %+v: %v", q, err)
		}
		return len(evs)
	}
	for _, c := range []struct {
		q    Query
		want int
	}{
		{Query{}, n + 1},
		{Query{Table: "t3"}, 601},
		{Query{Table: "public.t3", Identity: "user3@corp"}, 86},
		{Query{Class: "email"}, 270},
		{Query{StatementKind: "DROP TABLE"}, 30},
		{Query{Text: "customers email"}, 270},
		{Query{Identity: "user*", From: start.Add(1000 * time.Second), To: start.Add(2000 * time.Second)}, 900},
	} {
		if got := count(c.q); got != c.want {
			t.Errorf("after the upgrade, search %+v finds %d events; want %d", c.q, got, c.want)
		}
	}
	evs, err := s.Search(ctx, Query{Instance: "old", Limit: 3})
	if err != nil || len(evs) != 3 || evs[0].Seq != n || evs[2].Seq != n-2 {
		t.Fatalf("newest 3 after the upgrade: %d events, %v", len(evs), err)
	}
	if drops, err := s.WhoDropped(ctx, "old", TimeRange{}); err != nil || len(drops) != 30 {
		t.Fatalf("who dropped old: %d, %v; want 30", len(drops), err)
	}
	if readers, err := s.PIIReaders(ctx, "email", TimeRange{}); err != nil || len(readers) != 1 || readers[0].Statements != 270 {
		t.Fatalf("email readers: %+v, %v", readers, err)
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
