package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// withBearer adds an Authorization header to every request of an MCP client.
type withBearer string

func (b withBearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// TestMCPAuditSearch: every tool call that reaches a target is found by `audit search --via
// mcp` (and the API's via parameter) with the client's name and version, the tool and the
// purpose, and nothing from the PostgreSQL door is; `audit agents customers --since 7d`
// counts an agent's MCP calls and its wire-protocol statements alike.
func TestMCPAuditSearch(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod",
		Configure: func(c *config.Config) { c.Listen.MCP = "127.0.0.1:0" }})
	p.Upstream.Exec(t, "app", demo.SampleSQL())
	agent := p.Token(t, "support-bot", "agent")
	carol := p.Token(t, "carol", "human", "compliance")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c := sdk.NewClient(&sdk.Implementation{Name: "audit-agent", Version: "4.5.6"}, nil)
	s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: "http://" + p.Instance.MCPAddr() + "/mcp",
		HTTPClient: &http.Client{Transport: withBearer(agent)}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect to the MCP door: %v", err)
	}
	defer s.Close()
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"list_tables", map[string]any{"target": "main"}},
		{"describe_table", map[string]any{"target": "main", "table": "customers"}},
		{"query", map[string]any{"target": "main", "sql": "SELECT email FROM customers LIMIT 3", "purpose": "ticket-42"}},
		{"explain", map[string]any{"target": "main", "sql": "SELECT * FROM customers"}},
		{"execute", map[string]any{"target": "main", "sql": "DROP TABLE customers", "purpose": "cleanup"}},
	}
	for _, cl := range calls {
		if _, err := s.CallTool(ctx, &sdk.CallToolParams{Name: cl.tool, Arguments: cl.args}); err != nil {
			t.Fatalf("%s: %v", cl.tool, err)
		}
	}
	// The same agent over the PostgreSQL wire protocol.
	conn, err := pgx.Connect(ctx, p.DSN("support-bot", agent, ""))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM customers", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	check := func(source string, evs []ledger.Event) {
		t.Helper()
		seen := map[string]ledger.Event{}
		for _, ev := range evs {
			if ev.Via != "mcp" {
				t.Errorf("%s: an event via %q in a search via mcp", source, ev.Via)
			}
			app, tool, _ := strings.Cut(ev.ApplicationName, " tool=")
			if app != "mcp:audit-agent/4.5.6" {
				t.Errorf("%s: application name %q lacks the client's name and version", source, ev.ApplicationName)
			}
			seen[tool] = ev
		}
		for _, cl := range calls {
			ev, ok := seen[cl.tool]
			if !ok {
				t.Errorf("%s: no event of tool %s among %d", source, cl.tool, len(evs))
				continue
			}
			if want, _ := cl.args["purpose"].(string); ev.Purpose != want {
				t.Errorf("%s: %s has purpose %q, want %q", source, cl.tool, ev.Purpose, want)
			}
		}
		if ev := seen["execute"]; ev.Decision != "deny" {
			t.Errorf("%s: the refused DROP is recorded as %q", source, ev.Decision)
		}
	}

	out, err := run(t, "audit", "search", "--via", "mcp", "--type", "statement", "--json", "--data-dir", p.DataDir)
	if err != nil {
		t.Fatalf("audit search --via mcp: %v\n%s", err, out)
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
	check("audit search --via mcp", evs)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+"/api/v1/audit/events?"+url.Values{"via": {"mcp"}, "type": {"statement"}}.Encode(), nil)
	req.SetBasicAuth("carol", carol)
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
		t.Fatalf("GET /api/v1/audit/events?via=mcp: %d %v", resp.StatusCode, err)
	}
	check("API via=mcp", api.Results)

	// The wire-protocol statement is not via mcp, and is found by its own door's via.
	out, err = run(t, "audit", "search", "--via", "query", "--identity", "support-bot", "--type", "statement", "--data-dir", p.DataDir)
	if err != nil || !strings.Contains(out, "count(*)") || strings.Contains(out, "mcp:") {
		t.Errorf("audit search --via query: %v\n%s", err, out)
	}

	out, err = run(t, "audit", "agents", "customers", "--since", "7d", "--json", "--data-dir", p.DataDir)
	if err != nil {
		t.Fatalf("audit agents customers: %v\n%s", err, out)
	}
	var agents []ledger.IdentityCount
	if err := json.Unmarshal([]byte(out), &agents); err != nil {
		t.Fatalf("audit agents --json: %v\n%s", err, out)
	}
	// Every MCP call that touched customers counts (the refused DROP too: the question is who
	// went for the table), and so does the wire-protocol count(*).
	touched := int64(1)
	for _, ev := range evs {
		for _, st := range ev.Statements {
			if slices.ContainsFunc(append(st.TablesRead, st.TablesWritten...), func(tb string) bool { return strings.HasSuffix(tb, "customers") }) {
				touched++
			}
		}
	}
	if len(agents) != 1 || agents[0].Subject != "support-bot" || agents[0].Statements != touched || touched < 4 {
		t.Errorf("audit agents customers --since 7d: %+v; want support-bot with %d statements (its MCP calls and its wire-protocol statement)", agents, touched)
	}
}
