package pg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/upstream"
)

// pendKind is the kind of client message whose response the relay is waiting for.
type pendKind uint8

const (
	pQuery pendKind = iota + 1
	pFunction
	pParse
	pBind
	pDescribeS
	pDescribeP
	pExecute
	pClose
	pSync
	pPark // the Sync sent in place of a Terminate to return the connection to the pool (park.go)
)

// pending is one client message forwarded upstream and not yet fully answered. The client
// loop appends them in the order it forwards messages; the upstream loop matches responses
// to them in the same order, which is the order PostgreSQL answers in. Its state is split by
// the loop that owns it: the request is filled in by the client loop before it is queued
// and only read afterwards; the result is the upstream loop's alone. Pendings are recycled
// (see newPending), so a request costs no allocation once a session is warm.
type pending struct {
	request
	result
}

// request is what the client loop knows of a message it forwarded.
type request struct {
	kind    pendKind
	check   *gate.Check // statements that passed the gate and must be recorded
	denied  bool        // replaced by a failing statement; rewrite its error
	swallow bool        // injected by Gatehouse: the client must not see the response
	ends    uint64      // r.blockEnds when it was queued (see txState)
	name    string      // statement or portal name
	stmt    string      // Bind: the statement name; Close: "S" or "P"
	formats []int16     // Bind: result format codes (in fmtBuf when they fit)
	fmtBuf  [8]int16

	// COPY ... TO STDOUT masking: copyPlans holds one masker per COPY statement of the
	// check, in statement order (nil: that COPY needs none), planned by the client loop
	// before forwarding. The upstream loop takes the next one at each CopyOutResponse.
	copyPlans []gate.CopyMasker

	// Affected-rows limits (writecap.go). swallowNoData: a Describe injected for a simple
	// Query sent as extended messages, whose RowDescription stands for the Query's and whose
	// NoData is kept from the client. capAbort: the failing message that undoes a write over
	// its limit. cap: the Execute of a write with a limit.
	swallowNoData bool
	capAbort      bool
	cap           *capState
}

// result is what the upstream loop learns while it answers one message.
type result struct {
	started   bool
	masker    gate.RowMasker
	out       gate.Outcome
	stmtIdx   int   // simple query: the statement of the string whose result comes next
	resRows   int64 // DataRows of the current result
	rows      int64 // DataRows of the whole check, for max_rows
	truncated bool
	held      []byte // simple query: the last completion, released at ReadyForQuery
	copyNext  int
	copying   bool            // between CopyOutResponse and CopyDone
	copyMask  gate.CopyMasker // masker of the COPY output in progress, nil for none
}

// clientStmt is a prepared statement or portal as the client loop knows it.
type clientStmt struct {
	name      string // the map key, kept so a lookup by bytes can reuse it
	text      string
	described bool // the upstream has been asked for its columns
}

// relay is one live session: a client connection and its upstream connection.
type relay struct {
	srv    *Server
	sess   *gate.Session
	client net.Conn
	up     net.Conn

	cr  *frameReader
	ur  *frameReader
	uw  *upWriter  // client loop only
	out *clientOut // upstream loop only

	keyPID, keySecret uint32 // BackendKeyData sent to the client: upstream PID, Gatehouse secret
	upPID             uint32
	upSecret          []byte
	upAddr            string

	nonce string
	seq   uint64

	mu      sync.Mutex
	queue   []*pending
	head    int
	free    []*pending // answered pendings, cleared, for newPending
	retired []*pending // answered by the message being handled (upstream loop only)
	// oldest is the upstream loop's copy of queue[head], so the messages that answer it
	// (every DataRow of a result) find it without taking mu: only that loop pops, so the
	// oldest pending stays the same until it does. nil: look it up.
	oldest *pending

	// fatal is the error the client is told when the session ends for a reason of our own
	// (revocation, a protocol violation by the client); nil means the upstream went away.
	fatal      atomic.Pointer[pgproto3.ErrorResponse]
	clientGone atomic.Bool
	endOnce    sync.Once

	// Client-loop state: what the client has prepared, as far as the client loop knows, and
	// the text of the last statement it sent (textOf).
	stmts    map[string]clientStmt
	portals  map[string]clientStmt
	lastText string

	// Upstream-loop state: result shapes as PostgreSQL reported them.
	stmtCols   map[string][]gate.Column
	portalCols map[string][]gate.Column
	bound      map[string]boundShape // by statement: its columns as last bound
	lastShape  []byte                // the last simple query result's RowDescription
	lastCols   []gate.Column         // and its columns

	heldBuf []byte // upstream loop: backs the held completion of the simple query answered
	row     pgproto3.DataRow
	scratch []byte // client loop's encode buffer
	outBuf  []byte // upstream loop's encode buffer

	// lastCheck is the latest statement check the upstream loop has seen, for masking
	// asynchronous messages (notices, notifications) that arrive outside any statement.
	lastCheck *gate.Check

	// limitCancel is closed when the cancel request sent for an exceeded row limit has been
	// handled by the upstream (upstream loop only). ReadyForQuery waits for it, so the
	// cancel cannot land on the client's next statement.
	limitCancel chan struct{}

	// upGone is closed when the upstream loop has ended (a client loop waiting for a
	// capped write's count stops waiting). skipping (guarded by mu) is set while PostgreSQL
	// skips messages until Sync after an extended-protocol error.
	upGone   chan struct{}
	skipping bool

	// Transaction-block tracking for the gate's intents (SetTransactionBlock): blockEnds
	// (client loop only) counts the checks forwarded that may end a transaction block;
	// txState is published by the upstream loop at each ReadyForQuery: its status byte and,
	// above it, the blockEnds of the message it answers. The session is certainly inside a
	// block when that status is 'T' and nothing that may end a block was forwarded since.
	blockEnds uint64
	txState   atomic.Uint64

	// Pool hand-back (park.go): extOpen and parking belong to the client loop; parkStatus is
	// set by the upstream loop when the connection may go to the pool, read after both end.
	extOpen    bool
	parking    bool
	parkStatus byte
}

func newRelay(s *Server, c *conn, h *pgconn.HijackedConn, sess *gate.Session, fr *frameReader) *relay {
	max := s.MaxMessageSize
	r := &relay{
		srv: s, sess: sess, client: c.Conn, up: h.Conn,
		cr: fr, ur: newFrameReader(h.Conn, max),
		uw:    &upWriter{w: h.Conn, pool: &s.outBufs},
		upPID: h.PID, upSecret: h.SecretKey, upAddr: h.Conn.RemoteAddr().String(),
		nonce: gate.NewSessionID(),
		stmts: map[string]clientStmt{}, portals: map[string]clientStmt{},
		stmtCols: map[string][]gate.Column{}, portalCols: map[string][]gate.Column{}, bound: map[string]boundShape{},
		upGone: make(chan struct{}),
	}
	r.out = newClientOut(c.Conn, r.recordFailed)
	r.rawSockets(c, h)
	r.out.pool = &s.outBufs
	r.cr.pool, r.ur.pool = &s.inBufs, &s.inBufs
	r.cr.max = DefaultMaxMessageSize
	if max > 0 {
		r.cr.max = max
	}
	return r
}

// rawSockets makes the relay's loops read and write both sockets with raw system calls
// (rawSock) when they are plain sockets: the client's unless it speaks TLS, the upstream's
// unless it does. The connections stay as they are for deadlines and Close.
func (r *relay) rawSockets(c *conn, h *pgconn.HijackedConn) {
	if rs, ok := newRawSock(c.Conn); ok {
		r.cr.rd, r.out.w = rs, rs
	}
	if uc, ok := h.Conn.(*upstream.Conn); ok {
		if rs, ok := newRawSock(uc.Conn); ok {
			ur := &upReader{up: uc, raw: rs}
			rs.enableBulk(uc.Conn)
			r.ur.rd, r.uw.w, r.ur.hint = ur, rs, ur
		}
	}
}

// sockConn is a connection whose reads and writes are raw system calls (rawSock), for a
// TLS connection to run over; deadlines, addresses and Close are the connection's own. The
// TLS connection serializes its reads and its writes, as rawSock requires.
type sockConn struct {
	net.Conn
	rs *rawSock
}

func (c *sockConn) Read(b []byte) (int, error)  { return c.rs.Read(b) }
func (c *sockConn) Write(b []byte) (int, error) { return c.rs.Write(b) }

// rawSockConn returns c reading and writing with raw system calls when it is a plain
// socket, else c itself.
func rawSockConn(c net.Conn) net.Conn {
	if rs, ok := newRawSock(c); ok {
		return &sockConn{Conn: c, rs: rs}
	}
	return c
}

// upReader reads an upstream connection's socket with raw system calls once the bytes given
// back to the connection (upstream.Conn.Unread, by a previous session or its reset) are read.
type upReader struct {
	up  *upstream.Conn
	raw *rawSock
}

func (u *upReader) Read(b []byte) (int, error) {
	if u.up.Buffered() > 0 {
		n, err := u.up.Read(b)
		if err != nil {
			return n, fmt.Errorf("read upstream: %w", err)
		}
		return n, nil
	}
	return u.raw.Read(b)
}

// recordFailed logs a ledger record that could not be written; the client is told through
// ledgerError in place of the statement's completion.
func (r *relay) recordFailed(err error) {
	r.srv.log().Error("pg ledger record failed", "session", r.sess.ID, "err", err)
}

// newPending returns a cleared pending for the client loop to fill and push.
func (r *relay) newPending() *pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.free); n > 0 {
		p := r.free[n-1]
		r.free = r.free[:n-1]
		return p
	}
	return &pending{}
}

// maxFree bounds the recycled pendings a session keeps (a pipeline's worth).
const maxFree = 256

// recycle hands the pendings answered by the previous upstream message back to newPending
// (upstream loop, before it handles the next message: nothing refers to them any more).
func (r *relay) recycle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.retired {
		if len(r.free) < maxFree {
			*p = pending{}
			r.free = append(r.free, p)
		}
		r.retired[i] = nil
	}
	r.retired = r.retired[:0]
}

func (r *relay) push(p *pending) {
	p.ends = r.blockEnds
	r.mu.Lock()
	r.queue = append(r.queue, p)
	r.mu.Unlock()
}

// peek returns the oldest unanswered message, or nil (upstream loop only).
func (r *relay) peek() *pending {
	if r.oldest != nil {
		return r.oldest
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head < len(r.queue) {
		r.oldest = r.queue[r.head]
	}
	return r.oldest
}

// pop retires the oldest unanswered message (upstream loop only).
func (r *relay) pop() {
	r.oldest = nil
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head < len(r.queue) {
		p := r.queue[r.head]
		if p.cap != nil {
			close(p.cap.done)
		}
		r.retired = append(r.retired, p)
		r.queue[r.head] = nil
		r.head++
	}
	if r.head == len(r.queue) {
		r.queue, r.head = r.queue[:0], 0
	} else if r.head > 64 && r.head*2 > len(r.queue) {
		n := copy(r.queue, r.queue[r.head:])
		clear(r.queue[n:])
		r.queue, r.head = r.queue[:n], 0
	}
}

// inFlight reports whether anything the client sent is still unanswered.
func (r *relay) inFlight() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.head < len(r.queue)
}

// end makes both loops stop: closing the upstream ends the upstream loop, which then tells
// the client why (fatal) and closes the client connection.
func (r *relay) end(fatal *pgproto3.ErrorResponse) {
	if fatal != nil {
		r.fatal.CompareAndSwap(nil, fatal)
	}
	r.endOnce.Do(func() { _ = r.up.Close() })
}

// relay runs the session until either side ends and returns why it ended.
func (r *relay) relay(ctx context.Context) string {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan string, 1)
	go func() { done <- r.clientLoop(ctx) }()
	if every := durationOr(r.srv.RevalidateEvery, 2*time.Second); every > 0 {
		stop := r.revalidate(ctx, every)
		defer stop()
	}
	upReason := r.upstreamLoop(ctx)
	close(r.upGone)
	_ = r.client.Close()
	clientReason := <-done
	r.srv.Metrics.bytes(r.cr.n, r.ur.n)
	if f := r.fatal.Load(); f != nil {
		return f.Message
	}
	if clientReason != "" {
		return clientReason
	}
	return upReason
}

// revalidate ends the session when its identity is no longer valid (revoked token). A check
// that could not be made (the state store is unreachable) says nothing about the identity: the
// session stays and is checked again at the next tick, so a revocation made meanwhile ends it
// at the first check that reaches the store. Ending it instead would turn every store outage
// into the loss of every live session, reported to clients as a revocation.
//
// The checks run from a timer, every interval after the previous one ended, rather than in a
// goroutine of their own, so an idle session keeps no stack for them. The function returned
// stops them.
func (r *relay) revalidate(ctx context.Context, every time.Duration) (stop func()) {
	var mu sync.Mutex // guards t and stopped against a check that ends as the session does
	var t *time.Timer
	stopped := false
	var unchecked time.Time // when the checks started failing; zero while they succeed
	check := func() {
		if ctx.Err() != nil {
			return
		}
		vctx, cancel := context.WithTimeout(ctx, every)
		err := r.srv.Gate.StillValid(vctx, r.sess)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			if !unchecked.IsZero() {
				r.srv.log().Info("pg session identity checked again", "session", r.sess.ID, "unchecked_for", time.Since(unchecked).Round(time.Millisecond))
				unchecked = time.Time{}
			}
		case errors.Is(err, identity.ErrInvalidCredentials):
			r.srv.log().Info("pg session revoked", "session", r.sess.ID, "err", err)
			r.end(fatalErr("57P01", "session ended: token revoked or no longer valid"))
			return
		default:
			if unchecked.IsZero() {
				unchecked = time.Now()
				r.srv.log().Warn("pg session identity could not be checked; keeping the session and retrying", "session", r.sess.ID, "err", err)
			}
		}
		mu.Lock()
		if !stopped {
			t.Reset(every)
		}
		mu.Unlock()
	}
	mu.Lock()
	t = time.AfterFunc(every, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

func fatalErr(code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}
}

func errorResp(code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg}
}

// denyResp is the error a refused statement gets: 42501 with the rule's message, or what
// the gate says instead (42601 and the parser's position for text that does not parse).
func denyResp(c *gate.Check) *pgproto3.ErrorResponse {
	code := c.Decision.SQLState
	if code == "" {
		code = "42501"
	}
	m := errorResp(code, c.DenyMessage())
	m.Position = int32(c.Decision.Position)
	return m
}

// cancelUpstream asks the upstream server to cancel whatever the session's backend runs.
func (r *relay) cancelUpstream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.upAddr)
	if err != nil {
		return fmt.Errorf("dial upstream for cancel: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	buf, err := (&pgproto3.CancelRequest{ProcessID: r.upPID, SecretKey: r.upSecret}).Encode(nil)
	if err != nil {
		return fmt.Errorf("encode cancel request: %w", err)
	}
	if _, err := c.Write(buf); err != nil {
		return fmt.Errorf("send cancel request: %w", err)
	}
	// The server closes the connection once it has handled the request.
	_, _ = io.Copy(io.Discard, c)
	return nil
}

// denyToken is a statement text that fails with a syntax error at the upstream, naming this
// session and sequence; it stands in for a denied statement.
func (r *relay) denyToken() string {
	r.seq++
	return "gatehouse_deny_" + r.nonce + "_" + strconv.FormatUint(r.seq, 10)
}

// ---------------------------------------------------------------- client → upstream

// clientLoop reads client messages, passes them through the gate and forwards them.
//
// A round trip costs each loop one read and one write, plus one read that finds its socket
// empty before the loop waits. That read cannot be skipped: Go's poller forgets a
// socket's readiness when a read starts (internal/poll prepareRead), so only a read that
// came back empty proves a wait will be woken. One goroutine per direction is also the
// fewest that watch both sockets at once (a goroutine waits on one), and it parks and wakes
// once per socket event, as an event loop would. The socket calls themselves are raw system
// calls (rawSock), so they neither wake the runtime's monitor thread nor get their P
// handed to another thread.
func (r *relay) clientLoop(ctx context.Context) string {
	for {
		frame, err := r.cr.next()
		if err != nil {
			var fe *errFrame
			if errors.As(err, &fe) {
				r.end(fatalErr(fe.sqlstate(), "invalid frontend message: "+fe.msg))
				return "protocol violation: " + fe.msg
			}
			r.clientVanished(ctx)
			return "client disconnected"
		}
		r.noteFrontend(frame[0])
		stop, err := r.fromClient(ctx, frame)
		if err != nil {
			r.end(fatalErr("08P01", err.Error()))
			return "protocol violation: " + err.Error()
		}
		if r.cr.buffered() == 0 || stop {
			if err := r.uw.Flush(); err != nil {
				r.end(nil)
				return "upstream write failed"
			}
		}
		if stop {
			r.clientGone.Store(true)
			if !r.parking {
				r.end(nil)
			}
			return "client terminated the session"
		}
	}
}

// clientVanished cancels a running query when the client disappears, so the upstream does
// not keep working for nobody, then closes the upstream.
func (r *relay) clientVanished(ctx context.Context) {
	r.clientGone.Store(true)
	if r.inFlight() {
		if err := r.cancelUpstream(context.WithoutCancel(ctx)); err != nil {
			r.srv.log().Warn("pg cancel after client vanished failed", "session", r.sess.ID, "err", err)
		}
	}
	r.end(nil)
}

func (r *relay) write(frame []byte) {
	_, _ = r.uw.Write(frame) // errors surface at Flush
}

func (r *relay) writeMsg(m pgproto3.FrontendMessage) error {
	var err error
	r.scratch, err = m.Encode(r.scratch[:0])
	if err != nil {
		return fmt.Errorf("encode %T: %w", m, err)
	}
	r.write(r.scratch)
	return nil
}

func (r *relay) check(ctx context.Context, sql string, via gate.Via) *gate.Check {
	if via != gate.ViaParse {
		st := r.txState.Load()
		r.sess.SetTransactionBlock(byte(st) == 'T' && st>>8 == r.blockEnds)
	}
	c := r.srv.Gate.Check(ctx, r.sess, sql, via)
	if via != gate.ViaParse && c.EndsBlock() {
		r.blockEnds++
	}
	r.srv.Metrics.statement(string(c.Decision.Action))
	return c
}

// fromClient handles one client message; stop is true after Terminate. Each message type
// has its handler, which forwards the message (or what stands in for it) and queues what
// the upstream loop needs to match the answer.
func (r *relay) fromClient(ctx context.Context, frame []byte) (stop bool, err error) {
	body := frame[5:]
	switch frame[0] {
	case 'Q':
		return false, r.onQuery(ctx, frame, body)
	case 'P':
		return false, r.onParse(ctx, frame, body)
	case 'B':
		return false, r.onBind(frame, body)
	case 'D':
		return false, r.onDescribe(frame, body)
	case 'E':
		return false, r.onExecute(ctx, frame, body)
	case 'C':
		return false, r.onClose(frame, body)
	case 'S':
		r.queue1(pSync, "")
		r.write(frame)
		return false, nil
	case 'F':
		return false, r.onFunctionCall(ctx, frame, body)
	case 'H', 'd', 'c', 'f':
		// Flush and COPY sub-protocol messages pass through.
		r.write(frame)
		return false, nil
	case 'X':
		// Mark the client as leaving before Terminate can reach the upstream: its close is
		// then the expected end, not an upstream failure to report (08006) to a client that
		// is still reading.
		r.clientGone.Store(true)
		if r.parkOnTerminate() {
			return true, nil
		}
		r.write(frame)
		return true, nil
	default:
		return false, fmt.Errorf("unexpected frontend message type %q", frame[0])
	}
}

// queue1 queues a message that needs no more than its kind and name to be answered.
func (r *relay) queue1(kind pendKind, name string) *pending {
	p := r.newPending()
	p.kind, p.name = kind, name
	r.push(p)
	return p
}

// refuse queues p (a statement the gate refused) and sends msg in its place: a message
// that fails upstream, so that PostgreSQL's own state machine (skip to Sync, abort the
// transaction) does what it would for a failing statement; its error is rewritten into
// the refusal.
func (r *relay) refuse(p *pending, msg pgproto3.FrontendMessage) error {
	p.denied = true
	r.push(p)
	return r.writeMsg(msg)
}

// onQuery handles a simple Query: every statement of the string is checked as a whole.
func (r *relay) onQuery(ctx context.Context, frame, body []byte) error {
	b, _, err := cbytes(body)
	if err != nil {
		return errors.New("malformed Query message")
	}
	sql := r.textOf(b, "")
	c := r.check(ctx, sql, gate.ViaQuery)
	if c.Allowed() && c.Decision.MaxAffectedRows > 0 {
		return r.cappedQuery(ctx, c, sql)
	}
	p := r.newPending()
	p.kind, p.check = pQuery, c
	if c.Allowed() {
		p.copyPlans = r.planCopy(ctx, c)
	}
	if !c.Allowed() {
		return r.refuse(p, &pgproto3.Query{String: r.denyToken()})
	}
	r.push(p)
	r.write(frame)
	return nil
}

// onParse handles Parse: the statement is checked now (a refused one never reaches the
// upstream); an allowed one is recorded when it executes.
func (r *relay) onParse(ctx context.Context, frame, body []byte) error {
	nameB, queryB, err := readParse(body)
	if err != nil {
		return fmt.Errorf("malformed Parse message: %w", err)
	}
	// A statement parsed again under its old name (a driver's unnamed statement) reuses
	// the strings it had.
	old, ok := r.stmts[string(nameB)]
	if !ok {
		old.name = string(nameB)
	}
	name, query := old.name, r.textOf(queryB, old.text)
	c := r.check(ctx, query, gate.ViaParse)
	r.stmts[name] = clientStmt{name: name, text: query}
	p := r.newPending()
	p.kind, p.name = pParse, name
	if !c.Allowed() {
		p.check = c
		return r.refuse(p, &pgproto3.Parse{Name: name, Query: r.denyToken()})
	}
	r.push(p)
	r.write(frame)
	return nil
}

// onBind handles Bind: the portal runs the statement's text.
func (r *relay) onBind(frame, body []byte) error {
	p := r.newPending()
	portal, stmt, formats, err := decodeBind(body, p.fmtBuf[:0])
	if err != nil {
		return err
	}
	st, ok := r.stmts[string(stmt)]
	if !ok {
		st.name = string(stmt)
	}
	r.portals[portal] = clientStmt{name: portal, text: st.text, described: st.described}
	p.kind, p.name, p.stmt, p.formats = pBind, portal, st.name, formats
	r.push(p)
	r.write(frame)
	return nil
}

// onDescribe handles Describe of a statement or a portal.
func (r *relay) onDescribe(frame, body []byte) error {
	typ, nameB, err := readTarget(body)
	if err != nil {
		return fmt.Errorf("malformed Describe message: %w", err)
	}
	if typ == 'S' {
		st, ok := r.stmts[string(nameB)]
		if !ok {
			st.name = string(nameB)
		}
		st.described = true
		r.stmts[st.name] = st
		r.queue1(pDescribeS, st.name)
	} else {
		r.queue1(pDescribeP, r.describedPortal(nameB))
	}
	r.write(frame)
	return nil
}

// describedPortal notes that the upstream has been asked for portal's columns and returns
// the portal's name as a string (the one its Bind made, when it has one).
func (r *relay) describedPortal(portal []byte) string {
	pt, ok := r.portals[string(portal)]
	if !ok {
		pt.name = string(portal)
	}
	pt.described = true
	r.portals[pt.name] = pt
	return pt.name
}

// onExecute handles Execute: the portal's statement is checked again (the policy or the
// session may have changed since its Parse), limits and masking are planned.
func (r *relay) onExecute(ctx context.Context, frame, body []byte) error {
	portalB, maxRows, err := readExecute(body)
	if err != nil {
		return fmt.Errorf("malformed Execute message: %w", err)
	}
	pt, ok := r.portals[string(portalB)]
	text := pt.text
	if !ok {
		// A portal the client did not Bind (a cursor opened with DECLARE): its query was
		// checked when it was declared; this fetches from it.
		pt.name = string(portalB)
		text = "FETCH ALL FROM " + quoteIdent(pt.name)
	}
	m := pgproto3.Execute{Portal: pt.name, MaxRows: maxRows}
	c := r.check(ctx, text, gate.ViaExecute)
	var plans []gate.CopyMasker
	if c.Allowed() {
		plans = r.planCopy(ctx, c)
	}
	if !c.Allowed() {
		p := r.newPending()
		p.kind, p.name, p.check = pExecute, m.Portal, c
		tok := r.denyToken()
		return r.refuse(p, &pgproto3.Parse{Name: tok, Query: tok})
	}
	if c.Decision.MaxAffectedRows > 0 {
		return r.cappedExecute(ctx, &m, frame, c, plans)
	}
	if r.srv.Gate.Masker != nil && !pt.described {
		// The masker needs the result's columns and Execute sends no RowDescription:
		// ask for it and keep the answer from the client, who did not ask.
		r.queue1(pDescribeP, r.describedPortal(portalB)).swallow = true
		if err := r.writeMsg(&pgproto3.Describe{ObjectType: 'P', Name: m.Portal}); err != nil {
			return err
		}
	}
	p := r.newPending()
	p.kind, p.name, p.check, p.copyPlans = pExecute, m.Portal, c, plans
	r.push(p)
	r.write(frame)
	return nil
}

// onClose handles Close of a statement or a portal.
func (r *relay) onClose(frame, body []byte) error {
	typ, nameB, err := readTarget(body)
	if err != nil {
		return fmt.Errorf("malformed Close message: %w", err)
	}
	name := string(nameB)
	if typ == 'S' {
		delete(r.stmts, name)
		r.queue1(pClose, name).stmt = "S"
	} else {
		delete(r.portals, name)
		r.queue1(pClose, name).stmt = "P"
	}
	r.write(frame)
	return nil
}

// onFunctionCall handles the fast-path interface, which names a function by OID only
// (libpq's large-object functions use it). The gate sees a parseable stand-in naming the
// OID, with Via=function, so a policy can allow or refuse fast-path calls explicitly.
func (r *relay) onFunctionCall(ctx context.Context, frame, body []byte) error {
	var m pgproto3.FunctionCall
	if err := m.Decode(body); err != nil {
		return fmt.Errorf("malformed FunctionCall message: %w", err)
	}
	c := r.check(ctx, fmt.Sprintf("SELECT gatehouse_fastpath_function(%d)", m.Function), gate.ViaFunction)
	r.refuseMaskedFastPath(c)
	p := r.newPending()
	p.kind, p.check = pFunction, c
	if !c.Allowed() {
		return r.refuse(p, &pgproto3.Query{String: r.denyToken()})
	}
	r.push(p)
	r.write(frame)
	return nil
}

// errBind is a Bind message that does not parse.
var errBind = errors.New("malformed Bind message")

// decodeBind reads the names and result formats of a Bind message without copying its
// parameter values (pgproto3.Bind.Decode would allocate a slice per parameter). The statement
// name is returned as bytes (a map lookup with it allocates nothing); the formats are
// appended to buf.
func decodeBind(b []byte, buf []int16) (portal string, stmt []byte, formats []int16, err error) {
	portal, b, ok := cstring(b)
	if !ok {
		return "", nil, nil, errBind
	}
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, nil, errBind
	}
	stmt, b = b[:i], b[i+1:]
	if len(b) < 2 {
		return "", nil, nil, errBind
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < 2*n+2 {
		return "", nil, nil, errBind
	}
	b = b[2*n:]
	n = int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for range n {
		if len(b) < 4 {
			return "", nil, nil, errBind
		}
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l > 0 {
			if len(b) < l {
				return "", nil, nil, errBind
			}
			b = b[l:]
		}
	}
	if len(b) < 2 {
		return "", nil, nil, errBind
	}
	n = int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) != 2*n {
		return "", nil, nil, errBind
	}
	formats = buf
	for i := range n {
		formats = append(formats, int16(binary.BigEndian.Uint16(b[2*i:])))
	}
	return portal, stmt, formats, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// ---------------------------------------------------------------- upstream → client

// upstreamLoop reads upstream messages, matches them to what the client sent, masks and
// limits results, records completions and forwards everything to the client.
//
// It writes to the client once per burst of upstream messages (when no more input is
// buffered), after waiting for the ledger records of the completions in it; while a burst
// lasts it keeps reading, so the records of a pipeline are committed together.
func (r *relay) upstreamLoop(ctx context.Context) string {
	defer func() { _ = r.out.release(ctx, true) }()
	for {
		frame, err := r.ur.next()
		if err != nil {
			if f := r.fatal.Load(); f != nil {
				r.sendClient(ctx, f)
				return f.Message
			}
			if r.clientGone.Load() {
				return "client disconnected"
			}
			r.sendClient(ctx, fatalErr("08006", "gatehouse: the connection to the upstream database was lost"))
			return "upstream connection lost: " + err.Error()
		}
		if err := r.fromUpstream(ctx, frame); err != nil {
			if errors.Is(err, errParked) {
				return "client terminated the session"
			}
			r.end(nil)
			r.sendClient(ctx, fatalErr("08P01", "gatehouse: "+err.Error()))
			return err.Error()
		}
		if r.ur.buffered() == 0 || r.out.holding() > outHoldMax {
			if err := r.out.release(ctx, true); err != nil {
				r.end(nil)
				return "client write failed"
			}
		}
	}
}

func (r *relay) sendClient(ctx context.Context, m pgproto3.BackendMessage) {
	r.emitMsg(m)
	_ = r.out.release(ctx, true)
}

func (r *relay) emit(frame []byte) { r.out.emit(frame) }

// finish submits the ledger record of a statement that ended with outcome o and queues its
// completion (what the client sees of the end: msg) behind the record.
func (r *relay) finish(ctx context.Context, c *gate.Check, o gate.Outcome, msg []byte) {
	r.out.emitHeld(r.srv.Gate.Finish(ctx, r.sess, c, o), msg)
}

// recordUnseen submits the record of a statement whose end the client does not see (a
// refusal PostgreSQL skipped after an error): nothing after it leaves before the record.
func (r *relay) recordUnseen(ctx context.Context, c *gate.Check, o gate.Outcome) {
	r.out.after(r.srv.Gate.Finish(ctx, r.sess, c, o))
}

func (r *relay) emitMsg(m pgproto3.BackendMessage) {
	var err error
	r.outBuf, err = m.Encode(r.outBuf[:0])
	if err == nil {
		r.emit(r.outBuf)
	}
}

// fromUpstream handles one upstream message: asynchronous ones pass (scrubbed), the others
// answer the oldest pending message and go to the handler of their type.
func (r *relay) fromUpstream(ctx context.Context, frame []byte) error {
	if len(r.retired) > 0 {
		r.recycle()
	}
	typ := frame[0]
	switch typ {
	case 'N', 'A', 'S':
		// Notices, notifications and parameter changes are asynchronous: they pass, with
		// the text of notices and notifications scrubbed of sensitive values.
		return r.asyncMessage(frame)
	}
	p := r.peek()
	if p == nil {
		return r.unexpected(frame)
	}
	if p.check != nil {
		r.lastCheck = p.check
	}
	simple := p.kind == pQuery || p.kind == pFunction
	if simple && p.held != nil && typ != 'Z' && typ != 'C' && typ != 'I' && typ != 'E' {
		r.releaseHeld(p)
	}
	switch typ {
	case '1', '2', '3': // ParseComplete, BindComplete, CloseComplete
		return r.onDone(p, frame)
	case 'T':
		return r.onRowDescription(ctx, p, frame)
	case 'n':
		return r.onNoData(p, frame)
	case 'D':
		return r.dataRow(ctx, p, frame)
	case 'H': // CopyOutResponse: COPY ... TO STDOUT output follows
		r.copyOutStart(p)
	case 'd': // CopyData (COPY TO STDOUT)
		return r.copyData(ctx, p, frame)
	case 'c': // CopyDone
		p.copying, p.copyMask = false, nil
	case 'C', 'I', 's': // CommandComplete, EmptyQueryResponse, PortalSuspended
		return r.complete(ctx, p, frame)
	case 'E':
		return r.errorResponse(ctx, p, frame)
	case 'Z':
		return r.ready(ctx, frame)
	}
	r.emit(frame)
	return nil
}

// unexpected handles a message that answers nothing outstanding: an asynchronous error
// (shutdown, termination) or noise. Its text is scrubbed like a notice's.
func (r *relay) unexpected(frame []byte) error {
	if frame[0] == 'E' && r.srv.Gate.Masker != nil {
		var er pgproto3.ErrorResponse
		if err := er.Decode(frame[5:]); err == nil && r.scrubFields(r.lastCheck, &er) > 0 {
			r.emitMsg(&er)
			return nil
		}
	}
	r.emit(frame)
	return nil
}

// onDone handles ParseComplete, BindComplete and CloseComplete: p is answered. A bound
// portal takes its statement's columns with the Bind's formats; a closed one forgets them.
func (r *relay) onDone(p *pending, frame []byte) error {
	switch {
	case frame[0] == '2' && p.kind == pBind:
		r.portalCols[p.name] = r.boundColumns(p.stmt, p.formats)
	case frame[0] == '3' && p.kind == pClose && p.stmt == "S":
		delete(r.stmtCols, p.name)
		delete(r.bound, p.name)
	case frame[0] == '3' && p.kind == pClose:
		delete(r.portalCols, p.name)
	}
	r.pop()
	if !p.swallow || frame[0] == '3' {
		r.emit(frame)
	}
	return nil
}

// onRowDescription handles a result's columns: a Describe's answer is kept for the
// Executes that follow; a simple Query's result gets its masker now.
func (r *relay) onRowDescription(ctx context.Context, p *pending, frame []byte) error {
	switch p.kind {
	case pDescribeS, pDescribeP:
		if r.srv.Gate.Masker != nil {
			cols, err := r.shapeColumns(frame[5:])
			if err != nil {
				return err
			}
			if p.kind == pDescribeS {
				r.stmtCols[p.name] = cols
			} else {
				r.portalCols[p.name] = cols
			}
		}
		r.pop()
		if p.swallow {
			return nil
		}
	case pQuery:
		p.resRows = 0
		p.masker = nil
		if r.srv.Gate.Masker != nil {
			cols, err := r.shapeColumns(frame[5:])
			if err != nil {
				return err
			}
			// One statement's result: its masking is planned from that statement alone,
			// so a string of N statements costs O(N), not O(N²).
			p.masker = r.srv.Gate.ResultMasker(ctx, r.sess, p.check.Only(p.stmtIdx), cols)
		}
	}
	r.emit(frame)
	return nil
}

// shapeColumns decodes the RowDescription of a simple query's result or of a Describe's
// answer. The last one is kept, so a statement that comes again with the same result shape
// (a driver re-parsing its unnamed statement and describing its portal every time)
// allocates nothing; column slices are never changed once made.
func (r *relay) shapeColumns(body []byte) ([]gate.Column, error) {
	if r.lastShape != nil && bytes.Equal(r.lastShape, body) {
		return r.lastCols, nil
	}
	cols, err := decodeColumns(body)
	if err != nil {
		return nil, err
	}
	r.lastShape, r.lastCols = append(r.lastShape[:0], body...), cols
	return cols, nil
}

// onNoData handles NoData: a Describe whose statement or portal returns no rows.
func (r *relay) onNoData(p *pending, frame []byte) error {
	if p.kind == pDescribeS || p.kind == pDescribeP {
		if p.kind == pDescribeS {
			delete(r.stmtCols, p.name)
		} else {
			delete(r.portalCols, p.name)
		}
		r.pop()
		if p.swallow || p.swallowNoData {
			return nil
		}
	}
	r.emit(frame)
	return nil
}

// boundShape is a statement's columns with one Bind's result formats applied.
type boundShape struct {
	from    []gate.Column // the statement's columns it was made from
	formats []int16
	cols    []gate.Column
}

// boundColumns returns the columns of a portal bound to stmt with formats. The result of
// the last Bind of each statement is kept, so binding a cached statement again with the same
// formats (what drivers do for every execution) allocates nothing. Column slices are never
// changed once made, so portals may share them.
func (r *relay) boundColumns(stmt string, formats []int16) []gate.Column {
	from := r.stmtCols[stmt]
	if len(from) == 0 {
		return from
	}
	if b, ok := r.bound[stmt]; ok && len(b.from) == len(from) && &b.from[0] == &from[0] && slices.Equal(b.formats, formats) {
		return b.cols
	}
	cols := withFormats(from, formats)
	r.bound[stmt] = boundShape{from: from, formats: slices.Clone(formats), cols: cols}
	return cols
}

// withFormats applies Bind's result format codes to a statement's columns.
func withFormats(cols []gate.Column, formats []int16) []gate.Column {
	if cols == nil {
		return nil
	}
	out := make([]gate.Column, len(cols))
	copy(out, cols)
	for i := range out {
		switch len(formats) {
		case 0:
			out[i].Format = 0
		case 1:
			out[i].Format = formats[0]
		default:
			if i < len(formats) {
				out[i].Format = formats[i]
			}
		}
	}
	return out
}

func decodeColumns(body []byte) ([]gate.Column, error) {
	var rd pgproto3.RowDescription
	if err := rd.Decode(body); err != nil {
		return nil, fmt.Errorf("malformed RowDescription from upstream: %w", err)
	}
	cols := make([]gate.Column, len(rd.Fields))
	for i, f := range rd.Fields {
		cols[i] = gate.Column{Name: string(f.Name), TableOID: f.TableOID, AttNum: f.TableAttributeNumber, TypeOID: f.DataTypeOID, Format: f.Format}
	}
	return cols, nil
}

// dataRow forwards one row, masked and within the row limit.
func (r *relay) dataRow(ctx context.Context, p *pending, frame []byte) error {
	if p.kind == pExecute && !p.started {
		p.started = true
		if r.srv.Gate.Masker != nil {
			p.masker = r.srv.Gate.ResultMasker(ctx, r.sess, p.check, r.portalCols[p.name])
		}
	}
	p.rows++
	p.resRows++
	if p.check != nil && p.check.Decision.MaxRows > 0 && p.rows > p.check.Decision.MaxRows {
		if !p.truncated {
			p.truncated = true
			if r.limitCancel == nil {
				done := make(chan struct{})
				r.limitCancel = done
				go func() {
					defer close(done)
					if err := r.cancelUpstream(context.WithoutCancel(ctx)); err != nil {
						r.srv.log().Warn("pg cancel for row limit failed", "session", r.sess.ID, "err", err)
					}
				}()
			}
		}
		return nil
	}
	if fm, ok := p.masker.(frameMasker); ok {
		return r.maskedRow(p, fm, frame)
	}
	if p.masker != nil {
		if err := r.row.Decode(frame[5:]); err != nil {
			return fmt.Errorf("malformed DataRow from upstream: %w", err)
		}
		if n := p.masker.MaskRow(r.row.Values); n > 0 {
			p.out.Masked += int64(n)
			buf, err := r.row.Encode(r.outBuf[:0])
			if err != nil {
				return fmt.Errorf("encode masked row: %w", err)
			}
			r.outBuf = buf
			p.out.Bytes += int64(len(buf))
			r.emit(buf)
			return nil
		}
	}
	p.out.Bytes += int64(len(frame))
	r.emit(frame)
	return nil
}

// rowLimitError is what the client sees instead of a result that exceeded max_rows.
func rowLimitError(c *gate.Check) *pgproto3.ErrorResponse {
	return errorResp("54000", fmt.Sprintf("gatehouse: the result exceeded the policy's row limit of %d rows (rule %q); add a LIMIT or narrow the query", c.Decision.MaxRows, c.Decision.Rule))
}

// ledgerError is what the client sees when the ledger cannot record a statement.
func ledgerError() *pgproto3.ErrorResponse {
	return errorResp("58000", "gatehouse: the audit ledger could not record this statement, so its result is withheld; try again shortly")
}

// tagRows is the row count at the end of a command tag ("SELECT 5", "INSERT 0 3").
func tagRows(tag []byte) (int64, bool) {
	i := len(tag)
	for i > 0 && tag[i-1] >= '0' && tag[i-1] <= '9' {
		i--
	}
	if i == len(tag) || i == 0 || tag[i-1] != ' ' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(tag[i:]), 10, 64)
	return n, err == nil
}

// complete handles CommandComplete, EmptyQueryResponse and PortalSuspended.
func (r *relay) complete(ctx context.Context, p *pending, frame []byte) error {
	r.srv.Gate.CountMasked(r.sess, p.masker)
	n, ok := int64(0), false
	if frame[0] == 'C' && len(frame) > 5 {
		// The tag is a C string; a malformed upstream message without one has no count.
		n, ok = tagRows(bytes.TrimSuffix(frame[5:], []byte{0}))
	}
	if !ok {
		n = p.resRows
	}
	p.out.Rows += n
	p.resRows = 0
	var msg []byte
	if p.truncated {
		p.out.SQLState = "54000"
		p.out.Error = "row limit exceeded"
		p.out.Rows = p.check.Decision.MaxRows
		msg, _ = rowLimitError(p.check).Encode(nil)
	} else {
		msg = frame
	}
	switch p.kind {
	case pQuery:
		p.stmtIdx++
		r.hold(p, msg)
		return nil
	case pExecute:
		if p.cap != nil {
			msg = r.capVerdict(p, frame, n, ok, msg)
		}
		r.pop()
		if p.check != nil {
			r.finish(ctx, p.check, p.out, msg)
			return nil
		}
	}
	r.emit(msg)
	return nil
}

// hold keeps msg, the latest completion of simple query p, until the next message shows
// whether it was the last one (then it leaves after the query's record). The previous one
// leaves now. Only the oldest pending holds a completion, so one buffer serves the session.
func (r *relay) hold(p *pending, msg []byte) {
	if p.held != nil {
		r.releaseHeld(p)
	}
	p.held = append(r.heldBuf[:0], msg...)
	r.heldBuf = p.held[:0]
}

func (r *relay) releaseHeld(p *pending) {
	r.emit(p.held)
	p.held = nil
}

// errorResponse handles an ErrorResponse: rewrites Gatehouse's own stand-in failures into
// the deny, records failed statements and drops the messages PostgreSQL now skips.
func (r *relay) errorResponse(ctx context.Context, p *pending, frame []byte) error {
	var er pgproto3.ErrorResponse
	if err := er.Decode(frame[5:]); err != nil {
		return fmt.Errorf("malformed ErrorResponse from upstream: %w", err)
	}
	msg := frame
	p.copying, p.copyMask = false, nil
	switch {
	case p.denied:
		if !strings.Contains(er.Message, "gatehouse_deny_"+r.nonce) {
			r.srv.log().Warn("pg deny stand-in failed unexpectedly", "session", r.sess.ID, "sqlstate", er.Code)
		}
		m := denyResp(p.check)
		msg, _ = m.Encode(nil)
		p.out.SQLState, p.out.Error = m.Code, m.Message
	case p.truncated:
		msg, _ = rowLimitError(p.check).Encode(nil)
		p.out.SQLState, p.out.Error = "54000", "row limit exceeded"
		p.out.Rows = p.check.Decision.MaxRows
	default:
		if r.srv.Gate.Masker != nil {
			c := r.textCheck(p)
			n := r.scrubFields(c, &er)
			if c == nil || c.Decision.MaskProfile != "none" {
				n += redactErrorValues(&er, func(table string, cols []string) bool {
					return r.srv.Gate.ErrorValueSensitive(ctx, r.sess, c, table, cols)
				}, writtenIn(c))
			}
			if n > 0 {
				if p.check != nil {
					p.out.Masked += int64(n)
				}
				msg, _ = er.Encode(nil)
			}
		}
		p.out.SQLState, p.out.Error = er.Code, er.Message
	}
	if er.Severity == "FATAL" || er.Severity == "PANIC" {
		// The upstream ends the session (terminated, shut down): tell the client as is.
		r.emit(msg)
		return nil
	}
	if p.kind == pQuery || p.kind == pFunction {
		r.hold(p, msg)
		return nil
	}
	// Extended protocol: this message failed; PostgreSQL discards everything up to Sync.
	failed := p
	r.setSkipping(true)
	r.pop()
	if failed.capAbort {
		// Gatehouse's own failure that undid a write over its limit: the client was told.
		r.skipToSync(ctx, nil)
		return nil
	}
	if failed.check == nil {
		// A Bind or a Describe failed. PostgreSQL plans an unnamed statement with its
		// parameters at Bind, so a value that does not fit fails there, not at Execute:
		// the Execute it skips is the statement that failed, recorded with this error
		// before the client sees it.
		r.skipToSync(ctx, &failed.out)
		// Even the error of a Describe Gatehouse injected is shown: it stands for the
		// failure of the client's Execute that follows it, which PostgreSQL now skips.
		r.emit(msg)
		return nil
	}
	// The failed statement is recorded first, then the refusals PostgreSQL skips; its error
	// leaves once all of them are on record.
	ack := r.srv.Gate.Finish(ctx, r.sess, failed.check, failed.out)
	r.skipToSync(ctx, nil)
	r.out.emitHeld(ack, msg)
	return nil
}

// skipToSync drops the messages PostgreSQL discards after an error, up to the next Sync (or
// simple Query, which it also discards), and records the statements among them: denied ones
// were refused even though the client never sees that refusal, and allowed Executes were
// asked for and never ran. failure, when set, is the outcome of the first allowed Execute
// (its own Bind or Describe failed).
func (r *relay) skipToSync(ctx context.Context, failure *gate.Outcome) {
	for {
		p := r.peek()
		if p == nil || p.kind == pSync {
			return
		}
		r.pop()
		if failure != nil && !p.denied && p.kind == pExecute && p.check != nil {
			r.recordUnseen(ctx, p.check, *failure)
			failure = nil
			continue
		}
		r.recordSkipped(ctx, p)
	}
}

// notRunWhy is the recorded outcome of a message PostgreSQL skipped after an earlier error.
const notRunWhy = "not run: an earlier message before Sync failed"

// recordSkipped records a statement PostgreSQL skipped after an earlier error: a denied
// one as refused, an allowed Execute as not run (25P02, PostgreSQL's code for commands
// ignored after an error).
func (r *relay) recordSkipped(ctx context.Context, p *pending) {
	switch {
	case p.check == nil:
	case p.denied:
		r.recordUnseen(ctx, p.check, gate.Outcome{SQLState: "42501", Error: notRunWhy})
	case p.kind == pExecute && !p.capAbort:
		r.recordUnseen(ctx, p.check, gate.Outcome{SQLState: "25P02", Error: notRunWhy})
	}
}

// publishTx tells the client loop the transaction status of ReadyForQuery frame, which
// answers p (before p is popped: a client loop that finds nothing in flight sees it).
func (r *relay) publishTx(p *pending, frame []byte) {
	if len(frame) == 6 {
		r.txState.Store(p.ends<<8 | uint64(frame[5]))
	}
}

// ready handles ReadyForQuery: the end of a simple Query, a FunctionCall or a Sync.
func (r *relay) ready(ctx context.Context, frame []byte) error {
	if r.parkedAt(frame) {
		return errParked
	}
	if r.skipping {
		r.setSkipping(false)
	}
	if r.limitCancel != nil {
		// The upstream signals a cancelled backend asynchronously: the client may send its
		// next statement only once the signal has been delivered, which the upstream
		// confirms by closing the cancel connection. A backend that is idle by then ignores
		// it (PostgreSQL drops a cancel that arrives while it waits for a command).
		select {
		case <-r.limitCancel:
		case <-ctx.Done():
		}
		r.limitCancel = nil
	}
	for {
		p := r.peek()
		if p == nil {
			break
		}
		if p.kind == pSync {
			r.publishTx(p, frame)
			r.pop()
			break
		}
		if p.kind == pQuery || p.kind == pFunction {
			r.publishTx(p, frame)
			r.pop()
			if p.check != nil {
				r.finish(ctx, p.check, p.out, p.held)
			} else {
				r.emit(p.held)
			}
			break
		}
		// A message that was never answered (it followed an error): drop it.
		r.pop()
		r.recordSkipped(ctx, p)
	}
	r.emit(frame)
	return nil
}
