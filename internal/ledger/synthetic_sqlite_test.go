package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSQLiteSyntheticLoadMatchesIndexer loads a synthetic ledger twice: with the bulk load
// (batch sizes small enough that the events cross chunks, transactions and the term
// summer's pieces many times) into one store, and into another by appending the same
// events through the commit log (Append) and letting the indexer store and index them. The
// two stores must hold the same rows in every table (the events, their facets and text ids,
// the segment terms and their blocks, the side tables, every rollup and the running
// totals, the high-water mark), the same indexes and triggers, and answer searches and the
// auditor questions alike; the benchmarks over the bulk load measure the real thing.
func TestSQLiteSyntheticLoadMatchesIndexer(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	const n = 24_000
	bulk, _ := openTestSQLite(t)
	if err := bulk.loadSynthetic(ctx, "synthetic", n, now, syntheticSizes{chunk: 1000, perTx: 3, piece: 700}); err != nil {
		t.Fatal(err)
	}
	if err := bulk.LoadSynthetic(ctx, "synthetic", 10, now); err == nil {
		t.Fatal("a second load into the same chain was accepted")
	}
	appended, _ := openTestSQLite(t)
	base, step := syntheticSpan(n, now)
	var recs []Record
	nm := newSyntheticNames()
	for i := int64(1); i <= n; i++ {
		ev := syntheticEvent(nm, "synthetic", i, base, step)
		body, ok := appendCanonicalEvent(nil, ev)
		if !ok {
			t.Fatalf("encode event %d", i)
		}
		if recs = append(recs, Record{Event: ev, Body: body}); len(recs) == 500 || i == n {
			if err := appended.Append(ctx, recs, nil, CommitWritten); err != nil {
				t.Fatal(err)
			}
			recs = nil
		}
	}
	if err := appended.ix.sync(ctx); err != nil {
		t.Fatal(err)
	}

	// Every table but the FTS index's own (compared by queries below), the probe row the
	// commit log's retirement writes, when migrations ran and the planner's statistics.
	tables := func(s *SQLiteStore) []string {
		return queryStrings(t, s.db, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'ledger_text_fts%'
			AND name NOT IN ('ledger_probe', 'schema_migrations') ORDER BY name`)
	}
	names := tables(bulk)
	if got := tables(appended); !slices.Equal(names, got) {
		t.Fatalf("tables: bulk %v, appended %v", names, got)
	}
	for _, want := range []string{"ledger_events", "ledger_terms", "ledger_term_blocks", "ledger_class_agg", "ledger_class_daily", "ledger_class_run",
		"ledger_class_readers", "ledger_table_reads", "ledger_tables", "ledger_statements", "ledger_texts", "ledger_index_state"} {
		if !slices.Contains(names, want) {
			t.Errorf("no table %s to compare", want)
		}
	}
	for _, table := range names {
		q := `SELECT * FROM "` + table + `"`
		a, b := dumpRows(t, bulk.db, q), dumpRows(t, appended.db, q)
		if len(a) == 0 && table != "ledger_classes" && table != "ledger_checkpoints" && table != "ledger_backfill" {
			t.Errorf("%s: no rows (the comparison would prove nothing)", table)
		}
		if !slices.Equal(a, b) {
			t.Errorf("%s: bulk load %d rows, appended %d; first difference: %s", table, len(a), len(b), firstDiff(a, b))
		}
	}
	schema := `SELECT type || ' ' || name || ' ' || sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY name`
	if a, b := queryStrings(t, bulk.db, schema), queryStrings(t, appended.db, schema); !slices.Equal(a, b) {
		t.Errorf("indexes and triggers differ:\nbulk     %q\nappended %q", a, b)
	}
	// The full-text index of the statement texts: every word of them finds the same texts.
	words := map[string]bool{}
	for _, text := range queryStrings(t, bulk.db, `SELECT text FROM ledger_texts`) {
		for _, w := range regexp.MustCompile(`[A-Za-z0-9_]+`).FindAllString(text, -1) {
			words[strings.ToLower(w)] = true
		}
	}
	for w := range words {
		q := `SELECT rowid FROM ledger_text_fts WHERE ledger_text_fts MATCH '"` + w + `"' ORDER BY rowid`
		if a, b := queryStrings(t, bulk.db, q), queryStrings(t, appended.db, q); len(a) == 0 || !slices.Equal(a, b) {
			t.Errorf("full-text %q: bulk %v, appended %v", w, a, b)
		}
	}

	quarter := TimeRange{From: now.Add(-90 * 24 * time.Hour), To: now}
	for _, q := range []Query{{Limit: 50}, {Identity: "user44@corp.example", Limit: 20}, {IdentityKind: "agent", Table: "customers", Limit: 20},
		{Class: "pii", Decision: "deny", Limit: 20}, {Text: "t129 status", Limit: 20}, {StatementKind: "DROP TABLE"}} {
		a, err := bulk.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		b, err := appended.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(a) == 0 || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("search %+v: bulk %d events, appended %d", q, len(a), len(b))
		}
	}
	for name, ask := range map[string]func(Store) (any, error){
		"who dropped t7":      func(s Store) (any, error) { return s.WhoDropped(ctx, "t7", quarter) },
		"pii readers":         func(s Store) (any, error) { return s.PIIReaders(ctx, "pii", quarter) },
		"agents on customers": func(s Store) (any, error) { return s.AgentsQueried(ctx, "customers", quarter) },
		"readers of customers": func(s Store) (any, error) {
			return s.TableReaders(ctx, []TableClass{{"db0", "public.customers", "email"}}, quarter)
		},
		"pii readers, 30 days": func(s Store) (any, error) {
			return s.PIIReaders(ctx, "pii", TimeRange{From: now.Add(-30 * 24 * time.Hour), To: now})
		},
	} {
		a, err := ask(bulk)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ask(appended)
		if err != nil {
			t.Fatal(err)
		}
		if as := fmt.Sprint(a); as == "[]" || as != fmt.Sprint(b) {
			t.Errorf("%s: bulk %.300s, appended %.300s", name, as, fmt.Sprint(b))
		}
	}
}

// dumpRows returns every row of q as a line of its values, sorted.
func dumpRows(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out []string
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			fmt.Fprintf(&sb, "%s=%v|", cols[i], v)
		}
		out = append(out, sb.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func queryStrings(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("\n  bulk     %s\n  appended %s", a[i], b[i])
		}
	}
	if len(a) > len(b) {
		return "bulk has more: " + a[len(b)]
	}
	if len(b) > len(a) {
		return "appended has more: " + b[len(a)]
	}
	return "none"
}
