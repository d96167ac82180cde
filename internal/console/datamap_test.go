package console

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// The data map counts a read for a table and class only when the statement read a column of
// that table with that class, per identity kind: distinct identities and statements.
func TestTableReaders(t *testing.T) {
	c, led := testConsole(t)
	ctx := context.Background()
	now := time.Now()
	rec := func(subject, kind, target string, sensitive map[string]string) {
		t.Helper()
		ev := &ledger.Event{Type: ledger.EventStatement, Time: now.Add(-time.Hour), Subject: subject, IdentityKind: kind, Target: target, Decision: "allow",
			Statements: []ledger.Statement{{Kind: "SELECT", Category: "read", Redacted: "SELECT 1", Sensitive: sensitive}}}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	rec("ann", "human", "main", map[string]string{"public.customers.email": "email"})
	rec("ann", "human", "main", map[string]string{"public.customers.email": "email", "public.staff.phone": "phone"})
	rec("bo", "human", "main", map[string]string{"public.customers.email": "email"})
	rec("bot", "agent", "main", map[string]string{"public.staff.email": "email"})
	rec("ann", "human", "other", map[string]string{"public.customers.email": "email"})

	col := func(table, column string, class classify.Class) dataMapColumn {
		e := classify.Entry{Schema: "public", Table: table, Column: column}
		e.Class = class
		return dataMapColumn{Entry: e}
	}
	targets := []dataMapTarget{{Name: "main", Columns: []dataMapColumn{col("customers", "email", "email"), col("staff", "email", "email"), col("staff", "phone", "phone")}}}
	c.tableReaders(ctx, targets, map[string]bool{"email": true, "phone": true}, ledger.TimeRange{From: now.Add(-dataMapWindow), To: now})
	got := map[string]tableReaders{}
	for _, tr := range targets[0].Tables {
		got[tr.Table+" "+tr.Class] = tr
	}
	if len(got) != 3 {
		t.Fatalf("tables: %+v", targets[0].Tables)
	}
	if tr := got["public.customers email"]; tr.People["human"] != 2 || tr.Statements["human"] != 3 || tr.People["agent"] != 0 {
		t.Errorf("customers email: %+v", tr)
	}
	if tr := got["public.staff email"]; tr.People["agent"] != 1 || tr.Statements["agent"] != 1 || tr.People["human"] != 0 {
		t.Errorf("staff email: %+v", tr)
	}
	if tr := got["public.staff phone"]; tr.People["human"] != 1 || tr.Statements["human"] != 1 {
		t.Errorf("staff phone: %+v", tr)
	}
}
