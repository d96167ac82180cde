package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
