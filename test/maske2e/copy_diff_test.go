package maske2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// copyShapes are result shapes of the family whose columns come from a whole-row expansion,
// a function returning a record set or a composite value: COPY must place every mask on the
// column the SELECT puts it on.
var copyShapes = []query{
	{name: "row expansion", sql: "SELECT (c).* FROM customers c"},
	{name: "row expansion of a subquery column", sql: "SELECT (s.c).*, s.n FROM (SELECT c, id AS n FROM customers c) s"},
	{name: "row expansion after columns", sql: "SELECT id, (c).email, (c).* FROM customers c"},
	{name: "json_populate_record", sql: "SELECT (json_populate_record(NULL::customers, row_to_json(c))).* FROM customers c"},
	{name: "json_populate_record in from", sql: "SELECT p.* FROM customers c, json_populate_record(NULL::customers, row_to_json(c)) p"},
	{name: "json_populate_recordset", sql: "SELECT * FROM json_populate_recordset(NULL::customers, (SELECT json_agg(c) FROM customers c))"},
	{name: "jsonb_to_recordset", sql: "SELECT * FROM jsonb_to_recordset((SELECT jsonb_agg(c) FROM customers c)) AS x(id int, email text, ssn text, full_name text)"},
	{name: "rows from", sql: "SELECT * FROM ROWS FROM (unnest(ARRAY(SELECT email FROM customers)), unnest(ARRAY(SELECT ssn FROM customers))) AS r(e, s)"},
	{name: "set-returning function over rows", sql: "SELECT id, jsonb_each_text(to_jsonb(c)) FROM customers c"},
	{name: "set-returning function over rows in from", sql: "SELECT c.id, kv.* FROM customers c, jsonb_each_text(to_jsonb(c)) kv"},
	{name: "unnest of a row array", sql: "SELECT * FROM unnest((SELECT array_agg(c) FROM customers c))"},
	{name: "unnest of a row array expanded", sql: "SELECT (u).* FROM (SELECT unnest(array_agg(c)) AS u FROM customers c) s"},
	{name: "composite-typed column", sql: "SELECT id, c, (c).ssn FROM customers c"},
	{name: "composite of a view", sql: "SELECT v FROM customer_contacts v"},
	{name: "star of a join", sql: "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id"},
	{name: "star over a cte with a column list", sql: "WITH s(a, b, c) AS (SELECT * FROM customers) SELECT * FROM s"},
}

// TestCopyMasksLikeSelect: for every query of the leak suites (reads, JSON keys) and the
// shapes above, COPY (q) TO STDOUT in text, CSV and binary gives a masked client exactly
// the values the SELECT gives it (text for text and CSV, binary for binary), column by
// column.
func TestCopyMasksLikeSelect(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 4*time.Minute)
	tp := startTap(t, e.dev)
	writer := e.dev.Token(t, "writer", "service")
	pc, err := pgconn.Connect(ctx, tp.dsn("writer", writer))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close(context.Background()) })
	all := append(append([]query{}, readQueries...), copyShapes...)
	for _, sql := range jsonKeyQueries {
		all = append(all, query{name: sql, sql: sql})
	}
	for _, q := range all {
		if q.args != nil || strings.Contains(q.sql, "$") {
			continue // COPY takes no parameters
		}
		t.Run(q.name, func(t *testing.T) {
			tp.take()
			for _, f := range []struct {
				name   string
				format int16
				opts   string
			}{{"text", 0, ""}, {"csv", 0, " WITH (FORMAT csv, HEADER)"}, {"binary", 1, " WITH (FORMAT binary)"}} {
				sel, err := selectCells(ctx, pc, q.sql, f.format)
				if err != nil {
					t.Fatalf("%s: SELECT: %v", f.name, err)
				}
				var buf bytes.Buffer
				if _, err := pc.CopyTo(ctx, &buf, "COPY ("+q.sql+") TO STDOUT"+f.opts); err != nil {
					t.Errorf("%s: COPY: %v", f.name, err)
					continue
				}
				cp, err := copyCells(buf.Bytes(), f.name)
				if err != nil {
					t.Fatalf("%s: %v", f.name, err)
				}
				if f.name == "csv" {
					// CSV writes NULL and the empty string alike (unquoted empty).
					for _, rows := range [][][]*string{sel, cp} {
						for _, r := range rows {
							for i, v := range r {
								if v == nil {
									r[i] = new(string)
								}
							}
						}
					}
				}
				if d := diffRows(sel, cp); d != "" {
					t.Errorf("%s: COPY differs from SELECT: %s", f.name, d)
				}
			}
			if found := e.fx.leaks(tp.take()); len(found) > 0 {
				t.Errorf("LEAK: seeded values reached the masked client: %v", found)
			}
		})
	}
}

// selectCells runs sql with every result column in format and returns the cells.
func selectCells(ctx context.Context, c *pgconn.PgConn, sql string, format int16) ([][]*string, error) {
	rr := c.ExecParams(ctx, sql, nil, nil, nil, []int16{format})
	var out [][]*string
	for rr.NextRow() {
		var row []*string
		for _, v := range rr.Values() {
			if v == nil {
				row = append(row, nil)
				continue
			}
			s := string(v)
			row = append(row, &s)
		}
		out = append(out, row)
	}
	_, err := rr.Close()
	return out, err
}

// copyCells decodes COPY output in format (text, csv with a header, binary).
func copyCells(data []byte, format string) ([][]*string, error) {
	var out [][]*string
	switch format {
	case "binary":
		p := 19
		if len(data) < p || !bytes.HasPrefix(data, []byte("PGCOPY\n\xff\r\n\x00")) {
			return nil, fmt.Errorf("binary COPY: no signature")
		}
		p += int(binary.BigEndian.Uint32(data[15:19]))
		for {
			if p+2 > len(data) {
				return nil, fmt.Errorf("binary COPY: truncated")
			}
			n := int(int16(binary.BigEndian.Uint16(data[p:])))
			p += 2
			if n < 0 {
				return out, nil
			}
			var row []*string
			for range n {
				l := int(int32(binary.BigEndian.Uint32(data[p:])))
				p += 4
				if l < 0 {
					row = append(row, nil)
					continue
				}
				s := string(data[p : p+l])
				p += l
				row = append(row, &s)
			}
			out = append(out, row)
		}
	case "csv":
		recs, err := parseCSV(data)
		if err != nil || len(recs) == 0 {
			return nil, fmt.Errorf("CSV COPY: %v (%d records)", err, len(recs))
		}
		return recs[1:], nil
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" && len(data) == 0 {
			break
		}
		var row []*string
		for _, f := range strings.Split(line, "\t") {
			if f == `\N` {
				row = append(row, nil)
				continue
			}
			s := unescapeCopyText(f)
			row = append(row, &s)
		}
		out = append(out, row)
	}
	return out, nil
}

func unescapeCopyText(f string) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '\\' || i+1 == len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		default:
			b.WriteByte(f[i])
		}
	}
	return b.String()
}

// parseCSV reads CSV records as PostgreSQL writes them (quote and escape '"'), keeping
// an unquoted empty field apart as NULL.
func parseCSV(data []byte) ([][]*string, error) {
	var out [][]*string
	var row []*string
	i := 0
	for i < len(data) {
		var f []byte
		quoted := false
		for i < len(data) && data[i] != ',' && data[i] != '\n' {
			if data[i] == '"' {
				quoted = true
				i++
				for {
					if i >= len(data) {
						return nil, fmt.Errorf("unterminated quoted field")
					}
					if data[i] == '"' && i+1 < len(data) && data[i+1] == '"' {
						f = append(f, '"')
						i += 2
						continue
					}
					if data[i] == '"' {
						i++
						break
					}
					f = append(f, data[i])
					i++
				}
				continue
			}
			f = append(f, data[i])
			i++
		}
		if !quoted && len(f) == 0 {
			row = append(row, nil)
		} else {
			s := string(f)
			row = append(row, &s)
		}
		if i >= len(data) || data[i] == '\n' {
			out = append(out, row)
			row = nil
		}
		i++
	}
	return out, nil
}

// diffRows compares two results as multisets of rows and describes the first difference.
func diffRows(a, b [][]*string) string {
	key := func(r []*string) string {
		var s []string
		for _, v := range r {
			if v == nil {
				s = append(s, "<NULL>")
			} else {
				s = append(s, fmt.Sprintf("%q", *v))
			}
		}
		return strings.Join(s, " | ")
	}
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i, r := range a {
		ka[i] = key(r)
	}
	for i, r := range b {
		kb[i] = key(r)
	}
	slices.Sort(ka)
	slices.Sort(kb)
	if len(ka) != len(kb) {
		return fmt.Sprintf("%d rows by SELECT, %d by COPY", len(ka), len(kb))
	}
	for i := range ka {
		if ka[i] != kb[i] {
			return fmt.Sprintf("\n  SELECT row %.300s\n  COPY   row %.300s", ka[i], kb[i])
		}
	}
	return ""
}
