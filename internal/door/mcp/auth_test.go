package mcp_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/door/mcp"
	"github.com/gatehouse/gatehouse/internal/server"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// listTools posts a tools/list with token and returns the status and WWW-Authenticate.
func listTools(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// TestMCPAuthorization: the door is an OAuth protected resource. An OIDC access token is
// accepted only when its audience is the door's own URL (RFC 8707) and it carries the
// gatehouse:mcp scope; a token for another resource (the database login's audience, another
// server) gets 401 with the resource metadata, a token without the scope 403
// insufficient_scope. Gatehouse tokens need no scope; revoked and expired ones get 401.
func TestMCPAuthorization(t *testing.T) {
	prov := idp.Start(t)
	p := servertest.Start(t, servertest.Options{Configure: func(c *config.Config) {
		c.Listen.MCP = "127.0.0.1:0"
		c.OIDC = []config.OIDC{{Issuer: prov.Issuer, Audience: []string{prov.ClientID}, CAFile: prov.CAFile}}
	}})
	resource := "http://" + p.Instance.MCPAddr() + mcp.Path
	ctx := context.Background()

	withScope := map[string]any{"scope": mcp.Scope}
	for _, tc := range []struct {
		name   string
		claims idp.Claims
		status int
	}{
		{"audience is the MCP resource, with scope", idp.Claims{Subject: "ann@corp.example", Audience: []string{resource}, Extra: withScope}, http.StatusOK},
		{"scope among others", idp.Claims{Subject: "ann@corp.example", Audience: []string{"other", resource}, Extra: map[string]any{"scope": "openid " + mcp.Scope}}, http.StatusOK},
		{"audience of database logins", idp.Claims{Subject: "ann@corp.example", Audience: []string{prov.ClientID}, Extra: withScope}, http.StatusUnauthorized},
		{"audience of another MCP server", idp.Claims{Subject: "ann@corp.example", Audience: []string{"https://mcp.elsewhere.example/mcp"}, Extra: withScope}, http.StatusUnauthorized},
		{"expired", idp.Claims{Subject: "ann@corp.example", Audience: []string{resource}, Extra: withScope, TTL: -time.Minute}, http.StatusUnauthorized},
		{"without the scope", idp.Claims{Subject: "ann@corp.example", Audience: []string{resource}}, http.StatusForbidden},
	} {
		status, www := listTools(t, resource, prov.Token(t, tc.claims))
		if status != tc.status {
			t.Errorf("OIDC token, %s: status %d, want %d (WWW-Authenticate %q)", tc.name, status, tc.status, www)
			continue
		}
		switch status {
		case http.StatusUnauthorized:
			if !strings.Contains(www, "resource_metadata=") {
				t.Errorf("OIDC token, %s: WWW-Authenticate %q lacks resource_metadata", tc.name, www)
			}
		case http.StatusForbidden:
			if !strings.Contains(www, `error="insufficient_scope"`) || !strings.Contains(www, mcp.Scope) || !strings.Contains(www, "resource_metadata=") {
				t.Errorf("OIDC token, %s: WWW-Authenticate %q; want insufficient_scope naming %s and the resource metadata", tc.name, www, mcp.Scope)
			}
		}
	}
	// A token the door accepts works end to end (the identity is the OIDC subject).
	s := connect(t, resource, prov.Token(t, idp.Claims{Subject: "ann@corp.example", Audience: []string{resource}, Extra: withScope}))
	if _, err := s.ListTools(ctx, nil); err != nil {
		t.Fatalf("list tools with an accepted OIDC token: %v", err)
	}

	// Gatehouse tokens: no scope needed; revoked and expired ones are refused with 401.
	agent := p.Token(t, "bot-1", "agent")
	if status, www := listTools(t, resource, agent); status != http.StatusOK {
		t.Fatalf("agent token: %d %q", status, www)
	}
	if err := p.Instance.Tokens().Revoke(ctx, "bot-1"); err != nil {
		t.Fatal(err)
	}
	expiring := p.Token(t, "bot-2", "agent")
	db, err := sql.Open("sqlite", filepath.Join(p.DataDir, server.StateDBFile)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.ExecContext(ctx, `UPDATE identity_tokens SET expires_at = ? WHERE name = 'bot-2'`, time.Now().Add(-time.Second).UnixNano())
	if err != nil {
		t.Fatalf("expire bot-2: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("expire bot-2: %d rows", n)
	}
	time.Sleep(1500 * time.Millisecond) // past the token validator's cache (identity.MaxCacheTTL)
	for name, tok := range map[string]string{"revoked": agent, "expired": expiring} {
		status, www := listTools(t, resource, tok)
		if status != http.StatusUnauthorized || !strings.Contains(www, "resource_metadata=") {
			t.Errorf("%s Gatehouse token: status %d, WWW-Authenticate %q; want 401 with resource_metadata", name, status, www)
		}
	}
}

// TestMCPResourceURL: behind a reverse proxy the door is the resource mcp.resource_url names.
// The protected-resource metadata names it (at its RFC 9728 path too), an OIDC token must
// carry it as its audience (a token for the listener's own address is refused), and requests
// that come with its public host name are served while other non-loopback names are refused
// (DNS rebinding).
func TestMCPResourceURL(t *testing.T) {
	const public = "https://db-gateway.example.test/agents/mcp"
	prov := idp.Start(t)
	p := servertest.Start(t, servertest.Options{Configure: func(c *config.Config) {
		c.Listen.MCP = "127.0.0.1:0"
		c.MCP.ResourceURL = public
		c.OIDC = []config.OIDC{{Issuer: prov.Issuer, Audience: []string{prov.ClientID}, CAFile: prov.CAFile}}
	}})
	local := "http://" + p.Instance.MCPAddr() + mcp.Path
	post := func(host, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, local, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	scoped := map[string]any{"scope": mcp.Scope}
	good := prov.Token(t, idp.Claims{Subject: "ann@corp.example", Audience: []string{public}, Extra: scoped})
	if status, www := post("db-gateway.example.test", good); status != http.StatusOK {
		t.Errorf("token for the public resource, public host: %d %q", status, www)
	}
	status, www := post("db-gateway.example.test", prov.Token(t, idp.Claims{Subject: "ann@corp.example", Audience: []string{local}, Extra: scoped}))
	if status != http.StatusUnauthorized || !strings.Contains(www, `resource_metadata="https://db-gateway.example.test/.well-known/oauth-protected-resource/agents/mcp"`) {
		t.Errorf("token for the listener's address: %d %q; want 401 naming the public metadata URL", status, www)
	}
	if status, _ := post("attacker.example.test", good); status != http.StatusForbidden {
		t.Errorf("another host name on the loopback listener: %d, want 403", status)
	}
	for _, path := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/agents/mcp"} {
		resp, err := http.Get("http://" + p.Instance.MCPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			Resource string `json:"resource"`
		}
		err = json.NewDecoder(resp.Body).Decode(&meta)
		resp.Body.Close()
		if err != nil || meta.Resource != public {
			t.Errorf("metadata at %s: %v, resource %q; want %q", path, err, meta.Resource, public)
		}
	}
}
