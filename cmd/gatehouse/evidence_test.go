package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/evidence"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// The files of a pack, as an auditor sees them.
const (
	evSummary     = "summary.md"
	evEvents      = "events.jsonl"
	evCheckpoints = "checkpoints.jsonl"
	evPubkey      = "pubkey.pem"
	evManifest    = "manifest.json"
	evSignature   = "manifest.sig"
)

// copyDir copies a flat pack directory, so each tampering starts from a good pack.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// An evidence pack made from real traffic through the proxy names the identities, the denied
// DROP and its rule, the failed login and the reader of personal data; it verifies offline and
// as a whole, and a changed events.jsonl or summary.md is caught and named.
func TestAuditEvidence(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "app", `CREATE TABLE people (id int PRIMARY KEY, full_name text, email text);
INSERT INTO people VALUES (1, 'Ada Lovelace', 'ada.lovelace@example.com'), (2, 'Grace Hopper', 'grace.hopper@example.com');
CREATE TABLE customers (id int PRIMARY KEY, plan text, seats int);
INSERT INTO customers VALUES (1, 'team', 3), (2, 'free', 1);`)
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod", Upstream: pg})
	alice := p.Token(t, "alice@corp.example", "human", "dba")
	bot := p.Token(t, "support-agent", "agent")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	connect := func(user, secret string) *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(ctx, p.DSN(user, secret, ""))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	query := func(c *pgx.Conn, sql string, args ...any) error {
		rows, err := c.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
		}
		return rows.Err()
	}
	ca := connect("alice@corp.example", alice)
	if err := query(ca, "SELECT full_name, email FROM people WHERE email = 'grace.hopper@example.com'"); err != nil {
		t.Fatalf("SELECT of personal data: %v", err)
	}
	_, err := ca.Exec(ctx, "DROP TABLE customers")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Fatalf("DROP TABLE in production: %v, want 42501", err)
	}
	cb := connect("support-agent", bot)
	if err := query(cb, "SELECT plan, seats FROM customers WHERE id = $1", 1); err != nil {
		t.Fatalf("agent SELECT: %v", err)
	}
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	if c, err := pgx.Connect(ctx, p.DSN("mallory", "not-a-token", "")); err == nil {
		c.Close(ctx)
		t.Fatal("login with a bad password succeeded")
	}
	if err := query(ca, "SELECT count(*) FROM customers"); err != nil {
		t.Fatalf("SELECT after the failed login: %v", err)
	}

	dir := filepath.Join(t.TempDir(), "pack")
	out, err := run(t, "audit", "evidence", "--since", "1d", "-o", dir, "--data-dir", p.DataDir)
	if err != nil {
		t.Fatalf("audit evidence: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, evSummary))
	if err != nil {
		t.Fatal(err)
	}
	summary := string(b)
	for _, want := range []string{
		"Ledger verification: PASSED", "Offline verification of this pack: PASSED",
		"| alice@corp.example (human) |", "| support-agent (agent) |", "main (prod)",
		"| deny | no-drop-or-truncate-in-production | 1 |", // the denied DROP and its rule
		"DROP TABLE customers", "`customers`: not dropped",
		"4. Failed logins\n\n1 failed login(s).", "| mallory | 1 |", "| 127.0.0.1 | 1 |",
		"### Class `email`\n\n| Identity | Kind | Statements | First | Last |\n|---|---|---|---|---|\n| alice@corp.example | human | 1 |",
		"| support-agent | 1 | customers |", // the agent and what it touched
		"- Tokens created: 2",
		"| admin | os:", "audit evidence ", // the making of this pack, recorded before the period closed
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary.md lacks %q:\n%s", want, summary)
		}
	}
	// The ledger keeps statements redacted; the pack must not bring the literal back.
	for _, name := range []string{evSummary, evEvents} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if strings.Contains(string(b), "grace.hopper@example.com") {
			t.Errorf("%s contains a raw email address from a statement literal", name)
		}
	}

	// The pack checks, as a whole and with the plain offline chain verification.
	if out, err := run(t, "audit", "evidence", "--check", dir); err != nil || !strings.Contains(out, "OK: evidence pack") {
		t.Fatalf("--check of a fresh pack: %v\n%s", err, out)
	}
	out, err = run(t, "audit", "verify", "--file", filepath.Join(dir, evEvents), "--checkpoints", filepath.Join(dir, evCheckpoints),
		"--pubkey", filepath.Join(dir, evPubkey), "--data-dir", p.DataDir)
	if err != nil || !strings.Contains(out, "OK: every event and checkpoint verifies") {
		t.Fatalf("audit verify --file on the pack: %v\n%s", err, out)
	}
	// The key in the pack is the installation's key.
	if out, err := run(t, "audit", "pubkey", "--data-dir", p.DataDir); err != nil {
		t.Fatal(err)
	} else if b, _ := os.ReadFile(filepath.Join(dir, evPubkey)); string(b) != out {
		t.Errorf("pubkey.pem differs from `audit pubkey`")
	}
	// Never into a directory that holds something.
	if out, err := run(t, "audit", "evidence", "--since", "1d", "-o", dir, "--data-dir", p.DataDir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second pack into the same directory: %v\n%s", err, out)
	}
	// The command itself is in the ledger.
	out, err = run(t, "audit", "search", "--type", "admin", "--data-dir", p.DataDir)
	if err != nil || !strings.Contains(out, "audit evidence") {
		t.Errorf("the evidence request is not recorded: %v\n%s", err, out)
	}

	tamper := func(name string, edit func(string) string) (string, error) {
		d := copyDir(t, dir)
		path := filepath.Join(d, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		changed := edit(string(b))
		if changed == string(b) {
			t.Fatalf("tampering with %s changed nothing", name)
		}
		if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
			t.Fatal(err)
		}
		return run(t, "audit", "evidence", "--check", d)
	}
	out, err = tamper(evEvents, func(s string) string {
		return strings.Replace(s, `"subject":"alice@corp.example"`, `"subject":"bob@corp.example"`, 1)
	})
	if err == nil || !strings.Contains(err.Error(), evEvents) || !strings.Contains(out, "FAILED "+evEvents) || strings.Contains(err.Error(), evSummary) {
		t.Errorf("--check after editing events.jsonl: %v\n%s", err, out)
	}
	out, err = tamper(evSummary, func(s string) string {
		return strings.Replace(s, "| mallory | 1 |", "| mallory | 0 |", 1)
	})
	if err == nil || !strings.Contains(err.Error(), evSummary) || strings.Contains(err.Error(), evEvents) {
		t.Errorf("--check after editing summary.md: %v\n%s", err, out)
	}
	// Rewriting the manifest to match an edited summary breaks its signature.
	d := copyDir(t, dir)
	os.WriteFile(filepath.Join(d, evSummary), []byte("# nothing to see\n"), 0o600)
	f, err := evidence.HashFile(filepath.Join(d, evSummary))
	if err != nil {
		t.Fatal(err)
	}
	var m evidence.Manifest
	mb, _ := os.ReadFile(filepath.Join(d, evManifest))
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	for i := range m.Files {
		if m.Files[i].Name == evSummary {
			m.Files[i].SHA256, m.Files[i].Size = f.SHA256, f.Size
		}
	}
	mb, _ = json.MarshalIndent(m, "", "  ")
	os.WriteFile(filepath.Join(d, evManifest), append(mb, '\n'), 0o600)
	if out, err := run(t, "audit", "evidence", "--check", d); err == nil || !strings.Contains(err.Error(), evSignature) {
		t.Errorf("--check after re-hashing the manifest: %v\n%s", err, out)
	}

	// A period starting mid-chain: the slice carries a signed anchor and still verifies.
	dir2 := filepath.Join(t.TempDir(), "pack2")
	if out, err := run(t, "audit", "evidence", "--from", mid.UTC().Format(time.RFC3339Nano), "-o", dir2, "--data-dir", p.DataDir); err != nil {
		t.Fatalf("audit evidence --from: %v\n%s", err, out)
	}
	mb, _ = os.ReadFile(filepath.Join(dir2, evManifest))
	m = evidence.Manifest{}
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	anchored := false
	for _, c := range m.Chains {
		if c.Anchored && c.FirstSeq > 1 {
			anchored = true
		}
	}
	if !anchored {
		t.Errorf("no chain of the mid-period pack starts after a signed anchor: %s", mb)
	}
	if out, err := run(t, "audit", "evidence", "--check", dir2); err != nil {
		t.Fatalf("--check of the mid-period pack: %v\n%s", err, out)
	}
	b, _ = os.ReadFile(filepath.Join(dir2, evSummary))
	if !strings.Contains(string(b), "| mallory | 1 |") || strings.Contains(string(b), "no-drop-or-truncate-in-production") {
		t.Errorf("the mid-period summary should hold the failed login and not the earlier DROP:\n%s", b)
	}
}

// A ledger whose store was edited yields a pack that says so plainly: the summary names the
// altered event, the pack vouches for no slice of that chain, and --check fails.
func TestAuditEvidenceTamperedStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	st, err := ledger.OpenSQLite(ctx, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.New(ctx, st, ledger.Options{Instance: "gh-1", DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ev := &ledger.Event{Type: ledger.EventLoginFailed, Subject: "mallory", ClientAddr: "127.0.0.1:" + strconv.Itoa(40000+i)}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := led.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// Reopened, the store has indexed everything its journal holds.
	if st, err = ledger.OpenSQLite(ctx, dataDir); err != nil {
		t.Fatal(err)
	}
	var body string
	if err := st.DB().QueryRowContext(ctx, `SELECT body FROM ledger_events WHERE instance = 'gh-1' AND seq = 3`).Scan(&body); err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(body, `"subject":"mallory"`, `"subject":"someone-else"`, 1)
	if edited == body {
		t.Fatalf("no subject in %s", body)
	}
	if _, err := st.DB().ExecContext(ctx, `UPDATE ledger_events SET body = ?, subject = 'someone-else' WHERE instance = 'gh-1' AND seq = 3`, edited); err != nil {
		t.Fatal(err)
	}
	st.Close()

	dir := filepath.Join(t.TempDir(), "pack")
	out, err := run(t, "audit", "evidence", "--since", "1d", "-o", dir, "--data-dir", dataDir)
	if err == nil || !strings.Contains(err.Error(), "verification FAILED") {
		t.Fatalf("evidence over an edited store: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, evSummary))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Ledger verification: FAILED", "gh-1 seq 3: altered", "Offline verification of this pack: FAILED"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("summary.md lacks %q:\n%s", want, b)
		}
	}
	if out, err := run(t, "audit", "evidence", "--check", dir); err == nil || !strings.Contains(err.Error(), evEvents) {
		t.Errorf("--check of a pack of an edited store: %v\n%s", err, out)
	}
}
