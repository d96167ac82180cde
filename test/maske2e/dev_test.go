package maske2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// writeCase is something a masked identity with write access can run: RETURNING, COPY,
// notices, errors. Each runs on its own connection; the capture is what the proxy sent.
type writeCase struct {
	name string
	// admin runs the case as a masked dba (admin level): the default policy refuses DO
	// and functions it cannot vouch for below admin.
	admin bool
	run   func(ctx context.Context, c *pgx.Conn) error
	// check looks at what the masked client got, beyond the leak search.
	check func(t *testing.T, e *env, out []byte)
}

func execAll(sqls ...string) func(ctx context.Context, c *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		for _, s := range sqls {
			if _, err := runQuery(ctx, c, s, nil, nil); err != nil {
				return err
			}
		}
		return nil
	}
}

// inTx runs fn in a transaction that is rolled back, so the fixture stays as seeded.
func inTx(fn func(ctx context.Context, c *pgx.Conn) error) func(ctx context.Context, c *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			return err
		}
		defer func() { _, _ = c.Exec(context.Background(), "ROLLBACK") }()
		return fn(ctx, c)
	}
}

// copyTo runs a COPY ... TO STDOUT with pgconn and appends its output to *out.
func copyTo(sql string, out *bytes.Buffer) func(ctx context.Context, c *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.PgConn().CopyTo(ctx, out, sql)
		return err
	}
}

func modeRun(sql string, opts ...any) func(ctx context.Context, c *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		_, err := runQuery(ctx, c, sql, opts, nil)
		return err
	}
}

func wantErr(code string, fn func(ctx context.Context, c *pgx.Conn) error) func(ctx context.Context, c *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		err := fn(ctx, c)
		var pe *pgconn.PgError
		if err == nil {
			return errorf("want SQLSTATE %s, the statement succeeded", code)
		}
		if !asPgErr(err, &pe) || pe.Code != code {
			return errorf("want SQLSTATE %s, got %v", code, err)
		}
		return nil
	}
}

func TestMaskingWrites(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	tp := startTap(t, e.dev)
	writer := e.dev.Token(t, "writer", "service")
	auditor := e.dev.Token(t, "auditor", "service", "compliance")
	dba := e.dev.Token(t, "dba", "service", "dba")
	dbaRaw := e.dev.Token(t, "dba-auditor", "service", "dba", "compliance")

	var copyText, copyCSV, copyQuery, copyBinary bytes.Buffer
	cases := []writeCase{
		{name: "update returning", run: inTx(execAll("UPDATE customers SET loyalty_tier = loyalty_tier WHERE id <= 10 RETURNING email, ssn, card_number, iban, full_name, phone, date_of_birth, api_key"))},
		{name: "update returning star extended", run: inTx(modeRun("UPDATE customers SET loyalty_tier = 'x' WHERE id > $1 RETURNING *", pgx.QueryExecModeCacheDescribe, 0))},
		{name: "delete returning expressions", run: inTx(execAll("DELETE FROM orders WHERE customer_id > 0 RETURNING order_number", "DELETE FROM customers WHERE id > 0 RETURNING lower(email), row_to_json(customers.*), substring(ssn, 1, 3)"))},
		{name: "insert select returning", run: inTx(execAll("INSERT INTO customers (id, full_name, email, ssn, card_number) SELECT id + 1000, full_name, 'x' || email, ssn, card_number FROM customers RETURNING *"))},
		{name: "copy table text", run: copyTo("COPY customers TO STDOUT", &copyText), check: func(t *testing.T, e *env, out []byte) {
			lines := strings.Split(strings.TrimSuffix(copyText.String(), "\n"), "\n")
			if len(lines) != nCustomers || strings.Count(lines[0], "\t") != 12 || !strings.Contains(lines[0], "***-**-6789") {
				t.Fatalf("COPY text output: %d lines, first %q", len(lines), lines[0])
			}
		}},
		{name: "copy table csv", run: copyTo("COPY customers (id, email, ssn, card_number, full_name) TO STDOUT WITH (FORMAT csv, HEADER)", &copyCSV), check: func(t *testing.T, e *env, out []byte) {
			recs, err := csv.NewReader(bytes.NewReader(copyCSV.Bytes())).ReadAll()
			if err != nil || len(recs) != nCustomers+1 || recs[0][1] != "email" || recs[1][0] != "1" || recs[1][2] != "***-**-6789" {
				t.Fatalf("COPY CSV output %v: %q", err, recs[:2])
			}
		}},
		{name: "copy query", run: copyTo("COPY (SELECT c.id, lower(c.email), row_to_json(c), string_agg(o.product_code, ',') FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id) TO STDOUT WITH (FORMAT csv)", &copyQuery)},
		{name: "copy binary", run: copyTo("COPY customers (id, email, ssn, date_of_birth) TO STDOUT WITH (FORMAT binary)", &copyBinary), check: func(t *testing.T, e *env, out []byte) {
			if !bytes.HasPrefix(copyBinary.Bytes(), []byte("PGCOPY\n\xff\r\n\x00")) {
				t.Fatalf("binary COPY output does not start with the signature")
			}
		}},
		{name: "notice from DO", admin: true, run: execAll(`DO $$ BEGIN RAISE NOTICE 'contact %', (SELECT email FROM customers ORDER BY id LIMIT 1); END $$`)},
		{name: "notice from function", admin: true, run: execAll("SELECT notice_first_email()")},
		{name: "exception from function", admin: true, run: wantErr("P0001", execAll("SELECT fail_with_ssn()"))},
		{name: "unique violation detail", run: wantErr("23505", execAll("INSERT INTO customers (id, full_name, email) SELECT 999, 'x', email FROM customers WHERE id = 1"))},
		{name: "not null violation detail", run: wantErr("23502", execAll("INSERT INTO customers (id, full_name, email, phone, date_of_birth) SELECT 998, NULL, 'y' || email, phone, date_of_birth FROM customers WHERE id = 2"))},
		{name: "launder through temp table", admin: true, run: inTx(execAll(
			"CREATE TEMP TABLE laundry AS SELECT full_name AS a, phone AS b, email AS c, ssn AS d, date_of_birth AS e, card_number AS f FROM customers",
			"SELECT * FROM laundry"))},
		{name: "launder through update", run: inTx(execAll(
			"UPDATE customers SET loyalty_tier = full_name || ' / ' || phone || ' / ' || date_of_birth WHERE id > 0",
			"SELECT loyalty_tier FROM customers"))},
		{name: "launder through insert select", run: inTx(execAll(
			"INSERT INTO orders SELECT 900000000 + id, id, 1, full_name || ' ' || ssn FROM customers",
			"SELECT product_code FROM orders WHERE order_number > 900000000"))},
		{name: "launder through a setting", admin: true, run: execAll(
			"SELECT set_config('application_name', full_name || ' ' || phone, false) FROM customers WHERE id = 1",
			"SELECT current_setting('application_name')")},
		{name: "notification payload", run: func(ctx context.Context, c *pgx.Conn) error {
			if _, err := c.Exec(ctx, "LISTEN leak"); err != nil {
				return err
			}
			if _, err := c.Exec(ctx, "SELECT pg_notify('leak', email || ' ' || ssn || ' ' || card_number) FROM customers WHERE id = 1"); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := c.WaitForNotification(wctx)
			return err
		}},
	}
	var leaks []leakCase
	for _, wc := range cases {
		t.Run(wc.name, func(t *testing.T) {
			for _, b := range []*bytes.Buffer{&copyText, &copyCSV, &copyQuery, &copyBinary} {
				b.Reset()
			}
			user, secret, rawUser, rawSecret := "writer", writer, "auditor", auditor
			if wc.admin {
				user, secret, rawUser, rawSecret = "dba", dba, "dba-auditor", dbaRaw
			}
			c := connect(t, tp, user, secret)
			tp.take()
			if err := wc.run(ctx, c); err != nil {
				t.Fatalf("masked: %v", err)
			}
			captured := tp.take()
			if found := e.fx.leaks(captured); len(found) > 0 {
				leaks = append(leaks, leakCase{wc.name, "simple", found})
			}
			if wc.check != nil {
				wc.check(t, e, captured)
			}
			// The compliance group sees the values: the case can fail.
			rc := connect(t, tp, rawUser, rawSecret)
			tp.take()
			if err := wc.run(ctx, rc); err != nil {
				t.Fatalf("raw: %v", err)
			}
			if len(e.fx.leaks(tp.take())) == 0 {
				t.Fatal("the case shows no seeded value even to the compliance group: it proves nothing")
			}
		})
	}
	checkLeaks(t, leaks, knownWriteLeaks)

	t.Run("ledger records masked COPY", func(t *testing.T) {
		evs, err := e.dev.Instance.Ledger().Store().Search(ctx, ledger.Query{Identity: "writer", StatementKind: "COPY", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		masked := 0
		for _, ev := range evs {
			if ev.Type == ledger.EventStatement && ev.ValuesMasked >= nCustomers {
				masked++
			}
		}
		if masked < 3 {
			t.Fatalf("%d COPY events recorded values masked (of %d)", masked, len(evs))
		}
	})
}

// knownWriteLeaks are open leaks (see knownReadLeaks); key "case/simple".
var knownWriteLeaks = map[string]string{
	// A masked identity that can write can copy sensitive values into a column the catalog
	// does not hold as sensitive (an existing one, or a new table's) and read them back:
	// the free-text detectors catch e-mail addresses, dashed SSNs and cards, but names,
	// phone numbers and dates pass. Either the writes carry their classification along
	// (lineage of INSERT ... SELECT / UPDATE SET / CREATE TABLE AS into the catalog) or the
	// policy refuses, for masked sessions, writes whose values derive from sensitive columns.
	"launder through temp table/simple":    "sensitive values copied into a temporary table",
	"launder through update/simple":        "sensitive values copied into a non-sensitive column",
	"launder through insert select/simple": "sensitive values copied into another table",
	// The same through session state (admin only: set_config is privileged): the value
	// comes back in the ParameterStatus message and from current_setting(), neither of
	// which has lineage to the table.
	"launder through a setting/simple": "sensitive values copied into a setting",
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func asPgErr(err error, pe **pgconn.PgError) bool { return errors.As(err, pe) }
