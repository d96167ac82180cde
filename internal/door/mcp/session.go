package mcp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/upstream"
)

// DefaultSessionIdleTimeout ends an MCP session (and its gate sessions, whose upstream
// connections go back to the pool) after this long without a request from its client.
const DefaultSessionIdleTimeout = 10 * time.Minute

// A gate session is what a psql connection is to the PostgreSQL door: opened once (recorded,
// with the identity's access decided and its least-privileged upstream role chosen), used by
// many statements, ended once. For the MCP door that is one per MCP session (Mcp-Session-Id)
// and target, opened by the session's first call on the target and ended when the MCP session
// ends (the client's DELETE, the idle timeout, an operator ending it in the console, shutdown).
// Its upstream connection comes from the pool and goes back to it (reset) at the end, so a
// call costs a statement round trip instead of a SCRAM login and two session records.

// sessionTable is the door's open MCP sessions.
type sessionTable struct {
	mu     sync.Mutex
	open   map[*sdk.ServerSession]*agentSession
	closed bool
}

// agentSession is one MCP session: who its client is and its gate sessions per target.
type agentSession struct {
	ss *sdk.ServerSession
	// client is the application name its events carry: "mcp:NAME/VERSION" from initialize.
	client string
	mu     sync.Mutex
	// targets are its gate sessions by target name.
	targets map[string]*targetSession
	// endReason, when set, is why the session was ended from outside (the console).
	endReason string
	ended     bool
}

// targetSession is one gate session of an MCP session, on one target, and its upstream
// connection. Its calls take turns (one statement at a time on the connection, as on a
// psql connection).
type targetSession struct {
	// turn is held (a value sent) by the call using sess and conn.
	turn chan struct{}
	// Set and read only while holding turn:
	sess   *gate.Session
	target *config.Target
	conn   *upstream.Statements
	ended  bool
}

// take waits for the session's turn.
func (ts *targetSession) take(ctx context.Context) error {
	select {
	case ts.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the previous call on this target: %w", ctx.Err())
	}
}

func (ts *targetSession) give() { <-ts.turn }

// agent returns the MCP session's state, creating it (and the watcher that ends its gate
// sessions when it ends) on its first call.
func (d *Door) agent(req *sdk.CallToolRequest) (*agentSession, error) {
	ss := req.Session
	if ss == nil {
		return nil, errors.New("no MCP session on this call")
	}
	d.sessions.mu.Lock()
	defer d.sessions.mu.Unlock()
	if d.sessions.closed {
		return nil, errors.New("gatehouse is shutting down; reconnect shortly")
	}
	if as := d.sessions.open[ss]; as != nil {
		return as, nil
	}
	client := "mcp"
	if ci := ss.InitializeParams(); ci != nil && ci.ClientInfo != nil {
		client = "mcp:" + ci.ClientInfo.Name + "/" + ci.ClientInfo.Version
	}
	as := &agentSession{ss: ss, client: client, targets: map[string]*targetSession{}}
	if d.sessions.open == nil {
		d.sessions.open = map[*sdk.ServerSession]*agentSession{}
	}
	d.sessions.open[ss] = as
	go func() {
		_ = ss.Wait()
		d.endAgent(as, "mcp session ended")
	}()
	return as, nil
}

// endAgent ends the gate sessions of an MCP session that ended, once every call on them has
// finished, returning their upstream connections to the pool.
func (d *Door) endAgent(as *agentSession, reason string) {
	d.sessions.mu.Lock()
	if d.sessions.open[as.ss] == as {
		delete(d.sessions.open, as.ss)
	}
	d.sessions.mu.Unlock()
	as.mu.Lock()
	as.ended = true
	if as.endReason != "" {
		reason = as.endReason
	}
	targets := make([]*targetSession, 0, len(as.targets))
	for _, ts := range as.targets {
		targets = append(targets, ts)
	}
	as.mu.Unlock()
	ctx := context.Background()
	for _, ts := range targets {
		_ = ts.take(ctx)
		d.endTarget(ctx, ts, reason)
		ts.ended = true
		ts.give()
	}
}

// endTarget ends ts's gate session (the caller holds its turn).
func (d *Door) endTarget(ctx context.Context, ts *targetSession, reason string) {
	if ts.conn != nil {
		if err := d.Pool.PutStatements(ctx, ts.conn); err != nil {
			d.log().Info("mcp upstream connection not kept", "err", err)
		}
		ts.conn = nil
	}
	if ts.sess != nil {
		d.Gate.CloseSession(ctx, ts.sess, reason)
		ts.sess = nil
	}
}

// closeSessions ends every MCP session (shutdown): their clients must initialize anew.
func (d *Door) closeSessions() {
	d.sessions.mu.Lock()
	d.sessions.closed = true
	open := make([]*agentSession, 0, len(d.sessions.open))
	for _, as := range d.sessions.open {
		open = append(open, as)
	}
	d.sessions.mu.Unlock()
	for _, as := range open {
		as.mu.Lock()
		as.endReason = "gatehouse shutting down"
		as.mu.Unlock()
		_ = as.ss.Close()
		d.endAgent(as, "gatehouse shutting down")
	}
}

// sameIdentity reports whether a call's identity is the one a gate session was opened for:
// the same subject by the same credential with the same groups. Another credential (a new
// token, a refreshed OIDC token with other groups) gets a gate session of its own.
func sameIdentity(a, b *identity.Identity) bool {
	return a.Subject == b.Subject && a.Kind == b.Kind && a.AuthMethod == b.AuthMethod && a.TokenID == b.TokenID &&
		a.Issuer == b.Issuer && slices.Equal(a.Groups, b.Groups)
}

// call is one tool call's turn on a gate session.
type call struct {
	d    *Door
	as   *agentSession
	ts   *targetSession
	sess *gate.Session
}

// open takes the turn of the caller's gate session on the target, opening the session (which
// records it and decides the identity's access) on the MCP session's first call there, and
// tags it with this call's tool, purpose and trace for the statement's record. The caller
// must call done.
func (d *Door) open(ctx context.Context, req *sdk.CallToolRequest, tool, targetName, purpose string) (*call, error) {
	id, err := callerOf(req)
	if err != nil {
		return nil, err
	}
	t, ok := d.Target(targetName)
	if !ok || t == nil {
		return nil, fmt.Errorf("target %q does not exist; call list_targets for the targets you can use", targetName)
	}
	as, err := d.agent(req)
	if err != nil {
		return nil, err
	}
	as.mu.Lock()
	if as.ended {
		as.mu.Unlock()
		return nil, errors.New("this MCP session has ended; reconnect")
	}
	ts := as.targets[t.Name]
	if ts == nil {
		ts = &targetSession{turn: make(chan struct{}, 1)}
		as.targets[t.Name] = ts
	}
	as.mu.Unlock()
	if err := ts.take(ctx); err != nil {
		return nil, err
	}
	c := &call{d: d, as: as, ts: ts}
	if ts.ended {
		ts.give()
		return nil, errors.New("this MCP session has ended; reconnect")
	}
	if ts.sess != nil && (ts.target != t || !sameIdentity(ts.sess.Identity, id)) {
		// The configuration changed the target, or the caller came back with another
		// credential: the old session ends and a new one is decided and recorded.
		d.endTarget(ctx, ts, "credential or target configuration changed")
	}
	if ts.sess == nil {
		if err := d.openSession(ctx, req, as, ts, id, t); err != nil {
			ts.give()
			return nil, err
		}
	}
	s := ts.sess
	s.ApplicationName = as.client + " tool=" + tool
	s.Options = map[string]string{"gatehouse.tool": tool}
	if purpose != "" {
		s.Options["gatehouse.purpose"] = purpose
	}
	if req.Extra != nil && req.Extra.Header != nil {
		if tp := req.Extra.Header.Get("traceparent"); tp != "" {
			s.Options["gatehouse.traceparent"] = tp
		}
	}
	c.sess = s
	return c, nil
}

// openSession opens ts's gate session for id on t.
func (d *Door) openSession(ctx context.Context, req *sdk.CallToolRequest, as *agentSession, ts *targetSession, id *identity.Identity, t *config.Target) error {
	sess := &gate.Session{ID: gate.NewSessionID(), Identity: id, Target: t, Database: t.Database, ApplicationName: as.client,
		StartedAt: time.Now()}
	if req.Extra != nil && req.Extra.TokenInfo != nil {
		sess.ClientAddr, _ = req.Extra.TokenInfo.Extra[clientAddrKey].(string)
		sess.TLS, _ = req.Extra.TokenInfo.Extra[clientTLSKey].(bool)
	}
	dec, err := d.Gate.OpenSession(ctx, sess)
	if err != nil {
		return errors.New("gatehouse: the audit ledger cannot record this call, so it is refused; try again shortly")
	}
	if dec.Action != gate.Allow {
		msg := dec.Message
		if msg == "" {
			msg = fmt.Sprintf("access to target %q denied", t.Name)
		}
		return fmt.Errorf("gatehouse: denied by rule %q: %s", dec.Rule, msg)
	}
	d.Gate.Attach(sess, "mcp", func(by string) {
		as.mu.Lock()
		as.endReason = "session ended by " + by + " in Gatehouse"
		as.mu.Unlock()
		go func() { _ = as.ss.Close() }()
	})
	ts.sess, ts.target = sess, t
	return nil
}

// conn returns the call's upstream connection: the gate session's own, or one from the pool
// for its target, database and role.
func (c *call) conn(ctx context.Context) (*upstream.Statements, error) {
	ts := c.ts
	if ts.conn != nil && ts.conn.IsClosed() {
		_ = c.d.Pool.PutStatements(ctx, ts.conn)
		ts.conn = nil
	}
	if ts.conn == nil {
		params := map[string]string{"application_name": c.as.client}
		if c.sess.UpstreamRole != "" {
			params["role"] = c.sess.UpstreamRole
		}
		up, err := c.d.Pool.GetStatements(ctx, upstream.Request{Target: c.sess.Target, Database: c.sess.Database, Params: params})
		if err != nil {
			return nil, fmt.Errorf("could not connect to target %q: %v", c.sess.Target.Name, err)
		}
		ts.conn = up
	}
	return ts.conn, nil
}

// done gives the turn back; a connection left anywhere but idle outside a transaction block
// is not kept for the next call.
func (c *call) done(ctx context.Context) {
	ts := c.ts
	if ts.conn != nil && (ts.conn.IsClosed() || ts.conn.IsBusy() || ts.conn.TxStatus() != 'I') {
		if err := c.d.Pool.PutStatements(context.WithoutCancel(ctx), ts.conn); err != nil {
			c.d.log().Info("mcp upstream connection not kept", "err", err)
		}
		ts.conn = nil
	}
	c.sess.ApplicationName = c.as.client
	c.sess.Options = nil
	ts.give()
}
