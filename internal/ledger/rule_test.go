package ledger

import (
	"context"
	"testing"
	"time"
)

// Search by the policy rule that decided an event, on both stores, combined with the other
// filters and the limit.
func TestSearchRule(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{})
		base := time.Now().Add(-time.Hour)
		for i := range 40 {
			ev := stmtEvent("dana", "DELETE", "DELETE FROM customers", []string{"public.customers"}, nil)
			ev.Time = base.Add(time.Duration(i) * time.Second)
			ev.Decision, ev.Rule = "allow", "default"
			if i%8 == 5 {
				ev.Decision, ev.Rule = "deny", "no-unbounded-writes"
			}
			record(t, l, ev)
		}
		for _, tc := range []struct {
			name string
			q    Query
			want int
		}{
			{"by rule", Query{Rule: "no-unbounded-writes"}, 5},
			{"limited", Query{Rule: "no-unbounded-writes", Limit: 2}, 2},
			{"with table and decision", Query{Rule: "no-unbounded-writes", Table: "customers", Decision: "deny", Since: 24 * time.Hour}, 5},
			{"other rule", Query{Rule: "default", Limit: 1000}, 35},
			{"none", Query{Rule: "no-such-rule"}, 0},
		} {
			evs, err := ts.Search(ctx, tc.q)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if len(evs) != tc.want {
				t.Errorf("%s: %d events, want %d", tc.name, len(evs), tc.want)
			}
			for _, ev := range evs {
				if ev.Rule != tc.q.Rule {
					t.Errorf("%s: event rule %q", tc.name, ev.Rule)
				}
			}
		}
	})
}
