package upstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Statements is an upstream connection that a door drives through pgconn, running statements
// of its own (the MCP door's tool calls) instead of relaying a client's protocol messages. It
// is a pool connection rebuilt into a *pgconn.PgConn (pgconn.Construct), so a door that runs
// statements shares the pool, its key (the upstream role included) and its reset rules with
// the PostgreSQL door's relayed sessions: no second login path, and no connection is handed
// to another key or kept without DISCARD ALL.
type Statements struct {
	*pgconn.PgConn
	up *Conn
}

// Reused reports whether the connection served an earlier session (and was reset since).
func (s *Statements) Reused() bool { return s.up.Reused }

// GetStatements takes a connection of r's key from the pool (a nil pool logs in anew every
// time) and rebuilds it into a PgConn ready for statements. Give it back with PutStatements.
func (p *Pool) GetStatements(ctx context.Context, r Request) (*Statements, error) {
	cfg, err := Config(r)
	if err != nil {
		return nil, err
	}
	var c *Conn
	if p != nil {
		c, err = p.Get(ctx, r)
	} else {
		c, err = Open(ctx, r)
	}
	if err != nil {
		return nil, err
	}
	// The connection itself (not its network connection) is pgconn's: its Read returns first
	// any bytes the previous session or the reset left unread.
	pc, err := pgconn.Construct(&pgconn.HijackedConn{Conn: c, PID: c.PID, SecretKey: c.SecretKey,
		ParameterStatuses: c.ParameterStatuses, TxStatus: c.TxStatus, Config: cfg})
	if err != nil {
		c.terminate()
		return nil, fmt.Errorf("take up pooled upstream connection: %w", err)
	}
	return &Statements{PgConn: pc, up: c}, nil
}

// PutStatements gives a connection from GetStatements back: kept in the pool (reset) when it
// is idle outside a transaction block, else closed. The caller must not use s afterwards, and
// must have read every result it asked for. The error says why it was not kept.
func (p *Pool) PutStatements(ctx context.Context, s *Statements) error {
	if s == nil {
		return nil
	}
	if s.PgConn.IsClosed() || s.PgConn.IsBusy() {
		s.up.terminate()
		return errors.New("connection closed or busy")
	}
	hc, err := s.PgConn.Hijack()
	if err != nil {
		s.up.terminate()
		return fmt.Errorf("take back upstream connection: %w", err)
	}
	s.up.ParameterStatuses = hc.ParameterStatuses
	if p == nil {
		s.up.terminate()
		return nil
	}
	return p.Put(ctx, s.up, hc.TxStatus)
}
