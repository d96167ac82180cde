package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthReadyMetrics(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default"})
	if code, body := get(t, "http://"+p.HTTPAddr+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz %d %s", code, body)
	}
	if code, body := get(t, "http://"+p.HTTPAddr+"/readyz"); code != 200 || !strings.Contains(body, "ready") {
		t.Fatalf("readyz %d %s", code, body)
	}
	// A failed login must show up in the metrics.
	_, err := pgx.Connect(context.Background(), p.DSN("nobody", "gat_0000000000000000_wrong", ""))
	var pgErr *pgconn.PgError
	if err == nil || !asPgErr(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("bad token: %v", err)
	}
	_, body := get(t, "http://"+p.HTTPAddr+"/metrics")
	for _, want := range []string{"go_goroutines", "gatehouse_"} {
		if !strings.Contains(body, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	if !strings.Contains(body, "login") {
		t.Fatalf("metrics have no login failure counter:\n%s", body)
	}
	// A statement: its latency by door and decision, the ledger's commit latency, queue and
	// index backlog, approvals pending, refused connections by cause.
	secret := p.Token(t, "svc", "service")
	c, err := pgx.Connect(context.Background(), p.DSN("svc", secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SELECT 1", "CREATE TABLE metric_probe (email text)", "INSERT INTO metric_probe VALUES ('alice.smith@example.com')", "SELECT * FROM metric_probe"} {
		if _, err := c.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	c.Close(context.Background())
	_, body = get(t, "http://"+p.HTTPAddr+"/metrics")
	for _, want := range []string{
		`gatehouse_statement_duration_seconds_count{decision="allow",door="postgres"}`,
		`gatehouse_ledger_commit_duration_seconds_count{`,
		"gatehouse_ledger_queue_depth ", "gatehouse_ledger_index_backlog_records ", "gatehouse_approvals_pending 0",
		"gatehouse_ledger_deferred_records 0", `gatehouse_pg_refused_connections_total{cause="bad_credentials"} 1`,
		`gatehouse_catalog_scan_duration_seconds_count{result="ok",target="main"}`,
		`gatehouse_values_masked_by_class_total{class="email",door="postgres"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func asPgErr(err error, target **pgconn.PgError) bool { return errors.As(err, target) }

// TestReloadTargetsKeepsSessions adds a target by editing the configuration file: new
// connections reach it, a session opened before keeps working, and a broken file is refused
// while the previous configuration stays in force.
func TestReloadTargetsKeepsSessions(t *testing.T) {
	p := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	p.Upstream.Exec(t, "postgres", "CREATE DATABASE second")
	secret := p.Token(t, "svc", "service")

	live, err := pgx.Connect(ctx, p.DSN("svc", secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close(ctx)

	if _, err := pgx.Connect(ctx, p.DSN("svc", secret, "other")); err == nil || !strings.Contains(err.Error(), "3D000") {
		t.Fatalf("unknown target before reload: %v", err)
	}
	writeConfig(t, p.Config, func(c *config.Config) {
		c.Targets = append(c.Targets, config.Target{Name: "other", Host: p.Upstream.Host, Port: p.Upstream.Port,
			Database: "second", User: p.Upstream.User, PasswordFile: c.Targets[0].PasswordFile})
	})
	var db string
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := pgx.Connect(ctx, p.DSN("svc", secret, "other"))
		if err == nil {
			qerr := c.QueryRow(ctx, "SELECT current_database()").Scan(&db)
			c.Close(ctx)
			if qerr != nil {
				t.Fatalf("query reloaded target: %v", qerr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target added by reload not reachable: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if db != "second" {
		t.Fatalf("reloaded target reached %q", db)
	}
	var one int
	if err := live.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("session opened before the reload broke: %v", err)
	}

	// A broken file is refused; the previous targets stay. The watcher polls the file, so
	// wait for the refusal to be counted (on a busy machine that can take longer than a
	// couple of ticks) before checking that the old targets are still in force.
	refusedBefore := refusedReloads(t, p.HTTPAddr)
	if err := os.WriteFile(p.Config.Path, []byte("targets: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); refusedReloads(t, p.HTTPAddr) == refusedBefore; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("refused reload not counted in metrics")
		}
	}
	c, err := pgx.Connect(ctx, p.DSN("svc", secret, "other"))
	if err != nil {
		t.Fatalf("a broken config file dropped the previous targets: %v", err)
	}
	c.Close(ctx)

	// An emptied file parses (every key has a default) but leaves no targets: refused too.
	refusedBefore = refusedReloads(t, p.HTTPAddr)
	if err := os.WriteFile(p.Config.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); refusedReloads(t, p.HTTPAddr) == refusedBefore; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a reload to an empty configuration was not refused")
		}
	}
	c, err = pgx.Connect(ctx, p.DSN("svc", secret, "other"))
	if err != nil {
		t.Fatalf("an empty config file dropped the previous targets: %v", err)
	}
	c.Close(ctx)
}

// refusedReloads reads the count of refused configuration reloads from /metrics (0 while
// none has been counted).
func refusedReloads(t *testing.T, httpAddr string) float64 {
	t.Helper()
	const series = `gatehouse_config_reloads_total{result="error"} `
	_, body := get(t, "http://"+httpAddr+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// writeConfig writes cfg, changed by edit, to its file as YAML the loader accepts.
func writeConfig(t *testing.T, cfg *config.Config, edit func(*config.Config)) {
	t.Helper()
	c := *cfg
	c.Targets = append([]config.Target(nil), cfg.Targets...)
	edit(&c)
	var b strings.Builder
	fmt.Fprintf(&b, "listen: {postgres: %q, http: %q}\ndata_dir: %q\npolicy_file: %q\ntargets:\n", c.Listen.Postgres, c.Listen.HTTP, c.DataDir, c.Policy)
	for _, tg := range c.Targets {
		fmt.Fprintf(&b, "  - {name: %q, host: %q, port: %d, database: %q, user: %q, password_file: %q, environment: %q}\n",
			tg.Name, tg.Host, tg.Port, tg.Database, tg.User, tg.PasswordFile, tg.Environment)
	}
	if err := os.WriteFile(c.Path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyOverridesReachTheCatalog marks an innocent-looking column sensitive through the
// policy file's overrides and sees it masked through the proxy.
func TestPolicyOverridesReachTheCatalog(t *testing.T) {
	pol := string(policy.DefaultText()) + "\noverrides:\n  public.widgets.code: email\n"
	p := servertest.Start(t, servertest.Options{PolicyYAML: pol})
	p.Upstream.Exec(t, "app", "CREATE TABLE widgets (code text, label text); INSERT INTO widgets VALUES ('ABC-123', 'blue')")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, p.DSN("svc", p.Token(t, "svc", "service"), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var code, label string
	if err := c.QueryRow(ctx, "SELECT code, label FROM widgets").Scan(&code, &label); err != nil {
		t.Fatal(err)
	}
	if code == "ABC-123" || label != "blue" {
		t.Fatalf("override not applied: code=%q label=%q", code, label)
	}
}

// TestAuditAPI answers the auditor's questions over HTTP for an auditor, refuses everyone
// else, and records its own use.
func TestAuditAPI(t *testing.T) {
	p := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	agent := p.Token(t, "copilot", "agent")
	auditor := p.Token(t, "audra", "human", "auditors")
	c, err := pgx.Connect(ctx, p.DSN("copilot", agent, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE customers (id int); SELECT * FROM customers"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT count(*) FROM customers"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)

	call := func(user, secret, path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr+path, nil)
		if user != "" {
			req.SetBasicAuth(user, secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := call("", "", "/api/v1/audit/agents?table=customers&since=7d"); code != 401 {
		t.Fatalf("anonymous: %d", code)
	}
	if code, _ := call("copilot", agent, "/api/v1/audit/agents?table=customers&since=7d"); code != 403 {
		t.Fatalf("non-auditor: %d", code)
	}
	if code, _ := call("audra", "wrong", "/api/v1/audit/agents?table=customers"); code != 401 {
		t.Fatalf("bad token: %d", code)
	}
	code, body := call("audra", auditor, "/api/v1/audit/agents?table=customers&since=7d")
	if code != 200 || !strings.Contains(body, `"subject":"copilot"`) || !strings.Contains(body, `"statements":2`) {
		t.Fatalf("agents: %d %s", code, body)
	}
	code, body = call("audra", auditor, "/api/v1/audit/events?identity=copi*&table=customers&limit=10")
	if code != 200 || !strings.Contains(body, `"type":"statement"`) {
		t.Fatalf("events: %d %s", code, body)
	}
	if code, _ := call("audra", auditor, "/api/v1/audit/events?since=soon"); code != 400 {
		t.Fatalf("bad filter: %d", code)
	}
	code, body = call("audra", auditor, "/api/v1/audit/events?type=admin&identity=audra")
	if code != 200 || !strings.Contains(body, "/api/v1/audit/agents") {
		t.Fatalf("API use not recorded: %d %s", code, body)
	}
}

// TestPolicyReloadRecordsHash: editing the policy file puts the new policy in force, and
// the policy.reload event names the file and the hash of the policy it put in force.
func TestPolicyReloadRecordsHash(t *testing.T) {
	p := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	text := strings.Replace(servertest.PermissivePolicy, "rules: []", "rules:\n  - name: no-vacuum\n    when: statement.kind == \"VACUUM\"\n    action: deny\n    message: no", 1)
	want, err := policy.Parse(p.Config.Policy, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Config.Policy, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	st := p.Instance.Ledger().Store()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		evs, err := st.Search(ctx, ledger.Query{Type: ledger.EventPolicyReload})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			if len(evs) != 1 || evs[0].Message != ledger.PolicyReloadMessage(p.Config.Policy, want.Hash) {
				t.Fatalf("policy reload events: %+v; want one naming %s and hash %s", evs, p.Config.Policy, want.Hash)
			}
			if path, hash := ledger.ParsePolicyReload(evs[0].Message); path != p.Config.Policy || hash != want.Hash {
				t.Fatalf("parsed reload message: %q %q", path, hash)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no policy.reload event after editing the policy file")
		}
	}
}
