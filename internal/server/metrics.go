package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// registerPartMetrics adds what an operator watches of the ledger and the approvals to the
// instance's registry: commit latency by durability, records waiting for the group commit and
// for the index, and approval requests waiting for a decision. The gate's own metrics
// (statement latency by door and decision, values masked) are registered here too.
func (in *Instance) registerPartMetrics() {
	if in.reg == nil {
		return
	}
	commits := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "gatehouse", Name: "ledger_commit_duration_seconds",
		Help:    "Time to write (and sync, when the batch needs it) one ledger group commit, by durability (synced, written) and result.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
	}, []string{"durability", "result"})
	in.ledger.ObserveCommits(func(c ledger.Commit, _ int, took time.Duration, err error) {
		durability, result := "synced", "ok"
		if c == ledger.CommitWritten {
			durability = "written"
		}
		if err != nil {
			result = "error"
		} else if in.commits != nil {
			in.commits.Observe(took)
		}
		commits.WithLabelValues(durability, result).Observe(took.Seconds())
	})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "gatehouse", Name: name, Help: help}, f)
	}
	collectors := []prometheus.Collector{
		commits,
		gauge("ledger_queue_depth", "Ledger records waiting for their group commit.", func() float64 { return float64(in.ledger.Queued()) }),
		gauge("approvals_pending", "Approval requests waiting for a decision.", func() float64 { return float64(in.pendingApprovals()) }),
	}
	if st, ok := in.ledger.Store().(*ledger.SQLiteStore); ok {
		collectors = append(collectors, gauge("ledger_index_backlog_records",
			"Acknowledged ledger records not yet stored and indexed in the embedded store (the index lag).",
			func() float64 { return float64(st.IndexBacklog()) }))
	}
	scans := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "gatehouse", Name: "catalog_scan_duration_seconds",
		Help:    "Time to scan a target's catalogue for sensitive columns, by target and result.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"target", "result"})
	in.catalog.OnScan = func(target string, took time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		scans.WithLabelValues(target, result).Observe(took.Seconds())
	}
	collectors = append(collectors, scans)
	in.reg.MustRegister(collectors...)
	in.gate.Metrics = gate.NewMetrics(in.reg, in.gate.Deferred)
}

// pendingApprovals counts the requests waiting for a decision (at most the store's list cap).
func (in *Instance) pendingApprovals() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	list, err := in.approvals.List(ctx, approval.Filter{Status: approval.Pending, Limit: 1000})
	if err != nil {
		return 0
	}
	return len(list)
}
