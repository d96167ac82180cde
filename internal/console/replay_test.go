package console

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/store"
)

// testConsole is a console over a real ledger in a temporary data directory, with the
// built-in policy in force.
func testConsole(t *testing.T) (*Console, *ledger.Ledger) {
	t.Helper()
	ctx := context.Background()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	led, err := ledger.Open(ctx, &cfg, "unit", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = led.Close(context.Background()) })
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	apr, err := approval.Open(ctx, db, approval.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ledger.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.NewEngine(policy.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Auth: &identity.Chain{}, Ledger: led, Events: led.Store(), Approvals: apr, Live: live.New(),
		OIDC: func() []config.OIDC { return nil }, URL: func() string { return "http://127.0.0.1/console/" }, EvidenceKey: key,
		Instance: led.Instance(), Policy: eng, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return c, led
}

func viewerIn(groups ...string) *session {
	return &session{id: &identity.Identity{Subject: "someone@corp.example", Kind: identity.Human, Groups: groups, AuthMethod: "token"},
		seesAll: true, mayEnd: true, csrf: "x"}
}

func postReplay(c *Console, s *session, form url.Values) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/console/policy/replay", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	c.replay(w, &viewer{session: s, r: req})
	return w
}

// A pasted candidate policy is replayed over the recorded statements: the page lists the
// statements it would decide differently (and only those), and the replay is a ledger event.
// An invalid candidate shows its errors with their lines; people outside the approver groups
// and group security are refused.
func TestPolicyReplay(t *testing.T) {
	c, led := testConsole(t)
	ctx := context.Background()
	for i, sql := range []string{"DELETE FROM orders", "SELECT id FROM orders WHERE id = $1", "DELETE FROM orders"} {
		ev := &ledger.Event{Type: ledger.EventStatement, Time: time.Now().Add(-time.Duration(i+1) * time.Hour), Subject: "dana@corp.example",
			IdentityKind: "human", Groups: []string{"dba"}, AuthMethod: "token", Target: "main", Environment: "prod", Decision: "allow", Rule: "permissive",
			Statements: []ledger.Statement{{Kind: strings.Fields(sql)[0], Category: "write", Redacted: sql}}}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// A schema change that ran on an approval would be held again: not a change.
	approved := &ledger.Event{Type: ledger.EventStatement, Time: time.Now().Add(-time.Hour), Subject: "dana@corp.example", IdentityKind: "human",
		Groups: []string{"dba"}, Target: "main", Environment: "prod", Decision: "allow", ApprovalID: "apr_0123456789",
		Statements: []ledger.Statement{{Kind: "ALTER TABLE", Category: "ddl", Redacted: "ALTER TABLE orders ADD COLUMN note text"}}}
	if err := led.Record(ctx, approved); err != nil {
		t.Fatal(err)
	}
	old := &ledger.Event{Type: ledger.EventStatement, Time: time.Now().Add(-10 * 24 * time.Hour), Subject: "old@corp.example", IdentityKind: "human",
		Target: "main", Environment: "prod", Decision: "allow", Statements: []ledger.Statement{{Kind: "DELETE", Redacted: "DELETE FROM archive"}}}
	if err := led.Record(ctx, old); err != nil {
		t.Fatal(err)
	}

	sec := viewerIn("security")
	w := postReplay(c, sec, url.Values{"since": {"7d"}, "policy": {string(policy.DefaultText())}})
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("replay: HTTP %d\n%s", w.Code, body)
	}
	if n := strings.Count(body, `<tr class="change">`); n != 2 || !strings.Contains(body, `<span id="replay-changed">2</span>`) {
		t.Fatalf("want the two unbounded DELETEs listed, got %d rows:\n%s", n, body)
	}
	if !strings.Contains(body, "no-update-or-delete-without-where") || strings.Contains(body, "DELETE FROM archive") || strings.Contains(body, "SELECT id FROM orders") || strings.Contains(body, "ALTER TABLE") {
		t.Fatalf("replay page:\n%s", body)
	}
	evs, err := led.Store().Search(ctx, ledger.Query{Type: EventPolicyReplay})
	if err != nil || len(evs) != 1 || evs[0].Subject != "someone@corp.example" || !strings.Contains(evs[0].Message, "7d") {
		t.Fatalf("policy replay events: %v %+v", err, evs)
	}

	bad := "version: 1\ngrants:\n  - name: everyone\n    kinds: [human]\n    level: read\nrules:\n  - name: broken\n    when: statement.kind ==\n    action: deny\n"
	w = postReplay(c, sec, url.Values{"since": {"7d"}, "policy": {bad}})
	body = w.Body.String()
	if w.Code != http.StatusBadRequest || !strings.Contains(body, `class="policy-error">candidate policy:8:`) {
		t.Fatalf("invalid candidate: HTTP %d\n%s", w.Code, body)
	}
	if evs, _ := led.Store().Search(ctx, ledger.Query{Type: EventPolicyReplay}); len(evs) != 1 {
		t.Fatalf("an invalid candidate was replayed: %d replay events", len(evs))
	}

	aud := viewerIn("auditors")
	aud.mayEnd = false
	if w := postReplay(c, aud, url.Values{"since": {"7d"}, "policy": {string(policy.DefaultText())}}); w.Code != http.StatusForbidden {
		t.Fatalf("replay by an auditor: HTTP %d", w.Code)
	}
}
