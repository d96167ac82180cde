package ledgere2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// TestFailClosedAndRecover stops the PostgreSQL cluster that holds the ledger while clients
// are connected: writes must be refused before they reach the database, reads must fail at
// completion rather than hand over results the ledger does not hold, and once the cluster
// comes back on the same data the proxy must recover by itself.
func TestFailClosedAndRecover(t *testing.T) {
	ledgerPG := testkit.StartPostgres(t)
	e := newEnv(t, envOptions{LedgerDSN: ledgerPG.DSN("postgres"), CheckpointEvery: 20, CheckpointInterval: "1s"})
	e.upstream.Exec(t, "app", "CREATE TABLE w (id int PRIMARY KEY, note text); INSERT INTO w VALUES (1, 'seed')")
	secret := e.token("writer", "service")
	e.start()
	ctx := context.Background()

	writer := e.mustConnect("writer", secret, "fail-closed-writer")
	reader := e.mustConnect("writer", secret, "fail-closed-reader")
	if _, err := writer.Exec(ctx, "INSERT INTO w VALUES (2, 'before') /*purpose='before-outage'*/"); err != nil {
		t.Fatalf("insert while the ledger is up: %v", err)
	}
	if code, err := e.ready(ctx); err != nil || code != http.StatusOK {
		t.Fatalf("readyz while the ledger is up: %d %v", code, err)
	}

	ledgerPG.Kill()

	// A write, by the simple and by the extended protocol: refused before it is forwarded,
	// with a message that says the audit ledger is why.
	for _, w := range []struct {
		name string
		id   int
		run  func(ctx context.Context) error
	}{
		{"simple protocol", 3, func(ctx context.Context) error {
			_, err := writer.Exec(ctx, "INSERT INTO w VALUES (3, 'during') /*purpose='during-outage'*/")
			return err
		}},
		{"extended protocol", 6, func(ctx context.Context) error {
			_, err := writer.Exec(ctx, "INSERT INTO w VALUES ($1, $2) /*purpose='during-outage-extended'*/", 6, "during")
			return err
		}},
	} {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		start := time.Now()
		err := w.run(wctx)
		cancel()
		refusedIn := time.Since(start)
		if err == nil {
			t.Errorf("%s: an INSERT succeeded while the ledger store was down: the proxy did not fail closed", w.name)
			continue
		}
		code, msg := sqlState(err)
		t.Logf("%s write during the outage refused in %v: %s %s", w.name, refusedIn, code, msg)
		if !strings.Contains(msg, "ledger-unavailable") && !strings.Contains(msg, "audit ledger") {
			t.Errorf("%s: the refusal names neither rule ledger-unavailable nor the audit ledger: %s %q", w.name, code, msg)
		}
		if refusedIn > 10*time.Second {
			t.Errorf("%s: the refusal took %v: a down store must fail fast", w.name, refusedIn)
		}
		var n int
		if err := e.direct(t).QueryRow(ctx, "SELECT count(*) FROM w WHERE id = $1", w.id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: the refused INSERT reached the database", w.name)
		}
	}

	// A read: its completion must fail, since its statement event cannot be made durable.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	rows, err := reader.Query(rctx, "SELECT id, note FROM w ORDER BY id")
	var got int
	if err == nil {
		for rows.Next() {
			got++
		}
		err = rows.Err()
	}
	cancel()
	if err == nil {
		t.Errorf("a SELECT completed successfully (%d rows) while the ledger store was down", got)
	} else {
		code, msg := sqlState(err)
		t.Logf("read during the outage failed after %d streamed rows: %s %s", got, code, msg)
		if !strings.Contains(msg, "audit ledger") {
			t.Errorf("the read's failure does not mention the audit ledger: %s %q", code, msg)
		}
	}
	if got > 0 {
		// The ledger was already known to be down (the writes above failed on it), yet the
		// read was forwarded and its rows streamed out: data left with no record of it.
		t.Errorf("%d rows of a SELECT reached the client while the ledger was known to be down; "+
			"a statement must be refused (not merely have its completion withheld) when the ledger cannot record", got)
	}

	// A new session cannot be recorded either, so it is refused.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	c, err := e.connect(cctx, "writer", secret, "fail-closed-new")
	cancel()
	if err == nil {
		_ = c.Close(ctx)
		t.Error("a new session was accepted while the ledger store was down")
	} else {
		t.Logf("new session during the outage refused: %v", err)
	}
	if code, err := e.ready(ctx); err != nil || code == http.StatusOK {
		t.Errorf("readyz says %d (%v) while the ledger store is down; want not ready", code, err)
	}

	// The store comes back on the same data; the proxy must recover without a restart.
	restartPostgres(t, ledgerPG)
	back := time.Now()
	var recovered bool
	var lastErr error
	for time.Since(back) < 30*time.Second {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := e.connect(actx, "writer", secret, "fail-closed-after")
		if err == nil {
			_, err = conn.Exec(actx, "INSERT INTO w VALUES (4, 'after') /*purpose='after-outage'*/")
			_ = conn.Close(ctx)
		}
		cancel()
		if err == nil {
			recovered = true
			break
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	if !recovered {
		t.Fatalf("the proxy did not recover within 30s of the ledger store's return; last error: %v\n%s", lastErr, e.serveLog())
	}
	t.Logf("recovered %v after the ledger store came back", time.Since(back).Round(time.Millisecond))
	// The session opened before the outage works again too.
	if _, err := writer.Exec(ctx, "INSERT INTO w VALUES (5, 'old session') /*purpose='after-outage-old-session'*/"); err != nil {
		t.Errorf("the session opened before the outage still fails after recovery: %v", err)
	}
	if code, err := e.ready(ctx); err != nil || code != http.StatusOK {
		t.Errorf("readyz after recovery: %d %v", code, err)
	}

	e.stop()
	e.verify("after the ledger store's outage and recovery")

	st := e.openStore(ctx)
	byPurpose := map[string]map[ledger.EventType]bool{}
	for _, ev := range events(ctx, t, st) {
		if ev.Purpose == "" {
			continue
		}
		if byPurpose[ev.Purpose] == nil {
			byPurpose[ev.Purpose] = map[ledger.EventType]bool{}
		}
		byPurpose[ev.Purpose][ev.Type] = true
	}
	// The insert acknowledged just before the store crashed: its events were committed,
	// so they must have survived the crash of the store.
	if p := "before-outage"; !byPurpose[p][gate.EventStatementIntent] || !byPurpose[p][ledger.EventStatement] {
		t.Errorf("insert %s was acknowledged to the client, yet after the ledger's PostgreSQL crashed and restarted the ledger has %v of it, "+
			"want statement.intent and statement: the PostgreSQL store's commits are only as durable as the server's synchronous_commit "+
			"(off on this cluster); the store should insist on synchronous_commit=on for its own transactions", p, byPurpose[p])
	}
	for _, p := range []string{"after-outage", "after-outage-old-session"} {
		if !byPurpose[p][gate.EventStatementIntent] || !byPurpose[p][ledger.EventStatement] {
			t.Errorf("insert %s: ledger has %v, want both statement.intent and statement", p, byPurpose[p])
		}
	}
	for _, p := range []string{"during-outage", "during-outage-extended"} {
		if len(byPurpose[p]) > 0 {
			t.Logf("the refused insert %s left %v (recorded late, after the store came back)", p, byPurpose[p])
		}
	}
}
