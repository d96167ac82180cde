package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// `policy replay` decides the newest events of the period again with a candidate policy
// (as the console's replay page does), lists the statements it would decide differently and
// says when the period held more events than it replayed.
func TestPolicyReplayCLI(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod"})
	p.Upstream.Exec(t, "app", "CREATE TABLE orders (id int)")
	dana := p.Token(t, "dana", "human", "dba")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("dana", dana, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, q := range []string{"SELECT count(*) FROM orders", "SELECT id FROM orders", "SELECT max(id) FROM orders"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	cand := filepath.Join(t.TempDir(), "candidate.yaml")
	if err := os.WriteFile(cand, []byte(`version: 1
grants:
  - name: dba-admin
    groups: [dba]
    level: admin
rules:
  - name: no-orders
    when: statement.tables.exists(t, t == "public.orders" || t == "orders")
    action: deny
    message: orders are closed
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "policy", "replay", "--policy", cand, "--since", "1h", "--limit", "2", "--data-dir", p.DataDir)
	if err != nil {
		t.Fatalf("policy replay: %v\n%s", err, out)
	}
	// The two newest statements were replayed, oldest of them first; the first was not.
	iID, iMax := strings.Index(out, "SELECT id FROM orders"), strings.Index(out, "SELECT max(id) FROM orders")
	if iID < 0 || iMax < iID || strings.Contains(out, "count(*)") || !strings.Contains(out, "no-orders") ||
		!strings.Contains(out, "the newest 2 were replayed") {
		t.Fatalf("policy replay --limit 2 did not list the two newest statements, changed by no-orders, and say it was cut:\n%s", out)
	}
}
