package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// `audit search --rule` and the API's ?rule= find the events a policy rule decided, and
// only those.
func TestAuditSearchRule(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod"})
	p.Upstream.Exec(t, "app", "CREATE TABLE orders (id int)")
	dana := p.Token(t, "dana", "human", "dba")
	aud := p.Token(t, "aud", "human", "auditors")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("dana", dana, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "DELETE FROM orders"); err == nil {
		t.Fatal("DELETE without WHERE was not refused")
	}
	if _, err := c.Exec(ctx, "SELECT count(*) FROM orders"); err != nil {
		t.Fatal(err)
	}
	const rule = "no-update-or-delete-without-where"
	check := func(source string, evs []ledger.Event) {
		t.Helper()
		if len(evs) != 1 || evs[0].Rule != rule || len(evs[0].Statements) != 1 || !strings.Contains(evs[0].Statements[0].Redacted, "DELETE FROM orders") {
			t.Fatalf("%s: %+v", source, evs)
		}
	}
	out, err := run(t, "audit", "search", "--rule", rule, "--json", "--data-dir", p.DataDir)
	if err != nil {
		t.Fatalf("audit search --rule: %v\n%s", err, out)
	}
	var evs []ledger.Event
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var ev ledger.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("audit search --json: %v\n%s", err, out)
		}
		evs = append(evs, ev)
	}
	check("audit search --rule", evs)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+"/api/v1/audit/events?"+url.Values{"rule": {rule}}.Encode(), nil)
	req.SetBasicAuth("aud", aud)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var api struct {
		Results []ledger.Event `json:"results"`
	}
	err = json.NewDecoder(resp.Body).Decode(&api)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/audit/events?rule=: %d %v", resp.StatusCode, err)
	}
	check("API rule=", api.Results)
}
