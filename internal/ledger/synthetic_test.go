package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

// TestPostgresSyntheticLoadKeepsIndexes checks that the PostgreSQL synthetic load, which
// drops the secondary indexes and turns autovacuum off for its duration, leaves the store
// with every index and with autovacuum on, and that its events are all there and found, newest
// first, through the rebuilt full-text index.
func TestPostgresSyntheticLoadKeepsIndexes(t *testing.T) {
	pg := testkit.StartPostgres(t)
	ctx := context.Background()
	s, err := OpenPostgres(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	state := func() (indexes []string, options int) {
		t.Helper()
		rows, err := s.pool.Query(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var def string
			if err := rows.Scan(&def); err != nil {
				t.Fatal(err)
			}
			indexes = append(indexes, def)
		}
		if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND reloptions IS NOT NULL`).Scan(&options); err != nil {
			t.Fatal(err)
		}
		return indexes, options
	}
	before, _ := state()
	now := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	if err := s.LoadSynthetic(ctx, "synthetic", 5000, now); err != nil {
		t.Fatal(err)
	}
	after, options := state()
	if len(after) != len(before) || len(after) < 20 {
		t.Fatalf("indexes after the load: %d, before: %d", len(after), len(before))
	}
	for i := range before {
		if before[i] != after[i] {
			t.Errorf("index %d changed: %s -> %s", i, before[i], after[i])
		}
	}
	if options != 0 {
		t.Errorf("%d tables keep storage options (autovacuum off?) after the load", options)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM ledger_events WHERE instance = 'synthetic'`).Scan(&n); err != nil || n != 5000 {
		t.Fatalf("events loaded: %d, %v", n, err)
	}
	evs, err := s.Search(ctx, Query{Text: "t129 status", Limit: 3})
	// "t129 status": the UPDATEs of t129, every 500th event from 129 on.
	if err != nil || len(evs) != 3 || evs[0].Seq != 4629 || evs[1].Seq != 4129 || evs[2].Seq != 3629 {
		t.Fatalf("text search after the load: %+v, %v", evs, err)
	}
}
