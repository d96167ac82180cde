package ledgere2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// TestOneIntentPerWrite checks that each write a client runs leaves exactly one
// statement.intent and one statement event, whichever protocol path carried it. An intent
// with no statement after it is what a crash mid-statement looks like to an auditor, so an
// intent recorded for something that never executed (a Parse) would be a false trail, and a
// second intent for one execution inflates every count built on the ledger.
func TestOneIntentPerWrite(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.upstream.Exec(t, "app", "CREATE TABLE k (id int PRIMARY KEY)")
	secret := e.token("writer", "service")
	e.start()
	ctx := context.Background()
	type modeCase struct {
		name string
		mode pgx.QueryExecMode
	}
	modes := []modeCase{
		{"simple", pgx.QueryExecModeSimpleProtocol},
		{"exec", pgx.QueryExecModeExec},
		{"describe", pgx.QueryExecModeDescribeExec},
		{"cache-statement", pgx.QueryExecModeCacheStatement},
		{"cache-describe", pgx.QueryExecModeCacheDescribe},
	}
	id := 0
	for _, m := range modes {
		name, mode := m.name, m.mode
		cfg, err := e.connConfig("writer", secret, "intent-"+name)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		for i := range 2 {
			id++
			if _, err := c.Exec(ctx, fmt.Sprintf("INSERT INTO k VALUES ($1) /*purpose='%s-%d'*/", name, i), id); err != nil {
				t.Fatalf("%s insert: %v", name, err)
			}
		}
		// A prepared statement that is never executed has no intent to record.
		if _, err := c.Prepare(ctx, "never", "INSERT INTO k VALUES ($1) /*purpose='"+name+"-prepared-only'*/"); err != nil {
			t.Fatalf("%s prepare: %v", name, err)
		}
		_ = c.Close(ctx)
	}
	e.stop()

	counts := map[string]map[ledger.EventType]int{}
	for _, ev := range events(ctx, t, e.openStore(ctx)) {
		if ev.Purpose == "" {
			continue
		}
		if counts[ev.Purpose] == nil {
			counts[ev.Purpose] = map[ledger.EventType]int{}
		}
		counts[ev.Purpose][ev.Type]++
	}
	for _, m := range modes {
		name := m.name
		for i := range 2 {
			p := fmt.Sprintf("%s-%d", name, i)
			if c := counts[p]; c[gate.EventStatementIntent] != 1 || c[ledger.EventStatement] != 1 {
				t.Errorf("pgx %s mode, one INSERT: ledger has %d statement.intent and %d statement events, want 1 and 1",
					name, c[gate.EventStatementIntent], c[ledger.EventStatement])
			}
		}
		if c := counts[name+"-prepared-only"]; len(c) > 0 {
			t.Errorf("pgx %s mode: a statement that was only prepared, never executed, left %v", name, c)
		}
	}
}
