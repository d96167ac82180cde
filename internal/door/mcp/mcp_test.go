package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func connect(t *testing.T, url, token string) *sdk.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-test-agent", Version: "1.2.3"}, nil)
	s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect to the MCP door: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func call(t *testing.T, s *sdk.ClientSession, tool string, args map[string]any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error (a refusal must be a tool error): %v", tool, err)
	}
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		sb.Write(b)
	}
	return sb.String(), res.IsError
}

// TestMCPDoor drives the MCP door with the official Go SDK client over streamable HTTP,
// against a running server and the demo's sensitive fixture in production under the
// built-in policy: every tool goes through the gate (masked rows for an agent, raw for
// compliance, stacked and write statements refused by query, a DROP refused with the rule's
// words, max_rows truncating and saying so), bad tokens get 401 with the resource metadata,
// and every call is on the ledger with via mcp and the client's name.
func TestMCPDoor(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod",
		Configure: func(c *config.Config) { c.Listen.MCP = "127.0.0.1:0" }})
	p.Upstream.Exec(t, "app", demo.SampleSQL())
	agent := p.Token(t, "support-bot", "agent")
	auditor := p.Token(t, "carol", "human", "compliance")
	url := "http://" + p.Instance.MCPAddr() + "/mcp"

	// Tokens: absent and wrong ones get 401 naming the resource metadata.
	for _, tok := range []string{"", "gat_0000000000000000_nope"} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
			t.Errorf("token %q: status %d, WWW-Authenticate %q; want 401 with resource_metadata", tok, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	meta, err := http.Get("http://" + p.Instance.MCPAddr() + "/.well-known/oauth-protected-resource")
	if err != nil || meta.StatusCode != 200 {
		t.Fatalf("protected-resource metadata: %v %v", err, meta)
	}
	meta.Body.Close()

	s := connect(t, url, agent)
	tools, err := s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tl := range tools.Tools {
		names[tl.Name] = tl.Description != "" && tl.InputSchema != nil
	}
	for _, want := range []string{"list_targets", "list_tables", "describe_table", "query", "explain", "execute", "approval_status"} {
		if !names[want] {
			t.Errorf("tool %s missing or without description/schema", want)
		}
	}
	if out, isErr := call(t, s, "list_targets", nil); isErr || !strings.Contains(out, `"name":"main"`) {
		t.Errorf("list_targets: %v %s", isErr, out)
	}
	if out, isErr := call(t, s, "list_tables", map[string]any{"target": "main"}); isErr || !strings.Contains(out, `"customers"`) || !strings.Contains(out, `"ssn"`) {
		t.Errorf("list_tables: %v %s", isErr, out)
	}
	if out, isErr := call(t, s, "describe_table", map[string]any{"target": "main", "table": "customers"}); isErr || !strings.Contains(out, `"masked":true`) {
		t.Errorf("describe_table: %v %s", isErr, out)
	}

	// Masked rows for the agent: no seeded sensitive value in any byte.
	raw := rawValues(t, p.Upstream.DSN("app"), "SELECT email, ssn, card_number, phone, api_key FROM customers")
	q := map[string]any{"target": "main", "sql": "SELECT full_name, email, ssn, card_number, phone, api_key FROM customers", "purpose": "mcp-test"}
	out, isErr := call(t, s, "query", q)
	if isErr || !strings.Contains(out, `"row_count"`) {
		t.Fatalf("query: %v %s", isErr, out)
	}
	for _, row := range raw {
		for _, v := range row {
			if v != "" && strings.Contains(out, v) {
				t.Errorf("the agent's query result carries the raw value %q", v)
			}
		}
	}
	// Compliance sees raw values.
	sc := connect(t, url, auditor)
	if out, isErr := call(t, sc, "query", q); isErr || !strings.Contains(out, raw[0][0]) {
		t.Errorf("compliance query lacks the raw e-mail: %v %.300s", isErr, out)
	}

	for _, tc := range []struct{ tool, sql, want string }{
		{"query", "SELECT 1; DROP TABLE orders", "exactly one statement"},
		{"query", "DELETE FROM orders WHERE id = 1", "only reads"},
		{"execute", "DROP TABLE payments", `denied by rule`},
	} {
		out, isErr := call(t, s, tc.tool, map[string]any{"target": "main", "sql": tc.sql})
		if !isErr || !strings.Contains(out, tc.want) {
			t.Errorf("%s %q: error %v, %s; want a tool error saying %q", tc.tool, tc.sql, isErr, out, tc.want)
		}
	}

	out, isErr = call(t, s, "query", map[string]any{"target": "main", "sql": "SELECT id FROM orders", "max_rows": 1})
	if isErr || !strings.Contains(out, `"truncated":true`) || !strings.Contains(out, `"row_count":1`) {
		t.Errorf("max_rows: %v %s", isErr, out)
	}
	if out, isErr := call(t, s, "explain", map[string]any{"target": "main", "sql": "SELECT * FROM orders"}); isErr || !strings.Contains(out, "Seq Scan") {
		t.Errorf("explain: %v %s", isErr, out)
	}

	// A schema change in production is held: pending_approval with the request id; another
	// DBA approves it through the API; the identical statement then runs, once.
	dana := p.Token(t, "dana", "human", "dba")
	sam := p.Token(t, "sam", "human", "dba")
	sd := connect(t, url, dana)
	alter := map[string]any{"target": "main", "sql": "ALTER TABLE orders ADD COLUMN mcp_note text", "purpose": "ticket-7"}
	out, isErr = call(t, sd, "execute", alter)
	id := regexp.MustCompile(`apr_[0-9a-z]{10}`).FindString(out)
	if isErr || !strings.Contains(out, `"status":"pending_approval"`) || id == "" {
		t.Fatalf("held ALTER TABLE: %v %s", isErr, out)
	}
	status := func(s *sdk.ClientSession, id, want string) {
		t.Helper()
		out, isErr := call(t, s, "approval_status", map[string]any{"id": id})
		if isErr || !strings.Contains(out, `"status":"`+want+`"`) || !strings.Contains(out, `"next"`) {
			t.Errorf("approval_status %s: %v %s; want status %s", id, isErr, out, want)
		}
	}
	status(sd, id, "pending")
	// Another identity's request is answered like an unknown one.
	ss := connect(t, url, sam)
	for _, other := range []string{id, "apr_0000000000"} {
		if out, isErr := call(t, ss, "approval_status", map[string]any{"id": other}); !isErr || !strings.Contains(out, "no approval request") {
			t.Errorf("approval_status of %s by someone else: %v %s", other, isErr, out)
		}
	}
	decide := func(id, verb string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.HTTPAddr+"/api/v1/approvals/"+id+"/"+verb, strings.NewReader(`{"comment":"ok"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+sam)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s through the API: %v %v", verb, id, err, resp)
		}
		resp.Body.Close()
	}
	decide(id, "approve")
	status(sd, id, "approved")
	if out, isErr := call(t, sd, "execute", alter); isErr || !strings.Contains(out, `"status":"ok"`) {
		t.Fatalf("approved ALTER TABLE: %v %s", isErr, out)
	}
	status(sd, id, "used")
	if out, isErr := call(t, sd, "execute", alter); !isErr && strings.Contains(out, `"status":"ok"`) {
		t.Fatalf("an approval ran twice: %s", out)
	}
	// A denied request says so.
	out, _ = call(t, sd, "execute", map[string]any{"target": "main", "sql": "ALTER TABLE orders ADD COLUMN mcp_other text"})
	denied := regexp.MustCompile(`apr_[0-9a-z]{10}`).FindString(out)
	if denied == "" || denied == id {
		t.Fatalf("second held ALTER TABLE: %s", out)
	}
	decide(denied, "deny")
	status(sd, denied, "denied")

	// Every call is on the ledger, through the gate, with via mcp, the client and the purpose.
	evs, err := p.Instance.Ledger().Store().Search(context.Background(), ledger.Query{Identity: "support-bot", Type: ledger.EventStatement, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var viaMCP, withPurpose, refused int
	for _, ev := range evs {
		if ev.Via == "mcp" && strings.HasPrefix(ev.ApplicationName, "mcp:gatehouse-test-agent/1.2.3") {
			viaMCP++
		}
		if ev.Purpose == "mcp-test" && ev.ValuesMasked > 0 {
			withPurpose++
		}
		if ev.Decision == "deny" {
			refused++
		}
	}
	if viaMCP < 8 || withPurpose != 1 || refused < 3 {
		t.Errorf("ledger: %d statements via mcp from the test agent (want >= 8), %d with the purpose and masked values (want 1), %d refusals (want >= 3)", viaMCP, withPurpose, refused)
	}
}

// rawValues reads rows directly from the upstream, as text.
func rawValues(t *testing.T, dsn, sql string) [][]string {
	t.Helper()
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, r := range res[0].Rows {
		row := make([]string, len(r))
		for i, v := range r {
			row[i] = string(v)
		}
		out = append(out, row)
	}
	return out
}
