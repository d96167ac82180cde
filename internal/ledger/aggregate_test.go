package ledger

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestWhoDroppedCountsIntentsWithoutCompletion: a DROP whose completion was lost (the proxy
// died while it ran) is reported with an unknown outcome; a DROP with both an intent and a
// completion is reported once; intents answered by a failed or refused completion, and
// intents for other tables, are not reported.
func TestWhoDroppedCountsIntentsWithoutCompletion(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{})
		base := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
		n := 0
		// ev builds the intent or the completion of one execution in a session.
		ev := func(typ EventType, session, subject, text string, tables []string, mod func(*Event)) *Event {
			n++
			e := stmtEvent(subject, "DROP TABLE", text, tables, nil)
			e.Type, e.SessionID, e.Via, e.Time = typ, session, "simple", base.Add(time.Duration(n)*time.Minute)
			if mod != nil {
				mod(e)
			}
			return e
		}
		failed := func(e *Event) { e.SQLState = "42P01" }
		refused := func(e *Event) { e.Decision = "deny"; e.Rule = "ledger-unavailable" }
		record(t, l,
			// alice: intent and completion, with an unrelated read of the session between.
			ev(EventStatementIntent, "s1", "alice@corp", "DROP TABLE public.orders", []string{"public.orders"}, nil),
			stmtEvent("alice@corp", "SELECT", "SELECT 1", nil, nil),
			ev(EventStatement, "s1", "alice@corp", "DROP TABLE public.orders", []string{"public.orders"}, nil),
			// bob: the proxy died while his DROP ran.
			ev(EventStatementIntent, "s2", "bob@corp", "DROP TABLE orders", []string{"orders"}, func(e *Event) { e.ClientAddr = "10.9.9.9:5000" }),
			// carol: the DROP ran and failed.
			ev(EventStatementIntent, "s3", "carol@corp", "DROP TABLE public.orders", []string{"public.orders"}, nil),
			ev(EventStatement, "s3", "carol@corp", "DROP TABLE public.orders", []string{"public.orders"}, failed),
			// dave: the same text twice; only the first completed.
			ev(EventStatementIntent, "s4", "dave@corp", "DROP TABLE IF EXISTS public.orders", []string{"public.orders"}, nil),
			ev(EventStatement, "s4", "dave@corp", "DROP TABLE IF EXISTS public.orders", []string{"public.orders"}, nil),
			ev(EventStatementIntent, "s4", "dave@corp", "DROP TABLE IF EXISTS public.orders", []string{"public.orders"}, nil),
			// eve: another table, no completion.
			ev(EventStatementIntent, "s5", "eve@corp", "DROP TABLE public.invoices", []string{"public.invoices"}, nil),
			// frank: intent recorded, then refused because the ledger went down.
			ev(EventStatementIntent, "s6", "frank@corp", "DROP TABLE public.orders", []string{"public.orders"}, nil),
			ev(EventStatement, "s6", "frank@corp", "DROP TABLE public.orders", []string{"public.orders"}, refused),
		)
		day := TimeRange{From: base, To: base.Add(24 * time.Hour)}
		type row struct{ subject, outcome string }
		got := func(table string) []row {
			t.Helper()
			recs, err := ts.WhoDropped(ctx, table, day)
			if err != nil {
				t.Fatal(err)
			}
			var out []row
			for _, r := range recs {
				out = append(out, row{r.Subject, r.Outcome})
			}
			return out
		}
		want := []row{{"alice@corp", OutcomeCompleted}, {"bob@corp", OutcomeUnknown}, {"dave@corp", OutcomeCompleted}, {"dave@corp", OutcomeUnknown}}
		if g := got("orders"); !equalRows(g, want) {
			t.Fatalf("who dropped orders:\n got %v\nwant %v", g, want)
		}
		// Schema-qualified: bob named the table without its schema, as the side tables do.
		want = []row{{"alice@corp", OutcomeCompleted}, {"dave@corp", OutcomeCompleted}, {"dave@corp", OutcomeUnknown}}
		if g := got("public.orders"); !equalRows(g, want) {
			t.Fatalf("who dropped public.orders:\n got %v\nwant %v", g, want)
		}
		if g := got("invoices"); !equalRows(g, []row{{"eve@corp", OutcomeUnknown}}) {
			t.Fatalf("who dropped invoices: %v", g)
		}
		recs, err := ts.WhoDropped(ctx, "orders", day)
		if err != nil {
			t.Fatal(err)
		}
		if b := recs[1]; b.ClientAddr != "10.9.9.9:5000" || b.Table != "orders" || b.Kind != "DROP TABLE" || b.Text != "DROP TABLE orders" {
			t.Fatalf("unknown-outcome record lacks its facts: %+v", b)
		}
		var out bytes.Buffer
		if err := WriteDrops(&out, recs); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "OUTCOME") || strings.Count(out.String(), OutcomeUnknown) != 2 {
			t.Fatalf("table output:\n%s", out.String())
		}
	})
}

func equalRows[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAgentsQueriedCountsIntentsWithoutCompletion: an agent's write whose completion was lost
// (the proxy died while it ran) counts once; a write with both an intent and a completion
// counts once; intents of humans, of other tables and outside the range do not count.
func TestAgentsQueriedCountsIntentsWithoutCompletion(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{})
		base := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
		n := 0
		at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }
		ev := func(typ EventType, session, subject, kind, text string, tables []string) *Event {
			n++
			e := stmtEvent(subject, kind, text, tables, nil)
			e.Type, e.SessionID, e.Via, e.Time, e.IdentityKind = typ, session, "extended", at(n), "agent"
			if strings.Contains(subject, "@") {
				e.IdentityKind = "human"
			}
			return e
		}
		upd := "UPDATE public.customers SET status = $1 WHERE id = $2"
		cust := []string{"public.customers"}
		early := ev(EventStatementIntent, "s0", "agent-z", "UPDATE", upd, cust)
		early.Time = base.Add(-48 * time.Hour)
		record(t, l,
			early, // outside the range
			// agent-a: intent and completion.
			ev(EventStatementIntent, "s1", "agent-a", "UPDATE", upd, cust),
			ev(EventStatement, "s1", "agent-a", "UPDATE", upd, cust),
			// agent-b: a completed read, then the proxy died while its UPDATE ran.
			ev(EventStatement, "s2", "agent-b", "SELECT", "SELECT * FROM public.customers", cust),
			ev(EventStatementIntent, "s2", "agent-b", "UPDATE", upd, cust),
			// agent-c: the same UPDATE twice; only the first completed.
			ev(EventStatementIntent, "s3", "agent-c", "UPDATE", upd, cust),
			ev(EventStatement, "s3", "agent-c", "UPDATE", upd, cust),
			ev(EventStatementIntent, "s3", "agent-c", "UPDATE", upd, cust),
			// agent-d: another table, no completion.
			ev(EventStatementIntent, "s4", "agent-d", "DELETE", "DELETE FROM public.orders", []string{"public.orders"}),
			// a human, no completion.
			ev(EventStatementIntent, "s5", "ann@corp", "UPDATE", upd, cust),
			// agent-e: two completed UPDATEs with other statements of the session between.
			ev(EventStatementIntent, "s6", "agent-e", "UPDATE", upd, cust),
			ev(EventStatement, "s6", "agent-e", "SELECT", "SELECT 1", nil),
			ev(EventStatement, "s6", "agent-e", "UPDATE", upd, cust),
			ev(EventStatementIntent, "s6", "agent-e", "DELETE", "DELETE FROM public.orders", []string{"public.orders"}),
			ev(EventStatement, "s6", "agent-e", "DELETE", "DELETE FROM public.orders", []string{"public.orders"}),
			ev(EventStatementIntent, "s6", "agent-e", "UPDATE", upd, cust),
			ev(EventStatement, "s6", "agent-e", "UPDATE", upd, cust),
			// agent-f: a table of the same name in another schema, no completion.
			ev(EventStatementIntent, "s7", "agent-f", "UPDATE", "UPDATE other.customers SET a = 1", []string{"other.customers"}),
		)
		day := TimeRange{From: base, To: base.Add(24 * time.Hour)}
		type row struct {
			subject string
			n       int64
		}
		got := func(table string) []row {
			t.Helper()
			ics, err := ts.AgentsQueried(ctx, table, day)
			if err != nil {
				t.Fatal(err)
			}
			var out []row
			for _, ic := range ics {
				if ic.IdentityKind != "agent" {
					t.Fatalf("not an agent: %+v", ic)
				}
				out = append(out, row{ic.Subject, ic.Statements})
			}
			return out
		}
		want := []row{{"agent-b", 2}, {"agent-c", 2}, {"agent-e", 2}, {"agent-a", 1}, {"agent-f", 1}}
		if g := got("customers"); !equalRows(g, want) {
			t.Fatalf("agents on customers:\n got %v\nwant %v", g, want)
		}
		want = []row{{"agent-b", 2}, {"agent-c", 2}, {"agent-e", 2}, {"agent-a", 1}}
		if g := got("public.customers"); !equalRows(g, want) {
			t.Fatalf("agents on public.customers:\n got %v\nwant %v", g, want)
		}
		if g := got("orders"); !equalRows(g, []row{{"agent-d", 1}, {"agent-e", 1}}) {
			t.Fatalf("agents on orders: %v", g)
		}
		ics, err := ts.AgentsQueried(ctx, "customers", day)
		if err != nil {
			t.Fatal(err)
		}
		// agent-b's last statement is the intent (event 5), its first the read (event 4).
		if b := ics[0]; !b.First.Equal(at(4)) || !b.Last.Equal(at(5)) {
			t.Fatalf("agent-b's first and last: %+v", b)
		}
		// The whole history counts the early intent too.
		all, err := ts.AgentsQueried(ctx, "customers", TimeRange{})
		if err != nil {
			t.Fatal(err)
		}
		if z := all[len(all)-1]; z.Subject != "agent-z" || z.Statements != 1 || !z.First.Equal(early.Time) {
			t.Fatalf("whole history: %+v", all)
		}
	})
}

// TestPIIReadersCountsIntentsWithoutCompletion: reads get intents only inside a string of
// statements that can also change data; such a read whose completion was lost counts once,
// with and without the daily rollup, and one with a completion is not counted twice.
func TestPIIReadersCountsIntentsWithoutCompletion(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{})
		base := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
		n := 0
		sens := map[string]string{"public.customers.email": "email"}
		// multi is "SELECT email ...; UPDATE ..." sent as one string: one event, one intent.
		multi := func(typ EventType, session, subject string) *Event {
			n++
			e := stmtEvent(subject, "SELECT", "SELECT email FROM public.customers", []string{"public.customers"}, sens)
			up := stmtEvent(subject, "UPDATE", "UPDATE public.customers SET seen = now()", []string{"public.customers"}, nil)
			e.Statements = append(e.Statements, up.Statements...)
			e.Type, e.SessionID, e.Via, e.Time = typ, session, "simple", base.Add(time.Duration(n)*time.Minute)
			return e
		}
		read := stmtEvent("carol@corp", "SELECT", "SELECT email FROM public.customers", []string{"public.customers"}, sens)
		read.SessionID, read.Time = "s3", base
		record(t, l,
			read,
			multi(EventStatementIntent, "s1", "alice@corp"),
			multi(EventStatement, "s1", "alice@corp"),
			multi(EventStatementIntent, "s2", "bob@corp"), // the proxy died
			multi(EventStatementIntent, "s3", "carol@corp"),
		)
		type row struct {
			subject string
			n       int64
		}
		want := []row{{"carol@corp", 2}, {"alice@corp", 1}, {"bob@corp", 1}}
		for _, tr := range []TimeRange{
			{From: base, To: base.Add(time.Hour)},                           // per-event rows
			{From: base.Add(-48 * time.Hour), To: base.Add(48 * time.Hour)}, // whole days: the rollup
		} {
			for _, class := range []string{"pii", "email"} {
				ics, err := ts.PIIReaders(ctx, class, tr)
				if err != nil {
					t.Fatal(err)
				}
				var g []row
				for _, ic := range ics {
					g = append(g, row{ic.Subject, ic.Statements})
				}
				if !equalRows(g, want) {
					t.Fatalf("%s readers in %v:\n got %v\nwant %v", class, tr, g, want)
				}
			}
		}
	})
}
