package demo

import (
	"bytes"
	"context"
	"errors"
	"github.com/gatehouse/gatehouse/internal/config"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestDemoPersonasAndGuardrails(t *testing.T) {
	ctx := context.Background()
	d, err := Start(ctx, Options{Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0", MCP: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out bytes.Buffer
	d.PrintWelcome(&out)
	if len(d.Personas) != 5 || strings.Count(out.String(), "psql \"host=localhost") != 5 || !strings.Contains(out.String(), "approvals approve") ||
		strings.Count(out.String(), "console: http://") != 5 {
		t.Fatalf("welcome does not offer a psql command per persona:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "MCP:     http://"+d.Instance.MCPAddr()+"/mcp") {
		t.Fatalf("welcome does not give the agent persona its MCP endpoint:\n%s", out.String())
	}
	// The demo's configuration is a file the other commands can read.
	if !strings.Contains(out.String(), "export GATEHOUSE_CONFIG="+d.ConfigFile) || !strings.Contains(out.String(), "audit verify") {
		t.Fatalf("welcome does not point the other commands at the demo's configuration:\n%s", out.String())
	}
	if cfg, err := config.Load(d.ConfigFile); err != nil || len(cfg.Targets) != 2 || cfg.DataDir != d.Instance.Config().DataDir {
		t.Fatalf("demo configuration file: %v %+v", err, cfg)
	}

	connect := func(p Persona, target string) *pgx.Conn {
		t.Helper()
		dsn := strings.TrimPrefix(d.PsqlCommand(p, target), "PGPASSWORD='"+p.Secret+"' psql ")
		dsn = strings.Trim(dsn, "\"") + " password=" + p.Secret
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("%s connects to %s: %v", p.Name, target, err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	wantDenied := func(c *pgx.Conn, sql, rule string) {
		t.Helper()
		_, err := c.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, rule) {
			t.Fatalf("%q: got %v, want 42501 by %s", sql, err, rule)
		}
	}
	analyst, dba, agent := connect(d.Personas[0], "shop"), connect(d.Personas[1], "shop"), connect(d.Personas[2], "shop")

	var n int
	if err := analyst.QueryRow(ctx, "SELECT count(*) FROM customers").Scan(&n); err != nil || n != 200 {
		t.Fatalf("analyst count: %d %v", n, err)
	}
	wantDenied(analyst, "DELETE FROM orders", "access-level")
	wantDenied(dba, "DROP TABLE payments", "no-drop-or-truncate-in-production")
	wantDenied(dba, "DELETE FROM orders", "no-update-or-delete-without-where")
	wantDenied(agent, "UPDATE orders SET status = 'x' WHERE id = 1", "access-level")
	var role string
	if err := analyst.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil || role != "shop_read" {
		t.Fatalf("analyst runs as %q (%v), want shop_read", role, err)
	}
	// Staging: the analyst (a human) may write there, as the write role.
	staging := connect(d.Personas[0], "shop-staging")
	if _, err := staging.Exec(ctx, "UPDATE orders SET status = 'paid' WHERE id = 1"); err != nil {
		t.Fatalf("analyst update on staging: %v", err)
	}
	if err := staging.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil || role != "shop_write" {
		t.Fatalf("staging role %q (%v)", role, err)
	}
	// Sensitive columns are masked for the analyst and the agent; non-sensitive ones are not.
	q := "SELECT full_name, email, ssn, card_number, id::text FROM customers WHERE id = 1"
	var raw, masked [5]string
	if err := d.Upstream.ExecContext(ctx, "shop", "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	direct, err := pgx.Connect(ctx, d.Upstream.DSN("shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if err := direct.QueryRow(ctx, q).Scan(&raw[0], &raw[1], &raw[2], &raw[3], &raw[4]); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*pgx.Conn{analyst, agent} {
		if err := c.QueryRow(ctx, q).Scan(&masked[0], &masked[1], &masked[2], &masked[3], &masked[4]); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			if masked[i] == raw[i] {
				t.Errorf("column %d came through unmasked: %q", i, masked[i])
			}
		}
		if masked[4] != raw[4] {
			t.Errorf("non-sensitive id was changed: %q -> %q", raw[4], masked[4])
		}
	}
	// The compliance persona sees raw values.
	var seen [5]string
	if err := connect(d.Personas[4], "shop").QueryRow(ctx, q).Scan(&seen[0], &seen[1], &seen[2], &seen[3], &seen[4]); err != nil {
		t.Fatal(err)
	}
	if seen != raw {
		t.Errorf("the compliance persona sees %q, want the raw %q", seen, raw)
	}

	// A schema change in production waits for another DBA's approval, then runs once.
	const alter = "ALTER TABLE orders ADD COLUMN note text"
	_, err = dba.Exec(ctx, alter)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("%q by the DBA: %v, want held for approval", alter, err)
	}
	id := regexp.MustCompile(`apr_[0-9a-z]{10}`).FindString(pgErr.Message)
	if id == "" {
		t.Fatalf("held message names no approval request: %s", pgErr.Message)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.Instance.HTTPAddr()+"/api/v1/approvals/"+id+"/approve", strings.NewReader(`{"comment":"demo"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+d.Personas[3].Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("second DBA approves %s: HTTP %d", id, resp.StatusCode)
	}
	if _, err := dba.Exec(ctx, alter); err != nil {
		t.Fatalf("%q after approval: %v", alter, err)
	}

	// Nothing the guardrails refused reached the database.
	if err := dba.QueryRow(ctx, "SELECT count(*) FROM payments").Scan(&n); err != nil || n == 0 {
		t.Fatalf("payments after refused DROP: %d %v", n, err)
	}
}
