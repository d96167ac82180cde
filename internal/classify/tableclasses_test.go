package classify

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

// TestTableClassesCacheAgrees: the snapshot's remembered answers are the ones computed
// afresh, for every way a statement names its tables (unqualified, qualified, quoted, mixed
// case, unknown, several at once, repeated), on the first ask and the next ones; and a
// rescan after DDL answers with the new columns, not the remembered ones.
func TestTableClassesCacheAgrees(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", `
		CREATE SCHEMA sales;
		CREATE TABLE customers (id int PRIMARY KEY, email text, ssn text, note text);
		INSERT INTO customers SELECT i, 'user' || i || '@example.com', '123-45-' || lpad(i::text, 4, '0'), 'n' FROM generate_series(1, 50) i;
		CREATE TABLE sales.orders (id int, customer_email text, amount int);
		INSERT INTO sales.orders SELECT i, 'buyer' || i || '@example.org', i FROM generate_series(1, 50) i;
		CREATE TABLE "Mixed" (id int, email text);
		CREATE TABLE plain (id int, amount int);`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cat := NewCatalog(dsnConnector(pg.DSN("postgres")), ScanOptions{SampleSize: 50}, nil)
	cat.StaleWait = time.Minute
	snap, err := cat.Snapshot(ctx, "fixture")
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	lists := [][]string{
		{"customers"}, {"public.customers"}, {"CUSTOMERS"}, {`"customers"`}, {"sales.orders"}, {"orders"},
		{"Mixed"}, {"mixed"}, {"plain"}, {"nosuch"}, {"customers", "sales.orders"}, {"sales.orders", "customers"},
		{"customers", "customers"}, {"plain", "Mixed"}, {"customers\x00sales.orders"},
	}
	sensitive := 0
	for round := 0; round < 3; round++ {
		for _, tables := range lists {
			got, want := snap.TableClasses(tables), snap.tableClasses(tables)
			if !maps.Equal(got, want) {
				t.Errorf("round %d, %q: remembered %v, computed %v", round, tables, got, want)
			}
			if round == 0 && len(want) > 0 {
				sensitive++
			}
		}
	}
	if sensitive < 5 {
		t.Fatalf("only %d table lists with sensitive columns: the fixture did not classify", sensitive)
	}
	if got := cat.SensitiveColumns(ctx, "fixture", []string{"customers"}); got["public.customers.email"] == "" || got["public.customers.ssn"] == "" {
		t.Fatalf("customers: %v", got)
	}
	if got := cat.SensitiveColumns(ctx, "fixture", []string{"plain"}); got != nil {
		t.Fatalf("plain holds nothing sensitive, got %v", got)
	}

	// DDL, then the gate's invalidation: the next answer comes from the rescan.
	pg.Exec(t, "postgres", `ALTER TABLE plain ADD COLUMN contact_email text; UPDATE plain SET contact_email = 'x@example.com'`)
	pg.Exec(t, "postgres", `INSERT INTO plain SELECT i, i, 'p' || i || '@example.net' FROM generate_series(1, 50) i`)
	cat.Invalidate("fixture")
	got := cat.SensitiveColumns(ctx, "fixture", []string{"plain"})
	if got["public.plain.contact_email"] == "" {
		t.Fatalf("after the rescan, plain: %v", got)
	}
	next, _ := cat.Snapshot(ctx, "fixture")
	if next == snap || !maps.Equal(next.TableClasses([]string{"plain"}), next.tableClasses([]string{"plain"})) {
		t.Fatal("the rescan's snapshot does not answer afresh")
	}
}

// TestTableClassesCacheBounded: made-up table names stop being remembered at the bound, and
// are still answered.
func TestTableClassesCacheBounded(t *testing.T) {
	snap := &Snapshot{Entries: []Entry{{Schema: "public", Table: "t", Column: "email", Classification: Classification{Class: Email, Confidence: 1}}}}
	snap.index()
	for i := 0; i < maxCachedTableLists+100; i++ {
		snap.TableClasses([]string{"made_up_" + string(rune('a'+i%26)) + time.Duration(i).String()})
	}
	if n := snap.classesLen.Load(); n != maxCachedTableLists {
		t.Fatalf("%d lists remembered, want %d", n, maxCachedTableLists)
	}
	if got := snap.TableClasses([]string{"t"}); got["public.t.email"] != Email {
		t.Fatalf("past the bound: %v", got)
	}
}
