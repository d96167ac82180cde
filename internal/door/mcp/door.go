// Package mcp is the Model Context Protocol door: AI agents reach databases through MCP tools
// (list_targets, list_tables, describe_table, query, explain, execute, approval_status) over
// streamable HTTP, and every tool call that touches a database goes through the same gate as
// a psql statement — the same identity, inspection, policy, approvals, masking and ledger, with no
// second code path for any of them.
//
// The door owns only the protocol: it authenticates the bearer token (a Gatehouse token; the
// identity and its groups are exactly those a database login would get), keeps a gate session
// per MCP session and target (opened by the first call there, ended with the MCP session, as a
// psql connection is one session for many statements), turns each tool call into a statement
// of that session (Via "mcp"), runs what the gate allows on the session's upstream connection
// (taken from internal/upstream's pool, given back reset) and renders rows, masked by the
// gate's masker, as JSON. A refusal is a tool error carrying the rule's own words, never a
// protocol error.
//
// What a third door (MySQL) needs from the same seams: a gate.Session per client session with
// the identity, target and database; gate.Check for every statement text (the inspector and
// the catalog behind the gate are engine-specific and sit behind its Inspector and Catalog
// interfaces); gate.ResultMasker with gate.Column values built from its own result metadata
// (table identity and column number, type and format, as the catalog understands them);
// gate.Done with the Outcome; and CloseSession. Refusal records are the gate's: a door only
// renders Check.DenyMessage in its protocol's error shape.
package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/upstream"
)

// Path is where the door serves MCP; MetadataPath its OAuth protected-resource metadata
// (RFC 9728).
const (
	Path         = "/mcp"
	MetadataPath = "/.well-known/oauth-protected-resource"
)

// Defaults of the limits a query result is held to.
const (
	DefaultMaxRows          = 1000
	DefaultMaxBytes         = 1 << 20
	DefaultStatementTimeout = 30 * time.Second
)

// BearerAuthenticator turns a bearer credential into an identity (identity.Chain does). An
// OIDC token must name resource, the door's URL, in its audience (RFC 8707), so a token
// minted for another resource is never accepted here.
type BearerAuthenticator interface {
	AuthenticateBearerFor(ctx context.Context, secret, resource string) (*identity.Identity, error)
}

// Scope is the OAuth scope an OIDC access token needs for the MCP door. Gatehouse tokens
// need none: Gatehouse issued them, for its doors, and policy decides what they may do.
const Scope = "gatehouse:mcp"

var _ BearerAuthenticator = (*identity.Chain)(nil)

// Door is the MCP door. Set the fields, then Serve (or serve Handler).
type Door struct {
	// Gate decides, masks and records every statement.
	Gate *gate.Gate
	// Auth authenticates bearer tokens.
	Auth BearerAuthenticator
	// Target returns a target by name, Targets lists them (both follow configuration
	// reloads).
	Target  func(name string) (*config.Target, bool)
	Targets func() []config.Target
	// ResourceURL is this door's public URL (…/mcp, config mcp.resource_url behind a
	// reverse proxy), named in the protected-resource metadata and the audience an OIDC
	// access token must carry; Issuers are the authorization servers it names.
	ResourceURL string
	Issuers     []string
	// MaxRows and MaxBytes bound a query's result (defaults 1000 rows, 1 MiB; a policy's
	// max_rows lowers them); StatementTimeout bounds a statement upstream (default 30s).
	MaxRows          int
	MaxBytes         int
	StatementTimeout time.Duration
	// Approvals reads approval requests for approval_status (nil: the tool says approvals
	// are not available).
	Approvals ApprovalReader
	// ConsoleURL, when set, is where an approval request can be decided (its id is
	// appended as /approvals/ID).
	ConsoleURL string
	// AllowedOrigins are the browser origins allowed to call the door (none by default:
	// agent hosts send no Origin header; a browser page of another site must not).
	AllowedOrigins []string
	Log            *slog.Logger
	// Pool keeps upstream connections between gate sessions (nil: every gate session logs
	// in anew and closes its connection at the end).
	Pool *upstream.Pool
	// Exchange, when set, issues MCP tokens for OIDC sign-ins (RFC 8693, served at
	// ExchangePath) and checks them.
	Exchange *Exchange
	// SessionIdleTimeout ends an MCP session without requests for this long (default
	// DefaultSessionIdleTimeout).
	SessionIdleTimeout time.Duration

	sessions sessionTable
	// srv serves Handler on the listener Serve was given.
	srvMu sync.Mutex
	srv   *http.Server
}

// identityKey carries the authenticated identity in TokenInfo.Extra, clientAddrKey and
// clientTLSKey the address the request came from and whether it came over TLS (a tool call
// sees only the token information of its request, not the request).
const (
	identityKey   = "gatehouse.identity"
	clientAddrKey = "gatehouse.client_addr"
	clientTLSKey  = "gatehouse.tls"
)

// Handler serves the MCP endpoint at Path and the protected-resource metadata. A door serves
// one Handler (its MCP sessions live in the door).
func (d *Door) Handler() http.Handler {
	server := sdk.NewServer(&sdk.Implementation{Name: "gatehouse", Title: "Gatehouse governed database access", Version: "1"},
		&sdk.ServerOptions{Instructions: instructions, Logger: d.log()})
	d.addTools(server)
	idle := d.SessionIdleTimeout
	if idle <= 0 {
		idle = DefaultSessionIdleTimeout
	}
	mcpHandler := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server },
		&sdk.StreamableHTTPOptions{Logger: d.log(), SessionTimeout: idle, DisableLocalhostProtection: true})
	requireAuth := auth.RequireBearerToken(d.verify, &auth.RequireBearerTokenOptions{
		ResourceMetadataURL: d.metadataURL(), AllowMissingExpiration: true,
	})
	mux := http.NewServeMux()
	mux.Handle(Path, d.checkOrigin(requireAuth(d.requireScope(mcpHandler))))
	mux.HandleFunc("GET "+MetadataPath, d.serveMetadata)
	mux.HandleFunc("GET "+MetadataPath+Path, d.serveMetadata)
	if d.Exchange != nil {
		mux.HandleFunc("POST "+ExchangePath, d.Exchange.ServeExchange)
		mux.HandleFunc("POST "+RevokePath, d.Exchange.ServeRevoke)
	}
	if u, err := url.Parse(d.ResourceURL); err == nil && u.Path != "" && u.Path != Path {
		// Behind a reverse proxy that keeps the public path, the resource's own metadata
		// path reaches the door too.
		mux.HandleFunc("GET "+MetadataPath+u.Path, d.serveMetadata)
	}
	return d.checkHost(mux)
}

// Name names the door in logs, metrics and the live session list.
func (d *Door) Name() string { return "mcp" }

// Serve serves Handler on ln (plain or TLS: the caller wraps it) until ln is closed or ctx
// ends; Shutdown ends it.
func (d *Door) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	d.srvMu.Lock()
	if d.srv != nil {
		d.srvMu.Unlock()
		return errors.New("mcp door: Serve called twice")
	}
	d.srv = srv
	d.srvMu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("mcp door: %w", err)
	}
	return nil
}

// Shutdown stops taking requests, ends every MCP session (recording the end of its gate
// sessions and giving their upstream connections back) and waits for calls in flight, or
// until ctx ends.
func (d *Door) Shutdown(ctx context.Context) error {
	d.srvMu.Lock()
	srv := d.srv
	d.srvMu.Unlock()
	var err error
	if srv != nil {
		// Stop new connections first; MCP sessions are ended below (streams of a session
		// would otherwise keep Shutdown waiting).
		done := make(chan error, 1)
		go func() { done <- srv.Shutdown(ctx) }()
		d.closeSessions()
		err = <-done
	} else {
		d.closeSessions()
	}
	return err
}

const instructions = `Gatehouse governs database access: every statement you run is checked by policy, sensitive values come back masked, and every call is recorded. Call list_targets first, then list_tables / describe_table, then query (one read-only statement) or execute (a write or schema change, which may need a human's approval: the result then says pending_approval).`

func (d *Door) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.Default()
}

// metadataURL is where the protected-resource metadata of ResourceURL is (RFC 9728 §3.1: the
// well-known path goes between the host and the resource's path).
func (d *Door) metadataURL() string {
	u, err := url.Parse(d.ResourceURL)
	if err != nil || u.Host == "" {
		return strings.TrimSuffix(d.ResourceURL, Path) + MetadataPath
	}
	return u.Scheme + "://" + u.Host + MetadataPath + strings.TrimSuffix(u.EscapedPath(), "/")
}

// checkHost refuses requests that reached a loopback listener under a host name that is
// neither loopback nor the configured resource's (DNS rebinding: a web page of another
// site resolving its name to 127.0.0.1). The SDK's own check refuses every non-loopback
// name, which would refuse a reverse proxy that forwards the public Host.
func (d *Door) checkHost(next http.Handler) http.Handler {
	public := ""
	if u, err := url.Parse(d.ResourceURL); err == nil {
		public = u.Hostname()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && isLoopback(la) {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			ip := net.ParseIP(host)
			if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) && !strings.EqualFold(host, public) {
				http.Error(w, "host not allowed", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// serveMetadata answers the OAuth protected-resource metadata (RFC 9728).
func (d *Door) serveMetadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"resource":                 d.ResourceURL,
		"authorization_servers":    d.Issuers,
		"bearer_methods_supported": []string{"header"},
		"scopes_supported":         []string{Scope},
		"resource_name":            "Gatehouse MCP",
	})
}

// checkOrigin refuses browser requests from origins not allowed (DNS-rebinding and
// cross-site calls): agent hosts send no Origin header.
func (d *Door) checkOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" {
			ok := false
			for _, a := range d.AllowedOrigins {
				ok = ok || strings.EqualFold(a, o)
			}
			if !ok {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// verify authenticates a bearer token; a refused one is a login.failed on the ledger, as a
// refused database login is.
func (d *Door) verify(ctx context.Context, token string, r *http.Request) (*auth.TokenInfo, error) {
	var id *identity.Identity
	var err error
	if strings.HasPrefix(token, ExchangedTokenPrefix) && d.Exchange != nil {
		id, err = d.Exchange.Authenticate(ctx, token, d.ResourceURL)
	} else {
		id, err = d.Auth.AuthenticateBearerFor(ctx, token, d.ResourceURL)
	}
	if err != nil || id == nil {
		cause := "no identity"
		if err != nil {
			cause = err.Error()
		}
		d.Gate.LoginFailed(ctx, &gate.Session{ClientAddr: r.RemoteAddr, TLS: r.TLS != nil, ApplicationName: "mcp"}, "", "mcp bearer token refused: "+cause)
		return nil, auth.ErrInvalidToken
	}
	info := &auth.TokenInfo{UserID: id.Subject, Expiration: id.ExpiresAt,
		Extra: map[string]any{identityKey: id, clientAddrKey: r.RemoteAddr, clientTLSKey: r.TLS != nil}}
	if id.AuthMethod == identity.AuthMethodOIDC {
		info.Scopes = tokenScopes(id.Claims)
	}
	return info, nil
}

// requireScope answers 403 insufficient_scope (RFC 6750) to an OIDC token without Scope.
func (d *Door) requireScope(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := auth.TokenInfoFromContext(r.Context())
		id, _ := info.Extra[identityKey].(*identity.Identity)
		if id == nil || (id.AuthMethod == identity.AuthMethodOIDC && !slices.Contains(info.Scopes, Scope)) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer error=\"insufficient_scope\", scope=%q, resource_metadata=%q", Scope, d.metadataURL()))
			http.Error(w, "insufficient_scope: this token lacks the scope "+Scope, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenScopes reads an access token's scopes: "scope", space-separated (RFC 9068), or "scp",
// a list or a string (as several IdPs issue it).
func tokenScopes(claims map[string]any) []string {
	var out []string
	for _, name := range []string{"scope", "scp"} {
		switch v := claims[name].(type) {
		case string:
			out = append(out, strings.Fields(v)...)
		case []any:
			for _, s := range v {
				if s, ok := s.(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// callerOf returns the identity of a tool call's bearer token.
func callerOf(req *sdk.CallToolRequest) (*identity.Identity, error) {
	if req.Extra == nil || req.Extra.TokenInfo == nil {
		return nil, errors.New("no authenticated identity on this call")
	}
	id, _ := req.Extra.TokenInfo.Extra[identityKey].(*identity.Identity)
	if id == nil {
		return nil, errors.New("no authenticated identity on this call")
	}
	return id, nil
}
