package gate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gate's Prometheus collectors, the same for every door: how long statements
// take by door and decision, how many values masking rewrote, and how many records wait for
// a ledger that cannot write. A nil *Metrics records nothing.
type Metrics struct {
	// StatementSeconds is the time from a statement's check to its completion (its
	// record submitted), by door and decision.
	StatementSeconds *prometheus.HistogramVec
	// ValuesMasked counts values masking rewrote in results, by door.
	ValuesMasked *prometheus.CounterVec
	// ValuesMaskedByClass counts them by door and class.
	ValuesMaskedByClass *prometheus.CounterVec
}

// NewMetrics creates the gate's collectors and registers them with reg (nil: not
// registered). deferred reports the records waiting for the ledger (Gate.Deferred).
func NewMetrics(reg prometheus.Registerer, deferred func() int) *Metrics {
	m := &Metrics{
		StatementSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gatehouse", Name: "statement_duration_seconds",
			Help:    "Time from a statement's check to its completion, by door and decision.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"door", "decision"}),
		ValuesMasked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Name: "values_masked_total",
			Help: "Result values masking rewrote, by door.",
		}, []string{"door"}),
		ValuesMaskedByClass: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Name: "values_masked_by_class_total",
			Help: "Result values masking rewrote, by door and sensitive class (free_text: found by the value detectors; composite: a mix of classes).",
		}, []string{"door", "class"}),
	}
	if reg != nil {
		reg.MustRegister(m.StatementSeconds, m.ValuesMasked, m.ValuesMaskedByClass, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "gatehouse", Name: "ledger_deferred_records",
			Help: "Session ends, failed logins and refused connections waiting for the ledger to write again.",
		}, func() float64 { return float64(deferred()) }))
	}
	return m
}

// CountMasked adds what a result's masker masked, by class, to the metrics. Doors call it
// when a result ends (and may call it more than once per result: the masker reports each
// value once).
func (g *Gate) CountMasked(s *Session, m RowMasker) {
	if g.Metrics == nil || m == nil {
		return
	}
	door := "unknown"
	if s != nil && s.door != "" {
		door = s.door
	}
	m.MaskedByClass(func(class string, n int64) {
		g.Metrics.ValuesMaskedByClass.WithLabelValues(door, class).Add(float64(n))
	})
}

// statement observes one completed statement.
func (m *Metrics) statement(door string, decision Action, took time.Duration, masked int64) {
	if m == nil {
		return
	}
	if door == "" {
		door = "unknown"
	}
	m.StatementSeconds.WithLabelValues(door, string(decision)).Observe(took.Seconds())
	if masked > 0 {
		m.ValuesMasked.WithLabelValues(door).Add(float64(masked))
	}
}
