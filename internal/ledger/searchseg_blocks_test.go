package ledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSearchWalksBlocksInTimeOrder: a search walks the blocks of segments by the times of
// their events, not their row ids, so events stored late with old times (in the newest
// block) are found in their place, newest first or oldest first. The reference is a scan
// of every event filtered in Go. (TestSQLitePlansUseIndexes pins the primary-key range
// each block reads its terms through.)
func TestSearchWalksBlocksInTimeOrder(t *testing.T) {
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	now := time.Now().UTC().Truncate(time.Hour)
	// Two blocks and a part of a third (65,536 row ids each), times rising with the ids.
	const n = 140000
	if err := s.LoadSynthetic(ctx, "synthetic", n, now); err != nil {
		t.Fatal(err)
	}
	// Then events stored late with old times, in the last block.
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{})
	old := now.Add(-80 * 24 * time.Hour)
	for i := 0; i < 300; i++ {
		ev := stmtEvent(fmt.Sprintf("late%d@corp", i%3), "SELECT", "SELECT email FROM public.customers WHERE id = ?", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
		ev.Time = old.Add(time.Duration(i) * 7 * time.Minute)
		ev.IdentityKind = []string{"human", "agent"}[i%2]
		record(t, l, ev)
	}
	var blocks int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_term_blocks`).Scan(&blocks); err != nil || blocks != 3 {
		t.Fatalf("blocks of segments: %d, %v", blocks, err)
	}
	var all []Event
	for _, inst := range []string{"synthetic", "gh-1"} {
		err := s.Scan(ctx, inst, 0, 0, func(se StoredEvent) error {
			ev, err := decodeBody(se.Body)
			if err != nil {
				return err
			}
			all = append(all, ev)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	match := func(q Query, ev *Event) bool {
		from, to := q.Range(now).bounds()
		ns := ev.Time.UnixNano()
		if ns < from || ns >= to || (q.Type != "" && ev.Type != q.Type) || (q.IdentityKind != "" && ev.IdentityKind != q.IdentityKind) ||
			(q.Identity != "" && ev.Subject != q.Identity) {
			return false
		}
		if q.Table != "" {
			for _, st := range ev.Statements {
				for _, tb := range append(st.TablesRead, st.TablesWritten...) {
					if strings.EqualFold(tb, q.Table) || strings.EqualFold(bareName(strings.ToLower(tb)), q.Table) {
						return true
					}
				}
			}
			return false
		}
		return true
	}
	day := 24 * time.Hour
	for i, q := range []Query{
		{Limit: 60},
		{To: old.Add(5 * time.Hour), Limit: 60},
		{From: old.Add(-time.Hour), To: old.Add(3 * time.Hour), Ascending: true, Limit: 500},
		{IdentityKind: "agent", Table: "customers", To: old.Add(20 * time.Hour), Limit: 51},
		{IdentityKind: "agent", Table: "customers", From: now.Add(-89 * day), Ascending: true, Limit: 120},
		{Identity: "late1@corp", Limit: 30},
		{Identity: "user44@corp.example", Limit: 40},
		{Type: EventStatement, From: now.Add(-45 * day), To: now.Add(-44 * day), Limit: MaxLimit},
	} {
		got, err := s.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var want []Event
		for j := range all {
			if match(q, &all[j]) {
				want = append(want, all[j])
			}
		}
		slices.SortFunc(want, func(a, b Event) int {
			c := cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Seq, b.Seq))
			if q.Ascending {
				return c
			}
			return -c
		})
		want = want[:min(len(want), q.limit())]
		ids := func(evs []Event) string {
			var sb strings.Builder
			for _, e := range evs {
				fmt.Fprintf(&sb, "%s/%d ", e.Instance, e.Seq)
			}
			return sb.String()
		}
		if len(want) == 0 {
			t.Fatalf("query %d (%+v) matches nothing: it checks nothing", i, q)
		}
		if ids(got) != ids(want) {
			t.Fatalf("query %d (%+v):\n got %s\nwant %s", i, q, ids(got), ids(want))
		}
	}
}
