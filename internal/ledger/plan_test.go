package ledger

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSQLitePlansUseIndexes pins the index each auditor question and table search seeks
// with SQLite's sampled statistics (as a synthetic load leaves them): a wrong choice works
// but walks every row of a table at ten million events.
func TestSQLitePlansUseIndexes(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	if err := s.LoadSynthetic(ctx, "synthetic", 30000, now); err != nil {
		t.Fatal(err)
	}
	plan := func(q string, args ...any) string {
		t.Helper()
		rows, err := s.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("explain %s: %v", q, err)
		}
		defer rows.Close()
		var sb strings.Builder
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			sb.WriteString(detail + "\n")
		}
		return sb.String()
	}
	from, to := now.UnixNano(), now.Add(365*24*time.Hour).UnixNano()
	for _, tc := range []struct {
		name, table, want string
		sql               func(cond string) string
	}{
		{"who-dropped bare", "customers", "ledger_tables_drops", func(c string) string {
			return intentSQL(sqliteSQL, strings.ReplaceAll(fmt.Sprintf(whoDroppedSQL, c), "{NOIX}", "+"), "ledger_tables_drops")
		}},
		{"who-dropped qualified", "public.customers", "ledger_tables_drops", func(c string) string {
			return intentSQL(sqliteSQL, strings.ReplaceAll(fmt.Sprintf(whoDroppedSQL, c), "{NOIX}", "+"), "ledger_tables_drops")
		}},
		{"agents bare", "customers", "COVERING INDEX ledger_tables_agents", func(c string) string {
			return strings.Replace(fmt.Sprintf(agentsQueriedSQL, c), "{IX}", indexHint(sqliteSQL, "ledger_tables_agents"), 1)
		}},
		{"agents qualified", "public.customers", "ledger_tables_agents", func(c string) string {
			return strings.Replace(fmt.Sprintf(agentsQueriedSQL, c), "{IX}", indexHint(sqliteSQL, "ledger_tables_agents"), 1)
		}},
	} {
		alias := "d"
		if strings.HasPrefix(tc.name, "agents") {
			alias = ""
		}
		cond, args := tableMatch(alias, tc.table)
		got := plan(tc.sql(cond), append(args, from, to)...)
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: plan does not use %s:\n%s", tc.name, tc.want, got)
		}
	}
	// Searches: each term's segments of a block come from a range of the terms' primary
	// key, and each segment's events from a row id range of the events table.
	if got := plan(termsSQL, "n:customers", 0, 256, from, to); !strings.Contains(got, "USING PRIMARY KEY (term=? AND seg>? AND seg<?)") {
		t.Errorf("search terms: plan does not seek the term's segments of a block:\n%s", got)
	}
	for _, q := range []Query{
		{Table: "customers"}, {Table: "public.customers", Decision: "deny"}, {Class: "email", Decision: "deny"},
		{Decision: "deny"}, {Type: EventSessionStart}, {Identity: "user4*", IdentityKind: "agent"}, {Text: "customers", StatementKind: "SELECT"},
	} {
		p, empty, err := s.planSearch(ctx, q)
		if err != nil || empty {
			t.Fatalf("plan %+v: %v, empty %v", q, err, empty)
		}
		got := plan(p.eventsSQL(false), p.eventsArgs(3, from, to, 100)...)
		if !strings.Contains(got, "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)") {
			t.Errorf("search %+v: plan does not read a segment's row id range:\n%s", q, got)
		}
	}
}
