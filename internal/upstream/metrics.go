package upstream

import "github.com/prometheus/client_golang/prometheus"

// PoolCollector exports a pool's counters to Prometheus, read from Stats at each scrape so
// the pool keeps no metric state of its own.
type PoolCollector struct {
	pool                                 *Pool
	idle, opened, reused, kept, discards *prometheus.Desc
}

var _ prometheus.Collector = (*PoolCollector)(nil)

// NewPoolCollector describes p's metrics.
func NewPoolCollector(p *Pool) *PoolCollector {
	return &PoolCollector{
		pool:     p,
		idle:     prometheus.NewDesc("gatehouse_upstream_pool_idle", "Upstream connections idle in the pool.", nil, nil),
		opened:   prometheus.NewDesc("gatehouse_upstream_pool_opened_total", "Upstream logins made because the pool had no connection to hand out.", nil, nil),
		reused:   prometheus.NewDesc("gatehouse_upstream_pool_reused_total", "Sessions served by a pooled, reset upstream connection.", nil, nil),
		kept:     prometheus.NewDesc("gatehouse_upstream_pool_kept_total", "Upstream connections reset and kept after their session ended.", nil, nil),
		discards: prometheus.NewDesc("gatehouse_upstream_pool_discarded_total", "Upstream connections closed instead of kept or handed out (reset failed, dead, expired, over the bounds).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.idle, c.opened, c.reused, c.kept, c.discards} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stats()
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.Idle))
	ch <- prometheus.MustNewConstMetric(c.opened, prometheus.CounterValue, float64(s.Opened))
	ch <- prometheus.MustNewConstMetric(c.reused, prometheus.CounterValue, float64(s.Reused))
	ch <- prometheus.MustNewConstMetric(c.kept, prometheus.CounterValue, float64(s.Kept))
	ch <- prometheus.MustNewConstMetric(c.discards, prometheus.CounterValue, float64(s.Discards))
}
