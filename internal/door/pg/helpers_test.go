package pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// shared is one throwaway cluster for the tests that do not kill their upstream.
var shared *testkit.Postgres

func TestMain(m *testing.M) {
	pg, err := testkit.NewPostgres(context.Background(), "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "start postgres:", err)
		os.Exit(1)
	}
	shared = pg
	code := m.Run()
	pg.Stop()
	os.Exit(code)
}

// testPolicy denies statements mentioning forbidden_table, holds approval_table, limits
// limited_rows to 5 rows, and consults extra when set.
type testPolicy struct {
	extra func(in gate.Input) (gate.Decision, bool)
}

func (p *testPolicy) Access(ctx context.Context, s *gate.Session) gate.Decision {
	if s.Identity.Subject == "mallory" {
		return gate.Decision{Action: gate.Deny, Rule: "no-mallory", Message: "mallory may not connect"}
	}
	return gate.Decision{Action: gate.Allow, Rule: "all", Level: "admin"}
}

func (p *testPolicy) Decide(ctx context.Context, in gate.Input) gate.Decision {
	if p.extra != nil {
		if d, ok := p.extra(in); ok {
			return d
		}
	}
	t := in.Statement.Text
	switch {
	case strings.Contains(t, "forbidden_table"):
		return gate.Decision{Action: gate.Deny, Rule: "no-forbidden", Message: "forbidden_table is off limits"}
	case strings.Contains(t, "approval_table"):
		return gate.Decision{Action: gate.RequireApproval, Rule: "hold", Message: "needs a second pair of eyes", ApprovalID: "ap-1"}
	case strings.Contains(t, "limited_rows"):
		return gate.Decision{Action: gate.Allow, Rule: "limit", MaxRows: 5}
	}
	return gate.Decision{Action: gate.Allow, Rule: "allow-rest"}
}

// textInspector is the real inspector with the raw text kept as the redacted text, so
// tests can find their statements' ledger events by the literals they contain.
type textInspector struct{ in *inspect.Inspector }

func (t textInspector) Inspect(sql string) []*inspect.Statement {
	sts := t.in.Inspect(sql)
	out := make([]*inspect.Statement, len(sts))
	for i, st := range sts {
		cp := *st
		cp.Redacted = cp.Text
		out[i] = &cp
	}
	return out
}

// testAuth accepts the password "secret-<user>".
type testAuth struct{}

func (testAuth) Authenticate(ctx context.Context, user, secret string) (*identity.Identity, error) {
	if secret != "secret-"+user {
		return nil, fmt.Errorf("%w: wrong token for %s", identity.ErrInvalidCredentials, user)
	}
	return &identity.Identity{Subject: user, Kind: identity.Human, AuthMethod: "token", TokenID: user}, nil
}

// testValidator revokes subjects on demand; unreachable makes its checks fail the way a
// validator whose store is down does (an error that is not ErrInvalidCredentials), counted
// in failedChecks.
type testValidator struct {
	revoked      sync.Map
	unreachable  atomic.Bool
	failedChecks atomic.Int64
}

func (v *testValidator) StillValid(ctx context.Context, id *identity.Identity) error {
	if v.unreachable.Load() {
		v.failedChecks.Add(1)
		return errors.New("read revocation generation: connection refused")
	}
	if _, ok := v.revoked.Load(id.Subject); ok {
		return fmt.Errorf("%w: revoked", identity.ErrInvalidCredentials)
	}
	return nil
}

// recorder collects ledger events; fail makes it refuse statements, like a ledger that is down.
type recorder struct {
	mu     sync.Mutex
	events []*ledger.Event
	fail   atomic.Bool
	// failSessions makes it refuse session events too (a ledger outage at login).
	failSessions atomic.Bool
}

func (r *recorder) Record(ctx context.Context, ev *ledger.Event) error {
	if r.fail.Load() && ev.Type == ledger.EventStatement || r.failSessions.Load() && ev.Type == ledger.EventSessionStart {
		return errors.New("disk full")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}

// Healthy is always nil: a failing recorder refuses at Record, as a ledger that breaks
// between its health check and the commit does.
func (r *recorder) Healthy() error { return nil }

func (r *recorder) Submit(ctx context.Context, ev *ledger.Event) *ledger.Ack {
	return ledger.AnsweredAck(r.Record(ctx, ev))
}

// statements returns recorded statement events with a statement whose (test: raw) text
// contains s.
func (r *recorder) statements(s string) []*ledger.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*ledger.Event
	for _, ev := range r.events {
		if ev.Type != ledger.EventStatement {
			continue
		}
		for _, st := range ev.Statements {
			if strings.Contains(st.Redacted, s) {
				out = append(out, ev)
				break
			}
		}
	}
	return out
}

func (r *recorder) ofType(t ledger.EventType) []*ledger.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*ledger.Event
	for _, ev := range r.events {
		if ev.Type == t {
			out = append(out, ev)
		}
	}
	return out
}

// ssnMasker masks every column named ssn (text format) as "***-**-****".
type ssnMasker struct{ plans atomic.Int64 }

// The rest of gate.MaskPlanner for ssnMasker: no COPY or text masking, every class masked,
// nothing followed across messages, every value in an error may be sensitive (the fakes that embed it override what they test).
func (m *ssnMasker) PlanCopy(context.Context, *gate.Session, *gate.Check) (gate.CopyMasker, error) {
	return nil, nil
}
func (m *ssnMasker) MaskText(_, s string) (string, int)                  { return s, 0 }
func (m *ssnMasker) MasksClass(_, _ string) bool                         { return true }
func (m *ssnMasker) ShowsRaw(string) bool                                { return false }
func (m *ssnMasker) Observe(context.Context, *gate.Session, *gate.Check) {}
func (m *ssnMasker) Forget(string)                                       {}

// ErrorValueSensitive: every value quoted in an error may be sensitive.
func (m *ssnMasker) ErrorValueSensitive(context.Context, *gate.Session, *gate.Check, string, []string) bool {
	return true
}

var _ gate.MaskPlanner = (*ssnMasker)(nil)

func (m *ssnMasker) Plan(ctx context.Context, s *gate.Session, c *gate.Check, cols []gate.Column) gate.RowMasker {
	m.plans.Add(1)
	var idx []int
	for i, col := range cols {
		if col.Name == "ssn" && col.Format == 0 {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	return rowMaskFunc(func(values [][]byte) int {
		n := 0
		for _, i := range idx {
			if i < len(values) && values[i] != nil {
				values[i] = []byte("***-**-****")
				n++
			}
		}
		return n
	})
}

type rowMaskFunc func([][]byte) int

func (f rowMaskFunc) MaskRow(v [][]byte) int { return f(v) }

func (f rowMaskFunc) MaskedByClass(func(string, int64)) {}

// env is a running door in front of one or more clusters.
type env struct {
	srv     *Server
	addr    *net.TCPAddr
	rec     *recorder
	policy  *testPolicy
	valid   *testValidator
	targets map[string]*config.Target
}

type envOpt func(*env)

func withTarget(name string, pg *testkit.Postgres) envOpt {
	return func(e *env) { e.targets[name] = targetFor(name, pg) }
}

func targetFor(name string, pg *testkit.Postgres) *config.Target {
	return &config.Target{Name: name, Engine: "postgres", Environment: "test", Host: pg.Host, Port: pg.Port, Database: "postgres", User: pg.User, Password: pg.Password, TLS: config.TargetTLS{Mode: "disable"}}
}

func startEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	e := &env{rec: &recorder{}, policy: &testPolicy{}, valid: &testValidator{}, targets: map[string]*config.Target{}}
	e.targets["main"] = targetFor("main", shared)
	e.srv = &Server{
		Gate:            &gate.Gate{Policy: e.policy, Recorder: e.rec, Validator: e.valid, Inspector: textInspector{inspect.New(1000)}},
		Auth:            testAuth{},
		StartupTimeout:  2 * time.Second,
		RevalidateEvery: 100 * time.Millisecond,
		Metrics:         NewMetrics(nil),
		Log:             testLogger(t),
	}
	for _, o := range opts {
		o(e)
	}
	e.srv.Target = func(name string) (*config.Target, bool) { tg, ok := e.targets[name]; return tg, ok }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().(*net.TCPAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return e
}

func (e *env) dsn(user, db string, extra ...string) string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=secret-%s dbname=%s sslmode=disable connect_timeout=5", e.addr.Port, user, user, db)
	for _, x := range extra {
		s += " " + x
	}
	return s
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	return ""
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// testLogger writes the door's log into the test's log, shown only when a test fails or -v.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter stops writing once the test has ended (testing panics on a late Log).
type tWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// relayUpstreamMessage does with the next upstream message what upstreamLoop does (short of
// its cap on held output): handles it and, once nothing more is buffered, writes what it
// released to the client.
func relayUpstreamMessage(tb testing.TB, ctx context.Context, r *relay) {
	fr, err := r.ur.next()
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.fromUpstream(ctx, fr); err != nil {
		tb.Fatal(err)
	}
	if r.ur.buffered() == 0 {
		if err := r.out.release(ctx, true); err != nil {
			tb.Fatal(err)
		}
	}
}
