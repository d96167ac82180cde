// Command bench measures what Gatehouse costs real workloads, against the same throwaway
// PostgreSQL reached directly and through PgBouncer, in one run, and prints one table with
// every measure of issue 9's goals ("Governance at pooler speed"): the ratios beside the
// "done when" and "goal" thresholds. pgbench -S (simple, extended, prepared) and TPC-B with
// 8 clients, one client's added latency (p50, p99), Gatehouse's CPU per transaction with
// its search indexing, a pgx batch, a long multi-statement string, streaming 2M rows with a
// masked email column, 1,000 idle sessions, connection churn and the embedded ledger's
// sustained rate — for Gatehouse with the build's default ledger durability and again with
// `ledger.durability: every`. Workloads are interleaved over the legs so the machine's drift
// hits every leg alike.
//
// Everything it starts listens on loopback only, runs for a bounded time and count, and is
// removed at the end (also on Ctrl-C). `make bench` runs it through scripts/bench.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the knobs of one benchmark run.
type options struct {
	duration     time.Duration
	rounds       int
	scale        int
	clients      int
	jobs         int
	gatehouse    string
	keep         bool
	profile      string
	rows         int
	idle         int
	batch        int
	multi        int
	connectTime  time.Duration
	ledgerTime   time.Duration
	ledgerEvents int
	// consoleEvents and consoleBudget size the console row's ledger and bound its time.
	consoleEvents int64
	consoleBudget time.Duration
	// consolePGEvents sizes the console row's PostgreSQL-store leg (0 skips it).
	consolePGEvents int64
	only            string
	noEvery         bool
	ledgerChild     bool
	ledgerDir       string
	ledgerDurab     string
	ledgerLength    time.Duration
}

// sections are the parts of a run, in the order they run; -only picks some.
var sections = []string{"idle", "pgbench", "latency", "batch", "multi", "stream", "connect", "ledger", "console", "mcp"}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 6*time.Second, "length of each pgbench run")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds per pgbench workload: each round runs every leg for duration ÷ rounds, interleaved")
	flag.IntVar(&o.scale, "scale", 10, "pgbench scale factor (-s) for initialization")
	flag.IntVar(&o.clients, "clients", 8, "pgbench clients (-c) for the multi-client runs")
	flag.IntVar(&o.jobs, "jobs", 2, "pgbench threads (-j)")
	flag.StringVar(&o.gatehouse, "gatehouse", "bin/gatehouse", "the gatehouse binary to measure")
	flag.BoolVar(&o.keep, "keep-logs", false, "print the PgBouncer and Gatehouse logs at the end")
	flag.StringVar(&o.profile, "cpuprofile", "", "write Gatehouse's CPU profile over the whole run to this file and print its top five functions")
	flag.IntVar(&o.rows, "rows", 2_000_000, "rows of the streamed table (COPY and SELECT legs)")
	flag.IntVar(&o.idle, "idle", 1000, "idle sessions for the memory leg")
	flag.IntVar(&o.batch, "batch", 10_000, "statements in the pgx batch")
	flag.IntVar(&o.multi, "multi", 10_000, "statements in the multi-statement query string")
	flag.DurationVar(&o.connectTime, "connect-time", 2*time.Second, "length of each connection-churn run")
	flag.DurationVar(&o.ledgerTime, "ledger-time", 5*time.Second, "length of each embedded-ledger load")
	flag.Int64Var(&o.consoleEvents, "console-events", 10_000_000, "synthetic events in the console row's embedded ledger (fewer when they cannot be loaded within -console-budget)")
	flag.DurationVar(&o.consoleBudget, "console-budget", 270*time.Second, "time the console section may take, loading its ledgers (side by side) and timing the pages included: the embedded leg loads fewer than -console-events when they are not predicted to fit")
	flag.Int64Var(&o.consolePGEvents, "console-pg-events", 1_000_000, "synthetic events in the console row's PostgreSQL ledger store (0: skip that leg; 10M loads in about 20 minutes on a 2-core machine, so make bench takes 1M)")
	flag.IntVar(&o.ledgerEvents, "ledger-events", 50_000, "events per durability contract of internal/ledger's BenchmarkSustained")
	flag.StringVar(&o.only, "only", "", "comma-separated sections to run ("+strings.Join(sections, ",")+"); default all")
	flag.BoolVar(&o.noEvery, "no-every", false, "skip the second Gatehouse with ledger.durability: every")
	// The embedded-ledger leg re-runs this program as a child with these flags.
	flag.BoolVar(&o.ledgerChild, "ledger-load", false, "internal: run the embedded-ledger load in this process")
	flag.StringVar(&o.ledgerDir, "ledger-dir", "", "internal: data directory of the ledger load")
	flag.StringVar(&o.ledgerDurab, "ledger-durability", "", "internal: ledger.durability of the ledger load")
	flag.DurationVar(&o.ledgerLength, "ledger-duration", 5*time.Second, "internal: length of the ledger load")
	flag.Parse()
	if o.ledgerChild {
		if err := ledgerLoad(o.ledgerDir, o.ledgerDurab, o.ledgerLength); err != nil {
			fmt.Fprintln(os.Stderr, "ledger load:", err)
			os.Exit(1)
		}
		return
	}
	if o.duration < time.Second || o.rounds < 1 || o.scale < 1 || o.clients < 1 || o.jobs < 1 || o.rows < 1 || o.idle < 1 || o.batch < 1 || o.multi < 1 {
		fmt.Fprintln(os.Stderr, "bench: -duration must be at least 1s and -rounds, -scale, -clients, -jobs, -rows, -idle, -batch, -multi at least 1")
		os.Exit(2)
	}
	for _, s := range splitList(o.only) {
		if !slices.Contains(sections, s) {
			fmt.Fprintf(os.Stderr, "bench: -only: no section %q (have %s)\n", s, strings.Join(sections, ","))
			os.Exit(2)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (o options) runs(section string) bool {
	return o.only == "" || slices.Contains(splitList(o.only), section)
}

// Leg names: where a client connects.
const (
	legDirect  = "direct"
	legBouncer = "pgbouncer"
	legGH      = "gatehouse"
	legGHEvery = "gatehouse-every"
)

// leg is one way of reaching the database.
type leg struct {
	name string
	ep   endpoint
	// session is the endpoint for measures that compare with PgBouncer's session pooling
	// (prepared statements, connection set-up); the same as ep elsewhere.
	session endpoint
	// proc is the program in the middle (PgBouncer, Gatehouse), whose CPU and memory the
	// report shows; nil for the direct leg.
	proc *process
	// unavailable explains why the leg cannot run at all ("" when it can).
	unavailable string
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	began := time.Now()
	for _, tool := range []string{"pgbench", "pgbouncer"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: run `make deps`", tool)
		}
	}
	bin, err := filepath.Abs(o.gatehouse)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "gatehouse-bench-")
	if err != nil {
		return fmt.Errorf("make work dir: %w", err)
	}
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o755)

	log.Info("starting a throwaway PostgreSQL cluster")
	pg, err := startCluster(ctx, 2*o.idle+200)
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	defer pg.stop()
	if err := pg.exec(ctx, "postgres", "CREATE DATABASE app"); err != nil {
		return err
	}
	direct := leg{name: legDirect, ep: endpoint{host: "127.0.0.1", port: pg.port, user: pg.user, password: pg.password, db: "app"}}
	direct.session = direct.ep
	log.Info("initializing pgbench tables", "scale", o.scale)
	if out, err := pgbench(ctx, direct.ep.env(), "-i", "-q", "-s", fmt.Sprint(o.scale)); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	if o.runs("stream") {
		log.Info("creating the streamed table", "rows", o.rows)
		if err := pg.exec(ctx, "app", streamSetupSQL(o.rows)); err != nil {
			return err
		}
	}
	for _, q := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if err := pg.exec(ctx, "app", q); err != nil {
			return err
		}
	}

	pgb, err := startBouncer(ctx, work, pg, o.idle+200, log)
	if err != nil {
		return err
	}
	defer pgb.stop()
	bouncerLeg := leg{name: legBouncer, ep: pgb.endpoint(pgb.txnDB), session: pgb.endpoint(pgb.sessionDB), proc: pgb.process}

	var profile string
	if o.profile != "" {
		if profile, err = filepath.Abs(o.profile); err != nil {
			return err
		}
	}
	specs := []gatehouseSpec{{name: legGH, profile: profile}}
	if !o.noEvery {
		specs = append(specs, gatehouseSpec{name: legGHEvery, durability: "every"})
	}
	legs := []leg{direct, bouncerLeg}
	var ghs []*gatehouse
	for _, s := range specs {
		g, err := startGatehouse(ctx, bin, s, work, pg, log)
		if err != nil {
			return err
		}
		ghs = append(ghs, g)
		defer g.stop()
		legs = append(legs, leg{name: g.name, ep: g.ep, session: g.ep, proc: g.process, unavailable: g.unavailable})
	}

	b := &bench{o: o, log: log, work: work, legs: legs, res: results{}, mcpURLs: map[string]string{}, bin: bin, pg: pg}
	for _, g := range ghs {
		b.mcpURLs[g.name] = g.mcpURL
	}
	loadBefore := loadAverage()
	steps := []struct {
		section string
		fn      func(context.Context) error
	}{
		// Idle sessions first: a fresh process's resident memory is steady, while after the
		// streaming legs the Go heap shrinks under the measurement.
		{"idle", b.idleRow}, {"pgbench", b.pgbenchRows}, {"latency", b.latencyRows}, {"batch", b.batchRow},
		{"multi", b.multiRow}, {"stream", b.streamRows}, {"connect", b.connectRows}, {"ledger", b.ledgerRow},
		{"console", b.consoleRow}, {"mcp", b.mcpRow},
	}
	for _, s := range steps {
		if !o.runs(s.section) {
			continue
		}
		if err := s.fn(ctx); err != nil {
			return err
		}
	}

	var top string
	if profile != "" {
		// The profile is written when Gatehouse shuts down.
		ghs[0].stop()
		top = profileTop(ctx, bin, profile)
	}
	report(os.Stdout, o, pgb.version, b.res, legs, time.Since(began))
	fmt.Fprintf(os.Stdout, "Machine: %d CPUs, load average (1 min) %s when the measures began, %s when they ended.\n", runtime.NumCPU(), loadBefore, loadAverage())
	if top != "" {
		fmt.Fprintf(os.Stdout, "\nGatehouse CPU profile over the whole run (%s), top five functions by own time:\n%s\n", o.profile, top)
	}
	if o.keep {
		pgb.dumpLog(os.Stdout)
		for _, g := range ghs {
			g.dumpLog(os.Stdout)
		}
	}
	return nil
}

// loadAverage is the machine's one-minute load average, "?" when unknown: measurements on a
// shared machine mean little without it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
