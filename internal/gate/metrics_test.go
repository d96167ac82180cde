package gate_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// TestStatementMetricsPerDecision: a session's statements are counted under its door and
// each statement's own decision, however the decisions alternate (the session keeps its
// observers between statements).
func TestStatementMetricsPerDecision(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := &gate.Gate{Inspector: inspect.New(10), Metrics: gate.NewMetrics(reg, func() int { return 0 })}
	ctx := context.Background()
	s := &gate.Session{ID: "m"}
	g.Attach(s, "pg", nil)
	for _, sql := range []string{"SELECT 1", "SELEC 1", "SELECT 2", "SELECT 3", "SELEC 2"} {
		c := g.Check(ctx, s, sql, gate.ViaQuery)
		if err := g.Done(ctx, s, c, gate.Outcome{}); err != nil {
			t.Fatal(err)
		}
	}
	other := &gate.Session{ID: "n"}
	g.Attach(other, "mcp", nil)
	if err := g.Done(ctx, other, g.Check(ctx, other, "SELECT 1", gate.ViaMCP), gate.Outcome{}); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "gatehouse_statement_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			got[key] = m.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{"decision=allow door=pg ": 3, "decision=deny door=pg ": 2, "decision=allow door=mcp ": 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d statements counted, want %d (all: %v)", k, got[k], n, got)
		}
	}
}
