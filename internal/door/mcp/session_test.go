package mcp_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// events returns the ledger's events of type typ for subject, oldest first.
func events(t *testing.T, p *servertest.Proxy, subject string, typ ledger.EventType) []ledger.Event {
	t.Helper()
	evs, err := p.Instance.Ledger().Store().Search(context.Background(), ledger.Query{Identity: subject, Type: typ, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// waitEvents polls the ledger until want events of typ for subject are there.
func waitEvents(t *testing.T, p *servertest.Proxy, subject string, typ ledger.EventType, want int) []ledger.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := events(t, p, subject, typ)
		if len(evs) >= want || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMCPSessionReuse: a gate session belongs to an MCP session (Mcp-Session-Id) and target,
// not to a call. Many calls of one MCP session are one recorded session, on one upstream
// connection from the pool; when the client ends the MCP session, the gate session's end is
// recorded and the connection goes back to the pool, where the next MCP session finds it
// without logging in again. Calls that run no statement (list_targets, approval_status) are
// on the ledger too, via mcp with the client and the tool. A write over the policy's
// max_affected_rows is rolled back with the rule's words.
func TestMCPSessionReuse(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: `version: 1
grants:
  - name: everyone-admin
    kinds: [human, service, agent]
    level: admin
rules:
  - name: deletes-capped
    when: statement.kind == "DELETE"
    action: allow
    max_affected_rows: 2
masking:
  default: none
`, Configure: func(c *config.Config) { c.Listen.MCP = "127.0.0.1:0" }})
	p.Upstream.Exec(t, "app", "CREATE TABLE items (id int PRIMARY KEY, n int); INSERT INTO items SELECT g, g FROM generate_series(1, 10) g")
	agent := p.Token(t, "reuse-bot", "agent")
	url := "http://" + p.Instance.MCPAddr() + "/mcp"
	pool := p.Instance.Pool()
	if pool == nil {
		t.Fatal("the instance has no upstream pool (pool.mode defaults to session)")
	}
	before := pool.Stats()

	s := connect(t, url, agent)
	for i := range 5 {
		if out, isErr := call(t, s, "query", map[string]any{"target": "main", "sql": "SELECT n FROM items WHERE id = $1", "params": []any{"3"}, "purpose": "reuse"}); isErr || !strings.Contains(out, `"rows":[[3]]`) {
			t.Fatalf("query %d: %v %s", i, isErr, out)
		}
	}
	if out, isErr := call(t, s, "execute", map[string]any{"target": "main", "sql": "UPDATE items SET n = n + 1 WHERE id = 1"}); isErr || !strings.Contains(out, `"command":"UPDATE 1"`) {
		t.Fatalf("execute: %v %s", isErr, out)
	}
	// A failed statement leaves the connection usable for the next call.
	if out, isErr := call(t, s, "query", map[string]any{"target": "main", "sql": "SELECT 1/0"}); !isErr || !strings.Contains(out, "22012") {
		t.Fatalf("division by zero: %v %s", isErr, out)
	}
	// Over the cap: rolled back, with the rule's words.
	if out, isErr := call(t, s, "execute", map[string]any{"target": "main", "sql": "DELETE FROM items WHERE id > 5"}); !isErr || !strings.Contains(out, "more than the limit of 2 affected rows") || !strings.Contains(out, "deletes-capped") {
		t.Fatalf("capped delete: %v %s", isErr, out)
	}
	if out, isErr := call(t, s, "query", map[string]any{"target": "main", "sql": "SELECT count(*) FROM items"}); isErr || !strings.Contains(out, `"rows":[[10]]`) {
		t.Fatalf("the capped delete was not rolled back: %v %s", isErr, out)
	}
	if out, isErr := call(t, s, "execute", map[string]any{"target": "main", "sql": "DELETE FROM items WHERE id = 10"}); isErr || !strings.Contains(out, `"command":"DELETE 1"`) {
		t.Fatalf("delete under the cap: %v %s", isErr, out)
	}
	if out, isErr := call(t, s, "list_targets", nil); isErr || !strings.Contains(out, `"name":"main"`) {
		t.Fatalf("list_targets: %v %s", isErr, out)
	}
	if out, isErr := call(t, s, "approval_status", map[string]any{"id": "apr_0000000000"}); !isErr || !strings.Contains(out, "no approval request") {
		t.Fatalf("approval_status: %v %s", isErr, out)
	}

	starts := events(t, p, "reuse-bot", ledger.EventSessionStart)
	if len(starts) != 1 {
		t.Fatalf("%d session.start events for one MCP session's calls on one target, want 1: %+v", len(starts), starts)
	}
	sessionID := starts[0].SessionID
	var onSession, notes int
	for _, ev := range events(t, p, "reuse-bot", ledger.EventStatement) {
		if ev.Via != "mcp" || !strings.HasPrefix(ev.ApplicationName, "mcp:gatehouse-test-agent/1.2.3 tool=") {
			t.Errorf("statement event not via mcp with the client and tool: via %q, application %q", ev.Via, ev.ApplicationName)
		}
		switch {
		case ev.SessionID == sessionID:
			onSession++
		case len(ev.Statements) == 0 && (strings.HasSuffix(ev.ApplicationName, "tool=list_targets") || strings.HasSuffix(ev.ApplicationName, "tool=approval_status")):
			notes++
		default:
			t.Errorf("statement event outside the MCP session's gate session: %+v", ev)
		}
	}
	if onSession != 10 || notes != 2 {
		t.Errorf("%d statements on the gate session (want 10), %d list_targets/approval_status records (want 2)", onSession, notes)
	}
	if got := pool.Stats(); got.Opened-before.Opened != 1 {
		t.Errorf("upstream logins for one MCP session: %d, want 1 (stats %+v)", got.Opened-before.Opened, got)
	}

	// Ending the MCP session ends the gate session and gives the connection back.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ends := waitEvents(t, p, "reuse-bot", ledger.EventSessionEnd, 1)
	if len(ends) != 1 || ends[0].SessionID != sessionID {
		t.Fatalf("session.end after the MCP session ended: %+v", ends)
	}
	if got := pool.Stats(); got.Kept-before.Kept != 1 || got.Idle < 1 {
		t.Errorf("the connection was not kept in the pool at the session's end: %+v", got)
	}

	// The next MCP session reuses the kept connection (same key: target, database, role and
	// client), and its session state is fresh (DISCARD ALL).
	s2 := connect(t, url, agent)
	if out, isErr := call(t, s2, "query", map[string]any{"target": "main", "sql": "SELECT count(*) FROM pg_prepared_statements"}); isErr || !strings.Contains(out, `"rows":[[0]]`) {
		t.Fatalf("query on a reused connection: %v %s", isErr, out)
	}
	if got := pool.Stats(); got.Opened-before.Opened != 1 || got.Reused-before.Reused != 1 {
		t.Errorf("the second MCP session logged in again: %+v", got)
	}
	if starts := events(t, p, "reuse-bot", ledger.EventSessionStart); len(starts) != 2 {
		t.Errorf("%d session.start events after a second MCP session, want 2", len(starts))
	}

	// Shutting the instance down ends the open MCP session's gate session on the record.
	if err := p.Instance.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := server.OpenLedgerStore(context.Background(), p.Instance.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ends, err = st.Search(context.Background(), ledger.Query{Identity: "reuse-bot", Type: ledger.EventSessionEnd, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) != 2 {
		t.Errorf("%d session.end events after shutdown, want 2 (the second MCP session's too)", len(ends))
	}
}

// TestMCPSessionEndedInGatehouse: an MCP session's gate session is listed live and can be
// ended through the API like a psql session: the MCP session is closed (the client's next
// call fails; a new session works), and the ledger records why it ended.
func TestMCPSessionEndedInGatehouse(t *testing.T) {
	p := servertest.Start(t, servertest.Options{Configure: func(c *config.Config) { c.Listen.MCP = "127.0.0.1:0" }})
	agent := p.Token(t, "ended-bot", "agent")
	sec := p.Token(t, "sam", "human", "security")
	url := "http://" + p.Instance.MCPAddr() + "/mcp"
	s := connect(t, url, agent)
	if out, isErr := call(t, s, "query", map[string]any{"target": "main", "sql": "SELECT 1"}); isErr {
		t.Fatalf("query: %s", out)
	}
	starts := events(t, p, "ended-bot", ledger.EventSessionStart)
	if len(starts) != 1 {
		t.Fatalf("session.start events: %d", len(starts))
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.HTTPAddr+"/api/v1/sessions/"+starts[0].SessionID+"/kill", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+sec)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("end the MCP session through the API: %s", resp.Status)
	}
	ends := waitEvents(t, p, "ended-bot", ledger.EventSessionEnd, 1)
	if len(ends) != 1 || ends[0].SessionID != starts[0].SessionID || !strings.Contains(ends[0].Message, "session ended by sam") {
		t.Fatalf("session.end after the API ended it: %+v", ends)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "query", Arguments: map[string]any{"target": "main", "sql": "SELECT 1"}}); err == nil && !res.IsError {
		t.Fatal("a call on the ended MCP session still ran")
	}
	s2 := connect(t, url, agent)
	if out, isErr := call(t, s2, "query", map[string]any{"target": "main", "sql": "SELECT 1"}); isErr {
		t.Fatalf("query on a new MCP session: %s", out)
	}
}

// TestMCPSessionIdleTimeout: an MCP session left without requests for
// mcp.session_idle_timeout ends, and with it its gate session, on the record.
func TestMCPSessionIdleTimeout(t *testing.T) {
	p := servertest.Start(t, servertest.Options{Configure: func(c *config.Config) {
		c.Listen.MCP = "127.0.0.1:0"
		c.MCP.SessionIdleTimeout = config.Duration(time.Second)
	}})
	agent := p.Token(t, "idle-bot", "agent")
	s := connect(t, "http://"+p.Instance.MCPAddr()+"/mcp", agent)
	if out, isErr := call(t, s, "query", map[string]any{"target": "main", "sql": "SELECT 1"}); isErr {
		t.Fatalf("query: %s", out)
	}
	ends := waitEvents(t, p, "idle-bot", ledger.EventSessionEnd, 1)
	if len(ends) != 1 || ends[0].Message != "mcp session ended" {
		t.Fatalf("session.end after the idle timeout: %+v", ends)
	}
}
