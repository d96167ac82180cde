package config

import (
	"net"
	"net/url"
	"strings"
	"time"
)

// MCP configures the MCP door (listen.mcp) beyond its address.
type MCP struct {
	// ResourceURL is the door's public URL as agents reach it (e.g.
	// https://gatehouse.example.com/mcp behind a reverse proxy that ends TLS). It is the
	// resource named in the OAuth protected-resource metadata (RFC 9728) and the audience an
	// OIDC access token must carry (RFC 8707), so it must be exactly what clients use.
	// Default: http(s)://<listen.mcp>/mcp.
	ResourceURL string `yaml:"resource_url"`
	// SessionIdleTimeout ends an MCP session, its gate sessions and their upstream
	// connections after this long without a request (default 10m).
	SessionIdleTimeout Duration `yaml:"session_idle_timeout"`
	// TokenTTL is how long a bearer token minted by the token exchange
	// (POST /api/v1/mcp/token, used by `gatehouse mcp` after `gatehouse login`) stays good
	// (default 1h, at most the signed-in token's own remaining life).
	TokenTTL Duration `yaml:"token_ttl"`
	Line     int      `yaml:"-"`
}

// Defaults of the MCP section.
const (
	DefaultMCPSessionIdleTimeout = 10 * time.Minute
	DefaultMCPTokenTTL           = time.Hour
)

// validate fills in the defaults and checks the resource URL.
func (m *MCP) validate(errf func(line int, field, format string, args ...any) error, listen string) error {
	if m.SessionIdleTimeout == 0 {
		m.SessionIdleTimeout = Duration(DefaultMCPSessionIdleTimeout)
	}
	if d := time.Duration(m.SessionIdleTimeout); d < time.Second || d > 24*time.Hour {
		return errf(m.Line, "mcp.session_idle_timeout", "%s is out of range: an idle MCP session may stay between 1s and 24h", d)
	}
	if m.TokenTTL == 0 {
		m.TokenTTL = Duration(DefaultMCPTokenTTL)
	}
	if d := time.Duration(m.TokenTTL); d < time.Minute || d > 24*time.Hour {
		return errf(m.Line, "mcp.token_ttl", "%s is out of range: an exchanged MCP token may last between 1m and 24h", d)
	}
	if m.ResourceURL == "" {
		return nil
	}
	if listen == "" {
		return errf(m.Line, "mcp.resource_url", "is set but listen.mcp is not: the MCP door is off")
	}
	u, err := url.Parse(m.ResourceURL)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "":
		return errf(m.Line, "mcp.resource_url", "%q is not an absolute URL, expected e.g. https://gatehouse.example.com/mcp", m.ResourceURL)
	case u.Scheme != "https" && u.Scheme != "http":
		return errf(m.Line, "mcp.resource_url", "%q: the scheme must be https (http only for a loopback host)", m.ResourceURL)
	case u.Scheme == "http" && !loopbackHost(u.Hostname()):
		return errf(m.Line, "mcp.resource_url", "%q is plain http on a host other than loopback: agents would send bearer tokens in the clear; use https", m.ResourceURL)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return errf(m.Line, "mcp.resource_url", "%q has a query, fragment or user info: a resource identifier (RFC 8707) has none", m.ResourceURL)
	case u.Path == "" || u.Path == "/":
		return errf(m.Line, "mcp.resource_url", "%q has no path: name the MCP endpoint, e.g. https://gatehouse.example.com/mcp", m.ResourceURL)
	case strings.HasSuffix(u.Path, "/"):
		return errf(m.Line, "mcp.resource_url", "%q ends in a slash: write it exactly as clients call it, e.g. …/mcp", m.ResourceURL)
	}
	return nil
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
