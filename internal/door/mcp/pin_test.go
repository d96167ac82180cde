package mcp_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/demo"
	"github.com/gatehouse/gatehouse/internal/door/mcp"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// header adds one header to every request, after the bearer.
type header struct {
	name, value string
	next        http.RoundTripper
}

func (h header) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return h.next.RoundTrip(r)
}

// A connection pinned to a target (gatehouse mcp --target, the Gatehouse-Target header) lists
// only that target, runs tools there when the agent names none, and refuses another target as
// a tool error; without a pin, a tool that names no target is refused with what to do.
func TestMCPPinnedTarget(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod",
		Configure: func(c *config.Config) {
			c.Listen.MCP = "127.0.0.1:0"
			other := c.Targets[0]
			other.Name = "other"
			c.Targets = append(c.Targets, other)
		}})
	p.Upstream.Exec(t, "app", demo.SampleSQL())
	agent := p.Token(t, "support-bot", "agent")
	url := "http://" + p.Instance.MCPAddr() + "/mcp"

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := sdk.NewClient(&sdk.Implementation{Name: "pinned-agent", Version: "1"}, nil)
	pinned, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url, DisableStandaloneSSE: true,
		HTTPClient: &http.Client{Transport: header{mcp.TargetHeader, "main", bearer{agent, http.DefaultTransport}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()

	if out, isErr := call(t, pinned, "list_targets", nil); isErr || !strings.Contains(out, `"main"`) || strings.Contains(out, `"other"`) {
		t.Errorf("pinned list_targets: want main only: %s", out)
	}
	if out, isErr := call(t, pinned, "query", map[string]any{"sql": "SELECT count(*) AS n FROM customers"}); isErr || !strings.Contains(out, `"n"`) {
		t.Errorf("pinned query without a target did not run on the pinned one: %s", out)
	}
	if out, isErr := call(t, pinned, "describe_table", map[string]any{"table": "customers"}); isErr || !strings.Contains(out, `"masked":true`) {
		t.Errorf("pinned describe_table without a target: %s", out)
	}
	for tool, args := range map[string]map[string]any{
		"query":       {"target": "other", "sql": "SELECT 1"},
		"list_tables": {"target": "other"},
	} {
		if out, isErr := call(t, pinned, tool, args); !isErr || !strings.Contains(out, `pinned to target \"main\"`) && !strings.Contains(out, `pinned to target "main"`) {
			t.Errorf("pinned %s on another target: want a tool error naming the pin, got %v %s", tool, isErr, out)
		}
	}

	free := connect(t, url, agent)
	if out, isErr := call(t, free, "list_targets", nil); isErr || !strings.Contains(out, `"main"`) || !strings.Contains(out, `"other"`) {
		t.Errorf("unpinned list_targets: want both targets: %s", out)
	}
	if out, isErr := call(t, free, "query", map[string]any{"sql": "SELECT 1"}); !isErr || !strings.Contains(out, "name a target") {
		t.Errorf("unpinned query without a target: want a tool error, got %v %s", isErr, out)
	}
	if out, isErr := call(t, free, "query", map[string]any{"target": "other", "sql": "SELECT 1 AS one"}); isErr || !strings.Contains(out, `"one"`) {
		t.Errorf("unpinned query on other: %s", out)
	}
}
