package mcp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// nodeCall is one tool call for test/clients/mcpnode/client.mjs.
type nodeCall struct {
	Tool string         `json:"tool"`
	Args map[string]any `json:"args,omitempty"`
}

// nodeOutput is what client.mjs prints.
type nodeOutput struct {
	Server struct {
		Name string `json:"name"`
	} `json:"server"`
	Tools []struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		HasSchema   bool   `json:"hasSchema"`
	} `json:"tools"`
	Results []struct {
		Tool          string          `json:"tool"`
		IsError       bool            `json:"isError"`
		Text          string          `json:"text"`
		Structured    json.RawMessage `json:"structured"`
		ProtocolError string          `json:"protocolError"`
	} `json:"results"`
}

// runNodeClient runs the TypeScript MCP SDK client (installed by scripts/deps.sh) against url.
func runNodeClient(t *testing.T, url, token string, calls []nodeCall) nodeOutput {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (scripts/deps.sh installs it): %v", err)
	}
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "test", "clients", "mcpnode")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		t.Fatalf("the TypeScript MCP SDK is not installed in %s (run scripts/deps.sh): %v", dir, err)
	}
	args, err := json.Marshal(calls)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "client.mjs"), url, token, string(args))
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node client.mjs: %v\nstderr: %s\nstdout: %s", err, stderr.String(), stdout.String())
	}
	var out nodeOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("node client.mjs printed no JSON: %v\n%s", err, stdout.String())
	}
	return out
}

// TestMCPNodeClient connects with a third-party client, the TypeScript
// @modelcontextprotocol/sdk run by node: it lists the tools and calls each one through the
// gate (masked rows for an agent, refusals as tool errors, a held statement as
// pending_approval whose state approval_status reports).
func TestMCPNodeClient(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod",
		Configure: func(c *config.Config) { c.Listen.MCP = "127.0.0.1:0" }})
	p.Upstream.Exec(t, "app", demo.SampleSQL())
	agent := p.Token(t, "support-bot", "agent")
	url := "http://" + p.Instance.MCPAddr() + "/mcp"

	raw := rawValues(t, p.Upstream.DSN("app"), "SELECT email, ssn FROM customers LIMIT 5")
	out := runNodeClient(t, url, agent, []nodeCall{
		{Tool: "list_targets"},
		{Tool: "list_tables", Args: map[string]any{"target": "main"}},
		{Tool: "describe_table", Args: map[string]any{"target": "main", "table": "customers"}},
		{Tool: "query", Args: map[string]any{"target": "main", "sql": "SELECT email, ssn FROM customers LIMIT 5", "purpose": "node-test"}},
		{Tool: "explain", Args: map[string]any{"target": "main", "sql": "SELECT * FROM orders"}},
		{Tool: "execute", Args: map[string]any{"target": "main", "sql": "DROP TABLE payments"}},
		{Tool: "query", Args: map[string]any{"target": "main", "sql": "SELECT 1; DROP TABLE orders"}},
		{Tool: "approval_status", Args: map[string]any{"id": "apr_0000000000"}},
	})
	if out.Server.Name == "" {
		t.Errorf("no server info from initialize: %+v", out.Server)
	}
	listed := map[string]bool{}
	for _, tl := range out.Tools {
		listed[tl.Name] = tl.Description != "" && tl.HasSchema
	}
	for _, want := range []string{"list_targets", "list_tables", "describe_table", "query", "explain", "execute", "approval_status"} {
		if !listed[want] {
			t.Errorf("node client: tool %s missing or without description/schema", want)
		}
	}
	want := []struct {
		isErr bool
		has   string
	}{
		{false, `"name":"main"`},
		{false, `"ssn"`},
		{false, `"masked":true`},
		{false, `"row_count":5`},
		{false, "Seq Scan"},
		{true, "denied by rule"},
		{true, "exactly one statement"},
		{true, "no approval request"},
	}
	if len(out.Results) != len(want) {
		t.Fatalf("node client: %d results, want %d: %+v", len(out.Results), len(want), out.Results)
	}
	for i, w := range want {
		r := out.Results[i]
		body := r.Text + string(r.Structured)
		if r.ProtocolError != "" {
			t.Errorf("node %s: protocol error (a refusal must be a tool error): %s", r.Tool, r.ProtocolError)
			continue
		}
		if r.IsError != w.isErr || !strings.Contains(body, w.has) {
			t.Errorf("node %s: isError %v, %.400s; want isError %v containing %q", r.Tool, r.IsError, body, w.isErr, w.has)
		}
		for _, row := range raw {
			for _, v := range row {
				if v != "" && strings.Contains(body, v) {
					t.Errorf("node %s: result carries the raw value %q", r.Tool, v)
				}
			}
		}
	}
}
