package approval

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/store"
)

// memRecorder keeps events in memory (the ledger's writer is tested in its package; the
// end-to-end test uses the real one) and can be made to fail.
type memRecorder struct {
	mu     sync.Mutex
	events []ledger.Event
	fail   atomic.Bool
}

func (r *memRecorder) Record(_ context.Context, e *ledger.Event) error {
	if r.fail.Load() {
		return errors.New("ledger down")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, *e)
	return nil
}

func (r *memRecorder) types() []ledger.EventType {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ledger.EventType
	for _, e := range r.events {
		out = append(out, e.Type)
	}
	return out
}

type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type fixture struct {
	s   *Store
	rec *memRecorder
	clk *clock
	ins *inspect.Inspector
}

// fixtureDB, when set, gives each fixture a fresh state database other than the default
// embedded one (the PostgreSQL runs of these tests set it).
var fixtureDB func(t *testing.T) *sql.DB

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	var db *sql.DB
	if fixtureDB != nil {
		db = fixtureDB(t)
	} else {
		var err error
		db, err = store.Open(ctx, filepath.Join(t.TempDir(), "gatehouse.db"))
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{rec: &memRecorder{}, clk: &clock{}, ins: inspect.New(0)}
	f.clk.ns.Store(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC).UnixNano())
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	set := SettingsFrom(config.Approvals{Approvers: []string{"dba", "security"}})
	f.s, err = Open(ctx, db, Options{Recorder: f.rec, Key: key, Now: f.clk.Now, Settings: func() Settings { return set }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var (
	alice = &identity.Identity{Subject: "alice@corp.example", Kind: identity.Human, Groups: []string{"dba"}, AuthMethod: "token"}
	bob   = &identity.Identity{Subject: "bob@corp.example", Kind: identity.Human, Groups: []string{"dba"}, AuthMethod: "oidc"}
	carol = &identity.Identity{Subject: "carol@corp.example", Kind: identity.Human, Groups: []string{"security"}}
	dave  = &identity.Identity{Subject: "dave@corp.example", Kind: identity.Human, Groups: []string{"analysts"}}
	prod  = &config.Target{Name: "main", Environment: "prod"}
)

func (f *fixture) held(id *identity.Identity, sql string) gate.Held {
	st := f.ins.Inspect(sql)[0]
	return gate.Held{Session: &gate.Session{ID: "s-" + id.Subject, Identity: id, Target: prod, Database: "app"},
		Statement: st, Rule: "hold-drops", Message: "drops need an approval."}
}

func TestRequestApproveUseOnce(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	h := f.held(alice, "DROP TABLE orders")

	d, err := f.s.Hold(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	id := d.ApprovalID
	if d.Action != gate.RequireApproval || d.Rule != "hold-drops" || !idRE.MatchString(id) {
		t.Fatalf("hold = %+v", d)
	}
	want := "drops need an approval; approval request " + id + " created: ask an approver to run `gatehouse approvals approve " + id + "`, then run the statement again"
	if d.Message != want {
		t.Fatalf("message = %q\nwant      %q", d.Message, want)
	}
	// Running it again before a decision reuses the request.
	d2, err := f.s.Hold(ctx, f.held(alice, "DROP TABLE orders;"))
	if err != nil || d2.ApprovalID != id || !strings.Contains(d2.Message, "is waiting for a decision") {
		t.Fatalf("second hold = %+v, %v", d2, err)
	}
	r, err := f.s.Get(ctx, strings.ToUpper(id))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Pending || r.Requester != alice.Subject || r.Statement != "DROP TABLE orders" || r.Rule != "hold-drops" ||
		r.Target != "main" || r.Environment != "prod" || !r.ExpiresAt.Equal(r.CreatedAt.Add(24*time.Hour)) || len(r.TablesWritten) != 1 {
		t.Fatalf("request = %+v", r)
	}

	// Nothing approved yet.
	if got, err := f.s.Approved(ctx, h); err != nil || got != "" {
		t.Fatalf("approved before decision: %q %v", got, err)
	}
	// Not by the requester (in any spelling), not by a non-approver.
	if _, err := f.s.Approve(ctx, id, alice, ""); !errors.Is(err, ErrOwnRequest) {
		t.Fatalf("self approval: %v", err)
	}
	shout := &identity.Identity{Subject: "ALICE@corp.example", Kind: identity.Service, Groups: []string{"dba"}}
	if _, err := f.s.Approve(ctx, id, shout, ""); !errors.Is(err, ErrOwnRequest) {
		t.Fatalf("self approval under another spelling and kind: %v", err)
	}
	if _, err := f.s.Approve(ctx, id, dave, ""); !errors.Is(err, ErrNotApprover) {
		t.Fatalf("non-approver: %v", err)
	}
	if _, err := f.s.Approve(ctx, "apr_0000000000", bob, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	r, err = f.s.Approve(ctx, id, carol, "ok\x00 for the migration")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Approved || r.DecidedBy != carol.Subject || r.Comment != "ok  for the migration" || !r.ValidUntil.Equal(f.clk.Now().Add(time.Hour).UTC()) {
		t.Fatalf("approved = %+v", r)
	}
	if _, err := f.s.Approve(ctx, id, bob, ""); !errors.As(err, new(*StatusError)) {
		t.Fatalf("second decision: %v", err)
	}

	// Another statement, another identity or another database is not covered.
	for name, other := range map[string]gate.Held{
		"other table":    f.held(alice, "DROP TABLE customers"),
		"other literal":  f.held(alice, "DROP TABLE orders CASCADE"),
		"other identity": f.held(bob, "DROP TABLE orders"),
	} {
		if got, err := f.s.Approved(ctx, other); err != nil || got != "" {
			t.Fatalf("%s: covered by %q (%v)", name, got, err)
		}
	}
	otherDB := f.held(alice, "DROP TABLE orders")
	otherDB.Session.Database = "postgres"
	if got, _ := f.s.Approved(ctx, otherDB); got != "" {
		t.Fatal("approval covers another database")
	}

	if got, err := f.s.Approved(ctx, h); err != nil || got != id {
		t.Fatalf("approved = %q %v", got, err)
	}
	if ok, err := f.s.Use(ctx, id, h); err != nil || !ok {
		t.Fatalf("use: %v %v", ok, err)
	}
	if ok, err := f.s.Use(ctx, id, h); err != nil || ok {
		t.Fatalf("second use: %v %v", ok, err)
	}
	if got, _ := f.s.Approved(ctx, h); got != "" {
		t.Fatalf("used approval still found: %q", got)
	}
	r, _ = f.s.Get(ctx, id)
	if r.Status != Used || r.UsedSession != "s-alice@corp.example" {
		t.Fatalf("after use: %+v", r)
	}
	// A further run files a new request.
	d3, err := f.s.Hold(ctx, h)
	if err != nil || d3.ApprovalID == id || !strings.Contains(d3.Message, "created") {
		t.Fatalf("hold after use = %+v %v", d3, err)
	}
	wantTypes := []ledger.EventType{ledger.EventApprovalRequested, ledger.EventApprovalApproved, ledger.EventApprovalUsed, ledger.EventApprovalRequested}
	if got := f.rec.types(); !equalTypes(got, wantTypes) {
		t.Fatalf("events = %v, want %v", got, wantTypes)
	}
	ev := f.rec.events[1]
	if ev.Subject != carol.Subject || ev.ApprovalID != id || ev.Rule != "hold-drops" || ev.Target != "main" ||
		ev.Statements[0].Redacted != "DROP TABLE orders" || !strings.Contains(ev.Message, "requested by alice@corp.example") {
		t.Fatalf("approved event = %+v", ev)
	}
	if ev := f.rec.events[2]; ev.Subject != alice.Subject || ev.SessionID != "s-alice@corp.example" || !strings.Contains(ev.Message, "approved by carol") {
		t.Fatalf("used event = %+v", ev)
	}
}

func equalTypes(a, b []ledger.EventType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLiteralsNeverStored(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	h := f.held(alice, "DELETE FROM customers WHERE ssn = '123-45-6789'")
	d, err := f.s.Hold(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	var dump string
	rows, err := f.s.query(ctx, `SELECT `+requestColumns+` FROM approval_requests`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			t.Fatal(err)
		}
		dump += r.Statement + r.textHash + r.Message + r.Fingerprint
	}
	if strings.Contains(dump, "6789") || !strings.Contains(dump, "DELETE FROM customers") {
		t.Fatalf("request %s keeps %q", d.ApprovalID, dump)
	}
	// The same shape with another literal is another statement.
	if got, _ := f.s.Approved(ctx, f.held(alice, "DELETE FROM customers WHERE ssn = '000-00-0000'")); got != "" {
		t.Fatal("matched another literal")
	}
}

func TestDenyAndExpiry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	h := f.held(alice, "ALTER TABLE orders DROP COLUMN amount")
	d, _ := f.s.Hold(ctx, h)
	if _, err := f.s.Deny(ctx, d.ApprovalID, alice, ""); !errors.Is(err, ErrOwnRequest) {
		t.Fatalf("self deny: %v", err)
	}
	if _, err := f.s.Deny(ctx, d.ApprovalID, bob, "not during business hours"); err != nil {
		t.Fatal(err)
	}
	d2, err := f.s.Hold(ctx, h)
	if err != nil || d2.ApprovalID != d.ApprovalID || !strings.Contains(d2.Message, `was denied by bob@corp.example: "not during business hours"`) {
		t.Fatalf("after deny: %+v %v", d2, err)
	}
	if _, err := f.s.Approve(ctx, d.ApprovalID, carol, ""); !errors.As(err, new(*StatusError)) {
		t.Fatalf("approve after deny: %v", err)
	}
	// Once the denied request lapses, a new one can be filed.
	f.clk.Advance(24*time.Hour + time.Second)
	d3, err := f.s.Hold(ctx, h)
	if err != nil || d3.ApprovalID == d.ApprovalID || !strings.Contains(d3.Message, "created") {
		t.Fatalf("after the denial lapsed: %+v %v", d3, err)
	}

	// A pending request lapses after the request TTL and can no longer be approved.
	f.clk.Advance(24*time.Hour + time.Second)
	var se *StatusError
	if _, err := f.s.Approve(ctx, d3.ApprovalID, bob, ""); !errors.As(err, &se) || se.Status != Expired {
		t.Fatalf("approve lapsed request: %v", err)
	}
	// An approval lapses after its validity window.
	d4, _ := f.s.Hold(ctx, h)
	if _, err := f.s.Approve(ctx, d4.ApprovalID, bob, ""); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Hour)
	if got, _ := f.s.Approved(ctx, h); got != "" {
		t.Fatal("approval used after its window")
	}
	if ok, _ := f.s.Use(ctx, d4.ApprovalID, h); ok {
		t.Fatal("lapsed approval used")
	}
	list, err := f.s.List(ctx, Filter{Status: Expired})
	if err != nil || len(list) != 2 || list[0].ID != d4.ApprovalID || list[1].ID != d3.ApprovalID {
		t.Fatalf("expired = %+v %v", list, err)
	}
	if _, err := f.s.List(ctx, Filter{Status: "maybe"}); err == nil {
		t.Fatal("bad status accepted")
	}
	if mine, _ := f.s.List(ctx, Filter{Requester: bob.Subject}); len(mine) != 0 {
		t.Fatalf("bob's requests = %+v", mine)
	}
}

// Of many sessions that race to use one approval, exactly one runs its statement.
func TestConcurrentUseExactlyOneWins(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	h := f.held(alice, "DROP TABLE orders")
	d, _ := f.s.Hold(ctx, h)
	if _, err := f.s.Approve(ctx, d.ApprovalID, bob, ""); err != nil {
		t.Fatal(err)
	}
	const racers = 16
	var wins, errs atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			id, err := f.s.Approved(ctx, h)
			if err != nil {
				errs.Add(1)
				return
			}
			if id == "" {
				return
			}
			ok, err := f.s.Use(ctx, id, h)
			if err != nil {
				errs.Add(1)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || errs.Load() != 0 {
		t.Fatalf("wins = %d, errors = %d", wins.Load(), errs.Load())
	}
	used := 0
	for _, e := range f.rec.types() {
		if e == ledger.EventApprovalUsed {
			used++
		}
	}
	if used != 1 {
		t.Fatalf("%d approval.used events", used)
	}
}

// Concurrent holds of one statement file one request.
func TestConcurrentHoldFilesOneRequest(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ids := make(chan string, 8)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := f.s.Hold(ctx, f.held(alice, "DROP TABLE orders"))
			if err != nil {
				t.Error(err)
			}
			ids <- d.ApprovalID
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 {
		t.Fatalf("ids = %v", seen)
	}
}

// What the ledger did not record did not happen: a decision or a use the ledger refuses is
// undone, and a request it refuses is not filed.
func TestUnrecordedActionsAreUndone(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	h := f.held(alice, "DROP TABLE orders")
	f.rec.fail.Store(true)
	if _, err := f.s.Hold(ctx, h); err == nil {
		t.Fatal("hold without ledger succeeded")
	}
	if l, _ := f.s.List(ctx, Filter{}); len(l) != 0 {
		t.Fatalf("unrecorded request kept: %+v", l)
	}
	f.rec.fail.Store(false)
	d, _ := f.s.Hold(ctx, h)
	f.rec.fail.Store(true)
	if _, err := f.s.Approve(ctx, d.ApprovalID, bob, ""); err == nil {
		t.Fatal("approve without ledger succeeded")
	}
	if r, _ := f.s.Get(ctx, d.ApprovalID); r.Status != Pending || r.DecidedBy != "" {
		t.Fatalf("after unrecorded approval: %+v", r)
	}
	f.rec.fail.Store(false)
	if _, err := f.s.Approve(ctx, d.ApprovalID, bob, ""); err != nil {
		t.Fatal(err)
	}
	f.rec.fail.Store(true)
	if ok, err := f.s.Use(ctx, d.ApprovalID, h); ok || err == nil {
		t.Fatalf("use without ledger: %v %v", ok, err)
	}
	if r, _ := f.s.Get(ctx, d.ApprovalID); r.Status != Approved {
		t.Fatalf("after unrecorded use: %+v", r)
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id, err := newID()
		if err != nil {
			t.Fatal(err)
		}
		if !idRE.MatchString(id) || len(id) != 14 || seen[id] {
			t.Fatalf("id %q", id)
		}
		seen[id] = true
	}
	if _, ok := NormalizeID(" APR_ABCDEFGHJK "); !ok {
		t.Fatal("typed id refused")
	}
	for _, bad := range []string{"apr_abcdefghi", "apr_abcdefghil", "xyz_abcdefghjk", ""} {
		if _, ok := NormalizeID(bad); ok {
			t.Fatalf("%q accepted", bad)
		}
	}
}
