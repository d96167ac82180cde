package mask

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// TestErrorValueSensitive: a value quoted in an error may be sensitive only when a column it
// can come from is (by the catalog, or by name for a table the catalog has not seen).
func TestErrorValueSensitive(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	check := func(profile string, sts ...*inspect.Statement) *gate.Check {
		return &gate.Check{Statements: sts, Decision: gate.Decision{Action: gate.Allow, MaskProfile: profile}}
	}
	reads := func(tables ...string) *inspect.Statement {
		return &inspect.Statement{Kind: "SELECT", TablesRead: tables}
	}
	for _, tc := range []struct {
		name    string
		c       *gate.Check
		table   string
		columns []string
		want    bool
	}{
		{"statement over a sensitive table", check("", reads("customers")), "", nil, true},
		{"statement over an ordinary table", check("", reads("orders")), "", nil, false},
		{"statement over no table", check("", reads()), "", nil, false},
		{"statement over a table the catalog has not seen", check("", reads("made_since")), "", nil, true},
		{"raw profile", check(ProfileNone, reads("customers")), "", nil, false},
		{"copy from the client", check("", &inspect.Statement{Kind: "COPY", TablesWritten: []string{"customers"}}), "", nil, false},
		{"sensitive key column", check("", reads("orders")), "public.customers", []string{"email"}, true},
		{"ordinary key column", check("", reads("customers")), "public.customers", []string{"id"}, false},
		{"ordinary integer key of another table", check("", reads("customers")), "public.orders", []string{"customer_id"}, false},
		{"row of a sensitive table", check("", reads("orders")), "public.customers", nil, true},
		{"row of an ordinary table", check("", reads("customers")), "public.orders", nil, false},
		{"unknown table, sensitive column name", check("", reads()), "public.u", []string{"email"}, true},
		{"unknown table, ordinary column name", check("", reads()), "public.k", []string{"a"}, false},
		{"unknown table, whole row", check("", reads()), "public.k", nil, true},
		{"no statement yet", nil, "", nil, true},
	} {
		if got := h.planner.ErrorValueSensitive(ctx, h.session, tc.c, tc.table, tc.columns); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
