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
