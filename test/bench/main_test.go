package main

import (
	"bytes"
	"os/exec"
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

func TestReportRatios(t *testing.T) {
	legs := []leg{{name: "direct"}, {name: "pgbouncer", skipModes: map[string]string{"prepared": "old"}}, {name: "gatehouse", unavailable: "no binary"}}
	w := []workload{{"simple", 8}, {"prepared", 8}}
	res := map[string]map[workload]cell{
		"direct":    {w[0]: {tps: 1000}, w[1]: {tps: 2000}},
		"pgbouncer": {w[0]: {tps: 500}, w[1]: {note: "n/a"}},
		"gatehouse": {w[0]: {note: "not available"}, w[1]: {note: "not available"}},
	}
	var b bytes.Buffer
	report(&b, options{scale: 10, duration: 10 * time.Second, jobs: 2}, legs, w, res)
	out := b.String()
	for _, want := range []string{"0.50", "not available", "gatehouse not available: no binary", "pgbouncer -M prepared n/a: old"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
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
