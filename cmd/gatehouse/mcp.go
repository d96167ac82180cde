package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/door/mcp"
	"github.com/gatehouse/gatehouse/internal/oidclogin"
	"github.com/gatehouse/gatehouse/internal/server"
)

func init() { extraCommands = append(extraCommands, newMCPCmd) }

func newMCPCmd(g *globals) *cobra.Command {
	var server, token, credentials, target string
	cmd := &cobra.Command{
		Use:   "mcp --server URL [--target NAME]",
		Short: "Bridge an agent host that only starts stdio MCP servers to Gatehouse's MCP door",
		Long: `Reads MCP messages (JSON-RPC, one per line) on standard input and forwards each to the
Gatehouse MCP door (streamable HTTP) with your credential, writing the answers to standard
output. Governance runs on the server, never here: this is only a transport.
The credential is --token or $GATEHOUSE_TOKEN (a Gatehouse token, or an OIDC access token whose
audience is the door's URL with the gatehouse:mcp scope), else your ` + "`gatehouse login`" + `: its ID
token is exchanged (RFC 8693, at the server's ` + mcp.ExchangePath + `) for a short-lived
token for the MCP door, again whenever the door refuses the one in use (run ` + "`gatehouse login`" + `
when the sign-in itself expires).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				return errors.New("--server is required: the MCP door's URL, e.g. https://gatehouse.internal:15433/mcp")
			}
			b := &stdioBridge{url: server, target: target, client: &http.Client{Timeout: 5 * time.Minute}}
			if token == "" {
				token = os.Getenv("GATEHOUSE_TOKEN")
			}
			if token != "" {
				b.token = token
			} else {
				path := credentials
				if path == "" {
					var err error
					if path, err = oidclogin.DefaultCredentialsPath(); err != nil {
						return err
					}
				}
				b.exchange = func(ctx context.Context) (string, error) { return exchangeLogin(ctx, b.client, server, path) }
				tok, err := b.exchange(cmd.Context())
				if err != nil {
					return err
				}
				b.token = tok
			}
			return b.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the MCP door's URL (…/mcp)")
	cmd.Flags().StringVar(&token, "token", "", "credential (default $GATEHOUSE_TOKEN, else gatehouse login's, exchanged)")
	cmd.Flags().StringVar(&credentials, "credentials", "", "gatehouse login's credentials file (default: the user's config directory)")
	cmd.Flags().StringVar(&target, "target", "", "pin the connection to this target: tools take it when the agent names none and refuse others")
	cmd.AddCommand(newMCPConfigCmd(), newMCPTokensCmd(g))
	return cmd
}

// newMCPTokensCmd lists and revokes the MCP tokens the token exchange issued (the bridge's
// credentials after `gatehouse login`), from the state store, as `gatehouse token` does for
// Gatehouse tokens.
func newMCPTokensCmd(g *globals) *cobra.Command {
	open := func(ctx context.Context) (*mcp.Exchange, func(), error) {
		cfg, err := g.load()
		if err != nil {
			return nil, nil, err
		}
		db, err := server.OpenStateStore(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		host, _ := os.Hostname()
		led, err := server.OpenLedgerInstance(ctx, cfg, host+"/cli")
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		closeAll := func() {
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			led.Close(c)
			db.Close()
		}
		ex, err := mcp.NewExchange(ctx, db, nil, led, "", time.Hour, g.logger())
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		return ex, closeAll, nil
	}
	cmd := &cobra.Command{Use: "tokens", Short: "List or revoke the MCP tokens issued by the token exchange (gatehouse login + gatehouse mcp)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the active exchanged MCP tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ex, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			toks, err := ex.Active(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%-16s  %-32s  %-20s  %s\n", "ID", "SUBJECT", "EXPIRES", "RESOURCE")
			for _, t := range toks {
				fmt.Fprintf(w, "%-16s  %-32s  %-20s  %s\n", t.ID, t.Subject, t.ExpiresAt.Format(time.RFC3339), t.Resource)
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "revoke SUBJECT",
		Short: "Revoke every active exchanged MCP token of a person: the MCP door refuses them at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ex, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			n, err := ex.RevokeSubject(cmd.Context(), args[0], osUser())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %d MCP token(s) of %s\n", n, args[0])
			return nil
		},
	})
	return cmd
}

// exchangeURL is where the server that serves the MCP door at server exchanges tokens: the
// same origin and path prefix, at mcp.ExchangePath.
func exchangeURL(server string) string {
	return strings.TrimSuffix(strings.TrimSuffix(server, "/"), mcp.Path) + mcp.ExchangePath
}

// exchangeLogin trades the ID token `gatehouse login` stored (credentials file path) for a
// token for the MCP door at server (RFC 8693): the login's token is minted for the CLI
// client, and the door accepts only tokens whose audience is the door itself.
func exchangeLogin(ctx context.Context, hc *http.Client, server, path string) (string, error) {
	creds, err := oidclogin.LoadCredentials(path)
	if err != nil {
		return "", err
	}
	var cred *oidclogin.Credential
	for i := range creds {
		if creds[i].IDToken != "" && (cred == nil || creds[i].Obtained.After(cred.Obtained)) {
			cred = &creds[i]
		}
	}
	if cred == nil {
		return "", errors.New("no credential: set GATEHOUSE_TOKEN to a Gatehouse token, or run `gatehouse login`")
	}
	if exp, err := oidclogin.UnverifiedExpiry(cred.IDToken); err == nil && !time.Now().Before(exp) {
		return "", fmt.Errorf("your sign-in as %s expired at %s: run `gatehouse login`", cred.Subject, exp.Local().Format(time.RFC3339))
	}
	form := url.Values{"grant_type": {mcp.GrantTokenExchange}, "subject_token": {cred.IDToken},
		"subject_token_type": {mcp.TokenTypeIDToken}, "resource": {server}, "scope": {mcp.Scope}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, exchangeURL(server), strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("exchange your sign-in for an MCP token: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return "", fmt.Errorf("exchange your sign-in for an MCP token: %s answered %s", exchangeURL(server), resp.Status)
	}
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		return "", fmt.Errorf("exchange your sign-in as %s for an MCP token: %s (%s); run `gatehouse login` if it expired", cred.Subject, out.Error, out.Description)
	}
	return out.AccessToken, nil
}

// stdioBridge forwards newline-delimited JSON-RPC messages to a streamable HTTP endpoint.
type stdioBridge struct {
	url, token string
	target     string // the pinned target, sent as mcp.TargetHeader ("" for none)
	client     *http.Client
	// exchange, when set, gets a new token (from gatehouse login's sign-in) after the door
	// refused the one in use.
	exchange func(context.Context) (string, error)
	session  string // Mcp-Session-Id the server assigned at initialize
	version  string // protocol version negotiated at initialize
}

// messageHeaders are the HTTP headers the streamable HTTP transport wants for a message:
// its protocol version (initialize's params, or the per-request _meta key newer revisions
// carry), its method, and the name it acts on (a tool, a prompt, a resource).
func messageHeaders(msg []byte) (version, method, name string) {
	var m struct {
		Method string `json:"method"`
		Params struct {
			ProtocolVersion string         `json:"protocolVersion"`
			Name            string         `json:"name"`
			URI             string         `json:"uri"`
			Meta            map[string]any `json:"_meta"`
		} `json:"params"`
	}
	if json.Unmarshal(msg, &m) != nil {
		return "", "", ""
	}
	if v, ok := m.Params.Meta["io.modelcontextprotocol/protocolVersion"].(string); ok && v != "" {
		version = v
	} else if m.Method == "initialize" {
		version = m.Params.ProtocolVersion
	}
	switch m.Method {
	case "tools/call", "prompts/get":
		name = m.Params.Name
	case "resources/read":
		name = m.Params.URI
	}
	return version, m.Method, name
}

// noteVersion keeps the version an initialize result names.
func (b *stdioBridge) noteVersion(answer []byte) {
	var r struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	if json.Unmarshal(answer, &r) == nil && r.Result.ProtocolVersion != "" {
		b.version = r.Result.ProtocolVersion
	}
}

func (b *stdioBridge) run(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	w := bufio.NewWriter(out)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := b.forward(ctx, line, w); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

// forward posts one message and writes every JSON-RPC message of the answer (a JSON body or
// a server-sent event stream) as a line.
func (b *stdioBridge) forward(ctx context.Context, msg []byte, w io.Writer) error {
	resp, err := b.post(ctx, msg)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized && b.exchange != nil {
		// The exchanged token expired or was revoked: exchange the sign-in again, once.
		resp.Body.Close()
		tok, err := b.exchange(ctx)
		if err != nil {
			return err
		}
		b.token = tok
		if resp, err = b.post(ctx, msg); err != nil {
			return err
		}
	}
	defer resp.Body.Close()
	if s := resp.Header.Get("Mcp-Session-Id"); s != "" {
		b.session = s
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return errors.New("the MCP door refused the credential (401): check GATEHOUSE_TOKEN or run `gatehouse login`")
	case resp.StatusCode == http.StatusAccepted:
		return nil // a notification or a response: nothing comes back
	case resp.StatusCode >= 300:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the MCP door answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return copyEvents(resp.Body, w, b.noteVersion)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return fmt.Errorf("the MCP door answered something that is not JSON: %w", err)
	}
	b.noteVersion(compact.Bytes())
	_, err = w.Write(append(compact.Bytes(), '\n'))
	return err
}

// post sends one message to the door with the bridge's credential and session.
func (b *stdioBridge) post(ctx context.Context, msg []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(msg))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+b.token)
	if b.target != "" {
		req.Header.Set(mcp.TargetHeader, b.target)
	}
	if b.session != "" {
		req.Header.Set("Mcp-Session-Id", b.session)
	}
	version, method, name := messageHeaders(msg)
	if version == "" {
		version = b.version
	}
	if version != "" {
		req.Header.Set("Mcp-Protocol-Version", version)
	}
	if method != "" {
		req.Header.Set("Mcp-Method", method)
	}
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the MCP door: %w", err)
	}
	return resp, nil
}

// copyEvents writes the data of each server-sent event as one line.
func copyEvents(r io.Reader, w io.Writer, seen func([]byte)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var data []byte
	flush := func() error {
		if len(data) == 0 {
			return nil
		}
		seen(data)
		_, err := w.Write(append(data, '\n'))
		data = data[:0]
		return err
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if err := flush(); err != nil {
				return err
			}
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")...)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return sc.Err()
}

func newMCPConfigCmd() *cobra.Command {
	var client, target, server string
	cmd := &cobra.Command{
		Use:   "config --client claude|cursor|vscode --server URL",
		Short: "Print the JSON snippet that adds Gatehouse's MCP door to an agent host's configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				return errors.New("--server is required: the MCP door's URL, e.g. https://gatehouse.internal:15433/mcp")
			}
			snippet, err := mcpHostConfig(client, server, target)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			return enc.Encode(snippet)
		},
	}
	cmd.Flags().StringVar(&client, "client", "claude", "agent host: claude (Claude Desktop / Claude Code), cursor or vscode")
	cmd.Flags().StringVar(&server, "server", "", "the MCP door's URL (…/mcp)")
	cmd.Flags().StringVar(&target, "target", "", "pin the entry to this target (without one, the agent picks targets through list_targets)")
	return cmd
}

// mcpHostConfig is the configuration entry for an agent host: streamable HTTP with a bearer
// header where the host supports it (Cursor, VS Code), the stdio bridge where it only starts
// processes (Claude Desktop), which signs in with the user's `gatehouse login` (or
// $GATEHOUSE_TOKEN, an agent's token, when set). With a target, the entry is pinned to it.
func mcpHostConfig(client, server, target string) (any, error) {
	name := "gatehouse"
	header := map[string]string{"Authorization": "Bearer ${env:GATEHOUSE_TOKEN}"}
	args := []string{"mcp", "--server", server}
	if target != "" {
		name = "gatehouse-" + target
		header[mcp.TargetHeader] = target
		args = append(args, "--target", target)
	}
	switch client {
	case "claude":
		return map[string]any{"mcpServers": map[string]any{name: map[string]any{"command": "gatehouse", "args": args}}}, nil
	case "cursor":
		return map[string]any{"mcpServers": map[string]any{name: map[string]any{"url": server, "headers": header}}}, nil
	case "vscode":
		return map[string]any{"servers": map[string]any{name: map[string]any{"type": "http", "url": server, "headers": header}}}, nil
	}
	return nil, fmt.Errorf("--client %q: expected claude, cursor or vscode", client)
}
