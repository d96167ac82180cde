package ledgere2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/gate"
)

// syncedCommits reads the proxy's count of synced ledger group commits from /metrics.
func (e *env) syncedCommits(t *testing.T) int {
	t.Helper()
	_, httpPort := e.ports()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
	if err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "gatehouse_ledger_commit_duration_seconds_count{") && strings.Contains(line, `durability="synced"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			n += int(v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	return n
}

// TestKill9InsideTransactionBlock checks the durability rule for writes inside a transaction
// block: their intents are written before forwarding and all of them fdatasync'd once,
// before whatever ends the block is forwarded (one synced group commit per transaction, not
// one per write), while a write that may run outside a block (one pipelined after a COMMIT)
// keeps its own synced intent. Then Gatehouse is killed (SIGKILL) after an UPDATE was
// forwarded inside a block and before its COMMIT: the change must not be in the database,
// the ledger must still hold the UPDATE's intent, and no committed change may lack its
// intent.
func TestKill9InsideTransactionBlock(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.upstream.Exec(t, "app", "CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL)")
	e.upstream.Exec(t, "app", "INSERT INTO acct SELECT g, 0 FROM generate_series(1, 20) g")
	secret := e.token("teller", "service")
	e.start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple", pgx.QueryExecModeSimpleProtocol},
		{"extended", pgx.QueryExecModeCacheStatement},
	}
	id := 0
	for _, m := range modes {
		cfg, err := e.connConfig("teller", secret, "block-"+m.name)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = m.mode
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		// Warm up (the extended mode prepares its statements here), then count.
		block := func(purpose string, n int) {
			t.Helper()
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatalf("%s: begin: %v", m.name, err)
			}
			for i := range n {
				id++
				if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE acct SET v = v + 1 WHERE id = $1 /*purpose='%s-%d'*/", purpose, i), id%20+1); err != nil {
					t.Fatalf("%s: update: %v", m.name, err)
				}
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("%s: commit: %v", m.name, err)
			}
		}
		block("warm-"+m.name, 3)
		before := e.syncedCommits(t)
		block("block-"+m.name, 3)
		if got := e.syncedCommits(t) - before; got != 1 {
			t.Errorf("%s: a transaction of 3 UPDATEs made %d synced ledger commits, want 1 (its intents synced together before its COMMIT)", m.name, got)
		}
		// Outside a block every write's intent is synced before it is forwarded.
		before = e.syncedCommits(t)
		for i := range 2 {
			id++
			if _, err := c.Exec(ctx, fmt.Sprintf("UPDATE acct SET v = v + 1 WHERE id = $1 /*purpose='auto-%s-%d'*/", m.name, i), id%20+1); err != nil {
				t.Fatalf("%s: autocommit update: %v", m.name, err)
			}
		}
		if got := e.syncedCommits(t) - before; got != 2 {
			t.Errorf("%s: 2 autocommit UPDATEs made %d synced ledger commits, want 2", m.name, got)
		}
		_ = c.Close(ctx)
	}

	// A write pipelined after the COMMIT that ends a block runs outside it (the extended
	// protocol's implicit transaction, committed at the Sync): the relay cannot count on
	// the block, so that write's intent is synced on its own.
	{
		cfg, err := e.connConfig("teller", secret, "block-pipelined")
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "UPDATE acct SET v = v + 1 WHERE id = $1 /*purpose='pipe-in'*/", 1); err != nil {
			t.Fatal(err)
		}
		before := e.syncedCommits(t)
		b := &pgx.Batch{}
		b.Queue("COMMIT")
		b.Queue("UPDATE acct SET v = v + 1 WHERE id = $1 /*purpose='pipe-after'*/", 2)
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			t.Fatalf("pipelined COMMIT + UPDATE: %v", err)
		}
		if got := e.syncedCommits(t) - before; got != 2 {
			t.Errorf("pipelined COMMIT then UPDATE made %d synced ledger commits, want 2 (the block's intents before the COMMIT, the UPDATE's own before it runs)", got)
		}
		_ = c.Close(ctx)
	}

	// Kill -9 after an UPDATE was forwarded inside a block, before its COMMIT.
	c := e.mustConnect("teller", secret, "block-killed")
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE acct SET v = 1000 WHERE id = 7 /*purpose='killed-before-commit'*/"); err != nil {
		t.Fatalf("update inside the block: %v", err)
	}
	e.kill()

	db := e.direct(t)
	// The upstream connection dropped with Gatehouse: PostgreSQL rolls the block back once
	// its backend notices. Wait for that backend to be gone, then look.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var open int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND pid <> pg_backend_pid() AND backend_type = 'client backend'").Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream backends still open 30s after Gatehouse was killed", open)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var v int
	if err := db.QueryRow(ctx, "SELECT v FROM acct WHERE id = 7").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v == 1000 {
		t.Fatal("the UPDATE of a block whose COMMIT never came is in the database")
	}

	e.start()
	e.stop()
	e.verify("after kill -9 inside a transaction block")

	// Every committed change has its intent on record; the killed block's intent survived.
	intents := map[string]bool{}
	for _, ev := range events(ctx, t, e.openStore(ctx)) {
		if ev.Type == gate.EventStatementIntent && ev.Purpose != "" {
			intents[ev.Purpose] = true
		}
	}
	if !intents["killed-before-commit"] {
		t.Error("the intent of the UPDATE forwarded before the kill is not in the ledger (it was written before forwarding)")
	}
	var want []string
	for _, m := range modes {
		for i := range 3 {
			want = append(want, fmt.Sprintf("warm-%s-%d", m.name, i), fmt.Sprintf("block-%s-%d", m.name, i))
		}
		for i := range 2 {
			want = append(want, fmt.Sprintf("auto-%s-%d", m.name, i))
		}
	}
	want = append(want, "pipe-in", "pipe-after")
	for _, p := range want {
		if !intents[p] {
			t.Errorf("committed UPDATE %s has no statement.intent in the ledger", p)
		}
	}
	var total int
	if err := db.QueryRow(ctx, "SELECT sum(v) FROM acct").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != len(want) {
		t.Errorf("the database holds %d committed increments, the test committed %d", total, len(want))
	}
}
