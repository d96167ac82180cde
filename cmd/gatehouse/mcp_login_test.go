package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/door/mcp"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/oidclogin"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// TestMCPBridgeAfterLogin: `gatehouse login` (the device flow against the in-test IdP), then
// `gatehouse mcp` with no GATEHOUSE_TOKEN. The login's ID token is minted for the CLI client,
// so the MCP door refuses it as it is; the bridge exchanges it (RFC 8693) for a Gatehouse
// token whose audience is the door and whose scope is gatehouse:mcp, and the official SDK
// client works through the bridge as the signed-in person. The exchange is on the ledger; a
// revoked exchanged token is refused by the door and the bridge exchanges again; a token the
// exchange issued works nowhere else (the PostgreSQL door), and an expired sign-in is refused
// with a login.failed on record. An administrator lists and revokes exchanged tokens with
// `gatehouse mcp tokens`.
func TestMCPBridgeAfterLogin(t *testing.T) {
	prov := idp.Start(t)
	gh := servertest.Start(t, servertest.Options{Configure: func(cfg *config.Config) {
		cfg.Listen.MCP = "127.0.0.1:0"
		cfg.OIDC = []config.OIDC{{Issuer: prov.Issuer, Audience: []string{idp.CLIClientID}, CAFile: prov.CAFile, CLIClientID: idp.CLIClientID}}
	}})
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("HOME", home)
	t.Setenv("GATEHOUSE_TOKEN", "")
	credPath := filepath.Join(home, "config", "gatehouse", "credentials.json")
	const user = "mia@corp.example"
	r := startLogin(t, "--issuer", prov.Issuer, "--client-id", idp.CLIClientID, "--ca-file", prov.CAFile)
	prov.ApproveDevice(t, r.userCode(t, prov), user, "dba")
	if err := r.wait(t); err != nil {
		t.Fatalf("login: %v\n%s", err, r.stderr.String())
	}
	creds, err := oidclogin.LoadCredentials(credPath)
	if err != nil || len(creds) != 1 {
		t.Fatalf("stored credentials: %v %v", creds, err)
	}
	server := "http://" + gh.Instance.MCPAddr() + mcp.Path
	if status, _ := mcpListTools(t, server, creds[0].IDToken); status != http.StatusUnauthorized {
		t.Fatalf("the login's ID token itself at the MCP door: %d, want 401 (its audience is the CLI client)", status)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := &stdioBridge{url: server, client: http.DefaultClient}
	b.exchange = func(ctx context.Context) (string, error) { return exchangeLogin(ctx, b.client, server, credPath) }
	if b.token, err = b.exchange(ctx); err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if !strings.HasPrefix(b.token, mcp.ExchangedTokenPrefix) {
		t.Fatalf("exchanged token %q lacks the %s prefix", b.token, mcp.ExchangedTokenPrefix)
	}
	first := b.token
	clientIn, bridgeOut := io.Pipe()
	bridgeIn, clientOut := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- b.run(ctx, bridgeIn, bridgeOut)
		bridgeOut.Close()
	}()
	c := sdk.NewClient(&sdk.Implementation{Name: "stdio-host", Version: "0.2"}, nil)
	s, err := c.Connect(ctx, &sdk.IOTransport{Reader: clientIn, Writer: clientOut}, nil)
	if err != nil {
		t.Fatalf("connect through the bridge: %v", err)
	}
	query := func() string {
		t.Helper()
		res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "query", Arguments: map[string]any{"target": "main", "sql": "SELECT current_setting('application_name') AS app, 6 * 7 AS answer"}})
		if err != nil || res.IsError {
			t.Fatalf("query through the bridge: %v %+v", err, res)
		}
		out, _ := json.Marshal(res.StructuredContent)
		return string(out)
	}
	if out := query(); !strings.Contains(out, "42") {
		t.Fatalf("query result: %s", out)
	}

	// The holder revokes the exchanged token: the door refuses it, the bridge exchanges the
	// sign-in again and the session goes on.
	resp, err := http.PostForm("http://"+gh.HTTPAddr+mcp.RevokePath, url.Values{"token": {first}})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %v %v", err, resp)
	}
	resp.Body.Close()
	if status, _ := mcpListTools(t, server, first); status != http.StatusUnauthorized {
		t.Fatalf("revoked exchanged token: %d, want 401", status)
	}
	if out := query(); !strings.Contains(out, "42") || b.token == first {
		t.Fatalf("after revocation: %s (token renewed: %v)", out, b.token != first)
	}
	s.Close()
	clientOut.Close()
	if err := <-done; err != nil {
		t.Fatalf("bridge: %v", err)
	}

	// Everything on record, as the signed-in person.
	evs, err := gh.Instance.Ledger().Store().Search(ctx, ledger.Query{Identity: user, Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	var created, revoked, statements int
	for _, ev := range evs {
		switch {
		case ev.Type == ledger.EventTokenCreate && strings.Contains(ev.Message, "audience "+server) && strings.Contains(ev.Message, mcp.Scope):
			created++
		case ev.Type == ledger.EventTokenRevoke:
			revoked++
		case ev.Type == ledger.EventStatement && ev.Via == "mcp" && strings.HasPrefix(ev.ApplicationName, "mcp:stdio-host/0.2 tool=query"):
			statements++
		}
	}
	if created != 2 || revoked != 1 || statements != 2 {
		t.Errorf("ledger for %s: %d exchanges (want 2), %d revocations (want 1), %d queries via mcp (want 2)", user, created, revoked, statements)
	}

	// An exchanged token is for the MCP door only: the PostgreSQL door refuses it.
	if out, err := psqlQuery(t, gh, "localhost", user, "PGPASSWORD="+b.token); err == nil {
		t.Errorf("psql with an exchanged MCP token succeeded: %s", out)
	}
	// An administrator lists and revokes a person's exchanged tokens; the door refuses them.
	cfgPath := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(cfgPath, []byte("data_dir: "+gh.DataDir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "mcp", "tokens", "list", "--config", cfgPath); err != nil || !strings.Contains(out, user) || !strings.Contains(out, server) {
		t.Fatalf("mcp tokens list: %v\n%s", err, out)
	}
	if out, err := run(t, "mcp", "tokens", "revoke", user, "--config", cfgPath); err != nil || !strings.Contains(out, "revoked 1 MCP token(s) of "+user) {
		t.Fatalf("mcp tokens revoke: %v\n%s", err, out)
	}
	if status, _ := mcpListTools(t, server, b.token); status != http.StatusUnauthorized {
		t.Errorf("an exchanged token revoked by an administrator: %d, want 401", status)
	}

	// An expired sign-in is not exchanged, and the refusal is on record.
	expired := prov.Token(t, idp.Claims{Subject: user, Audience: []string{idp.CLIClientID}, TTL: -time.Minute})
	resp, err = http.PostForm("http://"+gh.HTTPAddr+mcp.ExchangePath, url.Values{"grant_type": {mcp.GrantTokenExchange},
		"subject_token": {expired}, "subject_token_type": {mcp.TokenTypeIDToken}, "resource": {server}})
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || answer.Error != "invalid_grant" {
		t.Errorf("exchange of an expired sign-in: %d %q, want 400 invalid_grant", resp.StatusCode, answer.Error)
	}
	// A token for another resource is not issued.
	resp, err = http.PostForm("http://"+gh.HTTPAddr+mcp.ExchangePath, url.Values{"grant_type": {mcp.GrantTokenExchange},
		"subject_token": {creds[0].IDToken}, "subject_token_type": {mcp.TokenTypeIDToken}, "resource": {"https://elsewhere.example/mcp"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || answer.Error != "invalid_target" {
		t.Errorf("exchange for another resource: %d %q, want 400 invalid_target", resp.StatusCode, answer.Error)
	}
	fails, err := gh.Instance.Ledger().Store().Search(ctx, ledger.Query{Type: ledger.EventLoginFailed, Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range fails {
		found = found || strings.Contains(ev.Message, "mcp token exchange refused")
	}
	if !found {
		t.Error("the refused exchange is not a login.failed on the ledger")
	}
}

// mcpListTools posts a tools/list with token and returns the status and WWW-Authenticate.
func mcpListTools(t *testing.T, server, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, server, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}
