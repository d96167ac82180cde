package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// tableReadersBySearch counts what TableReaders counts the way the console's data map did
// before the rollup: a search of the statement events of each class in the range (the test
// fails if one could have been cut by the search's limit), counting the sensitive columns
// each statement recorded.
func tableReadersBySearch(t *testing.T, st Store, keys []TableClass, tr TimeRange) []TableReader {
	t.Helper()
	ctx := context.Background()
	want := map[TableClass]bool{}
	classes := map[string]bool{}
	for _, k := range keys {
		want[k], classes[k.Class] = true, true
	}
	type rk struct {
		TableClass
		subject, kind string
	}
	counts := map[rk]int64{}
	for class := range classes {
		evs, err := st.Search(ctx, Query{Type: EventStatement, Class: class, From: tr.From, To: tr.To, Limit: MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == MaxLimit {
			t.Fatalf("class %s: %d events or more in %v..%v: the search is capped", class, MaxLimit, tr.From, tr.To)
		}
		for _, e := range evs {
			for _, s := range e.Statements {
				for col, cl := range s.Sensitive {
					k := TableClass{e.Target, tableOfColumn(col), cl}
					if cl == class && want[k] {
						counts[rk{k, e.Subject, e.IdentityKind}]++
					}
				}
			}
		}
	}
	var out []TableReader
	for k, n := range counts {
		out = append(out, TableReader{TableClass: k.TableClass, Subject: k.subject, IdentityKind: k.kind, Statements: n})
	}
	sortTableReaders(out)
	return out
}

func sortTableReaders(rs []TableReader) {
	// The order TableReaders returns.
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && tableReaderLess(rs[j], rs[j-1]); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

func tableReaderLess(a, b TableReader) bool {
	for _, c := range [][2]string{{a.Target, b.Target}, {a.Table, b.Table}, {a.Class, b.Class}, {a.IdentityKind, b.IdentityKind}, {a.Subject, b.Subject}} {
		if c[0] != c[1] {
			return c[0] < c[1]
		}
	}
	return false
}

// assertTableReaders checks TableReaders against the search over each range.
func assertTableReaders(t *testing.T, st Store, keys []TableClass, ranges []TimeRange) (total int64) {
	t.Helper()
	for _, tr := range ranges {
		got, err := st.TableReaders(context.Background(), keys, tr)
		if err != nil {
			t.Fatal(err)
		}
		want := tableReadersBySearch(t, st, keys, tr)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("readers in %v..%v:\n got %+v\nwant %+v", tr.From, tr.To, got, want)
		}
		for _, r := range got {
			total += r.Statements
		}
	}
	return total
}

// TestTableReadersMatchSearchOnSyntheticLoad: on a synthetic ledger of each store (its
// rollup written by the load: the indexer's for SQLite, SQL for PostgreSQL), the readers of
// tables per class over whole and partial hours are what a search of the events counts.
func TestTableReadersMatchSearchOnSyntheticLoad(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		now := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
		// Every 7th event reads an email column: 4,285 of them, under a search's limit.
		if err := ts.LoadSynthetic(ctx, "synthetic", 30000, now); err != nil {
			t.Fatal(err)
		}
		var keys []TableClass
		for _, x := range []int{0, 7, 14, 3} {
			// Event i reads table t(i % 500) of target db(i % 20): every table of a target.
			tables := []string{"public.customers", "customers"}
			for j := x; j < 500; j += 20 {
				tables = append(tables, fmt.Sprintf("public.t%d", j))
			}
			for _, table := range tables {
				keys = append(keys, TableClass{fmt.Sprintf("db%d", x), table, "email"}, TableClass{fmt.Sprintf("db%d", x), table, "phone"})
			}
		}
		day := 24 * time.Hour
		ranges := []TimeRange{
			{From: now.Add(-30 * day), To: now},
			{From: now.Add(-91 * day), To: now.Add(day)},
			{From: now.Add(-30*day - 17*time.Minute - 3), To: now.Add(-5*time.Hour + 41*time.Minute + 7)},
			{From: now.Add(-40*day + 3*time.Minute), To: now.Add(-40*day + 50*time.Minute)},
			{From: now.Add(-40*day + 3*time.Minute), To: now.Add(-40*day + 70*time.Minute)},
			{To: now.Add(-80*day + 30*time.Minute)},
		}
		if n := assertTableReaders(t, ts.Store, keys, ranges); n == 0 {
			t.Fatal("no reads counted: the test checks nothing")
		}
	})
}

// TestTableReadersRecordedAndRetained: events recorded through the ledger (several
// sensitive columns per statement, refusals, intents, several targets) are counted as the
// search counts them over partial hours, after retention cut the chain inside an hour, and
// the rollup the schema migration builds from stored events is the one the indexer kept.
func TestTableReadersRecordedAndRetained(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{})
		base := time.Now().UTC().Truncate(time.Hour).Add(-5 * time.Hour)
		for i := 0; i < 240; i++ {
			sens := map[string]string{"public.customers.email": "email"}
			switch i % 4 {
			case 1:
				sens["public.customers.phone"] = "phone"
				sens["public.customers.alt_email"] = "email"
			case 2:
				sens = map[string]string{"public.staff.email": "email", "staff.email": "email"}
			case 3:
				sens = nil
			}
			ev := stmtEvent(fmt.Sprintf("u%d@corp", i%6), "SELECT", "SELECT email FROM public.customers WHERE id = ?", []string{"public.customers"}, sens)
			ev.Time = base.Add(time.Duration(i) * 30 * time.Second) // each reader's row repeats twice an hour
			ev.Target = []string{"prod-db", "stage-db"}[i%5/4]
			if i%3 == 0 {
				ev.IdentityKind = "agent"
			}
			if i%11 == 0 {
				ev.Decision = "deny"
			}
			if i%13 == 0 {
				ev.Type = EventStatementIntent
			}
			record(t, l, ev)
		}
		var keys []TableClass
		for _, target := range []string{"prod-db", "stage-db"} {
			for _, table := range []string{"public.customers", "public.staff", "staff"} {
				keys = append(keys, TableClass{target, table, "email"}, TableClass{target, table, "phone"})
			}
		}
		ranges := []TimeRange{
			{From: base, To: base.Add(2 * time.Hour)},
			{From: base.Add(-time.Hour), To: base.Add(3 * time.Hour)},
			{From: base.Add(7 * time.Minute), To: base.Add(time.Hour + 31*time.Minute + 1)},
			{From: base.Add(time.Hour + 7*time.Minute), To: base.Add(time.Hour + 31*time.Minute)},
			{},
		}
		if n := assertTableReaders(t, ts.Store, keys, ranges); n == 0 {
			t.Fatal("no reads counted: the test checks nothing")
		}
		rollup := func() string {
			t.Helper()
			var rows []string
			err := ts.Store.(runner).queryRows(ctx, `SELECT `+tableReadsColumns+` FROM ledger_table_reads ORDER BY target, tbl, class, hour, identity_kind, subject, instance`, nil,
				func(scan func(...any) error) error {
					var a, b, c, e, f, g string
					var h, n, lo, hi int64
					if err := scan(&a, &b, &c, &h, &e, &f, &g, &n, &lo, &hi); err != nil {
						return err
					}
					rows = append(rows, fmt.Sprint(a, b, c, h, e, f, g, n, lo, hi))
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(rows)
		}
		kept := rollup()
		backfill := tableReadsBackfillSQL
		if _, ok := ts.Store.(*PostgresStore); ok {
			backfill = tableReadsPostgresBackfillSQL
		}
		ts.exec(t, `DELETE FROM ledger_table_reads`)
		ts.exec(t, backfill)
		if built := rollup(); built != kept {
			t.Fatalf("the migration's rollup differs from the indexer's:\n built %s\n kept  %s", built, kept)
		}
		// Retention cuts inside an hour whose rows straddle the cut.
		if _, err := l.Retain(ctx, base.Add(52*time.Minute+13*time.Second)); err != nil {
			t.Fatal(err)
		}
		assertTableReaders(t, ts.Store, keys, ranges)
		retained := rollup()
		if retained == kept {
			t.Fatal("retention changed nothing: the test checks nothing")
		}
		ts.exec(t, `DELETE FROM ledger_table_reads`)
		ts.exec(t, backfill)
		if built := rollup(); built != retained {
			t.Fatalf("after retention, the rollup differs from one built from the events kept:\n built    %s\n retained %s", built, retained)
		}
	})
}
