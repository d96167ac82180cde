package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// resultKind says how a row's result is computed from a Gatehouse leg's measurement.
type resultKind int

const (
	vsBouncer  resultKind = iota // Gatehouse ÷ PgBouncer
	vsDirect                     // Gatehouse ÷ direct
	plusDirect                   // Gatehouse − direct
	itself                       // the Gatehouse value
)

// rowDef is one line of the report.
type rowDef struct {
	key, label string
	cell       func(float64) string
	kind       resultKind
	// lower is true when smaller results are better.
	lower      bool
	done, goal float64 // thresholds; NaN for none
	// lagKey names the row holding the index lag (seconds) of a rate measured "with the
	// indexes current within 1 s": a longer lag fails the row whatever the rate.
	lagKey string
}

var none = math.NaN()

func tps(v float64) string        { return formatCount(v) }
func micros(v float64) string     { return fmt.Sprintf("%.0f µs", v) }
func micros1(v float64) string    { return fmt.Sprintf("%.1f µs", v) }
func millis(v float64) string     { return formatCount(v) + " ms" }
func millisFine(v float64) string { return fmt.Sprintf("%.2f ms", v) }
func rowsPS(v float64) string     { return fmt.Sprintf("%.0fk rows/s", v/1000) }
func kib(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f KiB", v)
	}
	return fmt.Sprintf("%.1f KiB", v)
}
func perSec(v float64) string  { return formatCount(v) + "/s" }
func seconds(v float64) string { return fmt.Sprintf("%.2f s", v) }

// rowDefs are issue 9's goals, in its order, plus a few lines that explain them.
func rowDefs(o options) []rowDef {
	return slices.Concat([]rowDef{
		{"sel-simple", fmt.Sprintf("-S simple, %d clients (TPS)", o.clients), tps, vsBouncer, false, 0.8, 1.0, ""},
		{"sel-extended", fmt.Sprintf("-S extended, %d clients (TPS)", o.clients), tps, vsBouncer, false, 0.8, 1.0, ""},
		{"sel-prepared", fmt.Sprintf("-S prepared, %d clients (TPS; PgBouncer session mode)", o.clients), tps, vsBouncer, false, 0.8, 1.0, ""},
		{"tpcb", fmt.Sprintf("TPC-B-like, %d clients (TPS)", o.clients), tps, vsBouncer, false, 0.8, 1.0, ""},
		{"lat-p50", "1 client -S simple, latency p50 (result: added vs direct)", micros, plusDirect, true, 60, 25, ""},
		{"lat-p99", "1 client -S simple, latency p99 (result: added vs direct)", micros, plusDirect, true, 250, none, ""},
		{"cpu-select", "CPU per -S simple txn, indexing included (÷ PgBouncer)", micros1, vsBouncer, true, 2.0, 1.0, ""},
		{"cpu-extended", "CPU per -S extended txn, indexing included (÷ PgBouncer; info)", micros1, vsBouncer, true, none, none, ""},
		{"cpu-prepared", "CPU per -S prepared txn, indexing included (÷ PgBouncer session; info)", micros1, vsBouncer, true, none, none, ""},
		{"cpu-tpcb", "CPU per TPC-B txn, indexing included (÷ PgBouncer; info)", micros1, vsBouncer, true, none, none, ""},
		{"batch", fmt.Sprintf("pgx SendBatch of %s SELECTs, one session (÷ direct time)", formatCount(float64(o.batch))), millis, vsDirect, true, 2.0, 1.2, ""},
		{"copy", fmt.Sprintf("COPY %s rows TO STDOUT, email masked (÷ direct)", shortCount(o.rows)), rowsPS, vsDirect, false, 0.85, 0.95, ""},
		{"select", fmt.Sprintf("SELECT %s rows, email masked (÷ direct)", shortCount(o.rows)), rowsPS, vsDirect, false, 0.85, 0.95, ""},
		{"idle", fmt.Sprintf("%s idle sessions: RSS per session", formatCount(float64(o.idle))), kib, itself, true, 96, 32, ""},
		{"conn-seq", "connect + SELECT 1 + close, sequential (÷ PgBouncer session)", perSec, vsBouncer, false, 0.5, 1.0, ""},
		{"conn-par", "connect + SELECT 1 + close, 8 parallel (÷ PgBouncer session)", perSec, vsBouncer, false, 0.5, 1.0, ""},
		{"multi", fmt.Sprintf("one query string of %s SELECT 1; (÷ direct time)", formatCount(float64(o.multi))), millis, vsDirect, true, 3.0, 1.5, ""},
		{"ledger", "embedded ledger: sustained events/s, indexes current within 1 s, one core", perSec, itself, false, 50_000, 100_000, "ledger-lag"},
		{"ledger-lag", "  embedded ledger: largest index lag (info)", seconds, itself, true, none, none, ""},
		{"ledger-cpu", "  embedded ledger: CPU per event (info)", micros1, itself, true, none, none, ""},
		{"ledger-bench", fmt.Sprintf("embedded ledger: internal/ledger BenchmarkSustained -cpu 1, %s events (events/s)", formatCount(float64(o.ledgerEvents))), perSec, itself, false, 50_000, 100_000, "ledger-bench-lag"},
		{"ledger-bench-lag", "  BenchmarkSustained: index lag after the last Record (info)", seconds, itself, true, none, none, ""},
		{"console", consoleLabel(o.consoleEvents), millis, itself, true, 300, 300, ""},
		{"console-load", "  embedded store: synthetic load, indexes and ANALYZE (info)", seconds, itself, true, none, none, ""},
	}, consolePageRows("console", "embedded"), []rowDef{
		{"console-pg", consolePGLabel(o.consolePGEvents), millis, itself, true, 300, 300, ""},
		{"console-pg-load", "  PostgreSQL store: synthetic load, indexes and ANALYZE (info)", seconds, itself, true, none, none, ""},
	}, consolePageRows("console-pg", "PostgreSQL"), []rowDef{
		{"mcp", "MCP query tool, one-row SELECT, 300 sequential calls, p50 (÷ direct pgx query)", millisFine, vsDirect, true, none, none, ""},
	})
}

// consolePageRows are the info rows of one console leg's pages (key: its row): each page's
// p50 and max.
func consolePageRows(key, store string) []rowDef {
	rows := make([]rowDef, len(consolePages))
	for i, p := range consolePages {
		rows[i] = rowDef{consolePageKey(key, i), fmt.Sprintf("  %s store: %s, p50 (max) (info)", store, p.name), millis, itself, true, none, none, ""}
	}
	return rows
}

// consoleLabel names the console row with its ledger's size.
func consoleLabel(events int64) string {
	if events <= 0 {
		events = 10_000_000
	}
	return fmt.Sprintf("console page latency, %s-event ledger, embedded store (slowest page p50)", shortCount(int(events)))
}

// consolePGLabel names the console row of the PostgreSQL ledger store with its size.
func consolePGLabel(events int64) string {
	if events <= 0 {
		events = 10_000_000
	}
	return fmt.Sprintf("console page latency, %s-event ledger, PostgreSQL store (slowest page p50)", shortCount(int(events)))
}

func shortCount(n int) string {
	if n%1_000_000 == 0 {
		return fmt.Sprintf("%dM", n/1_000_000)
	}
	return formatCount(float64(n))
}

// result computes a Gatehouse leg's result for a row: its value, its text, and whether
// there is a value.
func (d rowDef) result(res results, gh string) (float64, string, bool) {
	m, ok := res[d.key][gh]
	if !ok {
		return 0, "—", false
	}
	if m.note != "" {
		return 0, m.note, false
	}
	base := func(name string) (float64, bool) {
		b, ok := res[d.key][name]
		return b.v, ok && b.note == "" && b.v != 0
	}
	switch d.kind {
	case vsBouncer, vsDirect:
		name := legBouncer
		if d.kind == vsDirect {
			name = legDirect
		}
		b, ok := base(name)
		if !ok {
			return 0, "—", false
		}
		r := m.v / b
		return r, fmt.Sprintf("%.2f", r), true
	case plusDirect:
		b, ok := base(legDirect)
		if !ok {
			return 0, "—", false
		}
		r := m.v - b
		return r, fmt.Sprintf("%+.0f µs", r), true
	case itself:
		return m.v, d.cell(m.v), true
	}
	return 0, "—", false
}

// lagging reports whether a rate's index lag on leg gh is over a second.
func (d rowDef) lagging(res results, gh string) bool {
	if d.lagKey == "" {
		return false
	}
	m, ok := res[d.lagKey][gh]
	return ok && m.note == "" && m.v > 1
}

func (d rowDef) threshold(t float64) string {
	if math.IsNaN(t) {
		return "—"
	}
	op := "≥"
	if d.lower {
		op = "≤"
	}
	switch d.kind {
	case plusDirect:
		return fmt.Sprintf("%s +%.0f µs", op, t)
	case itself:
		return op + " " + d.cell(t)
	}
	if t*10 == math.Trunc(t*10) {
		return fmt.Sprintf("%s %.1f", op, t)
	}
	return fmt.Sprintf("%s %.2f", op, t)
}

// status compares a result with the row's thresholds.
func (d rowDef) status(r float64, ok bool) string {
	if !ok || math.IsNaN(d.done) {
		return ""
	}
	meets := func(t float64) bool {
		if math.IsNaN(t) {
			return false
		}
		if d.lower {
			return r <= t
		}
		return r >= t
	}
	switch {
	case meets(d.goal):
		return "GOAL"
	case meets(d.done):
		return "done"
	}
	return "not yet"
}

func (d rowDef) cellOf(res results, legName string) string {
	m, ok := res[d.key][legName]
	switch {
	case !ok:
		return "—"
	case m.note != "":
		return m.note
	}
	return d.cell(m.v)
}

// report prints the one table: each leg's measurement, Gatehouse's result beside the
// thresholds, and the same with ledger.durability: every.
func report(w io.Writer, o options, bouncerVersion [2]int, res results, legs []leg, took time.Duration) {
	fmt.Fprintf(w, "\nGatehouse vs direct vs PgBouncer %d.%d — issue 9 goals, one run (%s, %s), loopback, one throwaway PostgreSQL\n",
		bouncerVersion[0], bouncerVersion[1], o.gatehouse, took.Round(time.Second))
	fmt.Fprintf(w, "pgbench scale %d, -j %d, %v per workload and leg in %d interleaved rounds; Gatehouse: built-in policy (masking on), embedded ledger; PgBouncer: transaction pooling unless the row says session\n\n",
		o.scale, o.jobs, o.duration, o.rounds)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tdirect\tPgBouncer\tGatehouse\tresult\tdone when\tgoal\tstatus\tGatehouse (durability: every)\tresult (every)\t")
	if m, ok := res["console-events"][legGH]; ok && m.note == "" {
		// The console row's ledger holds what could be loaded in its budget: say so.
		o.consoleEvents = int64(m.v)
	}
	for _, d := range rowDefs(o) {
		r, rtext, ok := d.result(res, legGH)
		_, etext, _ := d.result(res, legGHEvery)
		status := d.status(r, ok)
		if d.lagging(res, legGH) {
			rtext += " (lag > 1 s)"
			status = "not yet"
		}
		if d.lagging(res, legGHEvery) {
			etext += " (lag > 1 s)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", d.label,
			d.cellOf(res, legDirect), d.cellOf(res, legBouncer), d.cellOf(res, legGH), rtext,
			d.threshold(d.done), d.threshold(d.goal), status, d.cellOf(res, legGHEvery), etext)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, `
result: Gatehouse ÷ the baseline the row names (TPS, rows/s, connections/s: higher is better; time and CPU: lower is better),
  or the added latency, or Gatehouse's own value. status: GOAL = the goal is met, done = the "done when" bar is met.
CPU: user+system time of the whole middle process (/proc/PID/stat) from before the run until it is quiet again after it,
  so Gatehouse's search indexing is counted; pgbench and PostgreSQL are not. RSS: VmRSS growth over the idle sessions.
Embedded ledger: this build's internal/ledger in a child process with GOMAXPROCS=1 (one core), pgbench -S-like statement
  events submitted for a fixed time, paced to stay about 0.5 s of indexing ahead of search (a marker event every 1,024
  events or 250 ms; lag = marker acknowledged → found by search); events/s = events / elapsed.
  BenchmarkSustained (the ledger's own, when the tree has it): 64 sessions Record, the clock stops once all is indexed.
  A rate whose index lag exceeds 1 s is marked "(lag > 1 s)" and does not meet the bar. Default durability under
  Gatehouse, every under Gatehouse (every).
Streaming: rows a second over the whole table (every leg gets the same rows); a Gatehouse leg that let a generated email through says UNMASKED.
MCP: the MCP door's query tool (listen.mcp, bearer = the bench token) with the -S query and a parameter, one call at a time.`)
	for _, l := range legs {
		if l.unavailable != "" {
			fmt.Fprintf(w, "%s not available: %s\n", l.name, strings.TrimPrefix(l.unavailable, "n/a: "))
		}
	}
}
