package ledgere2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// TestWebhookSinkSurvivesOutageAndKill: the webhook receiver fails for a while, then the
// proxy is killed with SIGKILL and started again; every event of the ledger still reaches
// the receiver, in chain order. Repeats are allowed only around the kill (at-least-once).
func TestWebhookSinkSurvivesOutageAndKill(t *testing.T) {
	var down atomic.Bool
	var mu sync.Mutex
	var got []ledger.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "receiver down", http.StatusServiceUnavailable)
			return
		}
		var evs []ledger.Event
		if err := json.NewDecoder(r.Body).Decode(&evs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, evs...)
		mu.Unlock()
	}))
	defer srv.Close()
	received := func() []ledger.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]ledger.Event(nil), got...)
	}

	e := newEnv(t, envOptions{})
	// The ledger section is the configuration's last: add the sink to it.
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "  sinks:\n    - type: webhook\n      url: %q\n", srv.URL+"/events")
	f.Close()
	e.upstream.Exec(t, "app", "CREATE TABLE k (id int PRIMARY KEY)")
	secret := e.token("writer", "service")
	ctx := context.Background()
	id := 0
	write := func(n int) {
		t.Helper()
		c := e.mustConnect("writer", secret, "sink-e2e")
		for range n {
			id++
			if _, err := c.Exec(ctx, "INSERT INTO k VALUES ($1)", id); err != nil {
				t.Fatalf("insert through gatehouse: %v", err)
			}
		}
		_ = c.Close(ctx)
	}

	e.start()
	write(5)
	down.Store(true) // the receiver fails: the proxy goes on
	write(5)
	e.kill()
	down.Store(false)
	e.start()
	write(5)
	e.stop()

	evs := events(ctx, t, e.openStore(ctx))
	if len(evs) < 30 {
		t.Fatalf("ledger holds only %d events", len(evs))
	}
	want := map[string]int64{} // instance → head
	for _, ev := range evs {
		want[ev.Instance] = max(want[ev.Instance], ev.Seq)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		next := map[string]int64{}
		for _, ev := range received() {
			switch {
			case ev.Seq == next[ev.Instance]+1:
				next[ev.Instance] = ev.Seq
			case ev.Seq > next[ev.Instance]+1:
				t.Fatalf("receiver got %s/%d before %s/%d: lost or out of order", ev.Instance, ev.Seq, ev.Instance, next[ev.Instance]+1)
			}
		}
		done := true
		for inst, head := range want {
			if next[inst] < head {
				done = false
				if time.Now().After(deadline) {
					t.Fatalf("receiver has %s up to seq %d of %d (the proxy stopped; events missing)", inst, next[inst], head)
				}
			}
		}
		if done {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing beyond the kill may repeat: each seq appears once except those delivered
	// around it (at most one batch).
	seen := map[string]int{}
	repeats := 0
	for _, ev := range received() {
		k := fmt.Sprintf("%s/%d", ev.Instance, ev.Seq)
		if seen[k]++; seen[k] > 1 {
			repeats++
		}
	}
	if repeats > 500 {
		t.Fatalf("%d events delivered twice", repeats)
	}
}

// TestWhoDroppedShowsDropWithoutCompletion: a DROP TABLE waits on a lock upstream, the proxy
// is killed with SIGKILL while it waits, then the lock is released and the DROP runs. The
// ledger holds the DROP's intent but no completion; `gatehouse audit who-dropped` must still
// name who dropped the table, with an unknown outcome. An agent's UPDATE caught the same way
// must count in `gatehouse audit agents`.
func TestWhoDroppedShowsDropWithoutCompletion(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.upstream.Exec(t, "app", "CREATE TABLE doomed (id int PRIMARY KEY); CREATE TABLE tally (id int PRIMARY KEY, n int); INSERT INTO tally VALUES (1, 0)")
	secret := e.token("dba@corp.example", "human")
	agentSecret := e.token("agent-x", "agent")
	ctx := context.Background()
	e.start()

	lock := e.direct(t)
	if _, err := lock.Exec(ctx, "BEGIN; LOCK TABLE doomed, tally IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	c := e.mustConnect("dba@corp.example", secret, "psql")
	ac := e.mustConnect("agent-x", agentSecret, "agent")
	dropped, updated := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "DROP TABLE doomed")
		dropped <- err
	}()
	go func() {
		_, err := ac.Exec(ctx, "UPDATE tally SET n = n + 1 WHERE id = 1")
		updated <- err
	}()
	// Wait until both wait for the lock upstream: their intents are on record by then.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		if err := e.direct(t).QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query IN ('DROP TABLE doomed', 'UPDATE tally SET n = n + 1 WHERE id = 1') AND wait_event_type = 'Lock'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the DROP and the UPDATE never both reached the database\n%s", e.serveLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.kill()
	<-dropped // the clients' connections died with the proxy
	<-updated
	if _, err := lock.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	// The DROP and the UPDATE run now, with nobody left to hear their results.
	deadline = time.Now().Add(15 * time.Second)
	for {
		var exists bool
		var n int
		if err := e.direct(t).QueryRow(ctx, "SELECT to_regclass('public.doomed') IS NOT NULL, (SELECT n FROM tally WHERE id = 1)").Scan(&exists, &n); err != nil {
			t.Fatal(err)
		}
		if !exists && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("doomed exists: %v, tally is %d: the scenario needs the DROP and the UPDATE to have run", exists, n)
		}
		time.Sleep(50 * time.Millisecond)
	}

	var agents []ledger.IdentityCount
	if err := json.Unmarshal([]byte(e.mustCLI("audit", "agents", "tally", "--since", "1h", "--json")), &agents); err != nil {
		t.Fatal(err)
	}
	if len(agents) != 1 || agents[0].Subject != "agent-x" || agents[0].Statements != 1 {
		t.Fatalf("audit agents tally: want agent-x with its one UPDATE, got %+v", agents)
	}

	out := e.mustCLI("audit", "who-dropped", "doomed", "--since", "1h")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "OUTCOME") {
		t.Fatalf("who-dropped doomed: want a header and one row:\n%s", out)
	}
	row := lines[1]
	for _, want := range []string{"dba@corp.example", "psql", "doomed", ledger.OutcomeUnknown, "DROP TABLE doomed"} {
		if !strings.Contains(row, want) {
			t.Fatalf("who-dropped doomed: row lacks %q:\n%s", want, out)
		}
	}
	js := e.mustCLI("audit", "who-dropped", "doomed", "--since", "1h", "--json")
	if !strings.Contains(js, `"outcome":"`+ledger.OutcomeUnknown+`"`) && !strings.Contains(js, `"outcome": "`+ledger.OutcomeUnknown+`"`) {
		t.Fatalf("who-dropped --json lacks the outcome:\n%s", js)
	}
}
