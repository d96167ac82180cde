package main

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// An approval nobody used is found by `gatehouse audit search --type approval.expired` and
// listed by `gatehouse approvals list --status expired`.
func TestApprovalsExpiredCLI(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod",
		Configure: func(cfg *config.Config) { cfg.Approvals.ValidFor = config.Duration(time.Second) }})
	alice := p.Token(t, "alice", "human", "dba")
	bob := p.Token(t, "bob", "human", "dba")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("alice", alice, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "CREATE TABLE never_made (id int)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Fatalf("CREATE TABLE in prod: %v", err)
	}
	id := regexp.MustCompile(`apr_[0-9a-z]{10}`).FindString(pe.Message)
	if out, err := run(t, "approvals", "approve", id, "--server", "http://"+p.HTTPAddr, "--token", bob); err != nil {
		t.Fatalf("approve: %v\n%s", err, out)
	}

	var found []ledger.Event
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := run(t, "audit", "search", "--type", "approval.expired", "--json", "--data-dir", p.DataDir)
		if err != nil {
			t.Fatalf("audit search: %v\n%s", err, out)
		}
		found = found[:0]
		for line := range strings.Lines(out) {
			var ev ledger.Event
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("audit search line %q: %v", line, err)
			}
			found = append(found, ev)
		}
		if len(found) > 0 {
			break
		}
	}
	if len(found) != 1 || found[0].ApprovalID != id || found[0].Type != ledger.EventApprovalExpired || found[0].Subject != "alice" ||
		!strings.HasPrefix(found[0].Message, "valid_for lapsed at ") {
		t.Fatalf("audit search --type approval.expired = %+v", found)
	}
	out, err := run(t, "approvals", "list", "--status", "expired", "--data-dir", p.DataDir)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "expired") {
		t.Fatalf("approvals list --status expired: %v\n%s", err, out)
	}
}
