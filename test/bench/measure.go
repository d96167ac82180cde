package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// meas is one measured value, or a note saying why there is none.
type meas struct {
	v    float64
	note string
}

// results holds measurements by row key and leg name.
type results map[string]map[string]meas

func (r results) set(row, legName string, m meas) {
	if r[row] == nil {
		r[row] = map[string]meas{}
	}
	r[row][legName] = m
}

// bench runs the measures of one benchmark run.
type bench struct {
	o    options
	log  *slog.Logger
	work string
	legs []leg
	res  results
	// mcpURLs are the Gatehouse legs' MCP endpoints, by leg name.
	mcpURLs map[string]string
	// bin is the Gatehouse binary and pg the upstream cluster, for rows that start a
	// Gatehouse of their own (the console's, over a large ledger).
	bin string
	pg  *cluster
}

// each runs fn on every leg named (all legs when none), recording what it returns under
// row, or a note when the leg is unavailable or fn fails.
func (b *bench) each(ctx context.Context, row string, names []string, fn func(context.Context, leg) (meas, error)) error {
	for _, l := range b.legs {
		if len(names) > 0 && !slices.Contains(names, l.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if l.unavailable != "" {
			b.res.set(row, l.name, meas{note: shortNote(l.unavailable)})
			continue
		}
		m, err := fn(ctx, l)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.log.Error("measure failed", "row", row, "leg", l.name, "err", err)
			m = meas{note: "failed"}
		} else if m.note == "" {
			b.log.Info("measured", "row", row, "leg", l.name, "value", strconv.FormatFloat(m.v, 'f', 2, 64))
		}
		b.res.set(row, l.name, m)
	}
	return nil
}

// shortNote keeps a leg's unavailability reason short enough for a table cell.
func shortNote(why string) string {
	if len(why) > 2 && why[:3] == "n/a" {
		return "n/a"
	}
	return "not available"
}

var allGatehouse = []string{legGH, legGHEvery}

// pgbenchRun runs pgbench on a leg and returns its result and the CPU time the program in
// the middle spent (0 for the direct leg), including what it does once the load stops (Gatehouse
// indexes the ledger off the statement's path) until it goes quiet.
func (b *bench) pgbenchRun(ctx context.Context, l leg, ep endpoint, args ...string) (pgbenchResult, time.Duration, error) {
	// No settle before: every load on a leg ends with one.
	cpu0 := l.proc.cpuTime()
	out, err := pgbench(ctx, ep.env(), args...)
	if err != nil {
		return pgbenchResult{}, 0, fmt.Errorf("pgbench %v: %w\n%s", args, err, lastLines(out, 8))
	}
	res, err := parsePgbench(out)
	if err != nil {
		return res, 0, fmt.Errorf("pgbench %v: %w\n%s", args, err, lastLines(out, 8))
	}
	if res.failed > 0 {
		return res, 0, fmt.Errorf("pgbench %v: %d transactions failed", args, res.failed)
	}
	l.proc.settle(ctx)
	return res, l.proc.cpuTime() - cpu0, nil
}

// pgbenchTotal adds up the rounds of one pgbench workload on one leg.
type pgbenchTotal struct {
	processed int64
	seconds   float64 // processed / tps of each round, summed
	cpu       time.Duration
	lat       []float64
	err       error
}

func (t *pgbenchTotal) add(r pgbenchResult, cpu time.Duration) {
	t.processed += r.processed
	t.seconds += float64(r.processed) / r.tps
	t.cpu += cpu
}

func (t *pgbenchTotal) tps() float64 { return float64(t.processed) / t.seconds }

// pgbenchRounds runs a pgbench workload on every leg, in rounds: each round runs every leg
// once for duration ÷ rounds, so drift of the shared machine within the workload's minute
// hits every leg alike. fn runs one round on one leg.
func (b *bench) pgbenchRounds(ctx context.Context, row string, fn func(context.Context, leg, *pgbenchTotal) error) (map[string]*pgbenchTotal, error) {
	totals := map[string]*pgbenchTotal{}
	for round := 0; round < b.o.rounds; round++ {
		for _, l := range b.legs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if l.unavailable != "" {
				b.res.set(row, l.name, meas{note: shortNote(l.unavailable)})
				continue
			}
			t := totals[l.name]
			if t == nil {
				t = &pgbenchTotal{}
				totals[l.name] = t
			}
			if t.err != nil {
				continue
			}
			if err := fn(ctx, l, t); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				b.log.Error("measure failed", "row", row, "leg", l.name, "err", err)
				t.err = err
			}
		}
	}
	for name, t := range totals {
		if t.err != nil || t.processed == 0 {
			b.res.set(row, name, meas{note: "failed"})
			delete(totals, name)
			continue
		}
		b.res.set(row, name, meas{v: t.tps()})
		b.log.Info("measured", "row", row, "leg", name, "tps", fmt.Sprintf("%.0f", t.tps()))
	}
	return totals, nil
}

// roundSeconds is the length of one pgbench round.
func (b *bench) roundSeconds() string {
	return strconv.Itoa(max(1, int(b.o.duration.Seconds())/b.o.rounds))
}

func (b *bench) pgbenchArgs(clients int, extra ...string) []string {
	return append([]string{"-n", "-T", b.roundSeconds(), "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(b.o.jobs, clients))}, extra...)
}

// pgbenchRows: -S simple, extended, prepared and TPC-B-like with the configured clients, with
// CPU per transaction of the program in the middle for -S simple and TPC-B.
func (b *bench) pgbenchRows(ctx context.Context) error {
	for _, w := range []struct {
		row, cpuRow string
		session     bool
		args        []string
	}{
		{"sel-simple", "cpu-select", false, []string{"-S", "-M", "simple"}},
		{"sel-extended", "cpu-extended", false, []string{"-S", "-M", "extended"}},
		{"sel-prepared", "cpu-prepared", true, []string{"-S", "-M", "prepared"}},
		{"tpcb", "cpu-tpcb", false, []string{"-M", "simple"}},
	} {
		totals, err := b.pgbenchRounds(ctx, w.row, func(ctx context.Context, l leg, t *pgbenchTotal) error {
			ep := l.ep
			if w.session {
				ep = l.session
			}
			res, cpu, err := b.pgbenchRun(ctx, l, ep, b.pgbenchArgs(b.o.clients, w.args...)...)
			if err == nil {
				t.add(res, cpu)
			}
			return err
		})
		if err != nil {
			return err
		}
		for name, t := range totals {
			if w.cpuRow != "" && t.cpu > 0 {
				b.res.set(w.cpuRow, name, meas{v: float64(t.cpu) / float64(t.processed) / float64(time.Microsecond)})
			}
		}
	}
	return nil
}

// latencyRows: one client, -S simple, every transaction's latency logged; p50 and p99.
func (b *bench) latencyRows(ctx context.Context) error {
	totals, err := b.pgbenchRounds(ctx, "lat-tps", func(ctx context.Context, l leg, t *pgbenchTotal) error {
		prefix := filepath.Join(b.work, "latency-"+l.name)
		res, _, err := b.pgbenchRun(ctx, l, l.ep, b.pgbenchArgs(1, "-S", "-M", "simple", "-l", "--log-prefix", prefix)...)
		if err != nil {
			return err
		}
		lat, err := latencies(prefix)
		if err != nil {
			return err
		}
		t.add(res, 0)
		t.lat = append(t.lat, lat...)
		return nil
	})
	if err != nil {
		return err
	}
	for _, l := range b.legs {
		t, ok := totals[l.name]
		if !ok {
			note := b.res["lat-tps"][l.name].note
			b.res.set("lat-p50", l.name, meas{note: note})
			b.res.set("lat-p99", l.name, meas{note: note})
			continue
		}
		slices.Sort(t.lat)
		b.res.set("lat-p50", l.name, meas{v: percentile(t.lat, 50)})
		b.res.set("lat-p99", l.name, meas{v: percentile(t.lat, 99)})
	}
	return nil
}

// batchRow: one pgx SendBatch of the configured number of statements, in milliseconds.
func (b *bench) batchRow(ctx context.Context) error {
	return b.each(ctx, "batch", append([]string{legDirect}, allGatehouse...), func(ctx context.Context, l leg) (meas, error) {
		d, err := runBatch(ctx, l.ep, b.o.batch, b.o.scale*100_000)
		if err != nil {
			return meas{}, err
		}
		return meas{v: float64(d) / float64(time.Millisecond)}, nil
	})
}

// multiRow: one query string of the configured number of statements, in milliseconds.
func (b *bench) multiRow(ctx context.Context) error {
	return b.each(ctx, "multi", nil, func(ctx context.Context, l leg) (meas, error) {
		d, err := runMulti(ctx, l.ep, b.o.multi)
		if err != nil {
			return meas{}, err
		}
		return meas{v: float64(d) / float64(time.Millisecond)}, nil
	})
}

// streamRows: COPY TO STDOUT and SELECT of the whole streamed table, in rows a second. A
// Gatehouse leg that lets a generated email through unmasked says so instead of a number.
func (b *bench) streamRows(ctx context.Context) error {
	for _, s := range []struct {
		row string
		fn  func(context.Context, endpoint) (streamResult, error)
	}{{"copy", runCopy}, {"select", runSelect}} {
		err := b.each(ctx, s.row, nil, func(ctx context.Context, l leg) (meas, error) {
			r, err := s.fn(ctx, l.ep)
			if err != nil {
				return meas{}, err
			}
			if r.rows != int64(b.o.rows) {
				return meas{}, fmt.Errorf("%d rows streamed, want %d", r.rows, b.o.rows)
			}
			masked := l.name == legGH || l.name == legGHEvery
			switch {
			case masked && r.raw > 0:
				b.log.Error("emails streamed unmasked", "row", s.row, "leg", l.name, "unmasked", r.raw)
				return meas{note: fmt.Sprintf("UNMASKED (%d)", r.raw)}, nil
			case !masked && r.raw != r.rows:
				return meas{}, fmt.Errorf("%d of %d emails differ from the generated ones without masking", r.rows-r.raw, r.rows)
			}
			return meas{v: r.rowsPerSec()}, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// idleRow: resident memory of the program in the middle per idle session, in KiB.
func (b *bench) idleRow(ctx context.Context) error {
	return b.each(ctx, "idle", append([]string{legBouncer}, allGatehouse...), func(ctx context.Context, l leg) (meas, error) {
		per, err := runIdle(ctx, l.ep, l.proc, b.o.idle)
		if err != nil {
			return meas{}, err
		}
		return meas{v: per / 1024}, nil
	})
}

// connectRows: connect + SELECT 1 + close per second, one at a time and 8 in parallel
// (PgBouncer in session pooling).
func (b *bench) connectRows(ctx context.Context) error {
	for _, c := range []struct {
		row      string
		parallel int
	}{{"conn-seq", 1}, {"conn-par", 8}} {
		err := b.each(ctx, c.row, nil, func(ctx context.Context, l leg) (meas, error) {
			rate, err := runConnect(ctx, l.session, c.parallel, b.o.connectTime, 20_000)
			if err != nil {
				return meas{}, err
			}
			return meas{v: rate}, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ledgerRow: the embedded ledger's sustained events/s on one core, in each durability mode
// the Gatehouse legs use (measured in a child process of this build, not through the
// binary under test).
func (b *bench) ledgerRow(ctx context.Context) error {
	for _, c := range []struct{ leg, durability string }{{legGH, ""}, {legGHEvery, "every"}} {
		if c.leg == legGHEvery && b.o.noEvery {
			continue
		}
		dir := filepath.Join(b.work, "ledger-"+c.leg)
		r, err := runLedgerChild(ctx, dir, c.durability, b.o.ledgerTime)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.log.Error("ledger load failed", "durability", c.durability, "err", err)
			b.res.set("ledger", c.leg, meas{note: "failed"})
		case r.Unsupported != "":
			b.res.set("ledger", c.leg, meas{note: "n/a"})
		default:
			b.log.Info("ledger load", "durability", c.durability, "events", r.Events, "seconds", fmt.Sprintf("%.2f", r.Seconds),
				"max_index_lag_s", fmt.Sprintf("%.3f", r.MaxLagSeconds), "cpu_us_per_event", fmt.Sprintf("%.1f", r.CPUPerEvent))
			b.res.set("ledger", c.leg, meas{v: r.sustained()})
			b.res.set("ledger-lag", c.leg, meas{v: r.MaxLagSeconds})
			b.res.set("ledger-cpu", c.leg, meas{v: r.CPUPerEvent})
		}
	}
	sus, err := runSustained(ctx, b.o.ledgerEvents)
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Error("BenchmarkSustained failed", "err", err)
		b.res.set("ledger-bench", legGH, meas{note: "failed"})
	case sus == nil:
		b.res.set("ledger-bench", legGH, meas{note: "n/a"})
		b.res.set("ledger-bench", legGHEvery, meas{note: "n/a"})
	default:
		for _, c := range []struct{ leg, durability string }{{legGH, "sensitive"}, {legGHEvery, "every"}} {
			r, ok := sus[c.durability]
			if !ok {
				b.res.set("ledger-bench", c.leg, meas{note: "n/a"})
				continue
			}
			b.log.Info("BenchmarkSustained", "durability", c.durability, "events_per_s", r.eventsPerSec, "index_lag_ms", r.lagMS, "cpu_us_per_event", r.cpuPerEvent)
			b.res.set("ledger-bench", c.leg, meas{v: r.eventsPerSec})
			b.res.set("ledger-bench-lag", c.leg, meas{v: r.lagMS / 1000})
		}
	}
	return nil
}

// notBuiltYet marks a measure whose subject another engineer is still building.
var notBuiltYet = meas{note: "n/a (not built yet)"}

// mcpRow: the latency of the MCP door's `query` tool, one agent session calling it with a
// pgbench -S-like one-row SELECT one call at a time (p50 in ms), against the same SELECT
// over one direct pgx connection (the report shows the ratio).
func (b *bench) mcpRow(ctx context.Context) error {
	const calls = 300
	accounts := b.o.scale * 100_000
	return b.each(ctx, "mcp", append([]string{legDirect}, allGatehouse...), func(ctx context.Context, l leg) (meas, error) {
		if l.name == legDirect {
			lat, err := runPgxSequential(ctx, l.ep, calls, accounts)
			if err != nil {
				return meas{}, err
			}
			return meas{v: percentile(lat, 50)}, nil
		}
		url := b.mcpURLs[l.name]
		if url == "" {
			return notBuiltYet, nil
		}
		lat, err := runMCP(ctx, url, l.ep.password, calls, accounts)
		if err != nil {
			return meas{}, err
		}
		return meas{v: percentile(lat, 50)}, nil
	})
}
