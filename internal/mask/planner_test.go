package mask

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/testkit"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const schemaSQL = `
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, phone text, dob date,
  card_number text, ip inet, notes text, tags text[], profile jsonb, score int, card_pan bigint);
CREATE TABLE orders (id int, customer_id int, order_number text, amount_cents bigint);
CREATE VIEW v_contacts AS SELECT id, email AS mail, lower(ssn) AS s FROM customers;
INSERT INTO customers VALUES
 (1, 'Johanna Smithers', 'johanna.smithers@example.com', '287-65-4321', '+14155550172', '1984-03-07', '4111111111111111', '192.168.77.20',
  'asked to email backup address zed.backup@example.org', '{johanna.smithers@example.com,other}', '{"email":"johanna.smithers@example.com","vip":true}', 10, 4111111111111111),
 (2, 'Pedro Alvarez', 'pedro.alvarez@example.net', '512-43-8765', '+442079460958', '1990-11-30', '5555555555554444', '10.20.30.40',
  'no notes', '{}', '{"email":"pedro.alvarez@example.net"}', 20, 5555555555554444),
 (3, 'Mia Wong', 'mia.wong@example.com', '601-22-3344', '+16505550123', '1975-01-15', '378282246310005', '2001:db8:aa::7',
  NULL, NULL, NULL, 30, 378282246310005);
INSERT INTO orders VALUES (1, 1, '123456789', 1999), (2, 2, '987654321', 4500), (3, 3, '555000111', 12);
`

// seeds are raw sensitive values (and recognisable parts of them) that must never reach a
// masked identity.
var seeds = []string{
	"johanna.smithers", "smithers@", "pedro.alvarez", "mia.wong", "zed.backup",
	"287-65", "28765", "512-43", "51243", "601-22", "60122",
	"4111111111111111", "5555555555554444", "378282246310005", "411111111111", "555555555555",
	"4155550172", "2079460958", "6505550123",
	"Johanna", "Smithers", "Pedro", "Alvarez",
	"03-07", "11-30", "01-15", "192.168.77", ".77.20", "10.20.30",
}

type harness struct {
	pg      *testkit.Postgres
	conn    *pgconn.PgConn
	planner *Planner
	session *gate.Session
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", schemaSQL)
	ctx := context.Background()
	cat := classify.NewCatalog(func(ctx context.Context, target string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, pg.DSN("postgres"))
	}, classify.ScanOptions{}, nil)
	conn, err := pgconn.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &harness{pg: pg, conn: conn, planner: NewPlanner(cat, newMasker(t), nil, nil),
		session: &gate.Session{ID: "s1", Target: &config.Target{Name: "pg"}}}
}

type result struct {
	cols   []gate.Column
	rows   [][][]byte
	masked int
	rm     *ResultMasker
}

// run executes sql the way a client would (all results in format), then masks every row the
// way the door does: one plan per row description, MaskRow per data row.
func (h *harness) run(t *testing.T, sql string, format int16, profile string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rr := h.conn.ExecParams(ctx, sql, nil, nil, nil, []int16{format})
	var res result
	for _, fd := range rr.FieldDescriptions() {
		res.cols = append(res.cols, gate.Column{Name: fd.Name, TableOID: fd.TableOID, AttNum: fd.TableAttributeNumber, TypeOID: fd.DataTypeOID, Format: fd.Format})
	}
	check := &gate.Check{Statements: []*inspect.Statement{{Text: sql}}, Decision: gate.Decision{Action: gate.Allow, MaskProfile: profile}}
	res.rm = h.planner.PlanResult(ctx, h.session, check, res.cols)
	for rr.NextRow() {
		vals := rr.Values()
		row := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		if res.rm != nil {
			res.masked += res.rm.MaskRow(row)
		}
		res.rows = append(res.rows, row)
	}
	if _, err := rr.Close(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return res
}

func leaks(res result) []string {
	var out []string
	for _, row := range res.rows {
		for i, v := range row {
			for _, s := range seeds {
				if bytes.Contains(v, []byte(s)) {
					out = append(out, fmt.Sprintf("column %s: %q contains %q", res.cols[i].Name, v, s))
				}
			}
		}
	}
	return out
}

var leakQueries = []string{
	"SELECT * FROM customers",
	"SELECT lower(email), email || '', substring(ssn, 1, 6), upper(name), initcap(name) AS who FROM customers",
	"SELECT row_to_json(c) FROM customers c",
	"SELECT to_jsonb(c) FROM customers c",
	"SELECT c FROM customers c",
	"SELECT c.* FROM customers c",
	"SELECT string_agg(email, ','), array_agg(ssn), json_agg(phone), jsonb_agg(card_number) FROM customers",
	"SELECT email::varchar(12), ssn::text, CAST(dob AS text), ip::text, card_pan::text FROM customers",
	"SELECT * FROM v_contacts",
	"SELECT x.m FROM (SELECT email AS m FROM customers) x",
	"WITH t AS (SELECT ssn, name FROM customers) SELECT 'x' || ssn, name FROM t",
	"SELECT email FROM customers UNION ALL SELECT order_number FROM orders",
	"SELECT o.order_number, c.email, c.phone FROM orders o JOIN customers c ON c.id = o.customer_id",
	"UPDATE customers SET score = score RETURNING email, ssn, lower(name)",
	"SELECT notes FROM customers",
	"SELECT 'call ' || (SELECT email FROM customers ORDER BY id LIMIT 1)",
	"SELECT dob, ip, card_number, tags, profile, card_pan FROM customers",
	"SELECT jsonb_build_object('e', email, 'n', name), json_build_array(ssn, phone) FROM customers",
	"SELECT ROW(email, ssn), concat_ws(' ', name, ssn), coalesce(phone, '') FROM customers",
	"SELECT upper(e) FROM (SELECT email AS e FROM customers) s(e)",
	"SELECT u FROM customers, unnest(tags) AS u",
	"SELECT profile->>'email', profile->'email' FROM customers",
	"SELECT date_trunc('day', dob), extract(year FROM dob)::text || '-' || to_char(dob, 'MM-DD') FROM customers",
}

func TestNoSeededValueReachesAMaskedIdentity(t *testing.T) {
	h := newHarness(t)
	for _, q := range leakQueries {
		for _, format := range []int16{0, 1} {
			res := h.run(t, q, format, "")
			for _, l := range leaks(res) {
				t.Errorf("format %d: %s\n  %s", format, q, l)
			}
		}
	}
	// Cursors: the FETCH's columns get their lineage from the DECLARE the planner observed.
	decl := "DECLARE cur CURSOR FOR SELECT lower(email) AS x, substring(ssn, 1, 6) AS y, id FROM customers"
	h.planner.Observe(context.Background(), h.session, &gate.Check{Statements: []*inspect.Statement{{Text: decl}}})
	mr := h.conn.Exec(context.Background(), "BEGIN; "+decl+"; FETCH ALL FROM cur; COMMIT")
	results, err := mr.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	fetched := 0
	for _, r := range results {
		if len(r.FieldDescriptions) == 0 {
			continue
		}
		var cols []gate.Column
		for _, fd := range r.FieldDescriptions {
			cols = append(cols, gate.Column{Name: fd.Name, TableOID: fd.TableOID, AttNum: fd.TableAttributeNumber, TypeOID: fd.DataTypeOID})
		}
		rm := h.planner.PlanResult(context.Background(), h.session, &gate.Check{Statements: []*inspect.Statement{{Text: "FETCH ALL FROM cur"}}}, cols)
		for _, row := range r.Rows {
			fetched++
			rm.MaskRow(row)
			if l := leaks(result{cols: cols, rows: [][][]byte{row}}); len(l) > 0 {
				t.Errorf("FETCH leaks: %v", l)
			}
			if string(row[2]) == "" {
				t.Errorf("id column masked: %q", row)
			}
		}
	}
	if fetched != 3 {
		t.Errorf("fetched %d rows", fetched)
	}
	h.planner.Forget(h.session.ID)
	if h.planner.cursors.declaration(h.session.ID, "FETCH ALL FROM cur") != "" {
		t.Error("cursor remembered after Forget")
	}
}

func TestMaskedValuesAreValidForTheirTypes(t *testing.T) {
	h := newHarness(t)
	checked := 0
	for _, q := range leakQueries {
		if strings.HasPrefix(q, "UPDATE") {
			continue
		}
		res := h.run(t, q, 0, "")
		for _, row := range res.rows {
			for i, v := range row {
				if v == nil || res.cols[i].TypeOID == OIDRecord || res.cols[i].TypeOID > 10000 {
					continue
				}
				// The server parses the masked text as the column's type.
				cast := fmt.Sprintf("SELECT $1::text::%s", typeName(t, h, res.cols[i].TypeOID))
				rr := h.conn.ExecParams(context.Background(), cast, [][]byte{v}, nil, nil, nil)
				rr.Read()
				if _, err := rr.Close(); err != nil {
					t.Errorf("%s: column %s value %q is not a valid %s: %v", q, res.cols[i].Name, v, typeName(t, h, res.cols[i].TypeOID), err)
				}
				checked++
			}
		}
	}
	// Whole-row values of the table's own row type must parse as that type.
	res := h.run(t, "SELECT c FROM customers c", 0, "")
	for _, row := range res.rows {
		rr := h.conn.ExecParams(context.Background(), "SELECT $1::text::customers", [][]byte{row[0]}, nil, nil, nil)
		rr.Read()
		if _, err := rr.Close(); err != nil {
			t.Errorf("masked row %q is not a valid customers row: %v", row[0], err)
		}
		checked++
	}
	if checked < 100 {
		t.Errorf("only %d values checked", checked)
	}
}

func typeName(t *testing.T, h *harness, oid uint32) string {
	rr := h.conn.ExecParams(context.Background(), "SELECT $1::text::oid::regtype::text", [][]byte{[]byte(fmt.Sprint(oid))}, nil, nil, nil)
	res := rr.Read()
	if res.Err != nil || len(res.Rows) != 1 {
		t.Fatalf("type name of %d: %v", oid, res.Err)
	}
	return string(res.Rows[0][0])
}

func TestAuthorizedAndNonSensitive(t *testing.T) {
	h := newHarness(t)
	// Profile "none" (an authorized identity) sees raw values.
	if res := h.run(t, "SELECT email, ssn FROM customers", 0, ProfileNone); res.rm != nil || !bytes.Equal(res.rows[0][0], []byte("johanna.smithers@example.com")) {
		t.Errorf("raw profile masked: %+v", res.rows[0])
	}
	// Non-sensitive columns are untouched (order numbers are nine digits, amounts are cents).
	res := h.run(t, "SELECT id, order_number, amount_cents FROM orders ORDER BY id", 0, "")
	if res.masked != 0 || string(res.rows[0][1]) != "123456789" || string(res.rows[0][2]) != "1999" {
		t.Errorf("non-sensitive columns changed: %d masked, %q", res.masked, res.rows[0])
	}
	res = h.run(t, "SELECT id, email, score FROM customers ORDER BY id", 0, "")
	if res.masked != 3 || string(res.rows[0][1]) != "j***@example.com" || string(res.rows[0][2]) != "10" {
		t.Errorf("default profile: %d masked, %q", res.masked, res.rows[0])
	}
	if got := res.rm.Touched(); got["public.customers.email"] != classify.Email || len(got) != 1 {
		t.Errorf("touched %v", got)
	}
	// The hash profile keeps equal values equal, so joins and GROUP BY still work.
	res = h.run(t, "SELECT email FROM customers UNION ALL SELECT email FROM customers ORDER BY 1", 0, ProfileHash)
	if len(res.rows) != 6 || !bytes.Equal(res.rows[0][0], res.rows[1][0]) || !bytes.HasPrefix(res.rows[0][0], []byte("tok_")) {
		t.Errorf("hash profile: %q", res.rows)
	}
	// An unknown profile name fails closed (strict).
	res = h.run(t, "SELECT email FROM customers", 0, "typo")
	if string(res.rows[0][0]) != RedactedText {
		t.Errorf("unknown profile: %q", res.rows[0][0])
	}
}

// TestPlanWithoutCatalog: when the catalog cannot be scanned, lineage and column names still
// map sensitive columns, and the value detectors cover the rest.
func TestPlanWithoutCatalog(t *testing.T) {
	cat := classify.NewCatalog(func(ctx context.Context, target string) (*pgx.Conn, error) {
		return nil, fmt.Errorf("target down")
	}, classify.ScanOptions{}, nil)
	p := NewPlanner(cat, newMasker(t), nil, nil)
	s := &gate.Session{ID: "x", Target: &config.Target{Name: "down"}}
	sql := "SELECT c.email, lower(c.ssn) AS s, c.notes, c.id FROM customers c"
	check := &gate.Check{Statements: []*inspect.Statement{{Text: sql}}}
	cols := []gate.Column{{Name: "email", TableOID: 16384, AttNum: 3, TypeOID: OIDText}, {Name: "s", TypeOID: OIDText},
		{Name: "notes", TableOID: 16384, AttNum: 9, TypeOID: OIDText}, {Name: "id", TableOID: 16384, AttNum: 1, TypeOID: OIDInt4}}
	rm := p.PlanResult(context.Background(), s, check, cols)
	if rm == nil {
		t.Fatal("no masker without a catalog")
	}
	row := [][]byte{[]byte("johanna.smithers@example.com"), []byte("287-65-4321"), []byte("call zed.backup@example.org"), []byte("1")}
	if n := rm.MaskRow(row); n != 3 {
		t.Errorf("masked %d values: %q", n, row)
	}
	if l := leaks(result{cols: cols, rows: [][][]byte{row}}); len(l) > 0 {
		t.Errorf("leaks without a catalog: %v", l)
	}
	if string(row[3]) != "1" {
		t.Errorf("id changed: %q", row[3])
	}
}

// TestDerivedValuesRevealNothing: a partial mask applies only to a column's value or a
// value-keeping transformation of it (lower, casts, coalesce); any other expression over a
// sensitive column is redacted (or hashed), even when its result still looks like the class:
// reverse('johanna.smithers@example.com') is an e-mail address whose domain is the reversed
// local part.
func TestDerivedValuesRevealNothing(t *testing.T) {
	h := newHarness(t)
	res := h.run(t, `SELECT reverse(email), lower(email), substring(ssn, 1, 3), upper(email)::varchar(60), coalesce(ssn, ''),
	  reverse(email) || '', overlay(email placing 'x' from 1 for 1), initcap(name), left(name, 3), date_of_birth
	  FROM (SELECT *, dob + 1 AS date_of_birth FROM customers) c WHERE id = 1`, 0, "")
	want := []string{RedactedText, "j***@example.com", RedactedText, "J***@EXAMPLE.COM", "***-**-4321",
		RedactedText, RedactedText, "J****** S*******", RedactedText, placeholderDate}
	for i, w := range want {
		if got := string(res.rows[0][i]); got != w {
			t.Errorf("column %d (%s): %q, want %q", i, res.cols[i].Name, got, w)
		}
	}
	// Structured values built from a transformed value redact the fields it fills.
	res = h.run(t, "SELECT jsonb_build_object('email', reverse(email)), ARRAY[reverse(email)], jsonb_build_object('email', email) FROM customers WHERE id = 1", 0, "")
	if got := string(res.rows[0][0]); got != `{"email":"[redacted]"}` {
		t.Errorf("json of reverse: %s", got)
	}
	if got := string(res.rows[0][1]); got != `{[redacted]}` {
		t.Errorf("array of reverse: %s", got)
	}
	if got := string(res.rows[0][2]); got != `{"email":"j***@example.com"}` {
		t.Errorf("json of email: %s", got)
	}
	// The hash profile hashes derived values: a keyed token reveals nothing either.
	res = h.run(t, "SELECT reverse(email) FROM customers WHERE id = 1", 0, ProfileHash)
	if got := string(res.rows[0][0]); !strings.HasPrefix(got, "tok_") {
		t.Errorf("hash profile, reverse: %q", got)
	}
	// COPY applies the same rule, even when the expression is named like the column.
	check := &gate.Check{Statements: []*inspect.Statement{{Text: "COPY (SELECT reverse(email) AS email, lower(email) AS l FROM customers WHERE id = 1) TO STDOUT"}}}
	cm, err := h.planner.PlanCopy(context.Background(), h.session, check)
	if err != nil || cm == nil {
		t.Fatalf("plan COPY: %v %v", cm, err)
	}
	out, _, err := cm.MaskData([]byte("moc.elpmaxe@srehtims.annahoj\tjohanna.smithers@example.com\n"))
	if err != nil || string(out) != RedactedText+"\tj***@example.com\n" {
		t.Errorf("COPY: %q %v", out, err)
	}
}

// TestPlannerStatisticsMasked: pg_stats and pg_statistic hold sampled values of every
// column; for a masked identity they are NULL whatever table they describe, found by table
// OID and attribute number (SELECT *) or through the statement's lineage (expressions).
func TestPlannerStatisticsMasked(t *testing.T) {
	h := newHarness(t)
	h.pg.Exec(t, "postgres", "ANALYZE customers")
	queries := []string{
		"SELECT * FROM pg_stats WHERE tablename = 'customers'",
		"SELECT attname, most_common_vals::text, histogram_bounds::text, most_common_elems FROM pg_catalog.pg_stats WHERE tablename = 'customers'",
		"SELECT s.attname, 'x' || s.histogram_bounds::text FROM pg_stats s WHERE s.tablename = 'customers'",
		"SELECT (SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'customers' AND attname = 'email')",
		"SELECT * FROM pg_statistic WHERE starelid = 'customers'::regclass",
		"SELECT stavalues1::text, array_to_string(stavalues1, ',') FROM pg_statistic WHERE starelid = 'customers'::regclass",
		"SELECT s FROM pg_stats s WHERE tablename = 'customers'",
	}
	for _, q := range queries {
		for _, format := range []int16{0, 1} {
			res := h.run(t, q, format, "")
			if len(res.rows) == 0 {
				t.Fatalf("%s: no rows", q)
			}
			for _, l := range leaks(res) {
				t.Errorf("format %d: %s\n  %s", format, q, l)
			}
			for i, c := range res.cols {
				switch c.Name {
				case "most_common_vals", "histogram_bounds", "most_common_elems", "stavalues1", "stavalues2", "stavalues3":
					for _, row := range res.rows {
						if row[i] != nil {
							t.Errorf("format %d: %s: %s = %q, want NULL", format, q, c.Name, row[i])
						}
					}
				}
			}
		}
	}
	// The raw profile still sees them (who may is policy).
	res := h.run(t, "SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'customers' AND attname = 'email'", 0, ProfileNone)
	if len(res.rows) != 1 || !bytes.Contains(res.rows[0][0], []byte("johanna.smithers@example.com")) {
		t.Errorf("raw profile: %q", res.rows)
	}
}

// TestStarOverUnseenTable: a table the catalog has not seen (created after its scan, or a
// temporary table) is classed by its column names, exactly as `SELECT name FROM table` is,
// also where a `*` expands it next to other columns, and by the new names where a column
// list renames it (nothing else is known of them); the value detectors still see every
// text value.
func TestStarOverUnseenTable(t *testing.T) {
	h := newHarness(t)
	h.run(t, "SELECT email FROM customers", 0, "") // the scan, before the table exists
	h.pg.Exec(t, "postgres", "CREATE TABLE late (n int, email text); INSERT INTO late VALUES (7, 'zed.late@example.org')")
	res := h.run(t, "SELECT 1 AS one, *, 2 AS two FROM late", 0, "")
	if r := res.rows[0]; string(r[0]) != "1" || string(r[1]) != "7" || string(r[2]) != "z***@example.org" || string(r[3]) != "2" {
		t.Errorf("star next to constants: %q", r)
	}
	res = h.run(t, "WITH s(a, b) AS (SELECT * FROM late) SELECT * FROM s", 0, "")
	if r := res.rows[0]; string(r[0]) != "7" || string(r[1]) != "z***@example.org" {
		t.Errorf("renamed star over an unseen table: %q", r)
	}
}

// TestPlanNothingToMaskAllocatesNothing: a result of catalog columns none of which is
// sensitive (pgbench -S, most of an application's reads) is planned without an allocation
// and needs no masker, while a result with a sensitive column still gets its masker with
// every column's origin.
func TestPlanNothingToMaskAllocatesNothing(t *testing.T) {
	h := newHarness(t)
	plain := h.run(t, "SELECT id, amount_cents FROM orders ORDER BY id", 0, "")
	if plain.rm != nil {
		t.Fatalf("orders: a masker for non-sensitive columns: %+v", plain.rm.Rules())
	}
	ctx := context.Background()
	check := &gate.Check{Statements: []*inspect.Statement{{Text: "SELECT id, amount_cents FROM orders"}}, Decision: gate.Decision{Action: gate.Allow}}
	if n := testing.AllocsPerRun(100, func() {
		if h.planner.PlanResult(ctx, h.session, check, plain.cols) != nil {
			t.Fatal("masker for non-sensitive columns")
		}
	}); n != 0 {
		t.Errorf("planning a result with nothing to mask: %.0f allocations, want 0", n)
	}
	res := h.run(t, "SELECT id, email, score FROM customers ORDER BY id", 0, "")
	if res.rm == nil {
		t.Fatal("customers: no masker")
	}
	for i, r := range res.rm.Rules() {
		if len(r.Origin) != 1 || !strings.HasPrefix(r.Origin[0], "public.customers.") {
			t.Errorf("column %d (%s): origin %v", i, res.cols[i].Name, r.Origin)
		}
	}
}
