package mask

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// messages records each CopyData payload as its own message, as the door sees them.
type messages struct{ msgs [][]byte }

func (m *messages) Write(p []byte) (int, error) {
	m.msgs = append(m.msgs, append([]byte(nil), p...))
	return len(p), nil
}

func TestParseCopyOptions(t *testing.T) {
	o, err := ParseCopyOptions("COPY t TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';', NULL 'NA', QUOTE '''')")
	if err != nil || o.Format != "csv" || !o.Header || o.Delimiter != ';' || o.Null != "NA" || o.Quote != '\'' || o.Escape != '\'' {
		t.Errorf("%+v %v", o, err)
	}
	o, err = ParseCopyOptions("COPY t TO STDOUT CSV HEADER")
	if err != nil || o.Format != "csv" || !o.Header || o.Delimiter != ',' || o.Null != "" {
		t.Errorf("old syntax: %+v %v", o, err)
	}
	o, err = ParseCopyOptions("COPY t TO STDOUT")
	if err != nil || o.Format != "text" || o.Delimiter != '\t' || o.Null != `\N` {
		t.Errorf("defaults: %+v %v", o, err)
	}
	if _, err := ParseCopyOptions("SELECT 1"); err == nil {
		t.Error("not a COPY accepted")
	}
}

func TestCopyTextEscaping(t *testing.T) {
	m := newMasker(t)
	rules := []Rule{*rule(KindText, 0, ""), *rule(KindText, 0, "email")}
	rules[0].FreeText = true
	cm := NewCopyMasker(m, rules, CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`})
	out, n, err := cm.MaskData([]byte("line\\none \\\\ tab\\there x@example.com\tjohn@example.com\n"))
	if err != nil || n != 2 || string(out) != "line\\none \\\\ tab\\there *@example.com\tj***@example.com\n" {
		t.Errorf("%q %d %v", out, n, err)
	}
	out, _, _ = cm.MaskData([]byte("\\N\t\\N\n"))
	if string(out) != "\\N\t\\N\n" {
		t.Errorf("nulls: %q", out)
	}
	csv := NewCopyMasker(m, rules, CopyOptions{Format: "csv", Delimiter: ',', Quote: '"', Escape: '"', Header: true})
	if out, _, _ := csv.MaskData([]byte("notes,email\n")); string(out) != "notes,email\n" {
		t.Errorf("header changed: %q", out)
	}
	out, n, err = csv.MaskData([]byte("\"a, \"\"quoted\"\"\nx@example.com\",john@example.com\n"))
	if err != nil || n != 2 || string(out) != "\"a, \"\"quoted\"\"\n*@example.com\",j***@example.com\n" {
		t.Errorf("csv: %q %d %v", out, n, err)
	}
	if _, _, err := csv.MaskData([]byte("\"unterminated\n")); err == nil {
		t.Error("malformed CSV accepted")
	}
}

func TestCopyThroughPostgres(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.pg.Exec(t, "postgres", "CREATE TABLE customers_back (LIKE customers)")
	for _, q := range []string{
		"COPY customers TO STDOUT",
		"COPY customers TO STDOUT (FORMAT csv, HEADER)",
		"COPY customers TO STDOUT (FORMAT binary)",
		"COPY (SELECT lower(email), notes, ssn, name || ' ' || phone FROM customers) TO STDOUT (FORMAT csv)",
		"COPY customers (email, ssn) TO STDOUT",
	} {
		check := &gate.Check{Statements: []*inspect.Statement{{Text: q, Kind: "COPY"}}}
		cm, err := h.planner.PlanCopy(ctx, h.session, check)
		if err != nil || cm == nil {
			t.Fatalf("%s: plan %v %v", q, cm, err)
		}
		var w messages
		if _, err := h.conn.CopyTo(ctx, &w, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var masked bytes.Buffer
		total := 0
		for _, msg := range w.msgs {
			out, n, err := cm.MaskData(msg)
			if err != nil {
				t.Fatalf("%s: mask %q: %v", q, msg, err)
			}
			total += n
			masked.Write(out)
		}
		if total == 0 {
			t.Errorf("%s: nothing masked", q)
		}
		for _, s := range seeds {
			if bytes.Contains(masked.Bytes(), []byte(s)) {
				t.Errorf("%s: output contains %q:\n%s", q, s, masked.Bytes())
			}
		}
		// The masked output of a whole-table COPY loads back into the same table shape.
		if strings.HasPrefix(q, "COPY customers TO") {
			h.pg.Exec(t, "postgres", "TRUNCATE customers_back")
			from := strings.Replace(strings.Replace(q, "customers TO STDOUT", "customers_back FROM STDIN", 1), "COPY ", "COPY ", 1)
			if _, err := h.conn.CopyFrom(ctx, bytes.NewReader(masked.Bytes()), from); err != nil {
				t.Errorf("%s: masked output does not load back: %v\n%s", q, err, masked.Bytes())
			}
		}
	}
	// The raw profile needs no COPY masker.
	cm, err := h.planner.PlanCopy(ctx, h.session, &gate.Check{Statements: []*inspect.Statement{{Text: "COPY customers TO STDOUT"}}, Decision: gate.Decision{MaskProfile: ProfileNone}})
	if cm != nil || err != nil {
		t.Errorf("raw profile: %v %v", cm, err)
	}
}
