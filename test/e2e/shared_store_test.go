package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// TestSharedStoreTwoInstances runs two Gatehouse instances sharing one PostgreSQL store in
// front of one upstream: tokens, revocations and approvals made through one hold on the other.
func TestSharedStoreTwoInstances(t *testing.T) {
	shared := testkit.StartPostgres(t)
	shared.Exec(t, "postgres", "CREATE DATABASE gatehouse")
	dsn := shared.DSN("gatehouse")
	validFor := func(cfg *config.Config) { cfg.Approvals.ValidFor = config.Duration(time.Minute) }
	a := servertest.Start(t, servertest.Options{PolicyYAML: approvalPolicy, Environment: "prod", SharedStoreDSN: dsn, Instance: "gh-a", Configure: validFor})
	b := servertest.Start(t, servertest.Options{PolicyYAML: approvalPolicy, Environment: "prod", SharedStoreDSN: dsn, Instance: "gh-b",
		Upstream: a.Upstream, KeysFrom: a.DataDir, Configure: validFor})
	a.Upstream.Exec(t, "app", `CREATE TABLE orders(id int); CREATE TABLE customers(id int)`)
	ctx := ctxT(t, 2*time.Minute)

	const aliceName, bobName, tempName = "alice@corp.example", "bob@corp.example", "temp@corp.example"
	alice := a.Token(t, aliceName, "human", "dba")
	bob := a.Token(t, bobName, "human", "dba")
	temp := a.Token(t, tempName, "human", "dba")

	t.Run("token created on A logs in on B; revoked on A ends B's session", func(t *testing.T) {
		live := connect(t, b.DSN(tempName, temp, ""))
		alive(ctx, t, live, "session on B with a token made on A")
		bystander := connect(t, b.DSN(aliceName, alice, ""))
		// Let B's revalidation read the store at least once, so ending the session below
		// needs B to hear of the revocation rather than to read the state the first time.
		time.Sleep(2500 * time.Millisecond)
		alive(ctx, t, live, "before revocation")

		if err := a.Instance.Tokens().Revoke(ctx, tempName); err != nil {
			t.Fatal(err)
		}
		revoked := time.Now()
		if _, err := tryConnect(b.DSN(tempName, temp, "")); pgCode(err) != "28P01" {
			t.Fatalf("new login on B with a token revoked on A: want 28P01 at once, got %v", err)
		}
		var ended time.Duration
		var endErr error
		for range 200 {
			var one int
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := live.QueryRow(qctx, "SELECT 1").Scan(&one)
			cancel()
			if err != nil {
				ended, endErr = time.Since(revoked), err
				break
			}
			if time.Since(revoked) > 10*time.Second {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if ended == 0 || ended >= 5*time.Second {
			t.Fatalf("session on B with a token revoked on A still usable %v after revocation", time.Since(revoked))
		}
		if code := pgCode(endErr); code != "57P01" && code != "" {
			t.Fatalf("session ended with %v, want 57P01 or a closed connection", endErr)
		}
		t.Logf("session on B ended %v after revocation on A: %v", ended.Round(time.Millisecond), endErr)
		alive(ctx, t, bystander, "another identity's session on B")
	})

	t.Run("held on A, approved via B, runs once on A", func(t *testing.T) {
		ca := connect(t, a.DSN(aliceName, alice, ""))
		id := held(t, ca, "DROP TABLE orders", "created")
		code, out := api(t, b, "POST", "/api/v1/approvals/"+id+"/approve", bearer(bob), `{"comment": "shared store"}`)
		if code != http.StatusOK || out["approval"].(map[string]any)["status"] != "approved" {
			t.Fatalf("approve on B a request held on A: %d %v", code, out)
		}
		if _, err := ca.Exec(ctx, "DROP TABLE orders"); err != nil {
			t.Fatalf("approved DROP on A: %v", err)
		}
		if tableExists(t, a, "orders") {
			t.Fatal("approved DROP did not run")
		}
		if again := held(t, ca, "DROP TABLE orders", "created"); again == id {
			t.Fatal("a used approval was offered again")
		}
		if code, out := api(t, b, "GET", "/api/v1/approvals/"+id, bearer(alice), ""); code != http.StatusOK || out["approval"].(map[string]any)["status"] != "used" {
			t.Fatalf("B's view after use on A: %d %v", code, out)
		}

		// The approval key is shared too: held on A, approved on A, used through B.
		id2 := held(t, ca, "DROP TABLE customers", "created")
		if code, out := api(t, a, "POST", "/api/v1/approvals/"+id2+"/approve", bearer(bob), "{}"); code != http.StatusOK {
			t.Fatalf("approve on A: %d %v", code, out)
		}
		cb := connect(t, b.DSN(aliceName, alice, ""))
		if _, err := cb.Exec(ctx, "DROP TABLE customers"); err != nil {
			t.Fatalf("DROP approved on A run through B: %v", err)
		}
		if tableExists(t, a, "customers") {
			t.Fatal("approved DROP through B did not run")
		}
		if r, err := a.Instance.Approvals().Get(ctx, id2); err != nil || r.Status != "used" {
			t.Fatalf("A's view after use on B: %+v %v", r, err)
		}
	})
}
