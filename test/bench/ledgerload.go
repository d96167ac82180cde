package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// The embedded-ledger leg runs in a child process of the benchmark with GOMAXPROCS=1, so the
// whole ledger — group commit, commit log, search indexer — shares one core, as it would
// on a busy proxy. It records pgbench -S-like statement events through the ledger's public
// API (Submit, with a bounded window of unanswered Acks, as many pipelining sessions would)
// for a fixed time. Every 1,024 events (or 250 ms) it adds a marker event, and a prober
// searches for each marker from the moment its Ack is answered until a search finds it: that
// is the index lag. A pacer keeps the backlog of unsearchable events near what the indexer
// does in half a second, so the rate measured is one the ledger sustains; the largest lag
// says whether its indexes stayed current within a second meanwhile.

// ledgerLoadResult is what the child prints as one JSON line.
type ledgerLoadResult struct {
	Unsupported   string  `json:"unsupported,omitempty"`
	Events        int64   `json:"events"`
	Seconds       float64 `json:"seconds"`
	MaxLagSeconds float64 `json:"max_lag_seconds"`
	CPUPerEvent   float64 `json:"cpu_us_per_event"`
}

// sustained is the events/s the ledger kept up with; MaxLagSeconds says how current its
// indexes were meanwhile.
func (r ledgerLoadResult) sustained() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Events) / r.Seconds
}

// runLedgerChild starts the child and reads its result.
func runLedgerChild(ctx context.Context, dir, durability string, d time.Duration) (ledgerLoadResult, error) {
	self, err := os.Executable()
	if err != nil {
		return ledgerLoadResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, d+3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-ledger-load", "-ledger-dir", dir, "-ledger-durability", durability, "-ledger-duration", d.String())
	cmd.Env = append(cleanEnv(), "GOMAXPROCS=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return ledgerLoadResult{}, fmt.Errorf("ledger load: %w: %s", err, lastLines(stderr.String(), 10))
	}
	var r ledgerLoadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("ledger load printed %q: %w", out, err)
	}
	return r, nil
}

// ledgerLoad is the child's work.
func ledgerLoad(dir, durability string, d time.Duration) error {
	ctx := context.Background()
	text := fmt.Sprintf("data_dir: %q\n", dir)
	if durability != "" {
		text += "ledger:\n  durability: " + durability + "\n"
	}
	cfg, err := config.Parse("bench-ledger.yaml", []byte(text))
	if err != nil {
		if strings.Contains(err.Error(), "durability") {
			return json.NewEncoder(os.Stdout).Encode(ledgerLoadResult{Unsupported: "n/a: this build has no ledger.durability"})
		}
		return err
	}
	l, err := ledger.Open(ctx, cfg, "bench", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	defer l.Close(ctx)

	// Warm up: the first search of a new store prepares what later ones reuse.
	if err := l.Record(ctx, benchEvent(0, "bench-warm@corp.example")); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if _, err := l.Store().Search(ctx, ledger.Query{Identity: "bench-warm@corp.example", Limit: 1}); err != nil {
		return fmt.Errorf("search: %w", err)
	}
	const maxEvents = 5_000_000
	type pending struct {
		ack    *ledger.Ack
		marker int // -1 for an ordinary event
	}
	type answered struct {
		marker int
		at     time.Time
	}
	acks := make(chan pending, 4096)
	markers := make(chan answered, 64)
	found := make(chan foundMarker, 64)
	waited := make(chan error, 1)
	go func() { // answers Acks in submission order
		var first error
		for p := range acks {
			if err := p.ack.Wait(ctx); err != nil && first == nil {
				first = err
			}
			if p.marker >= 0 {
				markers <- answered{p.marker, time.Now()}
			}
		}
		close(markers)
		waited <- first
	}()
	var maxLag time.Duration
	probed := make(chan error, 1)
	go func() { // searches for each marker until it is found
		defer close(found)
		for m := range markers {
			for {
				evs, err := l.Store().Search(ctx, ledger.Query{Identity: markerSubject(m.marker), Limit: 1})
				if err != nil {
					probed <- fmt.Errorf("search: %w", err)
					return
				}
				if len(evs) > 0 {
					break
				}
				if time.Since(m.at) > 2*time.Minute {
					probed <- errors.New("a marker event is not searchable 2 minutes after it was acknowledged")
					return
				}
				if err := sleep(ctx, 5*time.Millisecond); err != nil {
					probed <- err
					return
				}
			}
			maxLag = max(maxLag, time.Since(m.at))
			found <- foundMarker{m.marker, time.Now()}
		}
		probed <- nil
	}()

	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	stop := t0.Add(d)
	var n int64
	var pace pacer
	nextMarker, markedAt := t0.Add(markerEvery), int64(0)
	for n < maxEvents {
		if n%128 == 0 {
			now := time.Now()
			if !now.Before(stop) {
				break
			}
			for drained := false; !drained; {
				select {
				case f := <-found:
					pace.found(f)
				default:
					drained = true
				}
			}
			for n-pace.foundN > pace.allowance() {
				f, ok := <-found
				if !ok {
					return <-probed
				}
				pace.found(f)
			}
			if !now.Before(nextMarker) || n-markedAt >= markerEvents {
				acks <- pending{l.Submit(ctx, benchEvent(n, markerSubject(len(pace.markerN)))), len(pace.markerN)}
				n++
				pace.markerN = append(pace.markerN, n)
				nextMarker, markedAt = now.Add(markerEvery), n
			}
		}
		acks <- pending{l.Submit(ctx, benchEvent(n, "bench@corp.example")), -1}
		n++
	}
	marker := len(pace.markerN)
	acks <- pending{l.Submit(ctx, benchEvent(n, markerSubject(marker))), marker}
	n++
	close(acks)
	if err := <-waited; err != nil {
		return fmt.Errorf("record: %w", err)
	}
	for range found {
	}
	if err := <-probed; err != nil {
		return err
	}
	elapsed := time.Since(t0)
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) + syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Utime) - syscall.TimevalToNsec(ru0.Stime))
	return json.NewEncoder(os.Stdout).Encode(ledgerLoadResult{Events: n, Seconds: elapsed.Seconds(), MaxLagSeconds: maxLag.Seconds(),
		CPUPerEvent: float64(cpu.Microseconds()) / float64(n)})
}

// A marker follows every markerEvery or markerEvents events, whichever comes first.
const (
	markerEvery  = 250 * time.Millisecond
	markerEvents = 1024
)

// foundMarker says when the prober found marker k.
type foundMarker struct {
	k  int
	at time.Time
}

// pacer keeps the producer at most about half a second of indexing ahead of the search
// indexes: the backlog of events submitted but not yet searchable may grow to what the
// indexer has lately been doing in 0.5 s (at least 4,096 events), so a fast ledger is not
// held back and a slow one does not get a burst queued that it takes seconds to index.
type pacer struct {
	markerN []int64 // events submitted up to and including marker k
	foundN  int64   // events known searchable
	// The indexing rate is measured over windows of at least 250 ms (markers are found in
	// clumps: one search can make several searchable), and the allowance at most doubles
	// per window.
	winN  int64
	winAt time.Time
	allow int64
}

func (p *pacer) found(f foundMarker) {
	p.foundN = p.markerN[f.k]
	switch dt := f.at.Sub(p.winAt); {
	case p.winAt.IsZero():
		p.winN, p.winAt = p.foundN, f.at
	case dt >= 250*time.Millisecond:
		rate := float64(p.foundN-p.winN) / dt.Seconds()
		p.allow = min(int64(rate/2), 2*p.allowance())
		p.winN, p.winAt = p.foundN, f.at
	}
}

func (p *pacer) allowance() int64 { return max(4096, p.allow) }

func markerSubject(i int) string { return fmt.Sprintf("bench-marker-%d@corp.example", i) }

// benchEvent is a statement event shaped like what pgbench -S through Gatehouse records.
func benchEvent(i int64, subject string) *ledger.Event {
	return &ledger.Event{Type: ledger.EventStatement, SessionID: fmt.Sprintf("s%d", i/1000), Subject: subject, IdentityKind: "service",
		AuthMethod: "token", ClientAddr: "127.0.0.1:40000", ApplicationName: "pgbench", Target: "main", Environment: "dev",
		Database: "app", UpstreamRole: "postgres", Via: "postgres", Decision: "allow", Rule: "default", Rows: 1, Bytes: 12,
		Duration: 80 * time.Microsecond,
		Statements: []ledger.Statement{{Kind: "SELECT", Category: "read", Redacted: "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
			Fingerprint: "a1b2c3d4e5f60718", TablesRead: []string{"public.pgbench_accounts"}}}}
}

// The ledger's own one-core benchmark, BenchmarkSustained in internal/ledger (added by the
// ledger's engineers for this table): events/s until every event is indexed, the index lag
// after the last Record, per durability contract. It runs from the source tree the
// benchmark runs in; a tree without it reports n/a.

// sustainedResult is one durability contract's BenchmarkSustained line.
type sustainedResult struct {
	eventsPerSec, lagMS, cpuPerEvent float64
}

var (
	reSustained = regexp.MustCompile(`(?m)^BenchmarkSustained/durability=(\w+)\S*\s+\d+\s+.*$`)
	reMetric    = regexp.MustCompile(`([0-9.]+) (events/s|index-lag-ms|cpu-µs/event)`)
)

// parseSustained reads BenchmarkSustained's lines by durability contract.
func parseSustained(out string) map[string]sustainedResult {
	res := map[string]sustainedResult{}
	for _, m := range reSustained.FindAllStringSubmatch(out, -1) {
		var r sustainedResult
		for _, mm := range reMetric.FindAllStringSubmatch(m[0], -1) {
			v, _ := strconv.ParseFloat(mm[1], 64)
			switch mm[2] {
			case "events/s":
				r.eventsPerSec = v
			case "index-lag-ms":
				r.lagMS = v
			case "cpu-µs/event":
				r.cpuPerEvent = v
			}
		}
		res[m[1]] = r
	}
	return res
}

// runSustained runs BenchmarkSustained on one core with events per contract; nil when the
// tree has no such benchmark.
func runSustained(ctx context.Context, events int) (map[string]sustainedResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkSustained$", "-cpu", "1",
		"-benchtime", fmt.Sprintf("%dx", events), "-timeout", "5m", "./internal/ledger")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench BenchmarkSustained: %w\n%s", err, lastLines(string(out), 10))
	}
	res := parseSustained(string(out))
	if len(res) == 0 {
		return nil, nil
	}
	return res, nil
}
