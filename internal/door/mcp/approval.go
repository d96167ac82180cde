package mcp

import (
	"context"
	"errors"
	"fmt"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/approval"
)

// ApprovalReader reads approval requests (approval.Store does), so an agent can follow the
// request its held statement filed.
type ApprovalReader interface {
	Get(ctx context.Context, id string) (approval.Request, error)
}

var _ ApprovalReader = (*approval.Store)(nil)

// ApprovalArgs name an approval request.
type ApprovalArgs struct {
	ID string `json:"id" jsonschema:"the approval_id a held execute returned (apr_...)"`
}

// ApprovalStatus is approval_status' result: where the caller's request stands and what to do.
type ApprovalStatus struct {
	ID string `json:"id"`
	// Status is pending, approved, denied, expired or used.
	Status        string    `json:"status"`
	Target        string    `json:"target"`
	StatementKind string    `json:"statement_kind"`
	Statement     string    `json:"statement" jsonschema:"the held statement with its literals redacted"`
	Rule          string    `json:"rule"`
	Reason        string    `json:"reason,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	ExpiresAt     time.Time `json:"expires_at"`
	DecidedBy     string    `json:"decided_by,omitempty"`
	DecidedAt     time.Time `json:"decided_at,omitzero"`
	Comment       string    `json:"comment,omitempty"`
	ValidUntil    time.Time `json:"valid_until,omitzero"`
	UsedAt        time.Time `json:"used_at,omitzero"`
	// Next says what the agent can do now.
	Next string `json:"next"`
}

// approvalStatus reports one of the caller's own approval requests. Another identity's
// request is answered exactly like an unknown id, so ids cannot be probed.
func (d *Door) approvalStatus(ctx context.Context, req *sdk.CallToolRequest, a ApprovalArgs) (*sdk.CallToolResult, ApprovalStatus, error) {
	id, err := callerOf(req)
	if err != nil {
		return nil, ApprovalStatus{}, err
	}
	if d.Approvals == nil {
		return nil, ApprovalStatus{}, errors.New("approvals are not available on this server")
	}
	started := time.Now()
	r, err := d.Approvals.Get(ctx, a.ID)
	if errors.Is(err, approval.ErrNotFound) || (err == nil && r.Requester != id.Subject) {
		// The record keeps no id that is not the caller's: probing is visible, not what it found.
		msg := fmt.Sprintf("no approval request %q of yours; approval_status reports the requests your own held statements filed", a.ID)
		if nerr := d.note(ctx, req, id, "approval_status", started, "", 0, "no approval request of the caller's with this id"); nerr != nil {
			return nil, ApprovalStatus{}, nerr
		}
		return nil, ApprovalStatus{}, errors.New(msg)
	}
	if err != nil {
		d.log().Error("read approval request", "id", a.ID, "err", err)
		return nil, ApprovalStatus{}, errors.New("gatehouse: the approval request cannot be read right now; try again shortly")
	}
	if err := d.note(ctx, req, id, "approval_status", started, r.ID, 1, ""); err != nil {
		return nil, ApprovalStatus{}, err
	}
	out := ApprovalStatus{
		ID: r.ID, Status: string(r.Status), Target: r.Target, StatementKind: r.StatementKind, Statement: r.Statement,
		Rule: r.Rule, Reason: r.Reason, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, DecidedBy: r.DecidedBy,
		DecidedAt: r.DecidedAt, Comment: r.Comment, ValidUntil: r.ValidUntil, UsedAt: r.UsedAt,
	}
	switch r.Status {
	case approval.Pending:
		out.Next = "wait: an approver has not decided yet" + d.consoleHint(r.ID)
	case approval.Approved:
		out.Next = "run the identical statement again with execute, on the same target: it runs once"
	case approval.Denied:
		out.Next = "the request was denied; do not retry the statement unchanged"
	case approval.Expired:
		out.Next = "the request lapsed; run the statement again to file a new request"
	case approval.Used:
		out.Next = "the approved statement has run; approval is needed again to run it another time"
	}
	return nil, out, nil
}
