package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/door/mcp"
)

// startMCP serves the MCP door on listen.mcp: plain HTTP on a loopback address, TLS with the
// instance's certificate anywhere else (a bearer token is a credential).
func (in *Instance) startMCP(cfg *config.Config) (*httpServer, error) {
	ln, err := net.Listen("tcp", cfg.Listen.MCP)
	if err != nil {
		return nil, fmt.Errorf("listen for MCP clients on %s: %w", cfg.Listen.MCP, err)
	}
	scheme := "http"
	if !isLoopbackAddr(ln.Addr()) {
		if in.tlsConf == nil {
			ln.Close()
			return nil, errors.New("listen.mcp is not a loopback address and tls.mode is off: the MCP door serves bearer tokens only over TLS off loopback")
		}
		ln = tls.NewListener(ln, in.tlsConf)
		scheme = "https"
	}
	var issuers []string
	for _, o := range cfg.OIDC {
		issuers = append(issuers, o.Issuer)
	}
	door := &mcp.Door{
		Gate: in.gate, Auth: in.auth, Target: in.Target,
		Targets:     func() []config.Target { return in.cfg.Load().Targets },
		ResourceURL: scheme + "://" + ln.Addr().String() + mcp.Path, Issuers: issuers,
		ConsoleURL: in.consoleURL(), Log: in.log.With("door", "mcp"),
	}
	if in.approvals != nil {
		door.Approvals = in.approvals
	}
	h := &httpServer{ln: ln, srv: &http.Server{Handler: door.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

// MCPAddr is the MCP door's address ("" when it is off).
func (in *Instance) MCPAddr() string {
	if in.mcp == nil {
		return ""
	}
	return in.mcp.Addr()
}

func isLoopbackAddr(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
