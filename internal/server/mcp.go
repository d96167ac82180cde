package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/door/mcp"
	"github.com/gatehouse/gatehouse/internal/door/pg"
)

// pendingDoor is a door whose listener is open but which is not serving yet.
type pendingDoor struct {
	Door
	ln net.Listener
}

// openDoors builds the doors the configuration asks for and opens their listeners: the
// PostgreSQL door on listen.postgres, the MCP door on listen.mcp when set. On error the
// listeners already open are returned too, for the caller to close.
func (in *Instance) openDoors(ctx context.Context, cfg *config.Config) ([]pendingDoor, error) {
	var doors []pendingDoor
	ln, err := net.Listen("tcp", cfg.Listen.Postgres)
	if err != nil {
		return doors, fmt.Errorf("listen for PostgreSQL clients on %s: %w", cfg.Listen.Postgres, err)
	}
	pgs := &pg.Server{
		Gate:                   in.gate,
		Auth:                   in.auth,
		Target:                 in.Target,
		TLS:                    in.tlsConf,
		AllowInsecurePasswords: cfg.AllowInsecurePasswords,
		MaxMessageSize:         cfg.Limits.MaxMessageSize,
		MessageReadTimeout:     time.Duration(cfg.Limits.MessageReadTimeout),
		BufferedMessagesTotal:  cfg.Limits.BufferedMessagesTotal,
		Log:                    in.log.With("door", "postgres"),
		Metrics:                pg.NewMetrics(in.reg),
		Pool:                   in.pool,
	}
	doors = append(doors, pendingDoor{Door: &pgDoor{Server: pgs}, ln: ln})
	if cfg.Listen.MCP != "" {
		d, ln, err := in.openMCP(ctx, cfg)
		if err != nil {
			return doors, err
		}
		doors = append(doors, pendingDoor{Door: d, ln: ln})
	}
	return doors, nil
}

// openMCP builds the MCP door and opens listen.mcp: plain HTTP on a loopback address, TLS
// with the instance's certificate anywhere else (a bearer token is a credential).
func (in *Instance) openMCP(ctx context.Context, cfg *config.Config) (*mcp.Door, net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Listen.MCP)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for MCP clients on %s: %w", cfg.Listen.MCP, err)
	}
	scheme := "http"
	if !isLoopbackAddr(ln.Addr()) {
		if in.tlsConf == nil {
			ln.Close()
			return nil, nil, errors.New("listen.mcp is not a loopback address and tls.mode is off: the MCP door serves bearer tokens only over TLS off loopback")
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
		ResourceURL: mcpResourceURL(cfg, scheme, ln.Addr()), Issuers: issuers,
		ConsoleURL: in.consoleURL(), Log: in.log.With("door", "mcp"),
		Pool: in.pool, SessionIdleTimeout: time.Duration(cfg.MCP.SessionIdleTimeout),
	}
	if in.approvals != nil {
		door.Approvals = in.approvals
	}
	if door.Exchange, err = mcp.NewExchange(ctx, in.db, in.auth, in.ledger, door.ResourceURL, time.Duration(cfg.MCP.TokenTTL), in.log.With("part", "mcp-token-exchange")); err != nil {
		ln.Close()
		return nil, nil, err
	}
	in.mcpExchange = door.Exchange
	return door, ln, nil
}

// mcpResourceURL is the MCP door's public URL: mcp.resource_url when set (behind a reverse
// proxy), else the listener's own.
func mcpResourceURL(cfg *config.Config, scheme string, addr net.Addr) string {
	if cfg.MCP.ResourceURL != "" {
		return cfg.MCP.ResourceURL
	}
	return scheme + "://" + addr.String() + mcp.Path
}

// registerMCPAPI serves the MCP token exchange on the HTTP API too (listen.http and
// listen.https), beside the MCP door's own listener.
func (in *Instance) registerMCPAPI(mux *http.ServeMux) {
	if in.mcpExchange == nil {
		return
	}
	mux.HandleFunc("POST "+mcp.ExchangePath, in.mcpExchange.ServeExchange)
	mux.HandleFunc("POST "+mcp.RevokePath, in.mcpExchange.ServeRevoke)
}

// MCPResourceURL is the MCP door's public URL ("" when it is off).
func (in *Instance) MCPResourceURL() string {
	if d := in.door("mcp"); d != nil {
		if md, ok := d.Door.(*mcp.Door); ok {
			return md.ResourceURL
		}
	}
	return ""
}

// MCPAddr is the MCP door's address ("" when it is off).
func (in *Instance) MCPAddr() string {
	if d := in.door("mcp"); d != nil {
		return d.Addr()
	}
	return ""
}

func isLoopbackAddr(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
