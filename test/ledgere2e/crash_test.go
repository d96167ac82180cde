package ledgere2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// loadClient is one concurrent writer: it inserts (client, n) rows through the proxy, each
// statement carrying a unique sqlcommenter purpose so its ledger events can be found, and
// remembers which inserts it saw succeed.
type loadClient struct {
	id   int
	mode pgx.QueryExecMode

	mu        sync.Mutex
	succeeded map[string]bool
	attempted int
	failures  int
	// reads are the reads (by purpose marker) whose result the client received: their
	// completion events are the plain records durability "sensitive" only writes.
	reads []string
}

func marker(client, n int) string { return fmt.Sprintf("c%d-n%d", client, n) }

func (c *loadClient) run(ctx context.Context, e *env, user, secret string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for n := 1; ctx.Err() == nil; {
		if conn == nil {
			cfg, err := e.connConfig(user, secret, fmt.Sprintf("loader-%d", c.id))
			if err != nil {
				return
			}
			cfg.DefaultQueryExecMode = c.mode
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			conn, err = pgx.ConnectConfig(cctx, cfg)
			cancel()
			if err != nil {
				conn = nil
				select {
				case <-ctx.Done():
				case <-time.After(30 * time.Millisecond):
				}
				continue
			}
		}
		m := marker(c.id, n)
		sql := "INSERT INTO t(client, n) VALUES ($1, $2) /*purpose='" + m + "'*/"
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := conn.Exec(qctx, sql, c.id, n)
		cancel()
		c.mu.Lock()
		c.attempted++
		if err == nil {
			c.succeeded[m] = true
		} else {
			c.failures++
		}
		c.mu.Unlock()
		if err == nil {
			// Read the row back: a plain read whose record must survive a kill as well.
			rm := "r" + m
			var got int
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = conn.QueryRow(qctx, "SELECT n FROM t WHERE client = $1 AND n = $2 /*purpose='"+rm+"'*/", c.id, n).Scan(&got)
			cancel()
			if err == nil {
				c.mu.Lock()
				c.reads = append(c.reads, rm)
				c.mu.Unlock()
			}
		}
		n++ // never reuse n: an insert whose outcome the client did not see may have happened
		if err != nil {
			_ = conn.Close(context.Background())
			conn = nil
		}
	}
}

// TestKill9UnderLoad crashes the proxy with SIGKILL at random moments while concurrent
// clients insert through it, restarts it on the same data directory each time, and then
// compares the database's effects with the ledger: every row that exists must have the
// ledger event of its statement (its intent at least), every insert a client saw succeed
// must have its completed statement event, and the chain must verify after every crash.
// It runs under both durability contracts: under "sensitive" the completions are only
// written to the commit log before the client sees them, and a kill -9 of Gatehouse alone
// must lose none of them.
func TestKill9UnderLoad(t *testing.T) {
	for _, d := range []string{"sensitive", "every"} {
		t.Run("sqlite-"+d, func(t *testing.T) {
			kill9UnderLoad(t, newEnv(t, envOptions{CheckpointEvery: 50, CheckpointInterval: "1s", Durability: d}))
		})
	}
	t.Run("postgres", func(t *testing.T) {
		ledgerPG := testkit.StartPostgres(t)
		kill9UnderLoad(t, newEnv(t, envOptions{LedgerDSN: ledgerPG.DSN("postgres"), CheckpointEvery: 50, CheckpointInterval: "1s"}))
	})
}

func kill9UnderLoad(t *testing.T, e *env) {
	e.upstream.Exec(t, "app", "CREATE TABLE t (client int NOT NULL, n int NOT NULL, PRIMARY KEY (client, n))")
	secret := e.token("loader", "service")

	const (
		clients = 6
		cycles  = 5
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))

	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	loaders := make([]*loadClient, clients)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.start()
	for i := range loaders {
		loaders[i] = &loadClient{id: i + 1, mode: modes[i%len(modes)], succeeded: map[string]bool{}}
		wg.Add(1)
		go func(c *loadClient) {
			defer wg.Done()
			c.run(ctx, e, "loader", secret)
		}(loaders[i])
	}
	stopLoad := sync.OnceFunc(func() { cancel(); wg.Wait() })
	defer stopLoad()

	countOK := func() int {
		n := 0
		for _, c := range loaders {
			c.mu.Lock()
			n += len(c.succeeded)
			c.mu.Unlock()
		}
		return n
	}
	var kills atomic.Int32
	for cycle := 1; cycle <= cycles; cycle++ {
		// Let the load reach the proxy, then kill it at a random moment.
		before := countOK()
		wait := time.Duration(700+rng.IntN(1800)) * time.Millisecond
		deadline := time.Now().Add(10 * time.Second)
		time.Sleep(wait)
		for countOK() == before && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if countOK() == before {
			t.Fatalf("cycle %d: no insert succeeded through the proxy in 10s\n%s", cycle, e.serveLog())
		}
		e.kill()
		kills.Add(1)
		t.Logf("cycle %d: killed after %v, %d inserts acknowledged so far", cycle, wait, countOK())
		e.verify(fmt.Sprintf("after kill -9 #%d", cycle))
		if cycle < cycles {
			e.start()
		}
	}
	stopLoad()

	// One more start after the last crash, a little more load on a fresh client, and a
	// graceful stop: the chain continues across the crash and closes with a checkpoint.
	e.start()
	final := &loadClient{id: 99, mode: pgx.QueryExecModeCacheStatement, succeeded: map[string]bool{}}
	// It runs until its first insert succeeds and a little after, not for a fixed time: on a
	// loaded machine a new TLS session and an insert synced twice (durability every) can take
	// longer than half a second, and that is not what this test is about.
	fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
	go func() {
		for fctx.Err() == nil {
			final.mu.Lock()
			n := len(final.succeeded)
			final.mu.Unlock()
			if n > 0 {
				time.Sleep(300 * time.Millisecond)
				fcancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	final.run(fctx, e, "loader", secret)
	fcancel()
	loaders = append(loaders, final)
	if len(final.succeeded) == 0 {
		t.Errorf("no insert succeeded after the last restart\n%s", e.serveLog())
	}
	e.stop()
	report := e.verify("after the final graceful stop")
	t.Logf("final verify:\n%s", report)
	// The verifications above compared the store with the external checkpoint file; make
	// sure there was one to compare with, so a cut-off tail could not have gone unnoticed.
	if cps, err := ledger.ReadCheckpointFile(context.Background(), e.cpFile); err != nil || len(cps) < cycles {
		t.Errorf("external checkpoint file: %d checkpoints, %v; want at least one per cycle", len(cps), err)
	}

	// The database's effects are the truth.
	db := e.direct(t)
	rows, err := db.Query(context.Background(), "SELECT client, n FROM t")
	if err != nil {
		t.Fatal(err)
	}
	inDB := map[string]bool{}
	for rows.Next() {
		var c, n int
		if err := rows.Scan(&c, &n); err != nil {
			t.Fatal(err)
		}
		inDB[marker(c, n)] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// What the ledger knows of each insert, by its purpose marker.
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	st := e.openStore(rctx)
	type seen struct{ intent, done, doneOK bool }
	byMarker := map[string]*seen{}
	readsRecorded := map[string]bool{}
	var sessionStarts int
	for _, ev := range events(rctx, t, st) {
		if ev.Type == ledger.EventSessionStart {
			sessionStarts++
		}
		if strings.HasPrefix(ev.Purpose, "r") && ev.Type == ledger.EventStatement {
			readsRecorded[ev.Purpose] = true
			continue
		}
		if ev.Purpose == "" || !strings.HasPrefix(ev.Purpose, "c") {
			continue
		}
		s := byMarker[ev.Purpose]
		if s == nil {
			s = &seen{}
			byMarker[ev.Purpose] = s
		}
		switch ev.Type {
		case gate.EventStatementIntent:
			s.intent = true
		case ledger.EventStatement:
			s.done = true
			if ev.Decision == string(gate.Allow) && ev.SQLState == "" {
				s.doneOK = true
			}
		}
	}

	var missing, unconfirmed, clientOKNoEvent, inFlight []string
	for m := range inDB {
		s := byMarker[m]
		switch {
		case s == nil || (!s.intent && !s.done):
			missing = append(missing, m)
		case !s.intent:
			// Every write must be on record before it is forwarded.
			unconfirmed = append(unconfirmed, m)
		}
	}
	acked, attempted, failures, reads := 0, 0, 0, 0
	var readsLost []string
	for _, c := range loaders {
		for _, m := range c.reads {
			reads++
			if !readsRecorded[m] {
				readsLost = append(readsLost, m)
			}
		}
		attempted += c.attempted
		failures += c.failures
		for m := range c.succeeded {
			acked++
			if !inDB[m] {
				t.Errorf("insert %s: the client saw it succeed but the row is not in the database", m)
			}
			if s := byMarker[m]; s == nil || !s.doneOK {
				clientOKNoEvent = append(clientOKNoEvent, m)
			}
		}
	}
	for m := range inDB {
		acknowledged := false
		for _, c := range loaders {
			if c.succeeded[m] {
				acknowledged = true
			}
		}
		if !acknowledged {
			inFlight = append(inFlight, m)
		}
	}
	sort.Strings(missing)
	sort.Strings(unconfirmed)
	sort.Strings(clientOKNoEvent)
	sort.Strings(inFlight)
	t.Logf("%d kills; %d inserts attempted, %d acknowledged, %d failed; %d rows in the database, %d of them never acknowledged (in flight at a kill): %v; %d session starts recorded; %d reads returned their row",
		kills.Load(), attempted, acked, failures, len(inDB), len(inFlight), inFlight, sessionStarts, reads)
	if acked < 100 {
		t.Errorf("only %d inserts were acknowledged: the load was too light to prove anything", acked)
	}
	if len(missing) > 0 {
		t.Errorf("%d rows reached the database with no ledger event at all (lost by a crash): %v", len(missing), missing)
	}
	if len(unconfirmed) > 0 {
		t.Errorf("%d rows have a completion event but no statement.intent recorded before forwarding: %v", len(unconfirmed), unconfirmed)
	}
	if reads < 100 {
		t.Errorf("only %d reads returned their row: the load was too light to prove anything", reads)
	}
	if len(readsLost) > 0 {
		sort.Strings(readsLost)
		t.Errorf("%d of %d reads the client received have no statement event (lost by a kill): %v", len(readsLost), reads, readsLost)
	}
	if len(clientOKNoEvent) > 0 {
		t.Errorf("%d inserts the client saw succeed have no successful statement event: %v", len(clientOKNoEvent), clientOKNoEvent)
	}
}
