package gate_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// keepNothing is a Recorder that keeps nothing, so the benchmarks below measure the gate's
// own CPU and allocations (the ledger's are measured by its own benchmarks).
type keepNothing struct{ ack *ledger.Ack }

func (keepNothing) Record(context.Context, *ledger.Event) error         { return nil }
func (k keepNothing) Submit(context.Context, *ledger.Event) *ledger.Ack { return k.ack }
func (keepNothing) Healthy() error                                      { return nil }

// benchGate is a gate with the real inspector (the server's cache size) and the built-in
// default policy, a session on a dev target (writes allowed), attached to the live registry
// and with metrics, as the PostgreSQL door runs it.
func benchGate(tb testing.TB) (*gate.Gate, *gate.Session) {
	tb.Helper()
	pol, err := policy.NewEngine(policy.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	g := &gate.Gate{Inspector: inspect.New(50_000), Policy: pol, Recorder: keepNothing{ack: ledger.AnsweredAck(nil)},
		Metrics: gate.NewMetrics(nil, func() int { return 0 }), Live: live.New()}
	s := session("dev", identity.Service)
	if d, err := g.OpenSession(context.Background(), s); err != nil || d.Action != gate.Allow {
		tb.Fatalf("open: %+v %v", d, err)
	}
	g.Attach(s, "pg", func(string) {})
	return g, s
}

// shapes are statement shapes as clients send them: pgbench -S in simple protocol (a new
// literal every time, found by its number skeleton), the same with a bound parameter (the
// exact text again), and a TPC-B write with a negative delta inside a transaction block.
var shapes = []struct {
	name, sql string
	inBlock   bool
}{
	{"select-literal", "SELECT abalance FROM pgbench_accounts WHERE aid = %d;", false},
	{"select-bound", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", false},
	{"update-in-block", "UPDATE pgbench_accounts SET abalance = abalance + -%d WHERE aid = %d;", true},
}

func shapeText(sql string, i int) string {
	switch n := countVerbs(sql); n {
	case 1:
		return fmt.Sprintf(sql, i)
	case 2:
		return fmt.Sprintf(sql, i%5000+1, i)
	}
	return sql
}

func countVerbs(sql string) int {
	n := 0
	for i := 0; i+1 < len(sql); i++ {
		if sql[i] == '%' && sql[i+1] == 'd' {
			n++
		}
	}
	return n
}

// BenchmarkCheck is the gate's decision for one statement of a known shape: inspection
// (cached), the catalog, the policy (memoized) and, for a write, its intent record.
func BenchmarkCheck(b *testing.B) {
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			g, s := benchGate(b)
			ctx := context.Background()
			texts := make([]string, 4096)
			for i := range texts {
				texts[i] = shapeText(sh.sql, i+1)
			}
			s.SetTransactionBlock(sh.inBlock)
			g.Check(ctx, s, texts[0], gate.ViaQuery) // the shape is known
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				i++
				if c := g.Check(ctx, s, texts[i%len(texts)], gate.ViaQuery); !c.Allowed() {
					b.Fatal(c.DenyMessage())
				}
			}
		})
	}
}

// BenchmarkFinish is the completion of one statement: its ledger event, metrics and the
// live view (the Submit itself is the recorder's, which keeps nothing here).
func BenchmarkFinish(b *testing.B) {
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			g, s := benchGate(b)
			ctx := context.Background()
			s.SetTransactionBlock(sh.inBlock)
			c := g.Check(ctx, s, shapeText(sh.sql, 1), gate.ViaQuery)
			if !c.Allowed() {
				b.Fatal(c.DenyMessage())
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := g.Finish(ctx, s, c, gate.Outcome{Rows: 1}).Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCheckOfAKnownShapeAllocatesLittle: deciding a statement whose shape the gate has seen
// allocates the Check it returns and, for a new literal, the statement's own facts — nothing
// per policy rule, catalog lookup or cache look-up; its completion allocates the ledger event
// (one allocation with its statement list).
func TestCheckOfAKnownShapeAllocatesLittle(t *testing.T) {
	for _, sh := range shapes {
		g, s := benchGate(t)
		ctx := context.Background()
		s.SetTransactionBlock(sh.inBlock)
		g.Check(ctx, s, shapeText(sh.sql, 1), gate.ViaQuery)
		want := 2.0 // the Check and the statement's facts
		if sh.inBlock {
			want++ // the intent's event
		}
		i := 1
		if n := testing.AllocsPerRun(200, func() {
			i++
			if c := g.Check(ctx, s, shapeText(sh.sql, i), gate.ViaQuery); !c.Allowed() {
				t.Fatal(c.DenyMessage())
			}
		}); n > want+1 { // +1: the text the test itself formats
			t.Errorf("%s: Check allocates %.0f times, want at most %.0f", sh.name, n, want)
		}
		c := g.Check(ctx, s, shapeText(sh.sql, 1), gate.ViaQuery)
		if n := testing.AllocsPerRun(200, func() { g.Finish(ctx, s, c, gate.Outcome{Rows: 1}) }); n > 1 {
			t.Errorf("%s: Finish allocates %.0f times, want at most 1", sh.name, n)
		}
	}
}
