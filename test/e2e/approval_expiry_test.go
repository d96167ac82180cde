package e2e

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// expiredMessage is what an unused approval's lapse says.
var expiredMessage = regexp.MustCompile(`^valid_for lapsed at \S+: approved by bob@corp\.example \(human\) at \S+, never used$`)

// TestApprovalExpiryRecordedOnce: an approval nobody uses lapses after valid_for, and the two
// instances sharing the store, both sweeping, put exactly one approval.expired event on the
// ledger for it; the API shows it expired.
func TestApprovalExpiryRecordedOnce(t *testing.T) {
	shared := testkit.StartPostgres(t)
	shared.Exec(t, "postgres", "CREATE DATABASE gatehouse")
	dsn := shared.DSN("gatehouse")
	const validFor = 2 * time.Second // the sweep then runs every second (its floor)
	short := func(cfg *config.Config) { cfg.Approvals.ValidFor = config.Duration(validFor) }
	a := servertest.Start(t, servertest.Options{PolicyYAML: approvalPolicy, Environment: "prod", SharedStoreDSN: dsn, Instance: "gh-a", Configure: short})
	b := servertest.Start(t, servertest.Options{PolicyYAML: approvalPolicy, Environment: "prod", SharedStoreDSN: dsn, Instance: "gh-b",
		Upstream: a.Upstream, KeysFrom: a.DataDir, Configure: short})
	a.Upstream.Exec(t, "app", `CREATE TABLE orders(id int)`)
	const aliceName, bobName = "alice@corp.example", "bob@corp.example"
	alice := a.Token(t, aliceName, "human", "dba")
	bob := a.Token(t, bobName, "human", "dba")

	ca := connect(t, a.DSN(aliceName, alice, ""))
	id := held(t, ca, "DROP TABLE orders", "created")
	if code, out := api(t, b, "POST", "/api/v1/approvals/"+id+"/approve", bearer(bob), "{}"); code != http.StatusOK {
		t.Fatalf("approve: %d %v", code, out)
	}
	approved := time.Now()

	expired := func(evs []ledger.Event) (n int, last ledger.Event) {
		for _, e := range evs {
			if e.ApprovalID == id {
				n++
				last = e
			}
		}
		return n, last
	}
	q := ledger.Query{Type: ledger.EventApprovalExpired, Identity: aliceName, Limit: 1000}
	searchLedger(t, a, q, func(evs []ledger.Event) bool { n, _ := expired(evs); return n > 0 })
	seen := time.Since(approved)
	if seen < validFor {
		t.Fatalf("expiry recorded %v after approval, before valid_for (%v) passed", seen, validFor)
	}
	t.Logf("approval.expired on the ledger %v after approval (valid_for %v)", seen.Round(time.Millisecond), validFor)
	// Let both instances sweep several more times; still one event, and it says what lapsed.
	time.Sleep(4 * time.Second)
	evs := searchLedger(t, b, q, func([]ledger.Event) bool { return true })
	n, ev := expired(evs)
	if n != 1 {
		t.Fatalf("%d approval.expired events for %s, want 1: %+v", n, id, evs)
	}
	if ev.Subject != aliceName || ev.Target != "main" || ev.Rule != approvalRule || len(ev.Statements) != 1 ||
		ev.Statements[0].Redacted != "DROP TABLE orders" || ev.Statements[0].Fingerprint == "" ||
		!expiredMessage.MatchString(ev.Message) {
		t.Fatalf("expired event = %+v", ev)
	}
	if code, out := api(t, a, "GET", "/api/v1/approvals?status=expired", bearer(bob), ""); code != http.StatusOK ||
		len(out["results"].([]any)) != 1 || out["results"].([]any)[0].(map[string]any)["id"] != id {
		t.Fatalf("expired list: %d %v", code, out)
	}
	// The lapsed approval runs nothing: the statement is held again under a new request.
	if again := held(t, ca, "DROP TABLE orders", "created"); again == id {
		t.Fatal("a lapsed approval was offered again")
	}
	if !tableExists(t, a, "orders") {
		t.Fatal("DROP ran under a lapsed approval")
	}
}
