package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// With ledger.store postgres, `gatehouse token` and `gatehouse approvals` use the shared
// store the servers use, not a data directory of their own.
func TestCLISharedStore(t *testing.T) {
	shared := testkit.StartPostgres(t)
	shared.Exec(t, "postgres", "CREATE DATABASE gatehouse")
	dsn := shared.DSN("gatehouse")
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod", SharedStoreDSN: dsn, Instance: "cli-test"})
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "gatehouse.yaml")
	t.Setenv("GH_TEST_STATE_DSN", dsn)
	// A data directory of the CLI's own: nothing may come from a local gatehouse.db.
	yaml := "data_dir: " + filepath.Join(dir, "cli-data") + "\nledger:\n  store: postgres\n  dsn_env: GH_TEST_STATE_DSN\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := run(t, "token", "create", "--name", "alice", "--kind", "human", "--group", "dba", "--config", cfgFile)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	secret := regexp.MustCompile(`gat_[0-9a-f]{16}_[A-Za-z0-9_-]{43}`).FindString(out)
	if secret == "" {
		t.Fatalf("no token in %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("alice", secret, ""))
	if err != nil {
		t.Fatalf("log in through the server with a token the CLI created: %v", err)
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "CREATE TABLE held_by_policy (id int)")
	if err == nil {
		t.Fatal("schema change in prod was not held")
	}
	id := regexp.MustCompile(`apr_[0-9a-z]{10}`).FindString(err.Error())
	if out, err := run(t, "approvals", "list", "--status", "pending", "--config", cfgFile); err != nil || id == "" || !strings.Contains(out, id) {
		t.Fatalf("approvals list (%s): %v\n%s", id, err, out)
	}
	if out, err := run(t, "token", "list", "--config", cfgFile); err != nil || !strings.Contains(out, "alice") {
		t.Fatalf("token list: %v\n%s", err, out)
	}
	if out, err := run(t, "token", "revoke", "alice", "--config", cfgFile); err != nil {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	if _, err := pgx.Connect(ctx, p.DSN("alice", secret, "")); err == nil || !strings.Contains(err.Error(), "28P01") {
		t.Fatalf("login after a CLI revocation: %v", err)
	}
}

// TestVerifySharedStoreKeys: two instances sharing a PostgreSQL store each sign their
// checkpoints with their own key. Verifying the shared store with one instance's key alone
// used to report the other's checkpoints as forged; each chain is now checked with its own
// instance's pinned key (ledger.trusted_keys, or the keys the external checkpoint file names),
// an unpinned instance is named with what to do, and an evidence pack carries every key.
func TestVerifySharedStoreKeys(t *testing.T) {
	shared := testkit.StartPostgres(t)
	shared.Exec(t, "postgres", "CREATE DATABASE gatehouse")
	dsn := shared.DSN("gatehouse")
	every := func(c *config.Config) { c.Ledger.CheckpointEvery = 5 }
	a := servertest.Start(t, servertest.Options{SharedStoreDSN: dsn, Instance: "ghA", Configure: every})
	b := servertest.Start(t, servertest.Options{SharedStoreDSN: dsn, Instance: "ghB", KeysFrom: a.DataDir, Upstream: a.Upstream, Configure: every})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range []*servertest.Proxy{a, b} {
		secret := p.Token(t, "svc-"+p.Instance.Ledger().Instance(), "service")
		c, err := pgx.Connect(ctx, p.DSN("svc-"+p.Instance.Ledger().Instance(), secret, ""))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 12; i++ {
			if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
		}
		c.Close(ctx)
		if err := p.Instance.Ledger().Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	t.Setenv("GH_TEST_STATE_DSN", dsn)
	n := 0
	write := func(extra string) string {
		n++
		f := filepath.Join(dir, fmt.Sprintf("gatehouse-%d.yaml", n))
		yaml := "data_dir: " + a.DataDir + "\nledger:\n  store: postgres\n  dsn_env: GH_TEST_STATE_DSN\n" + extra
		if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// A's configuration, nothing pinned: B's checkpoints cannot be checked with A's key,
	// and the report says so instead of calling them forged.
	out, err := run(t, "audit", "verify", "--config", write(""))
	if err == nil || !strings.Contains(out, "no key is pinned for instance ghB") || strings.Contains(out, "ghA seq") {
		t.Fatalf("unpinned shared store: %v\n%s", err, out)
	}
	keyOf := func(p *servertest.Proxy) string { return ledger.PublicKeyBase64(p.Instance.Ledger().PublicKey()) }
	pinned := write("  trusted_keys:\n    ghA: " + keyOf(a) + "\n    ghB: " + keyOf(b) + "\n")
	if out, err := run(t, "audit", "verify", "--config", pinned); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify with both keys pinned: %v\n%s", err, out)
	}
	if out, err := run(t, "audit", "pubkey", "--base64", "--data-dir", b.DataDir); err != nil || strings.TrimSpace(out) != keyOf(b) {
		t.Fatalf("audit pubkey --base64: %v %q", err, out)
	}
	// A wrong pin is a forgery finding for that chain.
	wrong := write("  trusted_keys:\n    ghA: " + keyOf(a) + "\n    ghB: " + keyOf(a) + "\n")
	if out, err := run(t, "audit", "verify", "--config", wrong); err == nil || !strings.Contains(out, "key pinned for instance ghB") {
		t.Fatalf("verify with a wrong pin: %v\n%s", err, out)
	}
	// The evidence pack carries both keys and checks.
	pack := filepath.Join(t.TempDir(), "pack")
	if out, err := run(t, "audit", "evidence", "--since", "1d", "-o", pack, "--config", pinned); err != nil {
		sum, _ := os.ReadFile(filepath.Join(pack, "summary.md"))
		t.Fatalf("evidence: %v\n%s\n%s", err, out, sum)
	}
	if out, err := run(t, "audit", "evidence", "--check", pack); err != nil {
		t.Fatalf("evidence --check with two instances: %v\n%s", err, out)
	}
}
