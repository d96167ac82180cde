package ledger

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
)

// webhookReceiver is a real HTTP receiver on loopback that can be switched to failing.
type webhookReceiver struct {
	srv  *httptest.Server
	down atomic.Bool
	mu   sync.Mutex
	got  []Event
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	w := &webhookReceiver{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w.down.Load() {
			http.Error(rw, "receiver down", http.StatusServiceUnavailable)
			return
		}
		var evs []Event
		if err := json.NewDecoder(r.Body).Decode(&evs); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.got = append(w.got, evs...)
		w.mu.Unlock()
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhookReceiver) events() []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Event(nil), w.got...)
}

// waitFor polls cond until it holds or 15s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readJSONL(t *testing.T, path string) []Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("sink file line %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// assertDelivered checks that a receiver holds every seq 1..n of instance, in chain order:
// the first delivery of each seq comes after the first delivery of the one before it, and
// any repeat (at-least-once) is of a seq already seen. When exact, no repeat is allowed.
func assertDelivered(t *testing.T, who string, evs []Event, instance string, n int64, exact bool) {
	t.Helper()
	next := int64(1)
	for i, ev := range evs {
		if ev.Instance != instance || ev.Hash == "" {
			t.Fatalf("%s: event %d is %s/%d with hash %q", who, i, ev.Instance, ev.Seq, ev.Hash)
		}
		switch {
		case ev.Seq == next:
			next++
		case ev.Seq < next:
			if exact {
				t.Fatalf("%s: seq %d delivered twice (position %d)", who, ev.Seq, i)
			}
		default:
			t.Fatalf("%s: seq %d arrived before seq %d: lost or out of order (position %d)", who, ev.Seq, next, i)
		}
	}
	if next != n+1 {
		t.Fatalf("%s: got seqs 1..%d of %d", who, next-1, n)
	}
}

// TestSinksResumeAcrossOutageAndRestart: events recorded while the webhook receiver failed,
// and while the ledger ran without its sinks (Gatehouse stopped, or another process writing
// the store), all reach both sinks once they can, in chain order and, without a crash, once.
// Record is never held up by the failing sink.
func TestSinksResumeAcrossOutageAndRestart(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk func(t *testing.T) *testStore) {
		ctx := context.Background()
		ts := mk(t)
		dataDir := t.TempDir()
		rcv := newWebhookReceiver(t)
		file := filepath.Join(t.TempDir(), "events.jsonl")
		cfg := config.Ledger{Sinks: []config.Sink{{Type: "jsonl", Path: file}, {Type: "webhook", URL: rcv.srv.URL + "/ingest?token=s3cret"}}}
		open := func(withSinks bool) *Ledger {
			var sinks []Sink
			if withSinks {
				var err error
				if sinks, err = OpenSinks(cfg, dataDir); err != nil {
					t.Fatal(err)
				}
			}
			l, err := New(ctx, ts, Options{Instance: "gh-1", DataDir: dataDir, Sinks: sinks})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		closeWithin := func(l *Ledger, d time.Duration) {
			cctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			if err := l.Close(cctx); err != nil {
				t.Fatalf("close ledger: %v", err)
			}
		}

		// 1: both sinks up.
		l := open(true)
		fill(t, l, 10)
		waitFor(t, "10 events at the webhook", func() bool { return len(rcv.events()) == 10 })

		// 2: the receiver fails; Record goes on at full speed.
		rcv.down.Store(true)
		start := time.Now()
		fill(t, l, 10)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("a failing sink slowed Record: 10 events took %s", d)
		}
		time.Sleep(300 * time.Millisecond) // some failed deliveries and backoff
		closeWithin(l, 200*time.Millisecond)
		if n := len(rcv.events()); n != 10 {
			t.Fatalf("receiver down but has %d events", n)
		}

		// 3: events committed while the sinks are not running at all.
		l = open(false)
		fill(t, l, 10)
		closeWithin(l, 5*time.Second)

		// 4: back with the sinks and a working receiver: the backlog arrives, then new events.
		rcv.down.Store(false)
		l = open(true)
		fill(t, l, 10)
		waitFor(t, "40 events at the webhook", func() bool { return len(rcv.events()) >= 40 })
		closeWithin(l, 10*time.Second)

		assertDelivered(t, "webhook", rcv.events(), "gh-1", 40, true)
		assertDelivered(t, "jsonl file", readJSONL(t, file), "gh-1", 40, true)

		// The cursors name the sinks without the webhook's token.
		ents, err := os.ReadDir(filepath.Join(dataDir, SinkCursorDir))
		if err != nil || len(ents) != 2 {
			t.Fatalf("cursor files: %v %v", ents, err)
		}
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(dataDir, SinkCursorDir, e.Name()))
			var c sinkCursor
			if err := json.Unmarshal(b, &c); err != nil || c.Seq != 40 || c.Instance != "gh-1" {
				t.Fatalf("cursor %s: %s (%v)", e.Name(), b, err)
			}
			if strings.Contains(string(b), "s3cret") {
				t.Fatalf("cursor file holds the webhook's token: %s", b)
			}
		}
	})
}

// TestSinkRedeliversAfterCrash: a crash after a delivery but before its cursor was saved
// (simulated by putting back an older cursor) repeats events, never loses them; a cursor
// from another store (past its head) restarts delivery from the chain's start.
func TestSinkRedeliversAfterCrash(t *testing.T) {
	ctx := context.Background()
	ts := storeMakers(t)[0].make(t)
	dataDir := t.TempDir()
	file := filepath.Join(t.TempDir(), "events.jsonl")
	cfg := config.Ledger{Sinks: []config.Sink{{Type: "jsonl", Path: file}}}
	run := func(n int) {
		sinks, err := OpenSinks(cfg, dataDir)
		if err != nil {
			t.Fatal(err)
		}
		l, err := New(ctx, ts, Options{Instance: "gh-1", DataDir: dataDir, Sinks: sinks})
		if err != nil {
			t.Fatal(err)
		}
		fill(t, l, n)
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	run(10)
	ents, err := os.ReadDir(filepath.Join(dataDir, SinkCursorDir))
	if err != nil || len(ents) != 1 {
		t.Fatalf("cursor files: %v %v", ents, err)
	}
	cur := filepath.Join(dataDir, SinkCursorDir, ents[0].Name())
	var c sinkCursor
	b, _ := os.ReadFile(cur)
	if err := json.Unmarshal(b, &c); err != nil || c.Seq != 10 {
		t.Fatalf("cursor after 10 events: %s", b)
	}
	// The crash: seqs 7..10 were written to the file, the cursor still says 6.
	c.path = cur
	if err := c.save(6, ""); err != nil {
		t.Fatal(err)
	}
	run(5)
	got := readJSONL(t, file)
	if len(got) != 19 {
		t.Fatalf("want 10 + 4 repeated + 5 new lines, got %d", len(got))
	}
	assertDelivered(t, "jsonl file after a crash", got, "gh-1", 15, false)

	// A cursor past the head: the store is not the one the sink followed.
	if err := c.save(1000, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 0); err != nil {
		t.Fatal(err)
	}
	run(1)
	assertDelivered(t, "jsonl file after a store change", readJSONL(t, file), "gh-1", 16, true)
}
