package console

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

var (
	detailsRE = regexp.MustCompile(`href="/console/audit/events/[^/"]+/(\d+)"`)
	olderRE   = regexp.MustCompile(`id="older" href="/console/audit\?([^"]+)"`)
)

// Events that share a timestamp across a page boundary are neither skipped nor shown twice:
// walking the search's pages (and exporting it, in batches) yields every matching event once,
// newest first. The ledger orders events of one timestamp by seq, and the next page starts
// after the last one shown (its time and seq), not merely before its time.
func TestAuditPagesAndExportKeepTiedEvents(t *testing.T) {
	c, led := testConsole(t)
	c.exportBatch = 7
	ctx := context.Background()
	// 130 events on 3 timestamps: every page boundary (50, 100) falls among events of one time.
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	const n = 130
	for i := range n {
		ev := &ledger.Event{Type: ledger.EventStatement, Time: base.Add(time.Duration(i/45) * time.Second), Subject: "dana@corp.example",
			IdentityKind: "human", Target: "main", Decision: "allow",
			Statements: []ledger.Statement{{Kind: "SELECT", Category: "read", Redacted: "SELECT tie"}}}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	want, err := led.Store().Search(ctx, ledger.Query{Text: "tie", Limit: ledger.MaxLimit})
	if err != nil || len(want) != n {
		t.Fatalf("the ledger holds %d tied events (%v), want %d", len(want), err, n)
	}
	aud := viewerIn("auditors")

	var seen []string
	query, pages := "text=tie", 0
	for query != "" {
		req := httptest.NewRequest(http.MethodGet, "/console/audit?"+html.UnescapeString(query), nil)
		w := httptest.NewRecorder()
		c.auditPage(w, &viewer{session: aud, r: req})
		if w.Code != http.StatusOK {
			t.Fatalf("page %d: HTTP %d\n%s", pages+1, w.Code, w.Body.String())
		}
		for _, m := range detailsRE.FindAllStringSubmatch(w.Body.String(), -1) {
			seen = append(seen, m[1])
		}
		query = ""
		if m := olderRE.FindStringSubmatch(w.Body.String()); m != nil {
			query = m[1]
		}
		if pages++; pages > 10 {
			t.Fatal("the pages do not end")
		}
	}
	if pages != 3 || len(seen) != n {
		t.Fatalf("%d pages show %d events, want 3 pages of the %d", pages, len(seen), n)
	}
	for i, ev := range want {
		if seen[i] != strconv.FormatInt(ev.Seq, 10) {
			t.Fatalf("event %d on the pages is seq %s, want %d (newest first, each once)", i, seen[i], ev.Seq)
		}
	}

	req := httptest.NewRequest(http.MethodGet, "/console/audit/export?format=jsonl&text=tie", nil)
	w := httptest.NewRecorder()
	c.auditExport(w, &viewer{session: aud, r: req})
	if w.Code != http.StatusOK {
		t.Fatalf("export: HTTP %d\n%s", w.Code, w.Body.String())
	}
	// Every page asked and the export are ledger events.
	if evs, _ := led.Store().Search(ctx, ledger.Query{Type: EventSearch}); len(evs) != pages {
		t.Fatalf("%d console.search events for %d pages", len(evs), pages)
	}
	if evs, _ := led.Store().Search(ctx, ledger.Query{Type: EventExport}); len(evs) != 1 || !strings.Contains(evs[0].Message, "jsonl of 130 events") {
		t.Fatalf("console.export events: %+v", evs)
	}
	lines := strings.Split(strings.TrimSpace(w.Body.String()), "\n")
	if len(lines) != n {
		t.Fatalf("the export (batches of %d) has %d events, want %d", c.exportBatch, len(lines), n)
	}
	for i, line := range lines {
		var ev ledger.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Seq != want[i].Seq {
			t.Fatalf("export line %d: seq %d (%v), want %d", i, ev.Seq, err, want[i].Seq)
		}
	}
}

// An event's page shows its chain position (seq, hash, previous hash), its redacted
// statement, decision, rule, purpose and traceparent, and links to the events before and
// after; viewing it is a ledger event. A viewer outside the
// privileged groups gets 404 for someone else's event.
func TestEventPage(t *testing.T) {
	c, led := testConsole(t)
	ctx := context.Background()
	for i, subject := range []string{"dana@corp.example", "vic@corp.example", "dana@corp.example"} {
		ev := &ledger.Event{Type: ledger.EventStatement, Time: time.Now(), Subject: subject, IdentityKind: "human", Target: "main",
			Decision: "deny", Rule: "no-update-or-delete-without-where", Purpose: "ticket-" + strconv.Itoa(i),
			Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			Statements:  []ledger.Statement{{Kind: "DELETE", Category: "write", Redacted: "DELETE FROM orders -- <script>x</script>"}}}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := led.Store().Search(ctx, ledger.Query{Identity: "*@corp.example", Limit: 10})
	if err != nil || len(evs) != 3 {
		t.Fatalf("recorded events: %d %v", len(evs), err)
	}
	show := func(s *session, seq int64) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/console/audit/events/x/y", nil)
		req.SetPathValue("instance", led.Instance())
		req.SetPathValue("seq", strconv.FormatInt(seq, 10))
		w := httptest.NewRecorder()
		c.eventPage(w, &viewer{session: s, r: req})
		return w
	}
	aud := viewerIn("auditors")
	middle := evs[1] // vic's, newest first
	w := show(aud, middle.Seq)
	body := w.Body.String()
	base := "/console/audit/events/" + led.Instance() + "/"
	for _, want := range []string{`<span id="seq">` + strconv.FormatInt(middle.Seq, 10) + `</span>`, middle.Hash, middle.PrevHash,
		"DELETE FROM orders -- &lt;script&gt;x&lt;/script&gt;", "no-update-or-delete-without-where", "ticket-1", middle.Traceparent,
		`id="prev" href="` + base + strconv.FormatInt(middle.Seq-1, 10) + `"`, `id="next" href="` + base + strconv.FormatInt(middle.Seq+1, 10) + `"`} {
		if w.Code != http.StatusOK || want == "" || !strings.Contains(body, want) {
			t.Fatalf("event page (HTTP %d) lacks %q:\n%s", w.Code, want, body)
		}
	}
	if middle.PrevHash != evs[2].Hash {
		t.Fatalf("the chain: prev hash %s, the event before's hash %s", middle.PrevHash, evs[2].Hash)
	}
	// Viewing is recorded before the page shows, so the newest event's next link is its view.
	head, _, _ := led.Store().Head(ctx, led.Instance())
	if w := show(aud, head); !strings.Contains(w.Body.String(), `id="next" href="`+base+strconv.FormatInt(head+1, 10)+`"`) {
		t.Fatalf("the newest event's page:\n%s", w.Body.String())
	}
	if w := show(aud, head+1); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "console viewed event "+led.Instance()+"/"+strconv.FormatInt(head, 10)) {
		t.Fatalf("the event after the chain's head is its view: HTTP %d\n%s", w.Code, w.Body.String())
	}
	if views, _ := led.Store().Search(ctx, ledger.Query{Type: EventView}); len(views) != 3 {
		t.Fatalf("want 3 console.view events, got %d", len(views))
	}
	// dana sees her own events and not vic's.
	dana := &session{id: &identity.Identity{Subject: "dana@corp.example", Kind: identity.Human}}
	if w := show(dana, evs[0].Seq); w.Code != http.StatusOK {
		t.Fatalf("dana's own event: HTTP %d", w.Code)
	}
	if w := show(dana, middle.Seq); w.Code != http.StatusNotFound || strings.Contains(w.Body.String(), middle.Hash) {
		t.Fatalf("dana opening vic's event: HTTP %d", w.Code)
	}
}
