package ledger

import (
	"context"
	"testing"
	"time"
)

// TestSearchVia finds the statements of one door: the newest N MCP events among many more
// wire-protocol ones, alone and with other filters, in both stores.
func TestSearchVia(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{})
		base := time.Now().Add(-time.Hour)
		for i := range 60 {
			ev := stmtEvent("agent-1", "SELECT", "SELECT * FROM customers", []string{"public.customers"}, nil)
			ev.Time = base.Add(time.Duration(i) * time.Second)
			ev.Via = "query"
			if i%10 == 3 {
				ev.Via, ev.ApplicationName = "mcp", "mcp:test/1 tool=query"
			}
			record(t, l, ev)
		}
		for _, tc := range []struct {
			name string
			q    Query
			want int
		}{
			{"all mcp", Query{Via: "mcp"}, 6},
			{"limited", Query{Via: "mcp", Limit: 2}, 2},
			{"with identity and table", Query{Via: "mcp", Identity: "agent-1", Table: "customers", Since: 24 * time.Hour}, 6},
			{"wire protocol", Query{Via: "query", Limit: 1000}, 54},
			{"none", Query{Via: "mcp", Identity: "someone-else"}, 0},
		} {
			evs, err := ts.Search(ctx, tc.q)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if len(evs) != tc.want {
				t.Errorf("%s: %d events, want %d", tc.name, len(evs), tc.want)
			}
			for i, ev := range evs {
				if ev.Via != tc.q.Via {
					t.Errorf("%s: event via %q", tc.name, ev.Via)
				}
				if i > 0 && ev.Time.After(evs[i-1].Time) {
					t.Errorf("%s: not newest first", tc.name)
				}
			}
			if tc.q.Via == "mcp" && len(evs) > 0 && !evs[0].Time.Equal(base.Add(53*time.Second)) {
				t.Errorf("%s: newest MCP event at %v, want %v", tc.name, evs[0].Time, base.Add(53*time.Second))
			}
		}
	})
}
