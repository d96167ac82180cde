package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// testStore is one store under test plus a raw handle for tampering and breaking it.
type testStore struct {
	Store
	exec   func(t *testing.T, q string, args ...any)
	break_ func(t *testing.T) (heal func())
	dir    string
}

type storeMaker struct {
	name string
	make func(t *testing.T) *testStore
}

// storeMakers returns a constructor per store kind; the PostgreSQL one shares one
// throwaway cluster per top-level test and gives every store a database of its own.
func storeMakers(parent *testing.T) []storeMaker {
	var (
		once sync.Once
		pg   *testkit.Postgres
		n    int
		mu   sync.Mutex
	)
	return []storeMaker{
		{"sqlite", func(t *testing.T) *testStore {
			dir := t.TempDir()
			s, err := OpenSQLite(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ts := &testStore{Store: s, dir: dir}
			ts.exec = func(t *testing.T, q string, args ...any) {
				t.Helper()
				if _, err := s.DB().Exec(q, args...); err != nil {
					t.Fatalf("exec %s: %v", q, err)
				}
			}
			ts.break_ = func(t *testing.T) func() {
				// Every sync of the commit log fails after its write reached the file,
				// as on a failing disk: the failed batch must be cut off again.
				s.setSyncFault(errors.New("injected: the disk holding the ledger fails"))
				return func() { s.setSyncFault(nil) }
			}
			return ts
		}},
		{"postgres", func(t *testing.T) *testStore {
			once.Do(func() { pg = testkit.StartPostgres(parent) })
			mu.Lock()
			n++
			db := fmt.Sprintf("ledger%d", n)
			mu.Unlock()
			role := db + "_w"
			pg.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw'", role))
			pg.Exec(t, "postgres", fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, role))
			dsn := fmt.Sprintf("host=%s port=%d user=%s password=pw dbname=%s sslmode=disable connect_timeout=1", pg.Host, pg.Port, role, db)
			s, err := OpenPostgres(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ts := &testStore{Store: s, dir: t.TempDir()}
			ts.exec = func(t *testing.T, q string, args ...any) {
				t.Helper()
				if _, err := s.Pool().Exec(context.Background(), rebind(postgresSQL, q), args...); err != nil {
					t.Fatalf("exec %s: %v", q, err)
				}
			}
			ts.break_ = func(t *testing.T) func() {
				// The database refuses the ledger: its role may no longer log in and its
				// sessions are terminated, as in an outage or failover.
				pg.Exec(t, "postgres", fmt.Sprintf("ALTER ROLE %s NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'", role, role))
				return func() { pg.Exec(t, "postgres", fmt.Sprintf("ALTER ROLE %s LOGIN", role)) }
			}
			return ts
		}},
	}
}

func forEachStore(t *testing.T, fn func(t *testing.T, mk func(t *testing.T) *testStore)) {
	for _, m := range storeMakers(t) {
		t.Run(m.name, func(t *testing.T) { fn(t, m.make) })
	}
}

func testKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newLedger(t *testing.T, ts *testStore, opts Options) *Ledger {
	t.Helper()
	if opts.Instance == "" {
		opts.Instance = "gh-1"
	}
	if opts.Key == nil && opts.DataDir == "" {
		opts.DataDir = ts.dir
	}
	if opts.CheckpointFile == "" {
		opts.CheckpointFile = filepath.Join(ts.dir, "checkpoints.jsonl")
	}
	l, err := New(context.Background(), ts, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func stmtEvent(subject, kind, text string, tables []string, sensitive map[string]string) *Event {
	cat := "read"
	switch {
	case strings.HasPrefix(kind, "DROP"), strings.HasPrefix(kind, "CREATE"):
		cat = "ddl"
	case kind == "INSERT" || kind == "UPDATE" || kind == "DELETE":
		cat = "write"
	}
	st := Statement{Kind: kind, Category: cat, Redacted: text, Sensitive: sensitive}
	if cat == "read" {
		st.TablesRead = tables
	} else {
		st.TablesWritten = tables
	}
	return &Event{Type: EventStatement, Subject: subject, IdentityKind: "human", Target: "prod-db", Environment: "production",
		ClientAddr: "10.0.0.5:5111", ApplicationName: "psql", Decision: "allow", Rule: "default", Statements: []Statement{st}}
}

func record(t *testing.T, l *Ledger, evs ...*Event) {
	t.Helper()
	for _, ev := range evs {
		if err := l.Record(context.Background(), ev); err != nil {
			t.Fatalf("record: %v", err)
		}
	}
}

func verifyStore(t *testing.T, l *Ledger, st Store) *Report {
	t.Helper()
	extra, err := ReadCheckpointFile(context.Background(), l.opts.CheckpointFile)
	if err != nil && !strings.Contains(err.Error(), "does not exist") {
		t.Fatal(err)
	}
	rep, err := Verify(context.Background(), StoreSource{Store: st, Extra: extra}, l.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func fill(t *testing.T, l *Ledger, n int) {
	for i := 1; i <= n; i++ {
		record(t, l, stmtEvent(fmt.Sprintf("user%d@corp.example", i%3), "SELECT", fmt.Sprintf("SELECT * FROM t%d WHERE id = $1", i), []string{"public.t"}, nil))
	}
}

func TestChainVerifiesAndCatchesTampering(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		type tamper struct {
			name string
			do   func(t *testing.T, ts *testStore, l *Ledger)
			kind string
			seq  int64
		}
		body := func(t *testing.T, ts *testStore, seq int64) string {
			var b string
			err := ts.Scan(ctx, "gh-1", seq-1, 1, func(se StoredEvent) error { b = string(se.Body); return nil })
			if err != nil || b == "" {
				t.Fatalf("read seq %d: %v", seq, err)
			}
			return b
		}
		cases := []tamper{
			{"edit a field", func(t *testing.T, ts *testStore, l *Ledger) {
				b := body(t, ts, 5)
				nb := strings.Replace(b, `"decision":"allow"`, `"decision":"deny"`, 1)
				if nb == b {
					t.Fatal("tamper did nothing")
				}
				ts.exec(t, `UPDATE ledger_events SET body = ? WHERE instance = 'gh-1' AND seq = 5`, nb)
			}, ProblemAltered, 5},
			{"edit and re-hash", func(t *testing.T, ts *testStore, l *Ledger) {
				ev, _ := decodeBody([]byte(body(t, ts, 5)))
				ev.Rows = 999
				nb, err := seal(&ev)
				if err != nil {
					t.Fatal(err)
				}
				ts.exec(t, `UPDATE ledger_events SET body = ?, hash = ? WHERE instance = 'gh-1' AND seq = 5`, string(nb), ev.Hash)
			}, ProblemAltered, 5},
			{"edit an index column", func(t *testing.T, ts *testStore, l *Ledger) {
				ts.exec(t, `UPDATE ledger_events SET subject = 'nobody' WHERE instance = 'gh-1' AND seq = 6`)
			}, ProblemAltered, 6},
			{"delete an event", func(t *testing.T, ts *testStore, l *Ledger) {
				ts.exec(t, `DELETE FROM ledger_events WHERE instance = 'gh-1' AND seq = 7`)
			}, ProblemRemoved, 7},
			{"insert an event", func(t *testing.T, ts *testStore, l *Ledger) {
				prev, _ := decodeBody([]byte(body(t, ts, 4)))
				forged := stmtEvent("mallory", "SELECT", "SELECT 1", nil, nil)
				forged.Seq, forged.Instance, forged.PrevHash, forged.Time = 5, "gh-1", prev.Hash, prev.Time
				fb, err := seal(forged)
				if err != nil {
					t.Fatal(err)
				}
				ts.exec(t, `UPDATE ledger_events SET seq = -seq WHERE instance = 'gh-1' AND seq >= 5`)
				ts.exec(t, `UPDATE ledger_events SET seq = 1 - seq WHERE instance = 'gh-1' AND seq < 0`)
				ts.exec(t, `INSERT INTO ledger_events(instance, seq, time_ns, type, subject, decision, hash, body) VALUES ('gh-1', 5, ?, 'statement', 'mallory', 'allow', ?, ?)`,
					forged.Time.UnixNano(), forged.Hash, string(fb))
			}, ProblemInserted, 5},
			{"swap two events", func(t *testing.T, ts *testStore, l *Ledger) {
				b5, b6 := body(t, ts, 5), body(t, ts, 6)
				ts.exec(t, `UPDATE ledger_events SET body = ? WHERE instance = 'gh-1' AND seq = 5`, b6)
				ts.exec(t, `UPDATE ledger_events SET body = ? WHERE instance = 'gh-1' AND seq = 6`, b5)
			}, ProblemReordered, 5},
			{"truncate the tail", func(t *testing.T, ts *testStore, l *Ledger) {
				ts.exec(t, `DELETE FROM ledger_events WHERE instance = 'gh-1' AND seq > 15`)
				ts.exec(t, `DELETE FROM ledger_checkpoints WHERE instance = 'gh-1' AND seq > 15`)
			}, ProblemTruncated, 16},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ts := mk(t)
				l := newLedger(t, ts, Options{CheckpointEvery: 10})
				fill(t, l, 25)
				if err := l.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
				if rep := verifyStore(t, l, ts); !rep.OK || rep.Chains[0].Events != 25 || rep.Chains[0].Unsealed != 0 {
					t.Fatalf("untampered ledger does not verify:\n%s", rep)
				}
				tc.do(t, ts, l)
				rep := verifyStore(t, l, ts)
				if rep.OK || len(rep.Problems) == 0 {
					t.Fatalf("tampering not detected:\n%s", rep)
				}
				p := rep.Problems[0]
				if p.Kind != tc.kind || p.Seq != tc.seq || len(rep.Problems) != 1 {
					t.Fatalf("want exactly one problem, %s at seq %d, got:\n%s", tc.kind, tc.seq, rep)
				}
				t.Logf("%s", rep)
			})
		}
	})
}

func TestRewrittenChainCaughtByCheckpoint(t *testing.T) {
	ctx := context.Background()
	ts := storeMakers(t)[0].make(t)
	l := newLedger(t, ts, Options{CheckpointEvery: 10})
	fill(t, l, 20)
	// The periodic checkpoints are written after the events they cover, not with them: on
	// a loaded machine the rewrite below could come first and find nothing signed yet.
	waitFor(t, "the checkpoints of seq 10 and 20", func() bool {
		rep := verifyStore(t, l, ts)
		return len(rep.Chains) == 1 && rep.Chains[0].Checkpoints >= 2
	})
	// Rewrite seq 13 and re-hash everything after it, as an attacker who knows the format
	// (but not the signing key) would.
	var evs []Event
	ts.Scan(ctx, "gh-1", 12, 0, func(se StoredEvent) error {
		ev, _ := decodeBody(se.Body)
		evs = append(evs, ev)
		return nil
	})
	prev := ""
	for i := range evs {
		if i == 0 {
			evs[i].Subject = "someone-else"
			prev = evs[i].PrevHash
		}
		evs[i].PrevHash = prev
		b, _ := seal(&evs[i])
		prev = evs[i].Hash
		ts.exec(t, `UPDATE ledger_events SET body = ?, hash = ?, subject = ? WHERE instance = 'gh-1' AND seq = ?`, string(b), evs[i].Hash, evs[i].Subject, evs[i].Seq)
	}
	rep := verifyStore(t, l, ts)
	if rep.OK || rep.Problems[0].Kind != ProblemAltered || rep.Problems[0].Seq > 13 || rep.Problems[0].LastSeq < 13 {
		t.Fatalf("rewritten chain not caught by the signed checkpoint:\n%s", rep)
	}
	// A forged checkpoint (signed with another key) is named as such.
	bad := Checkpoint{Instance: "gh-1", Seq: 20, Hash: prev, Time: time.Now(), Kind: CheckpointPeriodic}
	bad.sign(testKey(t))
	rep, _ = Verify(ctx, StoreSource{Store: ts, Extra: []Checkpoint{bad}}, l.PublicKey())
	found := false
	for _, p := range rep.Problems {
		found = found || (p.Kind == ProblemCheckpoint && p.Seq == 20)
	}
	if !found {
		t.Fatalf("forged checkpoint not reported:\n%s", rep)
	}
}

func TestExportVerifyOffline(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ts := mk(t)
		l := newLedger(t, ts, Options{CheckpointEvery: 7})
		fill(t, l, 30)
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
		var events, cps bytes.Buffer
		if err := ExportJSONL(ctx, ts, "", &events); err != nil {
			t.Fatal(err)
		}
		pemKey, err := PublicKeyPEM(l.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ParsePublicKey(pemKey)
		if err != nil {
			t.Fatal(err)
		}
		if pub2, err := ParsePublicKey([]byte(PublicKeyBase64(pub))); err != nil || !pub2.Equal(pub) {
			t.Fatalf("base64 public key round trip: %v", err)
		}
		f, err := os.Open(l.opts.CheckpointFile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fileCPs, err := ReadCheckpoints(ctx, f)
		if err != nil || len(fileCPs) < 4 {
			t.Fatalf("checkpoint file: %d checkpoints, %v", len(fileCPs), err)
		}
		if err := ExportCheckpoints(ctx, ts, "", &cps); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(events.String()), "\n")
		if len(lines) != 31 { // 30 + nothing else: Close records no event
			if len(lines) != 30 {
				t.Fatalf("exported %d lines", len(lines))
			}
		}
		rep, err := Verify(ctx, JSONLSource{Reader: strings.NewReader(events.String()), Extra: fileCPs}, pub)
		if err != nil || !rep.OK {
			t.Fatalf("offline verify of an untouched export failed: %v\n%s", err, rep)
		}
		// Offline tampering: drop line 12 (seq 12), swap lines 20 and 21, cut the tail.
		mut := append([]string(nil), lines...)
		mut = append(mut[:11], mut[12:]...)
		rep, _ = Verify(ctx, JSONLSource{Reader: strings.NewReader(strings.Join(mut, "\n")), Extra: fileCPs}, pub)
		if rep.OK || rep.Problems[0].Kind != ProblemRemoved || rep.Problems[0].Seq != 12 {
			t.Fatalf("removed line not named:\n%s", rep)
		}
		mut = append([]string(nil), lines...)
		mut[19], mut[20] = mut[20], mut[19]
		rep, _ = Verify(ctx, JSONLSource{Reader: strings.NewReader(strings.Join(mut, "\n")), Extra: fileCPs}, pub)
		if rep.OK || rep.Problems[0].Kind != ProblemReordered || rep.Problems[0].Seq != 20 {
			t.Fatalf("swapped lines not named:\n%s", rep)
		}
		mut = append([]string(nil), lines[:25]...)
		rep, _ = Verify(ctx, JSONLSource{Reader: strings.NewReader(strings.Join(mut, "\n")), Extra: fileCPs}, pub)
		if rep.OK || rep.Problems[0].Kind != ProblemTruncated || rep.Problems[0].Seq != 26 {
			t.Fatalf("cut tail not named:\n%s", rep)
		}
		mut = append([]string(nil), lines...)
		mut = append(mut[:9], append([]string{mut[8]}, mut[9:]...)...)
		rep, _ = Verify(ctx, JSONLSource{Reader: strings.NewReader(strings.Join(mut, "\n")), Extra: fileCPs}, pub)
		if rep.OK || rep.Problems[0].Kind != ProblemInserted || rep.Problems[0].Seq != 9 {
			t.Fatalf("duplicated line not named:\n%s", rep)
		}
		// CSV export has a header and a row per event.
		var csvOut bytes.Buffer
		if err := ExportCSV(ctx, ts, "", &csvOut); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(csvOut.String(), "instance,seq,time,") || strings.Count(csvOut.String(), "gh-1,") != 30 {
			t.Fatalf("CSV export:\n%s", csvOut.String())
		}
	})
}

func TestConcurrentRecordGroupCommit(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ts := mk(t)
		l := newLedger(t, ts, Options{CheckpointEvery: 100})
		const workers, each = 32, 40
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					ev := stmtEvent(fmt.Sprintf("w%d", w), "SELECT", "SELECT 1", nil, nil)
					if err := l.Record(context.Background(), ev); err != nil {
						errs <- err
						return
					}
					if ev.Seq <= 0 || ev.Hash == "" {
						errs <- fmt.Errorf("event not sealed: %+v", ev)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		rep := verifyStore(t, l, ts)
		if !rep.OK || rep.Chains[0].Events != workers*each || rep.Chains[0].LastSeq != workers*each {
			t.Fatalf("concurrent appends:\n%s", rep)
		}
	})
}

func TestFailClosedAndRecover(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{WriteTimeout: 700 * time.Millisecond})
		fill(t, l, 5)
		heal := ts.break_(t)
		// Under the default durability (sensitive) a plain read is only written before its
		// Ack answers, so on SQLite the first may pass; the sync that fails behind it then
		// refuses the next one. A refused Record waits for the store, so few tries.
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			if err = l.Record(ctx, stmtEvent("alice", "SELECT", "SELECT 1", nil, nil)); err == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if err == nil || l.Healthy() == nil {
			t.Fatalf("ledger accepted events while its store could not write (err %v)", err)
		}
		// A record that must be synced is refused at once.
		if err := l.Record(ctx, stmtEvent("alice", "SELECT", "SELECT email FROM customers", []string{"customers"}, map[string]string{"customers.email": "email"})); err == nil {
			t.Fatal("ledger accepted a sensitive event while its store could not write")
		}
		heal()
		// The ledger finds out by itself, with no Record to try (the gate sends none while
		// the ledger is unhealthy).
		for deadline := time.Now().Add(20 * time.Second); l.Healthy() != nil && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if err := l.Healthy(); err != nil {
			t.Fatalf("ledger did not recover by itself: %v", err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if err = l.Record(ctx, stmtEvent("alice", "SELECT", "SELECT 2", nil, nil)); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil || l.Healthy() != nil {
			t.Fatalf("ledger did not recover: %v", err)
		}
		fill(t, l, 3)
		rep := verifyStore(t, l, ts)
		if !rep.OK {
			t.Fatalf("chain after recovery:\n%s", rep)
		}
	})
}

func TestAuditorQuestions(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		l := newLedger(t, ts, Options{})
		base := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
		at := func(ev *Event, d time.Duration, mod func(*Event)) *Event {
			ev.Time = base.Add(d)
			if mod != nil {
				mod(ev)
			}
			return ev
		}
		agent := func(e *Event) { e.IdentityKind = "agent"; e.ApplicationName = "mcp" }
		email := map[string]string{"public.customers.email": "email"}
		record(t, l,
			at(stmtEvent("alice@corp", "DROP TABLE", "DROP TABLE public.orders", []string{"public.orders"}, nil), time.Hour, func(e *Event) { e.ClientAddr = "10.1.1.1:4000"; e.ApplicationName = "DBeaver" }),
			at(stmtEvent("bob@corp", "DROP TABLE", "DROP TABLE orders", []string{"orders"}, nil), 2*time.Hour, func(e *Event) { e.Decision = "deny" }),
			at(stmtEvent("carol@corp", "DROP TABLE", "DROP TABLE public.invoices", []string{"public.invoices"}, nil), 3*time.Hour, nil),
			at(stmtEvent("alice@corp", "SELECT", "SELECT email FROM customers", []string{"public.customers"}, email), 4*time.Hour, nil),
			at(stmtEvent("alice@corp", "SELECT", "SELECT email FROM customers WHERE id = $1", []string{"public.customers"}, email), 5*time.Hour, nil),
			at(stmtEvent("dan@corp", "SELECT", "SELECT ssn FROM employees", []string{"public.employees"}, map[string]string{"public.employees.ssn": "ssn"}), 6*time.Hour, nil),
			at(stmtEvent("eve@corp", "SELECT", "SELECT email FROM customers", []string{"public.customers"}, email), 7*time.Hour, func(e *Event) { e.Decision = "deny" }),
			at(stmtEvent("old@corp", "SELECT", "SELECT email FROM customers", []string{"public.customers"}, email), -48*time.Hour, nil),
			at(stmtEvent("svc-report", "SELECT", "SELECT id FROM customers", []string{"public.customers"}, nil), 8*time.Hour, func(e *Event) { e.IdentityKind = "service" }),
			at(stmtEvent("agent-1", "SELECT", "SELECT name FROM customers", []string{"public.customers"}, nil), 9*time.Hour, agent),
			at(stmtEvent("agent-1", "SELECT", "SELECT count(*) FROM customers", []string{"customers"}, nil), 10*time.Hour, agent),
			at(stmtEvent("agent-2", "SELECT", "SELECT * FROM public.customers", []string{"public.customers"}, email), 11*time.Hour, agent),
			at(stmtEvent("agent-3", "SELECT", "SELECT * FROM orders", []string{"public.orders"}, nil), 12*time.Hour, agent),
			at(stmtEvent("agent-4", "SELECT", "SELECT * FROM customers", []string{"public.customers"}, nil), -72*time.Hour, agent),
		)
		day := TimeRange{From: base, To: base.Add(24 * time.Hour)}

		drops, err := ts.WhoDropped(ctx, "orders", day)
		if err != nil {
			t.Fatal(err)
		}
		if len(drops) != 1 || drops[0].Subject != "alice@corp" || drops[0].ApplicationName != "DBeaver" || drops[0].ClientAddr != "10.1.1.1:4000" || !drops[0].Time.Equal(base.Add(time.Hour)) {
			t.Fatalf("who dropped orders: %+v", drops)
		}
		if d, _ := ts.WhoDropped(ctx, "public.orders", day); len(d) != 1 {
			t.Fatalf("who dropped public.orders: %+v", d)
		}

		readers, err := ts.PIIReaders(ctx, "pii", day)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, r := range readers {
			got[r.Subject] = r.Statements
		}
		if len(readers) != 3 || got["alice@corp"] != 2 || got["dan@corp"] != 1 || got["agent-2"] != 1 {
			t.Fatalf("PII readers: %+v", readers)
		}
		if r, _ := ts.PIIReaders(ctx, "ssn", day); len(r) != 1 || r[0].Subject != "dan@corp" {
			t.Fatalf("ssn readers: %+v", r)
		}

		// Over whole days the daily rollup answers; it must agree with the per-event rows.
		wide := TimeRange{From: base.Truncate(24 * time.Hour).Add(-5 * 24 * time.Hour), To: base.Add(5 * 24 * time.Hour)}
		readers, err = ts.PIIReaders(ctx, "pii", wide)
		if err != nil {
			t.Fatal(err)
		}
		assertRollupAgrees(t, ts.Store, wide)
		if len(readers) != 4 || readers[0].Subject != "alice@corp" || readers[0].Statements != 2 {
			t.Fatalf("PII readers over whole days: %+v", readers)
		}

		agents, err := ts.AgentsQueried(ctx, "customers", day)
		if err != nil {
			t.Fatal(err)
		}
		if len(agents) != 2 || agents[0].Subject != "agent-1" || agents[0].Statements != 2 || agents[1].Subject != "agent-2" {
			t.Fatalf("agents that queried customers: %+v", agents)
		}

		// Search filters, each alone and combined.
		check := func(name string, q Query, want int) []Event {
			t.Helper()
			evs, err := ts.Search(ctx, q)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(evs) != want {
				t.Fatalf("%s: %d events, want %d: %+v", name, len(evs), want, evs)
			}
			return evs
		}
		check("identity glob", Query{Identity: "a*@corp"}, 3)
		check("identity exact", Query{Identity: "agent-1"}, 2)
		check("identity kind", Query{IdentityKind: "agent"}, 5)
		check("table bare", Query{Table: "customers"}, 9)
		check("table qualified", Query{Table: "public.orders"}, 2)
		check("class pii", Query{Class: "pii"}, 6)
		check("class email in range", Query{Class: "email", From: day.From, To: day.To}, 4)
		check("decision", Query{Decision: "deny"}, 2)
		check("statement kind", Query{StatementKind: "drop table"}, 3)
		check("category", Query{Category: "ddl"}, 3)
		check("full text", Query{Text: "count"}, 1)
		check("full text finds a schema-qualified name", Query{Text: "orders"}, 3)
		check("full text two words", Query{Text: "email customers"}, 4)
		check("target+env", Query{Target: "prod-db", Environment: "production", Type: EventStatement}, 14)
		evs := check("combined", Query{IdentityKind: "agent", Table: "customers", From: day.From, To: day.To, Limit: 1}, 1)
		if evs[0].Subject != "agent-2" {
			t.Fatalf("newest first: %+v", evs[0])
		}
		evs = check("ascending", Query{IdentityKind: "agent", Ascending: true, Limit: 2}, 2)
		if evs[0].Subject != "agent-4" {
			t.Fatalf("oldest first: %+v", evs[0])
		}
		if _, err := ts.Search(ctx, Query{IdentityKind: "robot"}); err == nil {
			t.Fatal("bad identity kind accepted")
		}
		if _, err := ts.Search(ctx, Query{Text: `"); DROP`}); err != nil {
			t.Fatalf("punctuation in text search: %v", err)
		}

		var tbl bytes.Buffer
		if err := WriteTable(&tbl, evs); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(tbl.String(), "agent-4") || !strings.Contains(tbl.String(), "SUBJECT") {
			t.Fatalf("table output:\n%s", tbl.String())
		}
		js, _ := json.Marshal(SearchResult(Query{}, evs))
		if !bytes.Contains(js, []byte(`"events"`)) {
			t.Fatalf("JSON result: %s", js)
		}
	})
}

func TestRetentionKeepsChainVerifiable(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		now := time.Now().UTC()
		l := newLedger(t, ts, Options{CheckpointEvery: 4})
		for i := 0; i < 10; i++ {
			ev := stmtEvent("alice", "SELECT", "SELECT 1", []string{"t"}, nil)
			ev.Time = now.Add(-time.Duration(20-i) * 24 * time.Hour)
			record(t, l, ev)
		}
		fill(t, l, 5)
		n, err := l.Retain(ctx, now.Add(-15*24*time.Hour))
		if err != nil || n != 5 {
			t.Fatalf("retention deleted %d: %v", n, err)
		}
		rep := verifyStore(t, l, ts)
		if !rep.OK || rep.Chains[0].FirstSeq != 6 || rep.Chains[0].AnchorSeq != 5 {
			t.Fatalf("after retention:\n%s", rep)
		}
		ev := stmtEvent("bob", "SELECT", "SELECT email FROM c", []string{"c"}, map[string]string{"c.email": "email"})
		ev.Time = now.Add(-18 * 24 * time.Hour)
		record(t, l, ev)
		assertRollupAgrees(t, ts.Store, TimeRange{From: now.Add(-30 * 24 * time.Hour), To: now.Add(24 * time.Hour)})
		if _, err := l.Retain(ctx, now.Add(-15*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		assertRollupAgrees(t, ts.Store, TimeRange{From: now.Add(-30 * 24 * time.Hour), To: now.Add(24 * time.Hour)})
		// Deleting more of the start without an anchor is caught.
		ts.exec(t, `DELETE FROM ledger_events WHERE instance = 'gh-1' AND seq = 6`)
		rep = verifyStore(t, l, ts)
		if rep.OK || rep.Problems[0].Kind != ProblemRemoved || rep.Problems[0].Seq != 6 {
			t.Fatalf("start removal after retention:\n%s", rep)
		}
	})
}

func TestSinks(t *testing.T) {
	ctx := context.Background()
	ts := storeMakers(t)[0].make(t)
	var mu sync.Mutex
	var got []Event
	fails := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 { // the first posts fail: the sink must retry, not lose them
			fails--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		var evs []Event
		if err := json.NewDecoder(r.Body).Decode(&evs); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		got = append(got, evs...)
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "events.jsonl")
	js, err := NewJSONLSink(path)
	if err != nil {
		t.Fatal(err)
	}
	l := newLedger(t, ts, Options{Sinks: []Sink{js, NewWebhookSink(srv.URL)}})
	fill(t, l, 20)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.Close(cctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 20 || got[0].Seq != 1 || got[19].Seq != 20 {
		t.Fatalf("webhook got %d events", len(got))
	}
	b, _ := os.ReadFile(path)
	if strings.Count(string(b), "\n") != 20 {
		t.Fatalf("jsonl sink wrote:\n%s", b)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("key not reloaded: %v", err)
	}
	if _, err := ParsePublicKey([]byte("not a key")); err == nil {
		t.Fatal("garbage accepted as a public key")
	}
}

func TestCanonicalIgnoresKeyOrderAndHash(t *testing.T) {
	a, err := Canonical([]byte(`{"seq":1,"type":"x","hash":"abc","n":12345678901234567}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Canonical([]byte(`{ "n":12345678901234567, "type":"x", "seq":1 }`))
	if string(a) != string(b) || string(a) != `{"n":12345678901234567,"seq":1,"type":"x"}` {
		t.Fatalf("canonical: %s vs %s", a, b)
	}
	if _, err := Canonical([]byte(`[1]`)); err == nil {
		t.Fatal("array accepted as event")
	}
}

func TestOpenFromConfig(t *testing.T) {
	ctx := context.Background()
	cfg := new(config.Config)
	*cfg = config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Ledger.CheckpointFile = filepath.Join(cfg.DataDir, "cp.jsonl")
	cfg.Ledger.Sinks = []config.Sink{{Type: "jsonl", Path: filepath.Join(cfg.DataDir, "stream.jsonl")}}
	l, err := Open(ctx, cfg, "inst-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	record(t, l, stmtEvent("alice", "SELECT", "SELECT 1", nil, nil), &Event{Type: EventTokenCreate, Subject: "admin", Message: "token for agent-7"})
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.DataDir, "stream.jsonl")); strings.Count(string(b), "\n") != 2 {
		t.Fatalf("sink stream: %s", b)
	}
	// Reopen: the chain continues where it ended and still verifies with the file.
	l, err = Open(ctx, cfg, "inst-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := &Event{Type: EventPolicyReload, Subject: "gatehouse"}
	record(t, l, ev)
	if ev.Seq != 3 {
		t.Fatalf("chain did not continue: seq %d", ev.Seq)
	}
	rep := verifyStore(t, l, l.Store())
	if !rep.OK || rep.Chains[0].Events != 3 {
		t.Fatalf("%s", rep)
	}
	l.Close(ctx)
	cfg.Ledger.Store = "mongodb"
	if _, err := Open(ctx, cfg, "", nil); err == nil || !strings.Contains(err.Error(), "unknown store") {
		t.Fatalf("bad store accepted: %v", err)
	}
}

func TestCanonicalKeepsHTMLCharacters(t *testing.T) {
	ev := &Event{Seq: 1, Type: EventStatement, Time: time.Unix(0, 1).UTC(), Statements: []Statement{{Kind: "SELECT", Redacted: "SELECT a FROM t WHERE a < $1 AND b > $2 AND c <> '' & 1"}}}
	body, err := seal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte("a < $1")) {
		t.Fatalf("HTML characters escaped in the canonical record: %s", body)
	}
	if h, err := HashRecord(body); err != nil || h != ev.Hash {
		t.Fatalf("record hash %s vs sealed %s (%v)", h, ev.Hash, err)
	}
}

// assertRollupAgrees compares PIIReaders (rollup for whole days) with a count over the
// per-event rows only.
func assertRollupAgrees(t *testing.T, st Store, tr TimeRange) {
	t.Helper()
	ctx := context.Background()
	got, err := st.PIIReaders(ctx, "pii", tr)
	if err != nil {
		t.Fatal(err)
	}
	from, to := tr.bounds()
	var want []IdentityCount
	if _, ok := st.(*SQLiteStore); ok {
		want = piiReadersByScan(t, st, "pii", tr) // no per-event rows there (index_agg.go)
	} else if want, err = runIdentityCounts(ctx, st.(runner), piiReadersSQL+"", []any{"pii", from, to}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rollup and per-event counts differ:\nrollup %+v\nevents %+v", got, want)
	}
}

func TestSyntheticLoad(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		now := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
		if err := ts.LoadSynthetic(ctx, "synthetic", 3000, now); err != nil {
			t.Fatal(err)
		}
		evs, err := ts.Search(ctx, Query{IdentityKind: "agent", Table: "customers", Limit: 5})
		if err != nil || len(evs) == 0 || evs[0].IdentityKind != "agent" {
			t.Fatalf("search synthetic: %d events, %v", len(evs), err)
		}
		if evs, err := ts.Search(ctx, Query{Text: "t129 status"}); err != nil || len(evs) == 0 {
			t.Fatalf("text search synthetic: %d events, %v", len(evs), err)
		}
		assertRollupAgrees(t, ts.Store, TimeRange{From: now.Add(-60 * 24 * time.Hour), To: now})
	})
}

// TestCommitContext: a commit's context behaves as context.WithTimeout's would, though it
// makes its timer only when asked for Done: ended at its deadline, ended by release, and
// contexts derived from it end with it.
func TestCommitContext(t *testing.T) {
	past := &commitCtx{deadline: time.Now().Add(-time.Second)}
	if !errors.Is(past.Err(), context.DeadlineExceeded) {
		t.Fatalf("past deadline: Err %v", past.Err())
	}
	<-past.Done()

	c := &commitCtx{deadline: time.Now().Add(time.Hour)}
	if c.Err() != nil {
		t.Fatalf("live commit: Err %v", c.Err())
	}
	if d, ok := c.Deadline(); !ok || !d.Equal(c.deadline) {
		t.Fatalf("deadline %v %v", d, ok)
	}
	child, cancel := context.WithCancel(c)
	defer cancel()
	select {
	case <-child.Done():
		t.Fatal("derived context ended before the commit")
	default:
	}
	c.release()
	<-child.Done()
	if !errors.Is(c.Err(), context.Canceled) || !errors.Is(child.Err(), context.Canceled) {
		t.Fatalf("after release: Err %v, derived %v", c.Err(), child.Err())
	}

	unasked := &commitCtx{deadline: time.Now().Add(time.Hour)}
	unasked.release()
	if !errors.Is(unasked.Err(), context.Canceled) {
		t.Fatalf("released before Done was asked for: Err %v", unasked.Err())
	}
	<-unasked.Done()
}

// TestInlineLeaderYieldsOnlyWhenOthersJoin: a plain record's inline leader stops yielding
// once leads in a row found nobody to join them (a lone session pays no thread wake-up),
// probes now and then, and yields again as soon as a batch carried others' records; a
// record that must be synced always yields.
func TestInlineLeaderYieldsOnlyWhenOthersJoin(t *testing.T) {
	l := &Ledger{}
	lead := func(sync bool, batch int) bool {
		y := l.yieldFirst(sync)
		l.firstBatch = batch
		l.noteLead()
		return y
	}
	for i := 0; i < soloYieldAfter; i++ {
		if !lead(false, 1) {
			t.Fatalf("lead %d did not yield before %d solo leads", i+1, soloYieldAfter)
		}
	}
	yields := 0
	for i := 0; i < 4*soloProbeEvery; i++ {
		if lead(false, 1) {
			yields++
		}
	}
	if yields != 4 {
		t.Fatalf("alone, %d yields in %d leads, want one probe every %d", yields, 4*soloProbeEvery, soloProbeEvery)
	}
	if !lead(true, 1) {
		t.Fatal("a synced record's leader did not yield")
	}
	for !lead(false, 3) { // the next probe finds others
	}
	for i := 0; i < soloYieldAfter; i++ {
		if !lead(false, 1) {
			t.Fatalf("after a shared batch, lead %d did not yield", i+1)
		}
	}
}
