package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/store"
)

// The queue lists a pending request however many newer requests were decided since, and the
// history says when it lists only the newest decided ones instead of cutting them silently.
func TestApprovalsPageQueueAndHistory(t *testing.T) {
	c, led := testConsole(t)
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "approvals.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := approval.LoadOrCreateKey(filepath.Join(t.TempDir(), approval.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().Add(-time.Hour).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Add(int64(time.Millisecond))) }
	set := approval.SettingsFrom(config.Approvals{Approvers: []string{"dba"}})
	apr, err := approval.Open(ctx, db, approval.Options{Recorder: led, Key: key, Now: now, Settings: func() approval.Settings { return set }})
	if err != nil {
		t.Fatal(err)
	}
	c.opts.Approvals = apr

	dana := &identity.Identity{Subject: "dana@corp.example", Kind: identity.Human, Groups: []string{"dba"}, AuthMethod: "token"}
	sam := &identity.Identity{Subject: "sam@corp.example", Kind: identity.Human, Groups: []string{"dba"}, AuthMethod: "token"}
	ins := inspect.New(0)
	hold := func(sql string) string {
		t.Helper()
		h := gate.Held{Session: &gate.Session{ID: "s1", Identity: dana, Target: &config.Target{Name: "main", Environment: "prod"}, Database: "app"},
			Statement: ins.Inspect(sql)[0], Rule: "hold-drops", Message: "drops need an approval."}
		d, err := apr.Hold(ctx, h)
		if err != nil || d.ApprovalID == "" {
			t.Fatalf("hold %s: %+v %v", sql, d, err)
		}
		return d.ApprovalID
	}
	waiting := hold("DROP TABLE oldest")
	const decided = 201 // more than the page once read in one list of 200
	for i := range decided {
		id := hold(fmt.Sprintf("DROP TABLE t%d", i))
		if _, err := apr.Deny(ctx, id, sam, "no"); err != nil {
			t.Fatal(err)
		}
	}
	newest := hold("DROP TABLE newest")

	w := httptest.NewRecorder()
	c.approvalsPage(w, &viewer{session: viewerIn("auditors"), r: httptest.NewRequest(http.MethodGet, "/console/approvals", nil)})
	if w.Code != http.StatusOK {
		t.Fatalf("approvals page: HTTP %d\n%s", w.Code, w.Body.String())
	}
	queue, history, ok := strings.Cut(w.Body.String(), "<h2>History</h2>")
	if !ok {
		t.Fatalf("no history on the page:\n%s", w.Body.String())
	}
	if n := strings.Count(queue, `<a href="/console/approvals/apr_`); n != 2 || !strings.Contains(queue, waiting) || !strings.Contains(queue, newest) {
		t.Fatalf("the queue lists %d requests, want %s and %s:\n%s", n, waiting, newest, queue)
	}
	if strings.Contains(queue, `id="pending-more"`) {
		t.Fatal("the queue says it is cut")
	}
	if n := strings.Count(history, `<a href="/console/approvals/apr_`); n != historyShown || !strings.Contains(history, `id="history-more"`) {
		t.Fatalf("the history lists %d requests (want the newest %d) and says it is cut: %v", n, historyShown, strings.Contains(history, `id="history-more"`))
	}
	if !strings.Contains(history, "DROP TABLE t200") || strings.Contains(history, "DROP TABLE t100<") {
		t.Fatalf("the history does not list the newest decided requests:\n%s", history)
	}
}
