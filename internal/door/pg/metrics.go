package pg

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the PostgreSQL door's Prometheus collectors: what an operator watches to see
// load, refusals and brute-force attempts. A nil *Metrics records nothing.
type Metrics struct {
	// Connections counts accepted TCP connections (including cancel requests).
	Connections prometheus.Counter
	// ActiveSessions is the number of authenticated sessions relaying now.
	ActiveSessions prometheus.Gauge
	// LoginFailures counts failed logins by cause (bad_credentials, insecure_transport,
	// no_user, protocol, ...); the client sees the same error whatever the cause.
	LoginFailures *prometheus.CounterVec
	// RefusedConnections counts connections refused before a session began, by cause
	// (the LoginFailures causes, plus unknown_target, startup_parameter, policy,
	// ledger_unavailable, upstream_unavailable).
	RefusedConnections *prometheus.CounterVec
	// Statements counts gate decisions by action (allow, deny, require_approval).
	Statements *prometheus.CounterVec
	// Bytes counts relayed bytes by direction (client_to_upstream, upstream_to_client).
	Bytes *prometheus.CounterVec

	// allowed is Statements' child for "allow", looked up once: counting the decision of
	// every statement by label lookup cost a hash of the label per statement.
	allowed prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "pg", Name: "connections_total",
			Help: "TCP connections accepted by the PostgreSQL door.",
		}),
		ActiveSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gatehouse", Subsystem: "pg", Name: "active_sessions",
			Help: "Authenticated PostgreSQL sessions currently relaying.",
		}),
		LoginFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "pg", Name: "login_failures_total",
			Help: "Failed PostgreSQL logins by cause.",
		}, []string{"cause"}),
		RefusedConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "pg", Name: "refused_connections_total",
			Help: "PostgreSQL connections refused before a session began, by cause.",
		}, []string{"cause"}),
		Statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "pg", Name: "statements_total",
			Help: "Statements checked by the gate, by decision.",
		}, []string{"decision"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "pg", Name: "bytes_total",
			Help: "Bytes relayed by the PostgreSQL door, by direction.",
		}, []string{"direction"}),
	}
	m.allowed = m.Statements.WithLabelValues("allow")
	if reg != nil {
		reg.MustRegister(m.Connections, m.ActiveSessions, m.LoginFailures, m.RefusedConnections, m.Statements, m.Bytes)
	}
	return m
}

func (m *Metrics) connection() {
	if m != nil {
		m.Connections.Inc()
	}
}

func (m *Metrics) sessionDelta(d float64) {
	if m != nil {
		m.ActiveSessions.Add(d)
	}
}

func (m *Metrics) loginFailed(cause string) {
	if m != nil {
		m.LoginFailures.WithLabelValues(cause).Inc()
		m.RefusedConnections.WithLabelValues(cause).Inc()
	}
}

func (m *Metrics) refused(cause string) {
	if m != nil {
		m.RefusedConnections.WithLabelValues(cause).Inc()
	}
}

func (m *Metrics) statement(decision string) {
	switch {
	case m == nil:
	case decision == "allow" && m.allowed != nil:
		m.allowed.Inc()
	default:
		m.Statements.WithLabelValues(decision).Inc()
	}
}

func (m *Metrics) bytes(in, out int64) {
	if m != nil {
		if in > 0 {
			m.Bytes.WithLabelValues("client_to_upstream").Add(float64(in))
		}
		if out > 0 {
			m.Bytes.WithLabelValues("upstream_to_client").Add(float64(out))
		}
	}
}
