package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// run runs the gatehouse command line in process and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// The CLI decides through the server's API with the approver's own token, and lists from the
// data directory.
func TestApprovalsCLI(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod"})
	alice := p.Token(t, "alice", "human", "dba")
	bob := p.Token(t, "bob", "human", "dba")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("alice", alice, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	// The built-in policy holds schema changes in production.
	_, err = c.Exec(ctx, "CREATE TABLE audit_trail (id int)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Fatalf("CREATE TABLE in prod: %v", err)
	}
	id := regexp.MustCompile(`apr_[0-9a-z]{10}`).FindString(pe.Message)
	if id == "" || !strings.Contains(pe.Message, "`gatehouse approvals approve "+id+"`") {
		t.Fatalf("message: %q", pe.Message)
	}

	out, err := run(t, "approvals", "list", "--status", "pending", "--data-dir", p.DataDir)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "CREATE TABLE audit_trail") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	server := "http://" + p.HTTPAddr
	if out, err := run(t, "approvals", "approve", id, "--server", server, "--token", alice); err == nil || !strings.Contains(err.Error(), "your own") {
		t.Fatalf("self approval through the CLI: %v\n%s", err, out)
	}
	t.Setenv("GATEHOUSE_TOKEN", bob)
	out, err = run(t, "approvals", "approve", strings.ToUpper(id), "--server", server, "--comment", "ok")
	if err != nil || !strings.Contains(out, "approved "+id+": alice may now run this statement once") {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	out, err = run(t, "approvals", "show", id, "--json", "--data-dir", p.DataDir)
	var r approval.Request
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Status != approval.Approved || r.DecidedBy != "bob" || r.Comment != "ok" {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE audit_trail (id int)"); err != nil {
		t.Fatalf("approved CREATE TABLE: %v", err)
	}
	if _, err := run(t, "approvals", "deny", "nonsense", "--server", server); err == nil || !strings.Contains(err.Error(), "not an approval request id") {
		t.Fatalf("bad id: %v", err)
	}
}
