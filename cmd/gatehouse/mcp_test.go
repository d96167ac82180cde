package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// TestMCPStdioBridge: an agent host that only starts stdio servers reaches the MCP door
// through `gatehouse mcp`: the official SDK client speaks stdio to the bridge, which forwards
// every message with the user's credential; governance stays on the server.
func TestMCPStdioBridge(t *testing.T) {
	p := servertest.Start(t, servertest.Options{Configure: func(c *config.Config) { c.Listen.MCP = "127.0.0.1:0" }})
	secret := p.Token(t, "bridge-bot", "agent")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clientIn, bridgeOut := io.Pipe()
	bridgeIn, clientOut := io.Pipe()
	b := &stdioBridge{url: "http://" + p.Instance.MCPAddr() + "/mcp", token: secret, client: http.DefaultClient}
	done := make(chan error, 1)
	go func() {
		done <- b.run(ctx, bridgeIn, bridgeOut)
		bridgeOut.Close()
	}()
	c := sdk.NewClient(&sdk.Implementation{Name: "stdio-host", Version: "0.1"}, nil)
	s, err := c.Connect(ctx, &sdk.IOTransport{Reader: clientIn, Writer: clientOut}, nil)
	if err != nil {
		select {
		case berr := <-done:
			t.Fatalf("connect through the bridge: %v (bridge: %v)", err, berr)
		default:
			t.Fatalf("connect through the bridge: %v", err)
		}
	}
	tools, err := s.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) < 6 {
		t.Fatalf("list tools through the bridge: %v %v", err, tools)
	}
	res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "query", Arguments: map[string]any{"target": "main", "sql": "SELECT 40 + 2 AS answer"}})
	if err != nil || res.IsError {
		t.Fatalf("query through the bridge: %v %+v", err, res)
	}
	b2, _ := json.Marshal(res.StructuredContent)
	if !strings.Contains(string(b2), "42") {
		t.Fatalf("query result through the bridge: %s", b2)
	}
	s.Close()
	clientOut.Close()
	if err := <-done; err != nil {
		t.Fatalf("bridge: %v", err)
	}
}

func TestMCPHostConfig(t *testing.T) {
	for _, tc := range []struct{ client, want string }{
		{"claude", `"--target",
        "prod-db"`},
		{"cursor", `"Gatehouse-Target": "prod-db"`},
		{"vscode", `"Gatehouse-Target": "prod-db"`},
	} {
		out, err := run(t, "mcp", "config", "--client", tc.client, "--server", "https://gh.example:15433/mcp", "--target", "prod-db")
		if err != nil || !strings.Contains(out, tc.want) || !json.Valid([]byte(out)) || strings.Contains(out, `\u003c`) {
			t.Errorf("mcp config --client %s: %v\n%s", tc.client, err, out)
		}
	}
	if _, err := run(t, "mcp", "config", "--client", "emacs", "--server", "x"); err == nil {
		t.Error("an unknown agent host was accepted")
	}
}
