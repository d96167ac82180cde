package classify

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testkit"
	"github.com/jackc/pgx/v5"
)

func dsnConnector(dsn string) Connector {
	return func(ctx context.Context, target string) (*pgx.Conn, error) {
		if target != "fixture" {
			return nil, fmt.Errorf("unknown target %q", target)
		}
		return pgx.Connect(ctx, dsn)
	}
}

// TestCatalogFixture scans the labelled fixture on a real PostgreSQL and scores the
// classifier per class: precision (of the columns it labels X, how many are X) and recall (of
// the columns that are X, how many it labels X).
func TestCatalogFixture(t *testing.T) {
	pg := testkit.StartPostgres(t)
	fx := buildFixture(150)
	pg.Exec(t, "postgres", fx.sql)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cat := NewCatalog(dsnConnector(pg.DSN("postgres")), ScanOptions{SampleSize: 100}, map[string]map[string]string{
		"fixture": {"products.color": "address", "public.customers.notes": "none"},
	})
	cat.StaleWait = time.Minute // this test checks that a rescan after DDL is awaited
	snap, err := cat.Snapshot(ctx, "fixture")
	if err != nil {
		t.Fatalf("scan: %v", err)
	}

	// The planner statistics columns are located the way RowDescription names them.
	var statsOID uint32
	var statsAtt int16
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT attrelid::oid, attnum FROM pg_attribute WHERE attrelid = 'pg_catalog.pg_stats'::regclass AND attname = 'histogram_bounds'").Scan(&statsOID, &statsAtt); err != nil {
		t.Fatal(err)
	}
	if name, ok := snap.SampleColumn(statsOID, uint16(statsAtt)); !ok || name != "pg_catalog.pg_stats.histogram_bounds" {
		t.Errorf("pg_stats.histogram_bounds: %q %v", name, ok)
	}
	if _, ok := snap.SampleColumn(statsOID, 1); ok {
		t.Error("pg_stats.schemaname taken for a statistics column")
	}

	type score struct{ tp, fp, fn int }
	scores := map[Class]*score{}
	sc := func(c Class) *score {
		if scores[c] == nil {
			scores[c] = &score{}
		}
		return scores[c]
	}
	var falseSSNOrCard []string
	for _, e := range snap.Entries {
		if e.Override {
			continue
		}
		truth := fx.labels[e.Key()]
		got := Class("")
		if e.IsSensitive() {
			got = e.Class
		}
		switch {
		case truth != "" && got == truth:
			sc(truth).tp++
		default:
			if got != "" {
				sc(got).fp++
				t.Logf("false %s: %s (%s)", got, e.Key(), e.Evidence)
				if (got == SSN || got == Card) && truth == "" {
					falseSSNOrCard = append(falseSSNOrCard, e.Key())
				}
			}
			if truth != "" {
				sc(truth).fn++
				t.Logf("missed %s: %s (got %q: %s)", truth, e.Key(), got, e.Evidence)
			}
		}
	}
	var classes []Class
	for c := range scores {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	var tot score
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-12s %4s %4s %4s %9s %6s\n", "class", "tp", "fp", "fn", "precision", "recall")
	ratio := func(a, b int) float64 {
		if b == 0 {
			return 1
		}
		return float64(a) / float64(b)
	}
	for _, c := range classes {
		s := scores[c]
		tot.tp, tot.fp, tot.fn = tot.tp+s.tp, tot.fp+s.fp, tot.fn+s.fn
		fmt.Fprintf(&report, "%-12s %4d %4d %4d %9.2f %6.2f\n", c, s.tp, s.fp, s.fn, ratio(s.tp, s.tp+s.fp), ratio(s.tp, s.tp+s.fn))
	}
	precision, recall := ratio(tot.tp, tot.tp+tot.fp), ratio(tot.tp, tot.tp+tot.fn)
	fmt.Fprintf(&report, "%-12s %4d %4d %4d %9.2f %6.2f  (%d columns scanned)", "overall", tot.tp, tot.fp, tot.fn, precision, recall, len(snap.Entries))
	t.Log(report.String())
	if precision < 0.98 || recall < 0.98 {
		t.Errorf("precision %.3f (want ≥ 0.98), recall %.3f (want ≥ 0.98)", precision, recall)
	}
	if len(falseSSNOrCard) > 0 {
		t.Errorf("look-alikes labelled SSN or card: %v", falseSSNOrCard)
	}

	// Overrides win over detection.
	if e := snap.ByName("public.products", "color"); e == nil || e.Class != Address || !e.Override {
		t.Errorf("override to address: %+v", e)
	}
	if e := snap.ByName("public.customers", "notes"); e == nil || e.IsSensitive() {
		t.Errorf("override to none: %+v", e)
	}
	// The door's lookup: table OID + attribute number.
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT 'public.customers'::regclass::oid").Scan(&oid); err != nil {
		t.Fatal(err)
	}
	if e := snap.ByAttr(oid, 4); e == nil || e.Column != "email" || e.Class != Email {
		t.Errorf("ByAttr(customers, 4) = %+v", e)
	}
	// gate.Catalog: unqualified names resolve through the search path.
	got := cat.SensitiveClasses(ctx, "fixture", []string{"customers", "billing.payments", "deployments"})
	want := []string{"address", "card", "dob", "email", "iban", "name", "phone", "ssn"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("SensitiveClasses = %v, want %v", got, want)
	}
	if got := cat.SensitiveClasses(ctx, "fixture", []string{"deployments", "orders"}); len(got) != 0 {
		t.Errorf("look-alike tables have classes %v", got)
	}
	if got := cat.SensitiveClasses(ctx, "nosuch", []string{"customers"}); len(got) != 0 {
		t.Errorf("unknown target has classes %v", got)
	}

	// DDL: a new sensitive column appears after Invalidate, not before.
	pg.Exec(t, "postgres", "ALTER TABLE orders ADD COLUMN buyer_email text; UPDATE orders SET buyer_email = 'buyer' || id || '@example.com'")
	if got := cat.SensitiveClasses(ctx, "fixture", []string{"orders"}); len(got) != 0 {
		t.Fatalf("catalog rescanned without invalidation: %v", got)
	}
	cat.Invalidate("fixture")
	if got := cat.SensitiveClasses(ctx, "fixture", []string{"public.orders"}); strings.Join(got, ",") != "email" {
		t.Errorf("after invalidate: %v", got)
	}
	snap2, _ := cat.Snapshot(ctx, "fixture")
	if snap2.Generation <= snap.Generation {
		t.Errorf("generation did not advance: %d → %d", snap.Generation, snap2.Generation)
	}

	var buf bytes.Buffer
	if err := FormatCatalog(&buf, snap2.Sensitive()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{"COLUMN", "public.customers.email", "public.orders.buyer_email", "billing.payments.card_number", "override"} {
		if !strings.Contains(out, s) {
			t.Errorf("catalog listing lacks %q:\n%s", s, out)
		}
	}
	for _, e := range snap2.Sensitive() {
		if strings.Contains(out, "@example.com") {
			t.Errorf("listing shows a sampled value (%s)", e.Key())
			break
		}
	}
}

func TestCatalogUnreachableTarget(t *testing.T) {
	cat := NewCatalog(func(ctx context.Context, target string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=x password=y dbname=z sslmode=disable connect_timeout=2", testkit.FreePort(t)))
	}, ScanOptions{}, nil)
	ctx := context.Background()
	if _, err := cat.Snapshot(ctx, "down"); err == nil {
		t.Fatal("no error scanning an unreachable target")
	}
	start := time.Now()
	if got := cat.SensitiveClasses(ctx, "down", []string{"t"}); got != nil {
		t.Errorf("classes %v", got)
	}
	if time.Since(start) > time.Second {
		t.Errorf("a failed target was retried at once (%v)", time.Since(start))
	}
}

// TestCatalogSingleScanAndImpatientCallers: concurrent first uses share one scan, and a caller
// that gives up does not abort it for the others.
func TestCatalogSingleScanAndImpatientCallers(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE TABLE people (id int, email text, ssn text); INSERT INTO people VALUES (1, 'a@example.com', '123-45-6789')")
	pg.Exec(t, "postgres", `CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Leads" ("E-Mail" text); INSERT INTO "Sales"."Leads" VALUES ('x@example.com')`)
	// A table big enough to be sampled with TABLESAMPLE rather than read from its first pages.
	pg.Exec(t, "postgres", `CREATE TABLE events (id int, actor text, note text);
INSERT INTO events SELECT g, 'user' || g || '@example.com', 'n' || g FROM generate_series(1, 30000) g; ANALYZE events`)
	pg.Exec(t, "postgres", `CREATE TABLE logins (id int, client text, at date) PARTITION BY RANGE (at);
CREATE TABLE logins_2024 PARTITION OF logins FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE logins_2025 PARTITION OF logins FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO logins SELECT g, '10.1.' || (g % 250) || '.' || (g % 200 + 1), '2024-03-01'::date + g FROM generate_series(1, 500) g`)
	var mu sync.Mutex
	connects := 0
	cat := NewCatalog(func(ctx context.Context, target string) (*pgx.Conn, error) {
		mu.Lock()
		connects++
		mu.Unlock()
		time.Sleep(200 * time.Millisecond) // a slow upstream
		return pgx.Connect(ctx, pg.DSN("postgres"))
	}, ScanOptions{}, nil)

	impatient, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := cat.Snapshot(impatient, "t"); err == nil {
		t.Error("impatient caller got no error")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snap, err := cat.Snapshot(context.Background(), "t")
			if err == nil && snap.ByName("public.people", "ssn").Class != SSN {
				err = fmt.Errorf("ssn not classified: %+v", snap.ByName("public.people", "ssn"))
			}
			if e := snap.ByName("public.events", "actor"); err == nil && (e.Class != Email || !strings.Contains(e.Evidence, "sampled")) {
				err = fmt.Errorf("sampled big table: %+v", e)
			}
			if e := snap.ByName("public.logins_2025", "client"); err == nil && (e.Class != IP || !strings.Contains(e.Evidence, "partition of public.logins")) {
				err = fmt.Errorf("partition: %+v", e)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := cat.SensitiveClasses(context.Background(), "t", []string{"Sales.Leads"}); strings.Join(got, ",") != "email" {
		t.Errorf("mixed-case table: %v", got)
	}
	if got := cat.SensitiveClasses(context.Background(), "t", []string{`"Sales"."Leads"`, "PEOPLE"}); strings.Join(got, ",") != "email,ssn" {
		t.Errorf("quoted and upper-case names: %v", got)
	}
	if connects != 1 {
		t.Errorf("%d scans for one target, want 1", connects)
	}

	// After DDL the rescan is awaited only StaleWait; then the previous snapshot serves.
	cat.StaleWait = 20 * time.Millisecond
	first, _ := cat.Snapshot(context.Background(), "t")
	cat.Invalidate("t")
	start := time.Now()
	again, err := cat.Snapshot(context.Background(), "t")
	if err != nil || again.Generation != first.Generation || time.Since(start) > 150*time.Millisecond {
		t.Errorf("stale wait: gen %d→%d after %v, %v", first.Generation, again.Generation, time.Since(start), err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for again.Generation == first.Generation && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		again, _ = cat.Snapshot(context.Background(), "t")
	}
	if again.Generation == first.Generation {
		t.Error("the rescan after invalidation never landed")
	}

	// The periodic refresh picks up schema changes that did not pass through Gatehouse.
	pg.Exec(t, "postgres", "ALTER TABLE people ADD COLUMN mobile_phone text")
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { cat.Run(runCtx, 100*time.Millisecond); close(ran) }()
	found := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !found; time.Sleep(50 * time.Millisecond) {
		snap, _ := cat.Snapshot(context.Background(), "t")
		found = snap.ByName("public.people", "mobile_phone") != nil && snap.ByName("public.people", "mobile_phone").Class == Phone
	}
	stop()
	<-ran
	if !found {
		t.Error("periodic refresh did not pick up a new column")
	}
}

// TestConfigConnectorPerDatabase: table OIDs are per database, so another database on the
// same target gets its own catalog through a "database@target" key.
func TestConfigConnectorPerDatabase(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE other")
	pg.Exec(t, "other", "CREATE TABLE patients (id int, ssn text); INSERT INTO patients VALUES (1, '123-45-6789')")
	target := config.Target{Name: "pg", Host: pg.Host, Port: pg.Port, Database: "postgres", User: pg.User, Password: pg.Password}
	cat := NewCatalog(ConfigConnector([]config.Target{target}), ScanOptions{}, nil)
	ctx := context.Background()
	if k := TargetKey(&target, "other"); k != "other@pg" || TargetKey(&target, "postgres") != "pg" || TargetKey(&target, "") != "pg" {
		t.Fatalf("keys: %q", k)
	}
	if got := cat.SensitiveClasses(ctx, "other@pg", []string{"patients"}); strings.Join(got, ",") != "ssn" {
		t.Errorf("other database: %v", got)
	}
	if got := cat.SensitiveClasses(ctx, "pg", []string{"patients"}); len(got) != 0 {
		t.Errorf("default database sees another database's table: %v", got)
	}
	if _, err := cat.Snapshot(ctx, "nosuch"); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("unknown target: %v", err)
	}
}

func TestStatsColumn(t *testing.T) {
	for _, c := range []struct {
		table, column string
		want          bool
	}{
		{"pg_stats", "most_common_vals", true},
		{"pg_catalog.pg_stats", "histogram_bounds", true},
		{"public.pg_stats", "most_common_elems", true}, // lineage's name for an unknown unqualified relation
		{"pg_statistic", "stavalues5", true},
		{"pg_stats_ext_exprs", "histogram_bounds", true},
		{"pg_statistic_ext_data", "stxdmcv", true},
		{"pg_stats", "attname", false},
		{"pg_stats", "most_common_freqs", false},
		{"app.pg_stats", "most_common_vals", false},
		{"customers", "histogram_bounds", false},
	} {
		if got := StatsColumn(c.table, c.column); got != c.want {
			t.Errorf("StatsColumn(%q, %q) = %v", c.table, c.column, got)
		}
	}
}

// TestCatalogNotNull checks the nullability facts the gate uses to see that
// WHERE id IS NOT NULL restricts nothing on a NOT NULL column.
func TestCatalogNotNull(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", `
		CREATE SCHEMA s;
		CREATE TABLE s.t (id int PRIMARY KEY, a int NOT NULL, b int, "Mixed" int NOT NULL);
		CREATE VIEW public.v AS SELECT * FROM s.t;
		CREATE TABLE public.p (id int NOT NULL, note text) PARTITION BY RANGE (id);
		CREATE TABLE public.p1 PARTITION OF public.p FOR VALUES FROM (0) TO (10);`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cat := NewCatalog(dsnConnector(pg.DSN("postgres")), ScanOptions{SampleSize: 10}, nil)
	for _, c := range []struct {
		table string
		cols  []string
		want  bool
	}{
		{"s.t", []string{"id"}, true},
		{"s.t", []string{"id", "a"}, true},
		{"s.t", []string{"id", "b"}, false},
		{"s.t", []string{"Mixed"}, true},
		{"s.t", []string{"mixed"}, false},
		{"s.t", []string{"nosuch"}, false},
		{"s.t", nil, false},
		{"t", []string{"id"}, false}, // s is not on the search path
		{"v", []string{"id"}, false}, // a view's columns carry no NOT NULL
		{"p", []string{"id"}, true},
		{"p1", []string{"id"}, true},
		{"p", []string{"note"}, false},
		{"nosuch", []string{"id"}, false},
	} {
		if got := cat.NotNull(ctx, "fixture", c.table, c.cols); got != c.want {
			t.Errorf("NotNull(%s, %v) = %v, want %v", c.table, c.cols, got, c.want)
		}
	}
}

// TestCatalogScanSkipsLockedTables: a table locked by an open transaction (a migration's
// ALTER TABLE) does not stall the scan — which every statement waits for after DDL — until
// the table timeout; its columns are classified by name and the other tables as usual.
func TestCatalogScanSkipsLockedTables(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", `CREATE TABLE busy(email text); INSERT INTO busy VALUES ('a@example.com');
CREATE TABLE other(contact text); INSERT INTO other SELECT 'c' || g || '@example.com' FROM generate_series(1, 20) g`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	locker, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	if _, err := locker.Exec(ctx, "BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	// Without a lock timeout the sample of busy would wait for the whole table timeout,
	// and the scan outlive this test's context.
	cat := NewCatalog(dsnConnector(pg.DSN("postgres")), ScanOptions{TableTimeout: 10 * time.Minute}, nil)
	snap, err := cat.Refresh(ctx, "fixture")
	if err != nil {
		t.Fatalf("scan with a locked table: %v", err)
	}
	if e := snap.ByName("public.other", "contact"); e == nil || e.Class != Email {
		t.Errorf("other.contact = %+v, want email from its values", e)
	}
	if e := snap.ByName("public.busy", "email"); e == nil || e.Class != Email {
		t.Errorf("busy.email = %+v, want email from its name", e)
	}
}

// TestOverridesReachOtherDatabases: a target's column overrides (the policy's, applied to
// every target) also apply to the catalog of another database of the target, which a
// dbname=db@target session reads.
func TestOverridesReachOtherDatabases(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE shop")
	pg.Exec(t, "shop", "CREATE TABLE widgets(code text, email text); INSERT INTO widgets VALUES ('w-1', 'a@example.com')")
	connect := func(ctx context.Context, key string) (*pgx.Conn, error) {
		if key != "shop@fixture" {
			return nil, fmt.Errorf("unknown catalog %q", key)
		}
		return pgx.Connect(ctx, pg.DSN("shop"))
	}
	cat := NewCatalog(connect, ScanOptions{}, map[string]map[string]string{
		"fixture": {"public.widgets.code": Email, "widgets.email": "none"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap, err := cat.Snapshot(ctx, "shop@fixture")
	if err != nil {
		t.Fatal(err)
	}
	if e := snap.ByName("public.widgets", "code"); e == nil || e.Class != Email || !e.Override {
		t.Errorf("widgets.code = %+v, want the override to email", e)
	}
	if e := snap.ByName("public.widgets", "email"); e == nil || e.IsSensitive() || !e.Override {
		t.Errorf("widgets.email = %+v, want the override to none", e)
	}
}
