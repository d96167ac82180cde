package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// TestCLIWithoutData: read commands pointed at a data directory Gatehouse never used say so,
// naming where they looked and how to point them elsewhere, and create nothing there; an
// existing but empty ledger is "nothing to verify", not a success.
func TestCLIWithoutData(t *testing.T) {
	t.Setenv("GATEHOUSE_CONFIG", "")
	t.Setenv("GATEHOUSE_DATA_DIR", "")
	empty := filepath.Join(t.TempDir(), "never-used")
	for _, args := range [][]string{
		{"audit", "verify"}, {"audit", "search"}, {"audit", "who-dropped", "t"}, {"approvals", "list"},
	} {
		out, err := run(t, append(args, "--data-dir", empty)...)
		if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "GATEHOUSE_CONFIG") {
			t.Errorf("%v on an unused data directory: err %v\n%s", args, err, out)
		}
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("a read command created %s (%v)", empty, err)
	}

	dir := t.TempDir()
	st, err := ledger.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if out, err := run(t, "audit", "verify", "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "no events") {
		t.Errorf("verify of an empty ledger: err %v\n%s", err, out)
	}
}

// TestCLIAgainstRunningServer: GATEHOUSE_DATA_DIR points every command at a running server's
// data; a search that stops at its limit says so; approvals list names the store it read;
// policy test takes a token's kind and groups from the token store and insists on --kind for
// anyone else.
func TestCLIAgainstRunningServer(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "dev"})
	secret := p.Token(t, "ana", "service", "analysts")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("ana", secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	c.Close(ctx)
	t.Setenv("GATEHOUSE_CONFIG", "")
	t.Setenv("GATEHOUSE_DATA_DIR", p.DataDir)

	out, err := run(t, "audit", "search", "--identity", "ana", "--limit", "2")
	if err != nil || !strings.Contains(out, "showing the newest 2 events: there may be more") {
		t.Errorf("search at its limit: %v\n%s", err, out)
	}
	out, err = run(t, "audit", "search", "--identity", "ana", "--limit", "1000")
	if err != nil || strings.Contains(out, "there may be more") || !strings.Contains(out, "SELECT") {
		t.Errorf("search under its limit: %v\n%s", err, out)
	}
	out, err = run(t, "approvals", "list")
	if err != nil || !strings.Contains(out, "0 request(s) in "+filepath.Join(p.DataDir, stateFile)) {
		t.Errorf("approvals list: %v\n%s", err, out)
	}
	out, err = run(t, "policy", "test", "--as", "ana", "--target", "dev-db", "SELECT 1")
	if err != nil || !strings.Contains(out, "kind service, groups [analysts] (from the token store)") {
		t.Errorf("policy test --as a token: %v\n%s", err, out)
	}
	if out, err := run(t, "policy", "test", "--as", "carol@corp.example", "--target", "dev-db", "SELECT 1"); err == nil || !strings.Contains(err.Error(), "--kind") {
		t.Errorf("policy test --as an unknown identity without --kind: %v\n%s", err, out)
	}
	if out, err := run(t, "policy", "test", "--as", "carol@corp.example", "--kind", "human", "--target", "dev-db", "SELECT 1"); err != nil {
		t.Errorf("policy test with --kind: %v\n%s", err, out)
	}
}
