package pg

// Affected-rows limits (gate.Decision.MaxAffectedRows) for UPDATE, DELETE, MERGE and INSERT.
//
// A capped write runs through the extended protocol followed by a Flush, and the client loop
// waits for its completion before it forwards anything else. Until then PostgreSQL has not
// committed the write: outside a transaction block the extended protocol runs it in an
// implicit transaction that only the next Sync commits; inside a block the client's COMMIT is
// still to come. When the completion's row count exceeds the limit, the client sees an
// ErrorResponse 54000 in place of the CommandComplete, and Gatehouse sends a message that
// fails (a Parse of text that is not SQL) and keeps its error from the client: PostgreSQL
// aborts the transaction and skips to the next Sync, exactly as if the write itself had
// failed. Outside a block nothing changed and the session ends up idle ('I'); inside one the
// client's transaction is failed ('E') and must be rolled back, as after any failed statement.
// Failing the transaction is deliberate: a client that goes on after an error it did not
// expect must not commit the rest of its work as if the write had happened.
//
// A simple Query holding a capped write is sent as Parse/Bind/Describe/Execute of the unnamed
// statement and portal, then Flush and Sync, with the responses the simple Query would have
// had (ParseComplete, BindComplete and NoData are kept from the client). A write that comes
// in a string of several statements is refused by the gate; one sent while PostgreSQL skips
// messages after an error, or an Execute that asks for part of the rows, is refused here:
// Gatehouse could not hold it back or count it.

import (
	"bytes"
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/gate"
)

// flushFrame is a Flush message: PostgreSQL sends what it has buffered without ending the
// implicit transaction, so the relay learns a write's row count before anything commits it.
var flushFrame = []byte{'H', 0, 0, 0, 4}

// capState is the bookkeeping of one capped write's Execute, shared by both loops: the
// upstream loop sets over before it pops the pending (which closes done); the client loop
// reads over only after done is closed.
type capState struct {
	done chan struct{}
	over bool // the write must be undone: more rows than the limit, or a count it cannot read
}

// pushUnlessSkipping queues ps unless PostgreSQL skips messages after an extended-protocol
// error (a capped Execute it skipped would never be answered and the client loop would wait
// for it forever). It checks and queues under one lock with the upstream loop's marking of
// the error, so a message queued before the error is handled is popped by its skipToSync.
func (r *relay) pushUnlessSkipping(ps ...*pending) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.skipping {
		return false
	}
	for _, p := range ps {
		p.ends = r.blockEnds
	}
	r.queue = append(r.queue, ps...)
	return true
}

// setSkipping records whether PostgreSQL is skipping messages until Sync (upstream loop).
func (r *relay) setSkipping(v bool) {
	r.mu.Lock()
	r.skipping = v
	r.mu.Unlock()
}

// refuseCapped turns an allowed capped write into a refusal the client can act on.
func refuseCapped(c *gate.Check, why string) {
	c.Decision = gate.Decision{Action: gate.Deny, Rule: c.Decision.Rule, Level: c.Decision.Level,
		Message: fmt.Sprintf("this write is limited to %d affected rows and %s", c.Decision.MaxAffectedRows, why)}
	if len(c.Statements) == 1 {
		c.Denied = c.Statements[0]
	}
}

// cappedQuery runs a simple Query that holds a capped write (the gate allows only one
// statement in it) as an extended-protocol exchange.
func (r *relay) cappedQuery(ctx context.Context, c *gate.Check, sql string) error {
	// The wait holds on to the capState, not to the pending, which is recycled once answered.
	cs := &capState{done: make(chan struct{})}
	ex := &pending{request: request{kind: pExecute, check: c, copyPlans: r.planCopy(ctx, c), cap: cs}}
	// The Parse carries the check too: if it fails, its error is the statement's outcome.
	if !r.pushUnlessSkipping(
		&pending{request: request{kind: pParse, check: c, swallow: true}},
		&pending{request: request{kind: pBind, swallow: true}},
		&pending{request: request{kind: pDescribeP, swallowNoData: true}},
		ex) {
		refuseCapped(c, "was sent while the session skips messages after an error; send Sync first")
		// PostgreSQL may skip the stand-in too: the refusal is on record either way.
		r.push(&pending{request: request{kind: pQuery, check: c, denied: true}, result: result{out: gate.Outcome{SQLState: "42501", Error: c.DenyMessage()}}})
		return r.writeMsg(&pgproto3.Query{String: r.denyToken()})
	}
	// The upstream's unnamed statement and portal now run this write: a later Bind or
	// Execute of them is checked (and capped) as this write.
	r.stmts[""] = clientStmt{text: sql}
	r.portals[""] = clientStmt{text: sql, described: true}
	for _, m := range []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}} {
		if err := r.writeMsg(m); err != nil {
			return err
		}
	}
	r.awaitCapped(ctx, cs)
	r.push(&pending{request: request{kind: pSync}})
	return r.writeMsg(&pgproto3.Sync{})
}

// cappedExecute forwards the client's Execute of a capped write (frame) and waits for its
// row count before the client's next message goes upstream.
func (r *relay) cappedExecute(ctx context.Context, m *pgproto3.Execute, frame []byte, c *gate.Check, plans []gate.CopyMasker) error {
	ps := make([]*pending, 0, 2)
	if m.MaxRows == 0 && r.srv.Gate.Masker != nil && !r.portals[m.Portal].described {
		// As for any Execute: the masker needs the result's columns (RETURNING).
		ps = append(ps, &pending{request: request{kind: pDescribeP, name: m.Portal, swallow: true}})
	}
	cs := &capState{done: make(chan struct{})}
	ex := &pending{request: request{kind: pExecute, name: m.Portal, check: c, copyPlans: plans, cap: cs}}
	ps = append(ps, ex)
	why := ""
	switch {
	case m.MaxRows != 0:
		why = "its Execute asks for part of the rows, which Gatehouse cannot count; execute it for all rows"
	case !r.pushUnlessSkipping(ps...):
		why = "was sent while the session skips messages after an error; send Sync first"
	}
	if why != "" {
		refuseCapped(c, why)
		r.push(&pending{request: request{kind: pExecute, name: m.Portal, check: c, denied: true}})
		tok := r.denyToken()
		return r.writeMsg(&pgproto3.Parse{Name: tok, Query: tok})
	}
	if len(ps) == 2 {
		r.describedPortal([]byte(m.Portal))
		if err := r.writeMsg(&pgproto3.Describe{ObjectType: 'P', Name: m.Portal}); err != nil {
			return err
		}
	}
	r.write(frame)
	r.awaitCapped(ctx, cs)
	return nil
}

// awaitCapped sends a Flush after the capped Execute whose state is cs, waits until the
// upstream loop has answered it and, when the write went over its limit, makes PostgreSQL
// abort the transaction that holds it.
func (r *relay) awaitCapped(ctx context.Context, cs *capState) {
	r.write(flushFrame)
	_ = r.uw.Flush() // a failed write ends the upstream loop, which ends the wait below
	select {
	case <-cs.done:
	case <-r.upGone:
		return
	case <-ctx.Done():
		return
	}
	if !cs.over {
		return
	}
	// Not SQL: the Parse fails, PostgreSQL aborts the transaction and skips to Sync. Its
	// error is kept from the client, who was told why in place of the write's completion.
	tok := "gatehouse_write_limit_" + r.nonce
	r.push(&pending{request: request{kind: pParse, swallow: true, capAbort: true}})
	_ = r.writeMsg(&pgproto3.Parse{Name: tok, Query: tok})
}

// capVerdict judges the completion (frame) of a capped write that reported n rows (counted:
// the tag had a count) and returns what the client sees instead when it must be undone.
func (r *relay) capVerdict(p *pending, frame []byte, n int64, counted bool, msg []byte) []byte {
	limit := p.check.Decision.MaxAffectedRows
	tag := []byte(nil)
	if frame[0] == 'C' && len(frame) > 5 {
		tag = bytes.TrimSuffix(frame[5:], []byte{0})
	}
	word, _, _ := bytes.Cut(tag, []byte{' '})
	var e *pgproto3.ErrorResponse
	switch {
	case p.truncated:
		// The client is told the result exceeded max_rows: what it changed goes too.
		p.cap.over = true
		return msg
	case !counted || !isWriteTag(word):
		e = errorResp("42501", fmt.Sprintf("gatehouse: rule %q limits this write to %d affected rows, but it completed as %q, whose count is not the rows it changed (a write inside a CTE or EXPLAIN ANALYZE); it was rolled back — run the write as a plain UPDATE, DELETE, MERGE or INSERT", p.check.Decision.Rule, limit, string(word)))
		p.out.SQLState, p.out.Error = e.Code, "affected rows could not be counted; rolled back"
	case n > limit:
		e = errorResp("54000", fmt.Sprintf("gatehouse: the statement would change %d rows, more than the limit of %d affected rows (rule %q); it was rolled back", n, limit, p.check.Decision.Rule))
		e.Hint = "Narrow the WHERE clause or change the rows in smaller batches. Inside a transaction block the transaction is now aborted: ROLLBACK."
		p.out.SQLState, p.out.Error = e.Code, fmt.Sprintf("affected-rows limit exceeded: %d rows over the limit of %d; rolled back", n, limit)
	default:
		return msg
	}
	p.cap.over = true
	p.out.Rows = 0
	out, _ := e.Encode(nil)
	return out
}

func isWriteTag(word []byte) bool {
	switch string(word) {
	case "INSERT", "UPDATE", "DELETE", "MERGE":
		return true
	}
	return false
}
