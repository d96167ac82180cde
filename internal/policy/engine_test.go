package policy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

const policyAllowReads = `
grants: [{subjects: ["*"], level: write}]
rules:
  - name: version-a
    when: statement.category == "read"
    action: allow
`

const policyDenyReads = `
grants: [{subjects: ["*"], level: write}]
rules:
  - name: version-c
    when: statement.category == "read"
    action: deny
    message: reads are off
`

const policyBad = `
grants: [{subjects: ["*"], level: write}]
rules:
  - name: version-b
    when: statement.kind ==
    action: deny
`

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// writeFile replaces path atomically, as editors and config management do.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestLoadKeepsPolicyOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, policyBad)
	e := newEngine(t)
	err := e.Load(path)
	if err == nil || !strings.Contains(err.Error(), path+":5: rules[0].when:") {
		t.Fatalf("want a located error, got %v", err)
	}
	if e.Policy().Source != DefaultSource {
		t.Fatalf("bad load replaced the policy: %s", e.Policy().Source)
	}
	if err := e.Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "read policy") {
		t.Fatalf("missing file: %v", err)
	}
	writeFile(t, path, policyAllowReads)
	if err := e.Load(path); err != nil || e.Policy().Source != path {
		t.Fatalf("load: %v", err)
	}
	if err := e.Load(""); err != nil || e.Policy().Source != DefaultSource {
		t.Fatalf("load default: %v", err)
	}
}

func TestWatchGoodBadGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, policyAllowReads)
	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{Registerer: reg, PollInterval: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(path); err != nil {
		t.Fatal(err)
	}
	events := make(chan error, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Watch(ctx, path, func(err error) { events <- err })
	}()
	defer func() { cancel(); <-done }()
	next := func() error {
		t.Helper()
		select {
		case err := <-events:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("no reload event within 5s")
			return nil
		}
	}
	s := who("a@corp.example", identity.Human, "dev")
	sel := stmt("SELECT", inspect.Read)
	if d := decide(e, s, sel); d.Rule != "version-a" {
		t.Fatalf("start: %+v", d)
	}
	successAt := metricValue(t, reg, "gatehouse_policy_last_reload_success_timestamp_seconds")

	// good -> bad: the old policy stays, the error is reported and counted.
	writeFile(t, path, policyBad)
	err = next()
	if err == nil || !strings.Contains(err.Error(), "policy.yaml:5: rules[0].when") {
		t.Fatalf("bad reload: %v", err)
	}
	if d := decide(e, s, sel); d.Rule != "version-a" {
		t.Fatalf("bad reload must keep the old policy: %+v", d)
	}
	if v := metricValue(t, reg, "gatehouse_policy_reload_errors_total"); v != 1 {
		t.Fatalf("reload errors = %v", v)
	}
	if v := metricValue(t, reg, "gatehouse_policy_last_reload_success_timestamp_seconds"); v != successAt {
		t.Fatalf("a failed reload moved the success timestamp")
	}

	// bad -> good.
	time.Sleep(20 * time.Millisecond)
	writeFile(t, path, policyDenyReads)
	if err := next(); err != nil {
		t.Fatalf("good reload: %v", err)
	}
	if d := decide(e, s, sel); d.Rule != "version-c" || d.Action != gate.Deny {
		t.Fatalf("new policy not in force: %+v", d)
	}
	if v := metricValue(t, reg, "gatehouse_policy_reloads_total"); v != 2 {
		t.Fatalf("reloads = %v", v)
	}

	// The file disappearing is an error once, not once per poll; the policy stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := next(); err == nil || !strings.Contains(err.Error(), "read policy") {
		t.Fatalf("removed file: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if v := metricValue(t, reg, "gatehouse_policy_reload_errors_total"); v != 2 {
		t.Fatalf("reload errors after removal = %v (counted more than once?)", v)
	}
	if d := decide(e, s, sel); d.Rule != "version-c" {
		t.Fatalf("%+v", d)
	}
	// Restoring the same text is not a reload.
	writeFile(t, path, policyDenyReads)
	writeFile(t, path+".other", "x")
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-events:
		t.Fatalf("unexpected reload event: %v", err)
	default:
	}
	// A second engine on the same registry shares the metrics instead of failing.
	if _, err := NewEngine(Options{Registerer: reg}); err != nil {
		t.Fatalf("second engine: %v", err)
	}
}

// TestConcurrentSwap runs decisions on many goroutines while the policy is swapped back and
// forth; run with -race. Every decision must come whole from one policy or the other.
func TestConcurrentSwap(t *testing.T) {
	e := newEngine(t)
	a, c := mustParse(t, policyAllowReads), mustParse(t, policyDenyReads)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := who("a@corp.example", identity.Human, "dev")
			sel := &inspect.Statement{Kind: "SELECT", Category: inspect.Read, TablesRead: []string{"t"}}
			for n := 0; ctx.Err() == nil && n < 1_000_000; n++ {
				d := decide(e, s, sel)
				switch {
				case d.Rule == "version-a" && d.Action == gate.Allow:
				case d.Rule == "version-c" && d.Action == gate.Deny && d.Message == "reads are off":
				case d.Rule == RuleDefault && d.Action == gate.Allow: // the default policy, before the first swap
				default:
					errs <- d.Rule + " " + string(d.Action)
					return
				}
			}
		}()
	}
	for i := 0; ctx.Err() == nil && i < 100_000; i++ {
		if i%2 == 0 {
			e.Set(a)
		} else {
			e.Set(c)
		}
		time.Sleep(100 * time.Microsecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("torn decision: %s", err)
	}
}

func BenchmarkDecide(b *testing.B) {
	e := newEngine(b)
	ctx := context.Background()
	now := time.Now()
	cases := []struct {
		name string
		s    *gate.Session
		st   *inspect.Statement
	}{
		{"select-prod-reader", who("alice@corp.example", identity.Human, "prod"),
			&inspect.Statement{Kind: "SELECT", Category: inspect.Read, TablesRead: []string{"pgbench_accounts"}, Columns: []string{"abalance", "aid"}, HasWhere: true, Redacted: "SELECT abalance FROM pgbench_accounts WHERE aid = $1"}},
		{"update-dev-writer", who("alice@corp.example", identity.Human, "dev"),
			&inspect.Statement{Kind: "UPDATE", Category: inspect.Write, TablesWritten: []string{"pgbench_accounts"}, HasWhere: true, Redacted: "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"}},
		{"delete-no-where-denied", who("alice@corp.example", identity.Human, "dev"),
			&inspect.Statement{Kind: "DELETE", Category: inspect.Write, TablesWritten: []string{"users"}, Redacted: "DELETE FROM users"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			in := gate.Input{Session: c.s, Statement: c.st, Via: gate.ViaQuery, Now: now}
			c.s.AccessLevel = e.Access(ctx, c.s).Level
			b.ReportAllocs()
			for b.Loop() {
				_ = e.Decide(ctx, in)
			}
		})
	}
}

// TestWatchPicksUpChangeBeforeStart: a file changed after Load but before Watch started is
// still put in force on the first poll.
func TestWatchPicksUpChangeBeforeStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyAllowReads)
	e, err := NewEngine(Options{PollInterval: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(path); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, policyDenyReads)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan error, 4)
	go e.Watch(ctx, path, func(err error) { got <- err })
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("change before Watch started was not picked up")
	}
	if d := decide(e, who("a@corp.example", identity.Human, "dev"), stmt("SELECT", inspect.Read)); d.Rule != "version-c" {
		t.Fatalf("%+v", d)
	}
}

// TestEvalErrorsLoggedOnceCountedAlways: a condition failing for every statement is counted
// every time but logged once per policy load.
func TestEvalErrorsLoggedOnceCountedAlways(t *testing.T) {
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{Registerer: reg, Log: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	text := `
grants: [{subjects: ["*"], level: read}]
rules:
  - name: needs-team
    when: identity.claims["team"] != "red"
    action: deny
`
	e.Set(mustParse(t, text))
	s := who("a@corp.example", identity.Human, "dev")
	for i := 0; i < 5; i++ {
		if d := decide(e, s, stmt("SELECT", inspect.Read)); d.Rule != "needs-team" {
			t.Fatalf("%+v", d)
		}
	}
	if n := strings.Count(logs.String(), "needs-team"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logs.String())
	}
	if v := metricValue(t, reg, "gatehouse_policy_eval_errors_total"); v != 5 {
		t.Fatalf("eval errors = %v", v)
	}
	e.Set(mustParse(t, text)) // a new load logs again
	decide(e, s, stmt("SELECT", inspect.Read))
	if n := strings.Count(logs.String(), "needs-team"); n != 2 {
		t.Fatalf("logged %d times after reload", n)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
