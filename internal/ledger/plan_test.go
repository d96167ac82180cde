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
			return strings.ReplaceAll(fmt.Sprintf(whoDroppedSQL, c), "{NOIX}", "+")
		}},
		{"who-dropped qualified", "public.customers", "ledger_tables_drops", func(c string) string {
			return strings.ReplaceAll(fmt.Sprintf(whoDroppedSQL, c), "{NOIX}", "+")
		}},
		{"agents bare", "customers", "COVERING INDEX ledger_tables_agents", func(c string) string {
			return fmt.Sprintf(agentsQueriedSQL, c)
		}},
		{"agents qualified", "public.customers", "ledger_tables_agents", func(c string) string {
			return fmt.Sprintf(agentsQueriedSQL, c)
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
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{Table: "customers"}, "INDEX ledger_tables_name ("},
		{Query{Table: "public.customers"}, "INDEX ledger_tables_name ("},
		{Query{Table: "customers", Decision: "deny"}, "INDEX ledger_tables_decision ("},
		{Query{Class: "email", Decision: "deny"}, "INDEX ledger_classes_decision ("},
		{Query{Decision: "deny"}, "INDEX ledger_events_decision ("},
		{Query{Type: EventSessionStart}, "INDEX ledger_events_type ("},
	} {
		q, want := tc.q, tc.want
		sql, args, err := buildSearch(sqliteSQL, q, now)
		if err != nil {
			t.Fatal(err)
		}
		got := plan(sql, args...)
		// A sort of ties on time (LAST TERM) is fine; a sort of every match is not.
		if !strings.Contains(got, want) || strings.Contains(got, "TEMP B-TREE FOR ORDER BY") {
			t.Errorf("search %+v: plan does not walk %s in time order:\n%s", q, want, got)
		}
	}
}
