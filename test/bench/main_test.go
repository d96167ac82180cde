package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A pgbench 15 summary, trimmed to the lines the harness reads.
const pgbenchOutput = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 198570
number of failed transactions: 3 (0.002%)
latency average = 0.402 ms
initial connection time = 12.345 ms
tps = 19857.123456 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	r, err := parsePgbench(pgbenchOutput)
	if err != nil {
		t.Fatal(err)
	}
	if r.processed != 198570 || r.failed != 3 || r.tps != 19857.123456 {
		t.Errorf("got %+v", r)
	}
	if _, err := parsePgbench("pgbench: error: connection to server failed\n"); err == nil {
		t.Error("output without a summary parsed")
	}
	if _, err := parsePgbench(strings.Replace(pgbenchOutput, "processed: 198570", "processed: 0", 1)); err == nil {
		t.Error("a run with no transactions parsed")
	}
}

func TestReport(t *testing.T) {
	o := options{gatehouse: "bin/gatehouse", rounds: 2, scale: 10, duration: 6 * time.Second, jobs: 2, clients: 8, rows: 2_000_000, idle: 1000, batch: 10_000, multi: 10_000}
	res := results{}
	res.set("sel-simple", legDirect, meas{v: 30000})
	res.set("sel-simple", legBouncer, meas{v: 20000})
	res.set("sel-simple", legGH, meas{v: 5000})
	res.set("sel-simple", legGHEvery, meas{note: "n/a"})
	res.set("lat-p50", legDirect, meas{v: 100})
	res.set("lat-p50", legGH, meas{v: 140})
	res.set("idle", legGH, meas{v: 20})
	res.set("copy", legDirect, meas{v: 100})
	res.set("copy", legGH, meas{note: "UNMASKED (3)"})
	res.set("mcp", legGH, notBuiltYet)
	var b bytes.Buffer
	report(&b, o, [2]int{1, 18}, res, []leg{{name: legGHEvery, unavailable: "n/a: this build has no ledger.durability"}}, time.Minute)
	out := b.String()
	for _, want := range []string{
		"0.25", "not yet", // 5000 / 20000 is below 0.8
		"+40 µs", "done", // 40 µs added: done (≤ 60), not the goal (≤ 25)
		"20 KiB", "GOAL", // ≤ 32 KiB
		"UNMASKED (3)", "n/a (not built yet)", "PgBouncer 1.18",
		"gatehouse-every not available: this build has no ledger.durability",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, d := range rowDefs(o) {
		if !strings.Contains(out, d.label) {
			t.Errorf("report lacks the row %q", d.label)
		}
	}
}

func TestLatencies(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "lat")
	var log strings.Builder
	for i := 100; i >= 1; i-- { // pgbench -l: client_id transaction_no time script_no time_epoch time_us
		fmt.Fprintf(&log, "0 %d %d 0 1700000000 %d\n", 101-i, i*10, i)
	}
	if err := os.WriteFile(prefix+".1234", []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	lat, err := latencies(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if p50, p99 := percentile(lat, 50), percentile(lat, 99); p50 != 500 || p99 != 990 {
		t.Errorf("p50 %v p99 %v, want 500 and 990", p50, p99)
	}
	if _, err := latencies(prefix); err == nil {
		t.Error("log files were not removed after reading")
	}
}

func TestCopyCounter(t *testing.T) {
	var r streamResult
	c := &copyCounter{r: &r}
	data := "1\tuser1@example.com\t1\torder 1\n2\tu***@example.com\t2\torder 2\n3\tuser3@example.com\t3\torder 3\n"
	for i := 0; i < len(data); i += 7 { // rows split across writes
		if _, err := c.Write([]byte(data[i:min(i+7, len(data))])); err != nil {
			t.Fatal(err)
		}
	}
	if r.rows != 3 || r.raw != 2 || r.bytes != int64(len(data)) {
		t.Errorf("got %+v, want 3 rows, 2 raw, %d bytes", r, len(data))
	}
}

func TestLedgerLagFailsTheBar(t *testing.T) {
	o := options{rounds: 2, clients: 8, rows: 10, idle: 10, batch: 10, multi: 10, ledgerEvents: 10}
	res := results{}
	res.set("ledger", legGH, meas{v: 200_000})
	res.set("ledger-lag", legGH, meas{v: 3})
	res.set("ledger-bench", legGH, meas{v: 200_000})
	res.set("ledger-bench-lag", legGH, meas{v: 0.2})
	var b bytes.Buffer
	report(&b, o, [2]int{1, 18}, res, nil, time.Minute)
	for _, line := range strings.Split(b.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "embedded ledger: sustained"):
			if !strings.Contains(line, "(lag > 1 s)") || !strings.Contains(line, "not yet") {
				t.Errorf("a 3 s lag passed: %s", line)
			}
		case strings.HasPrefix(line, "embedded ledger: internal/ledger"):
			if strings.Contains(line, "lag >") || !strings.Contains(line, "GOAL") {
				t.Errorf("a 0.2 s lag failed: %s", line)
			}
		}
	}
}

func TestCPUTime(t *testing.T) {
	// A child that burns CPU for a moment must show some CPU time.
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{name: "sh", cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	defer func() { _ = cmd.Process.Kill(); <-p.done }()
	deadline := time.Now().Add(20 * time.Second)
	for p.cpuTime() < 20*time.Millisecond {
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("no CPU time seen for a busy child (got %v)", p.cpuTime())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if (*process)(nil).cpuTime() != 0 {
		t.Error("a nil process has CPU time")
	}
}

func TestParseSustained(t *testing.T) {
	out := "goos: linux\n" +
		"BenchmarkSustained/durability=sensitive         \t  100000\t     20000 ns/op\t     50000 events/s\t        12.00 index-lag-ms\t        20.50 cpu-µs/event\n" +
		"BenchmarkSustained/durability=every-2           \t  100000\t     40000 ns/op\t     25000 events/s\t      2000 index-lag-ms\t        30.00 cpu-µs/event\n" +
		"PASS\n"
	res := parseSustained(out)
	s, e := res["sensitive"], res["every"]
	if s.eventsPerSec != 50000 || s.lagMS != 12 || s.cpuPerEvent != 20.5 {
		t.Errorf("sensitive: %+v", s)
	}
	if e.eventsPerSec != 25000 || e.lagMS != 2000 {
		t.Errorf("every: %+v", e)
	}
	if len(parseSustained("PASS\nok  \tx\t0.1s\n")) != 0 {
		t.Error("output without the benchmark parsed")
	}
}

func TestPacer(t *testing.T) {
	var p pacer
	t0 := time.Now()
	p.markerN = []int64{1000, 2000, 50_000, 60_000}
	p.found(foundMarker{0, t0})
	if p.foundN != 1000 || p.allowance() != 4096 {
		t.Fatalf("after the first marker: %+v", p)
	}
	// Found in the same clump: no rate from a few milliseconds.
	p.found(foundMarker{1, t0.Add(2 * time.Millisecond)})
	if p.allowance() != 4096 {
		t.Errorf("a clump of markers changed the allowance: %d", p.allowance())
	}
	// 49,000 events in 0.5 s is 98,000/s: half a second's worth, but at most double.
	p.found(foundMarker{2, t0.Add(500 * time.Millisecond)})
	if p.allowance() != 8192 {
		t.Errorf("allowance %d, want 8192 (doubled, not 49,000)", p.allowance())
	}
	// A slow window brings it back down to the floor.
	p.found(foundMarker{3, t0.Add(10 * time.Second)})
	if p.allowance() != 4096 || p.foundN != 60_000 {
		t.Errorf("after a slow window: %+v", p)
	}
}

func TestRoundDown(t *testing.T) {
	for in, want := range map[int64]int64{7: 7, 99: 99, 100: 100, 1234: 1200, 521_149: 520_000, 10_987_654: 10_000_000} {
		if got := roundDown(in); got != want {
			t.Errorf("roundDown(%d) = %d, want %d", in, got, want)
		}
	}
}

// TestConsoleRows checks that both console rows are printed, the embedded one named with
// the count its budget let it load and the PostgreSQL one with its own.
func TestConsoleRows(t *testing.T) {
	o := options{consoleEvents: 10_000_000, consolePGEvents: 10_000_000}
	res := results{}
	res.set("console", legGH, meas{v: 211})
	res.set("console-events", legGH, meas{v: 1_700_000})
	res.set("console-pg", legGH, meas{v: 120})
	res.set("console-pg-load", legGH, meas{v: 300})
	var b bytes.Buffer
	report(&b, o, [2]int{1, 18}, res, nil, time.Minute)
	out := b.String()
	for _, want := range []string{
		"console page latency, 1,700,000-event ledger, embedded store (slowest page p50)",
		"console page latency, 10M-event ledger, PostgreSQL store (slowest page p50)",
		"211 ms", "120 ms", "300.00 s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
