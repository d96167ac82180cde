package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// `gatehouse sessions list` shows a live session to an approver and only their own to
// others; `sessions kill` ends it for an approver (the client gets 57P01 naming who) and is
// refused to anyone else.
func TestSessionsCLI(t *testing.T) {
	p := servertest.Start(t, servertest.Options{})
	alice := p.Token(t, "alice", "human")
	sec := p.Token(t, "sec", "human", "security")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgx.ParseConfig(p.DSN("alice", alice, ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "cli-test"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	server := "http://" + p.HTTPAddr
	list := p.Instance.Gate().Live.List()
	if len(list) != 1 {
		t.Fatalf("live sessions: %+v", list)
	}
	id := list[0].ID

	out, err := run(t, "sessions", "list", "--server", server, "--token", sec)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "alice") || !strings.Contains(out, "cli-test") {
		t.Fatalf("list as security: %v\n%s", err, out)
	}
	bob := p.Token(t, "bob", "human")
	out, err = run(t, "sessions", "list", "--server", server, "--token", bob)
	if err != nil || strings.Contains(out, id) {
		t.Fatalf("list as bob shows alice's session: %v\n%s", err, out)
	}
	if out, err := run(t, "sessions", "kill", id, "--server", server, "--token", bob); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Fatalf("kill as bob: %v\n%s", err, out)
	}
	out, err = run(t, "sessions", "kill", id, "--server", server, "--token", sec)
	if err != nil || !strings.Contains(out, "ended session "+id+" of alice") {
		t.Fatalf("kill as security: %v\n%s", err, out)
	}
	_, err = c.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	for i := 0; i < 50 && err == nil; i++ { // the FATAL may arrive just after a statement
		time.Sleep(100 * time.Millisecond)
		_, err = c.Exec(ctx, "SELECT 1")
	}
	if !errors.As(err, &pe) || pe.Code != "57P01" || !strings.Contains(pe.Message, "session ended by sec") {
		t.Fatalf("after kill: %v", err)
	}
	if out, err := run(t, "sessions", "kill", id, "--server", server, "--token", sec); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("kill of an ended session: %v\n%s", err, out)
	}
}
