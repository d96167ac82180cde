package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
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

// With two instances sharing a PostgreSQL store, a psql session on instance A is listed by
// instance B's API (naming A) and ended through B: psql gets FATAL 57P01 naming who ended it,
// and B's ledger chain records the kill.
func TestSessionsSharedStore(t *testing.T) {
	shared := testkit.StartPostgres(t)
	shared.Exec(t, "postgres", "CREATE DATABASE gatehouse")
	dsn := shared.DSN("gatehouse")
	a := servertest.Start(t, servertest.Options{SharedStoreDSN: dsn, Instance: "ghA"})
	b := servertest.Start(t, servertest.Options{SharedStoreDSN: dsn, Instance: "ghB", KeysFrom: a.DataDir, Upstream: a.Upstream})
	alice := a.Token(t, "alice", "human")
	sec := a.Token(t, "sec", "human", "security") // tokens are shared: B knows it too
	bob := a.Token(t, "bob", "human")

	dsnA := fmt.Sprintf("host=localhost port=%d user=alice dbname=main sslmode=verify-full sslrootcert=%s application_name=on-instance-a", a.Port, a.CAFile)
	ps := exec.Command("psql", "-X", "-q", "-v", "VERBOSITY=verbose", "-d", dsnA, "-c", "SELECT pg_sleep(120)")
	ps.Env = append(os.Environ(), "PGPASSWORD="+alice, "PGCONNECT_TIMEOUT=10")
	var stderr strings.Builder
	ps.Stderr = &stderr
	if err := ps.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ps.Wait() }()
	t.Cleanup(func() { _ = ps.Process.Kill() })

	serverB := "http://" + b.HTTPAddr
	var id, out string
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		var err error
		out, err = run(t, "sessions", "list", "--server", serverB, "--token", sec)
		if err != nil {
			t.Fatalf("list through B: %v\n%s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[0] == "ghA" && f[2] == "alice" && strings.Contains(line, "on-instance-a") {
				id = f[1]
			}
		}
		if id == "" && time.Now().After(deadline) {
			t.Fatalf("instance B never listed A's session:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(b.Instance.Gate().Live.List()) != 0 {
		t.Fatal("the session is on A, yet B's own registry lists it")
	}
	// Someone else's list through B does not show it; their kill through B is refused.
	if out, err := run(t, "sessions", "list", "--server", serverB, "--token", bob); err != nil || strings.Contains(out, id) {
		t.Fatalf("list as bob through B: %v\n%s", err, out)
	}
	if out, err := run(t, "sessions", "kill", id, "--server", serverB, "--token", bob); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Fatalf("kill as bob through B: %v\n%s", err, out)
	}
	out, err := run(t, "sessions", "kill", id, "--server", serverB, "--token", sec)
	if err != nil || !strings.Contains(out, "ended session "+id+" of alice") || !strings.Contains(out, "instance ghA") {
		t.Fatalf("kill as security through B: %v\n%s", err, out)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(stderr.String(), "57P01") || !strings.Contains(stderr.String(), "session ended by sec") {
			t.Fatalf("psql after a kill through B: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("psql on A still runs after a kill through B; stderr: %s", stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs, err := b.Instance.Ledger().Store().Search(ctx, ledger.Query{Type: "session.kill"})
	if err != nil || len(evs) != 1 || evs[0].Subject != "sec" || evs[0].SessionID != id || evs[0].Instance != "ghB" || !strings.Contains(evs[0].Message, "on instance ghA") {
		t.Fatalf("session.kill events: %v %+v", err, evs)
	}
	// Once A has ended it, no instance lists it, and a second kill through B is a 404.
	deadline = time.Now().Add(30 * time.Second)
	for {
		out, err := run(t, "sessions", "list", "--server", serverB, "--token", sec)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B still lists the ended session:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := run(t, "sessions", "kill", id, "--server", serverB, "--token", sec); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("kill of an ended session through B: %v\n%s", err, out)
	}
}
