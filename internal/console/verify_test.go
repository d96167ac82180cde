package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// A ledger verification run from the evidence page is a ledger event with its result, and the
// overview shows the last one from the ledger: after a restart (a new console over the same
// ledger) and on any instance sharing the store, not only in the memory of the console that
// ran it.
func TestLastVerificationFromLedger(t *testing.T) {
	c, led := testConsole(t)
	if d := c.overviewOf(context.Background(), &viewer{session: viewerIn("security"), r: httptest.NewRequest(http.MethodGet, "/console/", nil)}); d.LastVerify != nil {
		t.Fatalf("a verification before any was run: %+v", d.LastVerify)
	}
	req := httptest.NewRequest(http.MethodGet, "/console/evidence?since=1d", nil)
	w := httptest.NewRecorder()
	c.evidencePage(w, &viewer{session: viewerIn("security"), r: req})
	if w.Code != http.StatusOK {
		t.Fatalf("evidence page: %d %s", w.Code, w.Body.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := led.Store().Search(ctx, ledger.Query{Type: EventVerified})
	if err != nil || len(evs) != 1 || evs[0].Rows != 0 || evs[0].Subject != "someone@corp.example" {
		t.Fatalf("the verification is not on the ledger with its result: %v %+v", err, evs)
	}
	// Another console over the same ledger (a restart, or another instance) knows of it.
	other, err := New(c.opts)
	if err != nil {
		t.Fatal(err)
	}
	d := other.overviewOf(ctx, &viewer{session: viewerIn("security"), r: httptest.NewRequest(http.MethodGet, "/console/", nil)})
	if d.LastVerify == nil || !d.LastVerify.OK || d.LastVerify.By != "someone@corp.example" {
		t.Fatalf("the overview of another console does not show the last verification: %+v", d.LastVerify)
	}
}
