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
// for a fixed time, then measures how long until a search sees the last acknowledged
// event. The sustained rate counts catch-up time beyond one second as part of the run:
// events / (load time + max(0, index lag - 1 s)).

// ledgerLoadResult is what the child prints as one JSON line.
type ledgerLoadResult struct {
	Unsupported string  `json:"unsupported,omitempty"`
	Events      int64   `json:"events"`
	LoadSeconds float64 `json:"load_seconds"`
	LagSeconds  float64 `json:"lag_seconds"`
	CPUPerEvent float64 `json:"cpu_us_per_event"`
}

// sustained is the events/s the ledger keeps up with, indexes current within 1 s.
func (r ledgerLoadResult) sustained() float64 {
	d := r.LoadSeconds + max(0, r.LagSeconds-1)
	if d <= 0 {
		return 0
	}
	return float64(r.Events) / d
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

	const maxEvents = 5_000_000
	acks := make(chan *ledger.Ack, 4096)
	waited := make(chan error, 1)
	go func() {
		var first error
		for a := range acks {
			if err := a.Wait(ctx); err != nil && first == nil {
				first = err
			}
		}
		waited <- first
	}()
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	stop := t0.Add(d)
	var n int64
	for ; n < maxEvents && (n%256 != 0 || time.Now().Before(stop)); n++ {
		acks <- l.Submit(ctx, benchEvent(n, "bench@corp.example"))
	}
	last := "bench-last@corp.example"
	acks <- l.Submit(ctx, benchEvent(n, last))
	n++
	close(acks)
	if err := <-waited; err != nil {
		return fmt.Errorf("record: %w", err)
	}
	loaded := time.Since(t0)

	t1 := time.Now()
	deadline := t1.Add(2 * time.Minute)
	for {
		evs, err := l.Store().Search(ctx, ledger.Query{Identity: last, Limit: 1})
		if err != nil {
			return fmt.Errorf("search: %w", err)
		}
		if len(evs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the last acknowledged event is not searchable after 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	lag := time.Since(t1)
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) + syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Utime) - syscall.TimevalToNsec(ru0.Stime))
	return json.NewEncoder(os.Stdout).Encode(ledgerLoadResult{Events: n, LoadSeconds: loaded.Seconds(), LagSeconds: lag.Seconds(),
		CPUPerEvent: float64(cpu.Microseconds()) / float64(n)})
}

// benchEvent is a statement event shaped like what pgbench -S through Gatehouse records.
func benchEvent(i int64, subject string) *ledger.Event {
	return &ledger.Event{Type: ledger.EventStatement, SessionID: fmt.Sprintf("s%d", i/1000), Subject: subject, IdentityKind: "service",
		AuthMethod: "token", ClientAddr: "127.0.0.1:40000", ApplicationName: "pgbench", Target: "main", Environment: "dev",
		Database: "app", UpstreamRole: "postgres", Via: "postgres", Decision: "allow", Rule: "default", Rows: 1, Bytes: 12,
		Duration: 80 * time.Microsecond,
		Statements: []ledger.Statement{{Kind: "SELECT", Category: "read", Redacted: "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
			Fingerprint: "a1b2c3d4e5f60718", TablesRead: []string{"public.pgbench_accounts"}}}}
}
