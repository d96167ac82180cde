package lineage

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

var schema = map[string][]string{
	"public.customers": {"id", "name", "email", "ssn", "notes"},
	"public.orders":    {"id", "customer_id", "order_number", "amount_cents"},
	"billing.cards":    {"id", "customer_id", "pan"},
}

func resolver(s, t string) (string, []string, bool) {
	if s == "" {
		s = "public"
	}
	q := s + "." + t
	cols, ok := schema[q]
	return q, cols, ok
}

func srcs(c Column) string {
	var s []string
	for _, x := range c.Sources {
		s = append(s, x.String())
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func TestLineage(t *testing.T) {
	cases := []struct {
		sql  string
		want []string // sources of each output column
	}{
		{"SELECT lower(email), email || '', substring(ssn, 1, 3), id FROM customers", []string{"public.customers.email", "public.customers.email", "public.customers.ssn", "public.customers.id"}},
		{"SELECT email::varchar(10), CAST(ssn AS text) FROM public.customers", []string{"public.customers.email", "public.customers.ssn"}},
		{"SELECT row_to_json(c) FROM customers c", []string{"public.customers.email,public.customers.id,public.customers.name,public.customers.notes,public.customers.ssn"}},
		{"SELECT to_jsonb(c.*) FROM customers AS c", []string{"public.customers.email,public.customers.id,public.customers.name,public.customers.notes,public.customers.ssn"}},
		{"SELECT c FROM customers c", []string{"public.customers.email,public.customers.id,public.customers.name,public.customers.notes,public.customers.ssn"}},
		{"SELECT c.* FROM customers c", []string{"public.customers.id", "public.customers.name", "public.customers.email", "public.customers.ssn", "public.customers.notes"}},
		{"SELECT string_agg(email, ',' ORDER BY name), array_agg(ssn), count(email) FROM customers", []string{"public.customers.email", "public.customers.ssn", ""}},
		{"SELECT x.e FROM (SELECT upper(email) AS e FROM customers) x", []string{"public.customers.email"}},
		{"WITH t AS (SELECT email AS mail FROM customers) SELECT 'a' || mail FROM t", []string{"public.customers.email"}},
		{"WITH t(m) AS (SELECT email FROM customers) SELECT m FROM t", []string{"public.customers.email"}},
		{"SELECT name FROM customers UNION ALL SELECT ssn FROM customers", []string{"public.customers.name,public.customers.ssn"}},
		{"SELECT o.order_number, c.email, k.pan FROM orders o JOIN customers c ON c.id = o.customer_id LEFT JOIN billing.cards k ON k.customer_id = c.id", []string{"public.orders.order_number", "public.customers.email", "billing.cards.pan"}},
		{"SELECT *, lower(email) FROM customers", []string{"public.customers.id", "public.customers.name", "public.customers.email", "public.customers.ssn", "public.customers.notes", "public.customers.email"}},
		{"UPDATE customers SET notes = 'x' WHERE id = 1 RETURNING email, id", []string{"public.customers.email", "public.customers.id"}},
		{"DELETE FROM customers RETURNING ssn", []string{"public.customers.ssn"}},
		{"INSERT INTO customers(email) VALUES ('a@b.co') RETURNING *", []string{"public.customers.id", "public.customers.name", "public.customers.email", "public.customers.ssn", "public.customers.notes"}},
		{"SELECT (SELECT email FROM customers c2 WHERE c2.id = o.customer_id) FROM orders o", []string{"public.customers.email"}},
		{"SELECT CASE WHEN id > 1 THEN email ELSE 'x' END, coalesce(ssn, '') FROM customers", []string{"public.customers.email,public.customers.id", "public.customers.ssn"}},
		{"SELECT u FROM customers, unnest(ARRAY[email, ssn]) AS u", []string{"public.customers.email,public.customers.ssn"}},
		{"SELECT jsonb_build_object('e', email) FROM customers", []string{"public.customers.email"}},
		{"SELECT email FROM mystery", []string{"public.mystery.email"}},
		{"SELECT m FROM mystery m", []string{"public.mystery.*,public.mystery.m"}},
		{"WITH RECURSIVE r(e, n) AS (SELECT email, 1 FROM customers UNION ALL SELECT e || 'x', n+1 FROM r WHERE n < 3) SELECT e FROM r", []string{"public.customers.email"}},
		{"DECLARE cur CURSOR FOR SELECT lower(ssn) FROM customers", []string{"public.customers.ssn"}},
		{"COPY (SELECT email FROM customers) TO STDOUT", []string{"public.customers.email"}},
		{"COPY customers (ssn, id) TO STDOUT", []string{"public.customers.ssn", "public.customers.id"}},
		{"SELECT exists(SELECT 1 FROM customers WHERE email = 'x'), email IS NULL FROM customers", []string{"", ""}},
	}
	for _, c := range cases {
		res, err := Analyze(c.sql, resolver)
		if err != nil {
			t.Errorf("%s: %v", c.sql, err)
			continue
		}
		if len(res) != 1 || res[0] == nil {
			t.Errorf("%s: results %v", c.sql, res)
			continue
		}
		got := res[0].Columns
		if len(got) != len(c.want) {
			t.Errorf("%s: %d columns %+v, want %d", c.sql, len(got), got, len(c.want))
			continue
		}
		for i := range got {
			if s := srcs(got[i]); s != c.want[i] {
				t.Errorf("%s: column %d (%s) sources %q, want %q", c.sql, i, got[i].Name, s, c.want[i])
			}
		}
	}
}

func TestLineageNamesAndNonResults(t *testing.T) {
	res, err := Analyze("SELECT lower(email), email AS e, id::text FROM customers; CREATE TABLE x(a int); INSERT INTO orders(id) VALUES (1)", resolver)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[1] != nil || res[2] != nil {
		t.Fatalf("results %+v", res)
	}
	var names []string
	for _, c := range res[0].Columns {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "lower,e,id" {
		t.Errorf("names %v", names)
	}
	if _, err := Analyze("SELEC nonsense", resolver); err == nil {
		t.Error("no error for unparseable SQL")
	}
	unknownStar, _ := Analyze("SELECT * FROM mystery", resolver)
	if unknownStar[0].Exact || srcs(unknownStar[0].Columns[0]) != "public.mystery.*" {
		t.Errorf("unknown star: %+v", unknownStar[0])
	}
}

func TestCache(t *testing.T) {
	c := NewCache(2)
	for i := 0; i < 5; i++ {
		r, err := c.Analyze("g1:SELECT email FROM customers", "SELECT email FROM customers", resolver)
		if err != nil || len(r) != 1 {
			t.Fatal(r, err)
		}
		_, _ = c.Analyze(string(rune('a'+i)), "SELECT 1", resolver)
	}
	if len(c.m) > 2 {
		t.Errorf("cache grew to %d", len(c.m))
	}
}

func BenchmarkAnalyze(b *testing.B) {
	sql := "SELECT o.order_number, lower(c.email), k.pan FROM orders o JOIN customers c ON c.id = o.customer_id LEFT JOIN billing.cards k ON k.customer_id = c.id WHERE o.amount_cents > 100"
	for b.Loop() {
		if _, err := Analyze(sql, resolver); err != nil {
			b.Fatal(err)
		}
	}
}

func TestLineageOddStatementsNeverPanic(t *testing.T) {
	stmts := []string{
		"VALUES (1, 'a'), (2, 'b')",
		"SELECT * FROM customers NATURAL JOIN orders",
		"SELECT * FROM customers c JOIN orders o USING (id)",
		"SELECT l.e FROM customers c, LATERAL (SELECT c.email AS e) l",
		"SELECT (c).email, (c).* FROM customers c",
		"SELECT * FROM json_to_recordset('[{\"a\":1}]') AS x(a int)",
		"SELECT * FROM ROWS FROM (generate_series(1,2), unnest(ARRAY['x'])) AS t(a, b)",
		"SELECT jt.* FROM customers c, JSON_TABLE(c.notes::jsonb, '$' COLUMNS (n text PATH '$.n')) jt",
		"SELECT email FROM customers TABLESAMPLE SYSTEM (10)",
		"SELECT ARRAY(SELECT ssn FROM customers)",
		"SELECT x FROM (VALUES (1)) v(x) WHERE EXISTS (SELECT 1)",
		"WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
		"MERGE INTO customers c USING orders o ON c.id = o.customer_id WHEN MATCHED THEN UPDATE SET notes = 'x'",
		"EXPLAIN SELECT email FROM customers",
		"SELECT $1::text, email FROM customers WHERE id = $2",
		"SELECT GROUPING(email), email FROM customers GROUP BY ROLLUP (email)",
		"SELECT email FROM customers FOR UPDATE",
		"TABLE customers",
		"SELECT * FROM (SELECT * FROM (SELECT * FROM customers) a) b",
	}
	for _, s := range stmts {
		if _, err := Analyze(s, resolver); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	res, _ := Analyze("TABLE customers", resolver)
	if len(res[0].Columns) != 5 {
		t.Errorf("TABLE customers: %+v", res[0])
	}
	res, _ = Analyze("SELECT l.e FROM customers c, LATERAL (SELECT c.email AS e) l", resolver)
	if srcs(res[0].Columns[0]) != "public.customers.email" {
		t.Errorf("lateral: %+v", res[0])
	}
	// Deep nesting is cut off, not followed into a stack overflow.
	deep := "SELECT email FROM customers"
	for i := 0; i < 300; i++ {
		deep = "SELECT * FROM (" + deep + ") s"
	}
	if res, err := Analyze(deep, resolver); err == nil && res[0] != nil && res[0].Exact {
		t.Error("300-deep nesting reported exact")
	}
}

func TestPreserved(t *testing.T) {
	cases := []struct {
		sql  string
		want []bool // Preserved of each output column
	}{
		{"SELECT email, lower(email), upper(email)::varchar(40), btrim(email), trim(both ' ' from email), initcap(name) FROM customers", []bool{true, true, true, true, true, true}},
		{"SELECT reverse(email), substring(ssn, 1, 3), email || '', concat(email, ''), md5(email), translate(ssn, '0', 'a') FROM customers", []bool{false, false, false, false, false, false}},
		{"SELECT overlay(email placing 'x' from 1 for 1), left(ssn, 3), replace(email, '@', ' at '), string_agg(email, ','), split_part(email, '@', 1) FROM customers", []bool{false, false, false, false, false}},
		{"SELECT coalesce(email, ''), nullif(ssn, ''), greatest(email, ''), CASE WHEN id > 0 THEN ssn ELSE 'x' END, CASE WHEN id > 0 THEN reverse(ssn) END FROM customers", []bool{true, true, true, true, false}},
		{"SELECT min(email), max(ssn), mode() WITHIN GROUP (ORDER BY email), mode() WITHIN GROUP (ORDER BY reverse(email)), lag(email) OVER (ORDER BY id), count(email) FROM customers", []bool{true, true, true, false, true, true}},
		{"SELECT array_agg(email), ARRAY[email, ssn], ROW(email, ssn), to_json(email), row_to_json(c), c, jsonb_build_object('e', email), jsonb_build_object('e', reverse(email)) FROM customers c", []bool{true, true, true, true, true, true, true, false}},
		{"SELECT x.e, x.r FROM (SELECT upper(email) AS e, reverse(email) AS r FROM customers) x", []bool{true, false}},
		{"WITH t AS (SELECT reverse(email) AS m, email FROM customers) SELECT * FROM t", []bool{false, true}},
		{"SELECT email FROM customers UNION SELECT reverse(ssn) FROM customers", []bool{false}},
		{"SELECT (SELECT email FROM customers LIMIT 1), (SELECT reverse(email) FROM customers LIMIT 1), ARRAY(SELECT ssn FROM customers)", []bool{true, false, true}},
		{"SELECT u FROM customers, unnest(ARRAY[email]) AS u", []bool{false}},
		{"SELECT (s.c).email FROM (SELECT c FROM customers c) s", []bool{true}},
		{"SELECT r FROM (SELECT reverse(email) AS r FROM customers) s(r)", []bool{false}},
		{"SELECT 'x' || 'y', now()::text, id + 1 FROM orders", []bool{true, true, false}},
		{"SELECT email FROM mystery", []bool{true}},
		{"SELECT m.x, reverse(m.y) FROM mystery m", []bool{true, false}},
	}
	for _, c := range cases {
		res, err := Analyze(c.sql, resolver)
		if err != nil {
			t.Errorf("%s: %v", c.sql, err)
			continue
		}
		got := res[0].Columns
		if len(got) != len(c.want) {
			t.Errorf("%s: %d columns, want %d", c.sql, len(got), len(c.want))
			continue
		}
		for i := range got {
			if got[i].Preserved != c.want[i] {
				t.Errorf("%s: column %d (%s) preserved %v, want %v", c.sql, i, got[i].Name, got[i].Preserved, c.want[i])
			}
		}
	}
}

// TestStarExpansions: what a `*` expands into is exact when the columns are known, and a
// single Star entry (never a column at a wrong position) when they are not.
func TestStarExpansions(t *testing.T) {
	type col struct {
		name, srcs string
		star       bool
	}
	cases := []struct {
		sql   string
		exact bool
		want  []col
	}{
		{"WITH s(a, b) AS (SELECT * FROM orders) SELECT * FROM s", true, []col{
			{"a", "public.orders.id", false}, {"b", "public.orders.customer_id", false},
			{"order_number", "public.orders.order_number", false}, {"amount_cents", "public.orders.amount_cents", false}}},
		{"SELECT (c).* FROM customers c", true, []col{
			{"id", "public.customers.id", false}, {"name", "public.customers.name", false}, {"email", "public.customers.email", false},
			{"ssn", "public.customers.ssn", false}, {"notes", "public.customers.notes", false}}},
		// A table the resolver does not know: renaming cannot place its columns one by one.
		{"WITH s(a, b, c) AS (SELECT * FROM mystery) SELECT * FROM s", false, []col{{"*", "public.mystery.*", true}}},
		{"WITH RECURSIVE d(level, id, name) AS (SELECT 1, * FROM mystery UNION ALL SELECT level + 1, m.* FROM mystery m, d WHERE m.parent = d.id) SELECT * FROM d", false, []col{
			{"level", "", false}, {"*", "public.mystery.*", true}}},
		{"WITH RECURSIVE d AS (SELECT name AS root, * FROM mystery UNION ALL SELECT d.root, m.* FROM mystery m, d WHERE m.parent = d.id) SELECT * FROM d", false, []col{
			{"root", "public.mystery.name", false}, {"*", "public.mystery.*", true}}},
		{"SELECT 1, * FROM mystery UNION ALL SELECT 2, 3 FROM orders", false, []col{
			{"?column?", "", false}, {"*", "public.mystery.*", true}}},
		{"WITH RECURSIVE s(f, t, label) AS (SELECT * FROM orders UNION ALL SELECT o.* FROM orders o, s WHERE o.id = s.t) SEARCH DEPTH FIRST BY f, t SET seq CYCLE f SET is_cycle USING path SELECT * FROM s", true, []col{
			{"f", "public.orders.id", false}, {"t", "public.orders.customer_id", false}, {"label", "public.orders.order_number", false},
			{"amount_cents", "public.orders.amount_cents", false}, {"seq", "public.orders.customer_id,public.orders.id", false},
			{"is_cycle", "", false}, {"path", "public.orders.id", false}}},
		{"SELECT 1 AS one, *, 2 AS two FROM mystery", false, []col{{"one", "", false}, {"*", "public.mystery.*", true}, {"two", "", false}}},
		// Functions in FROM without a column definition list: any width.
		{"SELECT * FROM json_populate_record(NULL::customers, (SELECT row_to_json(c) FROM customers c LIMIT 1))", false, []col{
			{"*", "public.customers.email,public.customers.id,public.customers.name,public.customers.notes,public.customers.ssn", true}}},
		{"SELECT p.* FROM customers c, json_populate_record(NULL::customers, row_to_json(c)) p", false, []col{
			{"*", "public.customers.email,public.customers.id,public.customers.name,public.customers.notes,public.customers.ssn", true}}},
		{"SELECT (u).* FROM (SELECT unnest(array_agg(c)) AS u FROM customers c) s", false, []col{
			{"*", "public.customers.email,public.customers.id,public.customers.name,public.customers.notes,public.customers.ssn", true}}},
		{"SELECT * FROM jsonb_to_recordset('[]') AS x(id int, email text)", true, []col{{"id", "", false}, {"email", "", false}}},
		{"SELECT x.e FROM ROWS FROM (unnest(ARRAY(SELECT email FROM customers))) AS x(e)", true, []col{{"e", "public.customers.email", false}}},
	}
	for _, c := range cases {
		res, err := Analyze(c.sql, resolver)
		if err != nil || len(res) != 1 || res[0] == nil {
			t.Errorf("%s: %v %v", c.sql, res, err)
			continue
		}
		var got []col
		for _, x := range res[0].Columns {
			got = append(got, col{x.Name, srcs(x), x.Star})
		}
		if res[0].Exact != c.exact || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s:\n got exact %v %v\nwant exact %v %v", c.sql, res[0].Exact, got, c.exact, c.want)
		}
	}
	res, _ := Analyze("WITH s(a, b, c) AS (SELECT * FROM mystery) SELECT * FROM s", resolver)
	if names := res[0].Columns[0].Names; strings.Join(names, ",") != "a,b,c" {
		t.Errorf("names of a renamed star: %v", names)
	}
}

func TestLiteral(t *testing.T) {
	res, err := Analyze("SELECT '(Joe,Blow)'::fullname, ROW('Joe', 'Blow'), $1 + 1, CASE WHEN true THEN 'a' END, email, lower('x'), (SELECT 1) FROM customers", resolver)
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, true, true, true, false, false, false}
	for i, c := range res[0].Columns {
		if c.Literal != want[i] {
			t.Errorf("column %d (%s): literal %v, want %v", i, c.Name, c.Literal, want[i])
		}
	}
}
