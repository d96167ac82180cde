package gate_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/mask"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

const launderSchema = `
CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text, ssn text, phone text,
  date_of_birth date, notes text, score int);
CREATE TABLE orders (id int, customer_id int, order_number text, amount_cents bigint);
CREATE VIEW contacts AS SELECT id, email AS mail FROM customers;
CREATE SEQUENCE seq;
INSERT INTO customers VALUES
 (1, 'Johanna Smithers', 'johanna.smithers@example.com', '287-65-4321', '+14155550172', '1984-03-07', 'none', 10),
 (2, 'Pedro Alvarez', 'pedro.alvarez@example.net', '512-43-8765', '+442079460958', '1990-11-30', 'call back', 20),
 (3, 'Mia Wong', 'mia.wong@example.com', '601-22-3344', '+16505550123', '1975-01-15', NULL, 30);
INSERT INTO orders VALUES (1, 1, 'A-1', 1999), (2, 2, 'A-2', 4500);
`

// TestNoCopyOfMaskedValues decides statements of a masked and a raw session against a real
// catalog of a throwaway PostgreSQL: writes whose values derive from a masked class are
// refused unless the destination column has that class; conditions, counts and same-class
// copies pass; the compliance group copies freely.
func TestNoCopyOfMaskedValues(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", launderSchema)
	ctx := context.Background()
	g, led := newGate(t)
	cat := classify.NewCatalog(func(ctx context.Context, target string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, pg.DSN("postgres"))
	}, classify.ScanOptions{}, nil)
	m, err := mask.NewMasker([]byte("0123456789abcdef-test-key"))
	if err != nil {
		t.Fatal(err)
	}
	g.Catalog, g.Masker = cat, mask.NewPlanner(cat, m, nil, nil)
	snap, err := cat.Snapshot(ctx, "db-dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"full_name", "email", "ssn", "phone", "date_of_birth"} {
		if e := snap.ByName("public.customers", col); e == nil || !e.IsSensitive() {
			t.Fatalf("fixture: customers.%s is not classified sensitive: %+v", col, e)
		}
	}
	if e := snap.ByName("public.customers", "notes"); e == nil || e.IsSensitive() {
		t.Fatalf("fixture: customers.notes is classified sensitive: %+v", e)
	}

	masked := session("dev", identity.Human, "dba")
	raw := session("dev", identity.Human, "dba", "compliance")
	for _, s := range []*gate.Session{masked, raw} {
		if d, err := g.OpenSession(ctx, s); err != nil || d.Action != gate.Allow || s.AccessLevel != "admin" {
			t.Fatalf("open: %+v %v", d, err)
		}
	}

	refused := map[string]string{ // statement → what the message must name
		"INSERT INTO orders (id, order_number) SELECT id, full_name FROM customers":                                                          "public.customers.full_name",
		"INSERT INTO orders SELECT id, id, phone, 1 FROM customers":                                                                          "public.orders.order_number",
		"INSERT INTO orders (order_number) VALUES ((SELECT ssn FROM customers WHERE id = 1))":                                                "public.customers.ssn",
		"INSERT INTO orders (order_number) SELECT row_to_json(c)::text FROM customers c":                                                     "public.customers.",
		"INSERT INTO orders (order_number) SELECT mail FROM contacts":                                                                        "class email",
		"UPDATE orders SET order_number = c.phone FROM customers c WHERE c.id = orders.customer_id":                                          "public.customers.phone",
		"UPDATE customers SET notes = (SELECT ssn FROM customers c2 WHERE c2.id = customers.id) WHERE id = 1":                                "public.customers.notes, which is not classified",
		"UPDATE customers SET email = full_name WHERE id = 1":                                                                                "public.customers.email, which is classified as email",
		"UPDATE customers SET (notes, score) = (SELECT date_of_birth::text, 1 FROM customers c2 WHERE c2.id = 1) WHERE id = 2":               "date_of_birth",
		"WITH x AS (INSERT INTO orders (order_number) SELECT email FROM customers RETURNING id) SELECT * FROM x":                             "public.customers.email",
		"MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN NOT MATCHED THEN INSERT (id, order_number) VALUES (c.id, c.ssn)": "public.customers.ssn",
		"INSERT INTO customers (id, email) SELECT id + 10, email FROM customers ON CONFLICT (id) DO UPDATE SET notes = excluded.email":       "public.customers.notes",
		"CREATE TABLE t1 AS SELECT full_name FROM customers":                                                                                 "the new table t1",
		"SELECT date_of_birth INTO TEMP t2 FROM customers":                                                                                   "the new table t2",
		"CREATE MATERIALIZED VIEW mv AS SELECT phone FROM customers":                                                                         "the new view mv",
		"CREATE VIEW v AS SELECT full_name FROM customers":                                                                                   "the new view v",
		"ALTER TABLE customers ALTER COLUMN notes TYPE text USING full_name":                                                                 "public.customers.notes",
		"ALTER TABLE customers ADD COLUMN x text GENERATED ALWAYS AS (phone) STORED":                                                         "public.customers.x, which the catalog does not know",
		"SELECT set_config('x.y', (SELECT full_name FROM customers LIMIT 1), false)":                                                         `the setting "x.y"`,
		"SELECT setval('seq', length(full_name)) FROM customers WHERE id = 1":                                                                `the sequence "seq"`,
		"SELECT pg_notify('c', full_name) FROM customers":                                                                                    `channel "c"`,
	}
	allowed := []string{
		"UPDATE customers SET email = lower(email) WHERE id = 1",
		"UPDATE customers SET full_name = initcap(full_name), phone = phone WHERE id = 1",
		"INSERT INTO orders (customer_id) SELECT id FROM customers WHERE email = $1",
		"UPDATE orders SET amount_cents = 0 FROM customers c WHERE c.id = orders.customer_id AND c.ssn = $1",
		"INSERT INTO orders (order_number) SELECT count(email)::text FROM customers",
		"INSERT INTO customers (id, email, ssn) SELECT id + 10, email, ssn FROM customers",
		"INSERT INTO customers SELECT * FROM customers",
		"INSERT INTO orders VALUES (1, 2, 'x', 3)",
		"INSERT INTO orders (order_number) SELECT notes FROM customers WHERE EXISTS (SELECT 1 FROM customers c WHERE c.ssn = $1)",
		"CREATE TABLE t3 AS SELECT id, notes FROM customers WHERE email LIKE 'a%'",
		"CREATE TABLE t4 AS SELECT full_name FROM customers WITH NO DATA",
		"SELECT set_config('application_name', 'n=' || count(*)::text, false) FROM customers",
		"SELECT email, ssn FROM customers",
		"ALTER TABLE customers ADD COLUMN y int GENERATED ALWAYS AS (score * 2) STORED",
	}
	for sql, want := range refused {
		c := g.Check(ctx, masked, sql, gate.ViaQuery)
		if c.Allowed() || c.Decision.Rule != gate.RuleNoMaskedCopy || !strings.Contains(c.DenyMessage(), want) ||
			!strings.Contains(c.DenyMessage(), "raw access") {
			t.Errorf("masked %q: want refused naming %q, got %s %q", sql, want, c.Decision.Action, c.DenyMessage())
		}
		if err := g.Done(ctx, masked, c, gate.Outcome{SQLState: "42501", Error: c.DenyMessage()}); err != nil {
			t.Fatal(err)
		}
		if c := g.Check(ctx, raw, sql, gate.ViaQuery); !c.Allowed() {
			t.Errorf("raw %q: %s", sql, c.DenyMessage())
		}
	}
	for _, sql := range allowed {
		if c := g.Check(ctx, masked, sql, gate.ViaQuery); !c.Allowed() {
			t.Errorf("masked %q: refused: %s", sql, c.DenyMessage())
		}
	}
	// The prepared statement's EXECUTE is decided as what it runs.
	if c := g.Check(ctx, raw, "PREPARE p AS INSERT INTO orders (order_number) SELECT phone FROM customers", gate.ViaQuery); !c.Allowed() {
		t.Fatalf("raw PREPARE: %s", c.DenyMessage())
	}
	if c := g.Check(ctx, raw, "EXECUTE p", gate.ViaQuery); !c.Allowed() {
		t.Fatalf("raw EXECUTE: %s", c.DenyMessage())
	}
	evs, err := led.Store().Search(ctx, ledger.Query{Decision: "deny", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Rule == gate.RuleNoMaskedCopy {
			n++
		}
	}
	if n != len(refused) {
		t.Fatalf("%d refusals on record, want %d", n, len(refused))
	}
}
