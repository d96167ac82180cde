package inspect

import (
	"slices"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// TestWriteFlows checks which places each statement writes into, with which destination
// columns, and that the source query of each holds the written expressions (the lineage
// analysis ignores the conditions an INSERT's own query keeps) and no literal value.
func TestWriteFlows(t *testing.T) {
	type flow struct {
		kind, table string
		cols        []string
		isNew, temp bool
		target      string
		source      string // a fragment of Source
	}
	cases := []struct {
		sql   string
		flows []flow
	}{
		{"SELECT email FROM customers WHERE ssn = 'x'", nil},
		{"INSERT INTO t VALUES (1, 'secret'), ($1, $2)", nil},
		{"INSERT INTO t (a) VALUES (now())", nil},
		{"UPDATE t SET a = 'secret', b = $1 WHERE c = d", nil},
		{"DELETE FROM t WHERE email = 'x'", nil},
		{"INSERT INTO orders SELECT 900000000 + id, full_name || 'secret' FROM customers WHERE ssn = 'secret'",
			[]flow{{kind: "INSERT", table: "orders", source: "SELECT $1 + id, full_name || $2 FROM customers"}}},
		{"INSERT INTO t (a, b) VALUES (1, (SELECT ssn FROM customers WHERE id = 1))",
			[]flow{{kind: "INSERT", table: "t", cols: []string{"a", "b"}, source: "(SELECT ssn FROM customers"}}},
		{"UPDATE public.t x SET note = (SELECT ssn FROM c WHERE c.id = x.cid), n = 1 FROM o WHERE o.id = x.id",
			[]flow{{kind: "UPDATE", table: "public.t", cols: []string{"note"}, source: "FROM public.t x, o"}}},
		{"UPDATE t SET (a, b) = (SELECT 'x', email FROM customers LIMIT 1) WHERE id = 1",
			[]flow{{kind: "UPDATE", table: "t", cols: []string{"a", "b"}, source: "(SELECT email FROM customers LIMIT $"}}},
		{"UPDATE t SET (a, b) = (1, email) FROM customers WHERE t.id = customers.id",
			[]flow{{kind: "UPDATE", table: "t", cols: []string{"a", "b"}, source: "SELECT $1, email FROM t, customers"}}},
		{"CREATE TEMP TABLE laundry (x) AS SELECT full_name FROM customers",
			[]flow{{kind: "CREATE TABLE AS", table: "laundry", cols: []string{"x"}, isNew: true, temp: true, source: "SELECT full_name FROM customers"}}},
		{"CREATE TABLE l AS SELECT full_name FROM customers WITH NO DATA", nil},
		{"CREATE TABLE l AS EXECUTE p", []flow{{kind: "CREATE TABLE AS", table: "l", isNew: true}}},
		{"SELECT full_name INTO TEMP x FROM customers",
			[]flow{{kind: "SELECT INTO", table: "x", isNew: true, temp: true, source: "SELECT full_name FROM customers"}}},
		{"CREATE MATERIALIZED VIEW mv AS SELECT email FROM customers",
			[]flow{{kind: "CREATE MATERIALIZED VIEW", table: "mv", isNew: true, source: "SELECT email FROM customers"}}},
		{"CREATE OR REPLACE TEMP VIEW v (a) AS SELECT email FROM customers",
			[]flow{{kind: "CREATE VIEW", table: "v", cols: []string{"a"}, isNew: true, temp: true, source: "SELECT email FROM customers"}}},
		{"SELECT set_config('application_name', full_name || ' ' || phone, false) FROM customers c WHERE id = 1",
			[]flow{{kind: "set_config", target: "application_name", source: "SELECT (full_name || $1) || phone FROM customers c"}}},
		{"SELECT pg_catalog.set_config('x.y', (SELECT name FROM customers LIMIT 1), false)",
			[]flow{{kind: "set_config", target: "x.y", source: "SELECT (SELECT name FROM customers LIMIT $1)"}}},
		{"SELECT set_config('x.y', 'constant', false)", nil},
		{"SELECT setval('s', (SELECT id FROM customers LIMIT 1)), pg_notify('ch', email) FROM customers",
			[]flow{{kind: "setval", target: "s", source: "(SELECT id FROM customers LIMIT $1) FROM customers"}, {kind: "pg_notify", target: "ch", source: "SELECT email FROM customers"}}},
		{"WITH c AS (SELECT full_name FROM customers), d AS (INSERT INTO orders (product_code) SELECT full_name FROM c RETURNING 1) SELECT * FROM d",
			[]flow{{kind: "INSERT", table: "orders", cols: []string{"product_code"}, source: "WITH c AS (SELECT full_name FROM customers)"}}},
		{"MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN UPDATE SET product_code = c.phone WHEN NOT MATCHED THEN INSERT (order_number, product_code) VALUES (c.id, c.email)",
			[]flow{{kind: "MERGE", table: "orders", cols: []string{"product_code"}, source: "SELECT c.phone FROM orders o, customers c"},
				{kind: "MERGE", table: "orders", cols: []string{"order_number", "product_code"}, source: "SELECT c.id, c.email FROM orders o, customers c"}}},
		{"INSERT INTO customers (id, email) SELECT id + 1000, email FROM customers ON CONFLICT (id) DO UPDATE SET loyalty_tier = excluded.email",
			[]flow{{kind: "INSERT", table: "customers", cols: []string{"id", "email"}, source: "SELECT id + $1, email FROM customers"},
				{kind: "INSERT ON CONFLICT", table: "customers", cols: []string{"loyalty_tier"}, source: "SELECT excluded.email FROM customers, customers excluded"}}},
		{"ALTER TABLE customers ALTER COLUMN loyalty_tier TYPE text USING full_name",
			[]flow{{kind: "ALTER TABLE", table: "customers", cols: []string{"loyalty_tier"}, source: "SELECT full_name FROM customers"}}},
		{"ALTER TABLE customers ADD COLUMN x text GENERATED ALWAYS AS (full_name || phone) STORED",
			[]flow{{kind: "ALTER TABLE", table: "customers", cols: []string{"x"}, source: "SELECT full_name || phone FROM customers"}}},
		{"EXPLAIN ANALYZE CREATE TABLE z AS SELECT phone FROM customers",
			[]flow{{kind: "CREATE TABLE AS", table: "z", isNew: true, source: "SELECT phone FROM customers"}}},
		{"PREPARE p AS INSERT INTO o (pc) SELECT phone FROM customers WHERE id = $1",
			[]flow{{kind: "INSERT", table: "o", cols: []string{"pc"}, source: "SELECT phone FROM customers"}}},
		{"COPY (UPDATE t SET a = b WHERE id = 1 RETURNING id) TO STDOUT",
			[]flow{{kind: "UPDATE", table: "t", cols: []string{"a"}, source: "SELECT b FROM t"}}},
	}
	in := New(0)
	for _, tc := range cases {
		sts := in.Inspect(tc.sql)
		if len(sts) != 1 {
			t.Fatalf("%q: %d statements", tc.sql, len(sts))
		}
		got := sts[0].Writes
		if len(got) != len(tc.flows) {
			t.Errorf("%q: %d flows %+v, want %d", tc.sql, len(got), got, len(tc.flows))
			continue
		}
		for i, w := range tc.flows {
			g := got[i]
			if g.Kind != w.kind || g.Table != w.table || !slices.Equal(g.Columns, w.cols) || g.New != w.isNew || g.Temp != w.temp || g.Target != w.target {
				t.Errorf("%q: flow %d = %+v, want %+v", tc.sql, i, g, w)
			}
			if !strings.Contains(g.Source, w.source) || (w.source == "") != (g.Source == "") {
				t.Errorf("%q: flow %d source %q, want it to hold %q", tc.sql, i, g.Source, w.source)
			}
			if strings.Contains(g.Source, "secret") {
				t.Errorf("%q: flow %d source %q holds a literal", tc.sql, i, g.Source)
			}
			if g.Source != "" {
				if _, err := pg_query.Parse(g.Source); err != nil {
					t.Errorf("%q: flow %d source %q does not parse: %v", tc.sql, i, g.Source, err)
				}
			}
		}
	}
}

// TestWriteFlowsShareShapes: texts that differ only in literals share their flows through
// the shape cache, and no flow carries a literal of either text.
func TestWriteFlowsShareShapes(t *testing.T) {
	in := New(100)
	a := in.Inspect("UPDATE t SET a = b || 'first' WHERE id = 1")[0]
	b := in.Inspect("UPDATE t SET a = b || 'second' WHERE id = 2")[0]
	if len(a.Writes) != 1 || len(b.Writes) != 1 || a.Writes[0].Source != b.Writes[0].Source || strings.Contains(a.Writes[0].Source, "first") {
		t.Fatalf("flows %+v and %+v", a.Writes, b.Writes)
	}
}
