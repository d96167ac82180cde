package gate

import (
	"context"
	"strings"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// Held is a statement that policy holds for approval, as the gate hands it to Approvals.
type Held struct {
	Session   *Session
	Statement *inspect.Statement
	// Rule and Message are the holding rule's name and message.
	Rule    string
	Message string
	// Reason is the purpose the client declared (sqlcommenter purpose tag or the
	// gatehouse.purpose startup option), shown to approvers.
	Reason string
}

// Approvals is the optional approval workflow (internal/approval implements it). A client's
// statement cannot wait minutes on an open connection for a person to decide, so a held
// statement is refused with the id of a request filed for it, and once someone else approves
// that request the requester runs the same statement again and it goes through, once.
type Approvals interface {
	// Approved returns the id of an approved, unused, unexpired request by the session's
	// identity for exactly this statement on the session's target and database ("" when
	// there is none). It changes nothing.
	Approved(ctx context.Context, h Held) (string, error)
	// Use marks approval id used by the session, atomically: of sessions racing for one
	// approval exactly one gets true. false means it was used or lapsed meanwhile.
	Use(ctx context.Context, id string, h Held) (bool, error)
	// Hold files a request for h, or finds the pending (or denied) one for the same identity,
	// target and statement, and returns the decision the client sees: require_approval with
	// ApprovalID and a message saying what to do.
	Hold(ctx context.Context, h Held) (Decision, error)
}

// approvalsUnavailable is appended to the message of a held statement when no approval
// workflow is wired into the gate (embedded uses and tests).
const approvalsUnavailable = "approval requests are not available in this Gatehouse, so the statement was not run"

// approve turns a require_approval decision into an allow when an approval covers the
// statement (noting it in c, to be used once the whole text is allowed), or into the
// decision of the request filed for it. Only held statements reach here, so statements that
// need no approval pay nothing for the workflow.
func (g *Gate) approve(ctx context.Context, s *Session, c *Check, st *inspect.Statement, d Decision) Decision {
	if g.Approvals == nil {
		d.Message = joinMessage(d.Message, approvalsUnavailable)
		return d
	}
	h := Held{Session: s, Statement: st, Rule: d.Rule, Message: d.Message, Reason: heldReason(s, st)}
	id, err := g.Approvals.Approved(ctx, h)
	if err != nil {
		g.log().Error("look up approvals; holding the statement", "session", s.ID, "err", err)
		d.Message = joinMessage(d.Message, "the approval store cannot be read right now, so the statement was not run; try again shortly")
		return d
	}
	if id != "" {
		c.approvals = append(c.approvals, heldApproval{id: id, held: h})
		return Decision{Action: Allow, Rule: d.Rule, ApprovalID: id, Level: d.Level}
	}
	return g.hold(ctx, h, d)
}

// hold files (or finds) the request for a held statement.
func (g *Gate) hold(ctx context.Context, h Held, d Decision) Decision {
	hd, err := g.Approvals.Hold(ctx, h)
	if err != nil {
		g.log().Error("file approval request; holding the statement", "err", err)
		d.Message = joinMessage(d.Message, "the approval request could not be filed right now, so the statement was not run; try again shortly")
		return d
	}
	return hd
}

// heldApproval is an approval found for one statement of a check, used when the check is
// allowed as a whole.
type heldApproval struct {
	id   string
	held Held
}

// useApprovals marks the approvals found for an allowed check used. A Parse only prepares,
// so it uses nothing (its Execute will). If another session used an approval first, the
// check becomes the decision of a fresh request for that statement.
func (g *Gate) useApprovals(ctx context.Context, c *Check, via Via) {
	if len(c.approvals) == 0 {
		return
	}
	ids := make([]string, 0, len(c.approvals))
	for _, a := range c.approvals {
		ids = append(ids, a.id)
	}
	c.Decision.ApprovalID = strings.Join(ids, ",")
	if via == ViaParse {
		return
	}
	for _, a := range c.approvals {
		ok, err := g.Approvals.Use(ctx, a.id, a.held)
		if err != nil {
			g.log().Error("use approval; refusing the statement", "approval", a.id, "err", err)
			c.Decision = Decision{Action: RequireApproval, Rule: a.held.Rule, ApprovalID: a.id,
				Message: joinMessage(a.held.Message, "approval "+a.id+" could not be used right now, so the statement was not run; try again shortly")}
			c.Denied = a.held.Statement
			return
		}
		if !ok {
			c.Decision = g.hold(ctx, a.held, Decision{Action: RequireApproval, Rule: a.held.Rule, Message: a.held.Message})
			c.Denied = a.held.Statement
			return
		}
	}
}

// heldReason is the purpose the client gave for a statement.
func heldReason(s *Session, st *inspect.Statement) string {
	if p, _ := sqlComment(st.Text); p != "" {
		return p
	}
	if s != nil && s.Options != nil {
		return s.Options["gatehouse.purpose"]
	}
	return ""
}

// joinMessage appends more to a rule's message as a further clause.
func joinMessage(msg, more string) string {
	msg = strings.TrimRight(msg, ". ")
	if msg == "" {
		return more
	}
	return msg + "; " + more
}
