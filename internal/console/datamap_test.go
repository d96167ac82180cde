package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
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
	c.tableReaders(ctx, targets, ledger.TimeRange{From: now.Add(-dataMapWindow), To: now})
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

// stubCatalog is a catalog whose scan finds the columns it is given.
type stubCatalog struct{ cols []classify.Entry }

func (s *stubCatalog) Snapshot(context.Context, string) (*classify.Snapshot, error) {
	return &classify.Snapshot{ScannedAt: time.Now(), Entries: s.cols}, nil
}

func (s *stubCatalog) Refresh(ctx context.Context, target string) (*classify.Snapshot, error) {
	return s.Snapshot(ctx, target)
}

// The data map's month of readers is counted once a minute, not for every view: a read
// recorded since shows once the counts are a minute old, or at once when a rescan found other
// sensitive columns (whose readers the counts lack).
func TestDataMapReadersReused(t *testing.T) {
	c, led := testConsole(t)
	ctx := context.Background()
	entry := func(table, column string) classify.Entry {
		e := classify.Entry{Schema: "public", Table: table, Column: column, Override: true}
		e.Class = "email"
		return e
	}
	cat := &stubCatalog{cols: []classify.Entry{entry("customers", "email")}}
	c.opts.Catalog, c.opts.Targets = cat, func() []string { return []string{"main"} }
	clock := time.Now()
	c.opts.Now = func() time.Time { return clock }
	read := func(table string) {
		t.Helper()
		ev := &ledger.Event{Type: ledger.EventStatement, Time: clock.Add(-time.Hour), Subject: "ann", IdentityKind: "human", Target: "main", Decision: "allow",
			Statements: []ledger.Statement{{Kind: "SELECT", Category: "read", Redacted: "SELECT email FROM " + table,
				TablesRead: []string{"public." + table}, Sensitive: map[string]string{"public." + table + ".email": "email"}}}}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// humans is the human readers cell of table's row: "identities (statements)".
	humans := func(table string) string {
		t.Helper()
		w := httptest.NewRecorder()
		c.dataMapPage(w, &viewer{session: viewerIn("auditors"), r: httptest.NewRequest(http.MethodGet, "/console/datamap", nil)})
		body := w.Body.String()
		row := `data-table="public.` + table + `" data-class="email">`
		i := strings.Index(body, row)
		if w.Code != http.StatusOK || i < 0 {
			t.Fatalf("data map: HTTP %d, no row for %s:\n%s", w.Code, table, body)
		}
		m := regexp.MustCompile(`<td class="human">([^<]*)</td>`).FindStringSubmatch(body[i:])
		return m[1]
	}
	read("customers")
	if got := humans("customers"); got != "1 (1)" {
		t.Fatalf("customers' human readers: %q, want 1 (1)", got)
	}
	read("customers")
	clock = clock.Add(dataMapTTL / 2)
	if got := humans("customers"); got != "1 (1)" {
		t.Fatalf("within a minute the counts are reused, got %q", got)
	}
	clock = clock.Add(dataMapTTL)
	if got := humans("customers"); got != "1 (2)" {
		t.Fatalf("a minute later the counts are new, got %q, want 1 (2)", got)
	}
	// A rescan that finds another sensitive column: counted at once.
	read("staff")
	read("customers")
	cat.cols = append(cat.cols, entry("staff", "email"))
	if got := humans("staff"); got != "1 (1)" {
		t.Fatalf("a newly found column's readers: %q, want 1 (1)", got)
	}
	if got := humans("customers"); got != "1 (3)" {
		t.Fatalf("recounted with it, customers' readers: %q, want 1 (3)", got)
	}
}
