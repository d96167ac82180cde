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
func (m *Metrics) statement(s *Session, decision Action, took time.Duration, masked int64) {
	if m == nil {
		return
	}
	door := s.door
	if door == "" {
		door = "unknown"
	}
	m.observer(s, door, decision).Observe(took.Seconds())
	if masked > 0 {
		m.ValuesMasked.WithLabelValues(door).Add(float64(masked))
	}
}

// sessionObservers keeps a session's statement-duration observers, one per decision, so a
// statement does not hash its labels again (a session's door never changes).
type sessionObservers struct {
	m   *Metrics
	obs [3]prometheus.Observer // allow, deny, require_approval
}

// observer returns the statement-duration observer of s's door and decision.
func (m *Metrics) observer(s *Session, door string, decision Action) prometheus.Observer {
	i := -1
	switch decision {
	case Allow:
		i = 0
	case Deny:
		i = 1
	case RequireApproval:
		i = 2
	}
	so := s.observers.Load()
	if i >= 0 && so != nil && so.m == m && so.obs[i] != nil {
		return so.obs[i]
	}
	o := m.StatementSeconds.WithLabelValues(door, string(decision))
	if i >= 0 {
		next := &sessionObservers{m: m}
		if so != nil && so.m == m {
			next.obs = so.obs
		}
		next.obs[i] = o
		s.observers.Store(next)
	}
	return o
}
