package gate_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// newGate assembles a gate from the real inspector, the built-in default policy and an
// SQLite ledger in a temporary directory.
func newGate(t *testing.T) (*gate.Gate, *ledger.Ledger) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := ledger.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.New(ctx, st, ledger.Options{DataDir: dir, Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close(context.Background()) })
	pol, err := policy.NewEngine(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &gate.Gate{Inspector: inspect.New(100), Policy: pol, Recorder: led}, led
}

func session(env string, kind identity.Kind, groups ...string) *gate.Session {
	return &gate.Session{
		ID:       gate.NewSessionID(),
		Identity: &identity.Identity{Subject: "alice@corp.example", Kind: kind, Groups: groups, AuthMethod: "token"},
		Target:   &config.Target{Name: "db-" + env, Environment: env, Roles: map[string]string{"read": "ro", "write": "rw"}},
	}
}

func TestOpenSessionPicksLeastPrivilegedRole(t *testing.T) {
	g, _ := newGate(t)
	ctx := context.Background()
	s := session("prod", identity.Human)
	if d, err := g.OpenSession(ctx, s); err != nil || d.Action != gate.Allow {
		t.Fatalf("open: %+v %v", d, err)
	}
	if s.AccessLevel != "read" || s.UpstreamRole != "ro" {
		t.Fatalf("prod human: level %q role %q, want read/ro", s.AccessLevel, s.UpstreamRole)
	}
	s = session("dev", identity.Human)
	g.OpenSession(ctx, s)
	if s.AccessLevel != "write" || s.UpstreamRole != "rw" {
		t.Fatalf("dev human: level %q role %q, want write/rw", s.AccessLevel, s.UpstreamRole)
	}
	// An admin grant on a target that declares no admin role runs as the target's login.
	s = session("dev", identity.Human, "dba")
	g.OpenSession(ctx, s)
	if s.AccessLevel != "admin" || s.UpstreamRole != "" {
		t.Fatalf("dba: level %q role %q", s.AccessLevel, s.UpstreamRole)
	}
}

func TestCheckDeniesWholeStringAndRecordsIntentFirst(t *testing.T) {
	g, led := newGate(t)
	ctx := context.Background()
	s := session("prod", identity.Human, "dba")
	g.OpenSession(ctx, s)

	c := g.Check(ctx, s, "SELECT 1; DROP TABLE payments", gate.ViaQuery)
	if c.Allowed() || c.Denied == nil || c.Denied.Kind != "DROP TABLE" {
		t.Fatalf("multi-statement with a DROP in prod: %+v", c.Decision)
	}
	if msg := c.DenyMessage(); msg == "" || c.Decision.Rule != "no-drop-or-truncate-in-production" {
		t.Fatalf("rule %q message %q", c.Decision.Rule, msg)
	}
	// A Parse only prepares: no intent. The Execute that runs it records one.
	if c = g.Check(ctx, s, "UPDATE orders SET status = 'x' WHERE id = 7", gate.ViaParse); !c.Allowed() {
		t.Fatalf("dba update with where at Parse: %+v", c.Decision)
	}
	c = g.Check(ctx, s, "UPDATE orders SET status = 'x' WHERE id = 7", gate.ViaExecute)
	if !c.Allowed() {
		t.Fatalf("dba update with where: %+v", c.Decision)
	}
	if err := g.Done(ctx, s, c, gate.Outcome{Rows: 1}); err != nil {
		t.Fatal(err)
	}
	evs, err := led.Store().Search(ctx, ledger.Query{Identity: "alice@*", Ascending: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		types = append(types, string(e.Type))
	}
	want := []string{"session.start", "statement.intent", "statement"}
	if len(types) != len(want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("events %v, want %v", types, want)
		}
	}
	last := evs[len(evs)-1]
	if last.Rows != 1 || last.Statements[0].Redacted == "" || last.Statements[0].Kind != "UPDATE" {
		t.Fatalf("statement event %+v", last)
	}
	for _, st := range last.Statements {
		if st.Redacted != "" && (contains(st.Redacted, "'x'") || contains(st.Redacted, "7")) {
			t.Fatalf("literal leaked into the ledger: %q", st.Redacted)
		}
	}
}

func TestLedgerDownFailsClosed(t *testing.T) {
	g, led := newGate(t)
	ctx := context.Background()
	s := session("dev", identity.Human)
	g.OpenSession(ctx, s)
	led.Close(ctx)
	c := g.Check(ctx, s, "DELETE FROM orders WHERE id = 1", gate.ViaQuery)
	if c.Allowed() || !c.LedgerDown {
		t.Fatalf("write with the ledger closed was allowed: %+v", c.Decision)
	}
	c = g.Check(ctx, s, "SELECT 1", gate.ViaQuery)
	if err := g.Done(ctx, s, c, gate.Outcome{}); err == nil {
		t.Fatal("Done succeeded with the ledger closed")
	}
}

func TestPurposeAndTraceFromSQLComment(t *testing.T) {
	g, led := newGate(t)
	ctx := context.Background()
	s := session("dev", identity.Agent)
	g.OpenSession(ctx, s)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c := g.Check(ctx, s, "SELECT 1 /*purpose='churn-report',traceparent='"+tp+"'*/", gate.ViaQuery)
	if err := g.Done(ctx, s, c, gate.Outcome{Rows: 1}); err != nil {
		t.Fatal(err)
	}
	evs, _ := led.Store().Search(ctx, ledger.Query{Type: ledger.EventStatement, Limit: 1})
	if len(evs) != 1 || evs[0].Purpose != "churn-report" || evs[0].Traceparent != tp {
		t.Fatalf("purpose/trace not recorded: %+v", evs)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestExecuteIsDecidedAsWhatItPrepared(t *testing.T) {
	g, _ := newGate(t)
	ctx := context.Background()
	s := session("dev", identity.Human)
	g.OpenSession(ctx, s)
	// Unknown prepared name: EXECUTE stays unknown, which the default policy refuses below admin.
	if c := g.Check(ctx, s, "EXECUTE nope", gate.ViaQuery); c.Allowed() {
		t.Fatalf("EXECUTE of an unknown name allowed: %+v", c.Decision)
	}
	if c := g.Check(ctx, s, "PREPARE p AS SELECT 1", gate.ViaQuery); !c.Allowed() {
		t.Fatalf("PREPARE of a read refused: %+v", c.Decision)
	}
	c := g.Check(ctx, s, "EXECUTE p", gate.ViaQuery)
	if !c.Allowed() || c.Statements[0].Kind != "SELECT" || c.Statements[0].Text != "PREPARE p AS SELECT 1" || c.Statements[0].Redacted != "EXECUTE p" {
		t.Fatalf("EXECUTE of a prepared read: %+v %+v", c.Decision, c.Statements[0])
	}
	// A refused PREPARE is not remembered, so its EXECUTE is no way around the refusal.
	if c := g.Check(ctx, s, "PREPARE d AS SELECT pg_read_file('/etc/passwd')", gate.ViaQuery); c.Allowed() {
		t.Fatal("PREPARE of a server file read allowed")
	}
	if c := g.Check(ctx, s, "EXECUTE d", gate.ViaQuery); c.Allowed() {
		t.Fatal("EXECUTE of a refused PREPARE allowed")
	}
	// The inspector's cached facts are not changed by the substitution.
	if again := g.Inspector.Inspect("EXECUTE p"); again[0].Kind != "EXECUTE" {
		t.Fatalf("cached facts changed: %+v", again[0])
	}
}

// TestCompleteNamesMissingControls: a gate without one of its controls is reported, by name,
// so the server refuses to start instead of running with masking (or any other control) off.
func TestCompleteNamesMissingControls(t *testing.T) {
	g, _ := newGate(t)
	err := g.Complete()
	if err == nil {
		t.Fatal("a gate without masking, catalog, validator and approvals reported complete")
	}
	for _, part := range []string{"masking", "classification catalog", "identity validator", "approvals"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("Complete() = %v, want it to name %q", err, part)
		}
	}
	if strings.Contains(err.Error(), "ledger") || strings.Contains(err.Error(), "inspector") {
		t.Errorf("Complete() = %v names a part that is set", err)
	}
}
