package mask

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// runInspected is harness.run with the statement facts the gate has: the real inspector's,
// Shape included.
func (h *harness) runInspected(t *testing.T, in *inspect.Inspector, sql, profile string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rr := h.conn.ExecParams(ctx, sql, nil, nil, nil, []int16{0})
	var res result
	for _, fd := range rr.FieldDescriptions() {
		res.cols = append(res.cols, gate.Column{Name: fd.Name, TableOID: fd.TableOID, AttNum: fd.TableAttributeNumber, TypeOID: fd.DataTypeOID, Format: fd.Format})
	}
	check := &gate.Check{Statements: in.Inspect(sql), Decision: gate.Decision{Action: gate.Allow, MaskProfile: profile}}
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

// Texts that differ only in their constants share one lineage entry (a simple-protocol
// client sends a new text per value), and every one of them is still masked.
func TestLineageCachedPerShape(t *testing.T) {
	h := newHarness(t)
	in := inspect.New(100)
	for _, id := range []string{"1", "2", "3"} {
		res := h.runInspected(t, in, "SELECT lower(email) AS e, 'tag' AS t FROM customers WHERE id = "+id, "")
		if l := leaks(res); len(l) > 0 {
			t.Errorf("id %s: leaked %v in %q", id, l, res.rows)
		}
		if len(res.rows) != 1 || string(res.rows[0][1]) != "tag" {
			t.Errorf("id %s: constant column changed: %q", id, res.rows)
		}
	}
	if n := h.planner.lineage.Len(); n != 1 {
		t.Errorf("lineage cache holds %d entries for one statement shape, want 1", n)
	}
}

// A DDL that changes what a cached shape reads is seen by the next statement of that shape:
// the catalog's new generation is part of the key.
func TestLineageCacheSeesDDL(t *testing.T) {
	h := newHarness(t)
	in := inspect.New(100)
	h.pg.Exec(t, "postgres", "CREATE TABLE shapes (n int, c text); INSERT INTO shapes VALUES (1, 'hello'), (2, 'world')")
	key := classify.TargetKey(h.session.Target, h.session.Database)
	h.planner.catalog.Invalidate(key)
	res := h.runInspected(t, in, "SELECT s::text AS whole FROM shapes s WHERE n = 1", "")
	if len(res.rows) != 1 || string(res.rows[0][0]) != "(1,hello)" {
		t.Fatalf("before the DDL a row of plain columns shows raw: %q", res.rows)
	}
	h.pg.Exec(t, "postgres", "ALTER TABLE shapes ADD COLUMN email text; UPDATE shapes SET email = 'zed.shape@example.org'")
	h.planner.catalog.Invalidate(key) // what the gate does after a DDL
	res = h.runInspected(t, in, "SELECT s::text AS whole FROM shapes s WHERE n = 2", "")
	if len(res.rows) != 1 || strings.Contains(string(res.rows[0][0]), "zed.shape") {
		t.Errorf("after the DDL the whole row (now with an email column) leaked: %q", res.rows)
	}
	if res.rm == nil || res.rm.Touched()["public.shapes.email"] == "" {
		var touched map[string]string
		if res.rm != nil {
			touched = res.rm.Touched()
		}
		t.Errorf("after the DDL the whole row is not traced to the new email column: touched %v", touched)
	}
}

// BenchmarkPlanResultSimpleProtocol plans the result of pgbench -S as a simple-protocol
// client sends it: the same statement with a new constant every time. The planner has no
// catalog here, so every result needs the statement's lineage (the path a column without a
// catalog entry takes).
func BenchmarkPlanResultSimpleProtocol(b *testing.B) {
	p := NewPlanner(nil, newMasker(b), nil, nil)
	in := inspect.New(100000)
	s := &gate.Session{ID: "s1"}
	cols := []gate.Column{{Name: "abalance", TypeOID: 23}}
	const n = 8192 // more texts than the lineage cache holds, like pgbench -S over 1M accounts
	checks := make([]*gate.Check, n)
	for i := range checks {
		sql := "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(i+1) + ";"
		checks[i] = &gate.Check{Statements: in.Inspect(sql), Decision: gate.Decision{Action: gate.Allow}}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = p.PlanResult(ctx, s, checks[i%n], cols)
	}
}
