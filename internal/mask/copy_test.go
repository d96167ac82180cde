package mask

import (
	"bytes"
	"context"
	"math/rand/v2"
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
		// Whole-row expansions and record sets, planned from the text alone (no describer):
		// a column a star places is masked from all its possible sources.
		"COPY (SELECT c.id, p.* FROM customers c, json_populate_record(NULL::customers, row_to_json(c)) p) TO STDOUT",
		"COPY (SELECT (u).*, 1 FROM (SELECT unnest(array_agg(c)) AS u FROM customers c) s) TO STDOUT (FORMAT binary)",
		"COPY (SELECT (c).*, c FROM customers c) TO STDOUT (FORMAT csv)",
		"COPY (SELECT * FROM jsonb_to_recordset((SELECT jsonb_agg(c) FROM customers c)) AS x(id int, email text)) TO STDOUT",
		"COPY (SELECT * FROM ROWS FROM (unnest(ARRAY(SELECT email FROM customers)), unnest(ARRAY(SELECT ssn FROM customers))) AS r(e, s)) TO STDOUT",
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

// TestCopyStarRules: with a star of unknown width, the rules before it keep their columns,
// those after it take the last columns, and every column between takes the star's rule;
// without a star, columns beyond the rules are NULL.
func TestCopyStarRules(t *testing.T) {
	m := newMasker(t)
	email := *rule(KindText, 0, "email")
	plain := *rule(KindText, 0, "")
	cm := NewCopyMasker(m, []Rule{plain, email, plain}, CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`})
	cm.star = 1
	out, _, err := cm.MaskData([]byte("a@example.com\tjohn@example.com\tjane@example.com\td@example.com\n"))
	if err != nil || string(out) != "a@example.com\tj***@example.com\tj***@example.com\td@example.com\n" {
		t.Errorf("star in the middle: %q %v", out, err)
	}
	out, _, err = cm.MaskData([]byte("a@example.com\td@example.com\n"))
	if err != nil || string(out) != "a@example.com\td@example.com\n" {
		t.Errorf("empty star: %q %v", out, err)
	}
	cm = NewCopyMasker(m, []Rule{plain}, CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`})
	out, _, err = cm.MaskData([]byte("x\ty\n"))
	if err != nil || string(out) != "x\t\\N\n" {
		t.Errorf("column beyond the rules: %q %v", out, err)
	}
}

// TestTextPlain holds textPlain's eight-bytes-at-a-time search for what text COPY escapes
// to a byte loop, on values of every length around the word size made of delimiters,
// backslashes, control characters and bytes that differ from them in one bit or in the top
// bit only.
func TestTextPlain(t *testing.T) {
	alphabet := []byte{'a', '\t', '\t' | 0x80, '\\', '\\' | 0x80, ',', '"', 0, 0xff, '\t' ^ 1, '\\' ^ 1, 0x1f, 0x20, 0x9f, 0xa0, '|', '|' ^ 1}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, delim := range []byte{'\t', ',', '|'} {
		for k := 0; k < 20000; k++ {
			v := make([]byte, rng.IntN(41))
			for i := range v {
				v[i] = alphabet[rng.IntN(len(alphabet))]
			}
			escapes := false
			for _, c := range v {
				escapes = escapes || c < 0x20 || c == '\\' || c == delim
			}
			if textPlain(v, delim) == escapes {
				t.Fatalf("%q (delimiter %q): textPlain %v", v, delim, !escapes)
			}
		}
	}
}

// TestIndexEither holds indexEither's eight-bytes-at-a-time search for a field's end to a
// byte loop, from every start of lines of every length around the word size (the last,
// overlapping word included), made of both bytes sought and bytes that differ from them in
// one bit or in the top bit only.
func TestIndexEither(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, ds := range [][2]byte{{'\t', '\\'}, {',', '"'}, {'|', '\\'}} {
		d, s := ds[0], ds[1]
		alphabet := []byte{'a', d, d | 0x80, d ^ 1, s, s | 0x80, s ^ 1, 0, 0xff, '\n'}
		for k := 0; k < 20000; k++ {
			b := make([]byte, rng.IntN(41))
			for i := range b {
				if rng.IntN(4) == 0 {
					b[i] = alphabet[rng.IntN(len(alphabet))]
				} else {
					b[i] = 'a' + byte(rng.IntN(26))
				}
			}
			for from := 0; from <= len(b); from++ {
				want := len(b)
				for i := from; i < len(b); i++ {
					if b[i] == d || b[i] == s {
						want = i
						break
					}
				}
				if got := indexEither(b, from, swarOnes*uint64(d), swarOnes*uint64(s)); got != want {
					t.Fatalf("indexEither(%q, %d, %q, %q) = %d, want %d", b, from, d, s, got, want)
				}
			}
		}
	}
}

// TestCopyLateEscape: a line whose escape (text) or quote (CSV) comes after a value that was
// already masked is masked whole by the decoding path, from the start of the line.
func TestCopyLateEscape(t *testing.T) {
	m := newMasker(t)
	rules := []Rule{*rule(KindText, 0, "email"), *rule(KindText, 0, ""), *rule(KindText, 0, "email")}
	for _, tc := range []struct {
		opts    CopyOptions
		in, out string
	}{
		{CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`}, "ann@example.com\tplain\tbob@example.com\n", "a**@example.com\tplain\tb**@example.com\n"},
		{CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`}, "ann@example.com\ta\\tb\tbob@example.com\n", "a**@example.com\ta\\tb\tb**@example.com\n"},
		{CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`}, "ann@example.com\tx\tbo\\\\b@example.com\n", "a**@example.com\tx\tb***@example.com\n"},
		{CopyOptions{Format: "csv", Delimiter: ',', Quote: '"', Escape: '"'}, "ann@example.com,\"a,b\",bob@example.com\n", "a**@example.com,\"a,b\",b**@example.com\n"},
		{CopyOptions{Format: "csv", Delimiter: ',', Quote: '"', Escape: '"'}, "ann@example.com,x,\"bob@example.com\"\n", "a**@example.com,x,b**@example.com\n"},
	} {
		cm := NewCopyMasker(m, rules, tc.opts)
		out, n, err := cm.MaskData([]byte(tc.in))
		if err != nil || n != 2 || string(out) != tc.out {
			t.Errorf("%s %q: %q %d %v, want %q", tc.opts.Format, tc.in, out, n, err, tc.out)
		}
		// The same line appended after other output: what is before it stays as it was.
		dst, n, err := cm.AppendData([]byte("prefix"), []byte(tc.in))
		if err != nil || n != 2 || string(dst) != "prefix"+tc.out {
			t.Errorf("%s %q appended: %q %d %v", tc.opts.Format, tc.in, dst, n, err)
		}
	}
}

// TestPartialEmailShapes: the first character and up to three stars for the local part, the
// domain kept; a value without a local part is starred whole. (COPY masks e-mails of every
// shape: this pins the shapes the in-place writing of partialEmail must keep.)
func TestPartialEmailShapes(t *testing.T) {
	for in, want := range map[string]string{
		"john.doe@example.com": "j***@example.com",
		"ab@x.io":              "a*@x.io",
		"abc@x.io":             "a**@x.io",
		"abcd@x.io":            "a***@x.io",
		"a@x.io":               "*@x.io",
		"@x.io":                "@*.**",
		"a@b@x.io":             "a**@x.io",
		"no-at-sign":           "n*-**-****",
		"é1@x.io":              "\xc3**@x.io",
		"":                     "",
	} {
		if got := string(partialEmail([]byte("prefix:"), []byte(in))); got != "prefix:"+want {
			t.Errorf("partialEmail(%q) = %q, want %q", in, got, "prefix:"+want)
		}
	}
}
