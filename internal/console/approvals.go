package console

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/internal/approval"
)

// approvalsData is the queue and the history. PendingMore and HistoryMore say that there
// are more than the page lists (it says so rather than cut the list silently).
type approvalsData struct {
	Pending     []approval.Request
	History     []approval.Request
	PendingMore bool
	HistoryMore bool
}

const (
	// pendingShown is the most pending requests the queue lists (the approval store's
	// largest page).
	pendingShown = 1000
	// historyShown is how many decided requests the history lists, newest first.
	historyShown = 100
)

// historyStatuses are the statuses of decided (or lapsed) requests.
var historyStatuses = []approval.Status{approval.Approved, approval.Denied, approval.Used, approval.Expired}

// approvalsPage lists pending requests and the decided ones: everyone's for approvers and
// the privileged groups, else the viewer's own. The queue is read by itself, so a pending
// request is listed however many newer ones were decided since.
func (c *Console) approvalsPage(w http.ResponseWriter, v *viewer) {
	var d approvalsData
	list := func(st approval.Status, limit int) ([]approval.Request, bool) {
		f := approval.Filter{Status: st, Limit: limit}
		if !v.seesAll {
			f.Requester = v.id.Subject
		}
		rs, err := c.opts.Approvals.List(v.r.Context(), f)
		if err != nil {
			c.opts.Log.Error("console: list approvals", "status", st, "err", err)
			c.fail(w, v, http.StatusInternalServerError, "Listing approval requests failed; see the server log.")
			return nil, false
		}
		return rs, true
	}
	var ok bool
	if d.Pending, ok = list(approval.Pending, pendingShown); !ok {
		return
	}
	d.PendingMore = len(d.Pending) == pendingShown
	for _, st := range historyStatuses {
		rs, ok := list(st, historyShown+1)
		if !ok {
			return
		}
		d.History = append(d.History, rs...)
	}
	slices.SortFunc(d.History, func(a, b approval.Request) int {
		if n := b.CreatedAt.Compare(a.CreatedAt); n != 0 {
			return n
		}
		return strings.Compare(a.ID, b.ID)
	})
	if len(d.History) > historyShown {
		d.History, d.HistoryMore = d.History[:historyShown], true
	}
	c.render(w, http.StatusOK, "approvals", page{Title: "Approvals", Nav: "approvals", Viewer: v, Data: d})
}

// approvalData is one request's page.
type approvalData struct {
	Request approval.Request
	// MayDecide: the viewer is an approver and the request is pending. The form shows on
	// the approver's own requests too; the approval store refuses those, as the API does.
	MayDecide bool
	Own       bool
	Notice    string
}

// getVisible reads a request the viewer may see (404 otherwise, as the API does).
func (c *Console) getVisible(w http.ResponseWriter, v *viewer, id string) (approval.Request, bool) {
	req, err := c.opts.Approvals.Get(v.r.Context(), id)
	if errors.Is(err, approval.ErrNotFound) || (err == nil && !v.seesAll && !v.owns(req.Requester)) {
		c.fail(w, v, http.StatusNotFound, approval.ErrNotFound.Error())
		return req, false
	}
	if err != nil {
		c.opts.Log.Error("console: get approval", "err", err)
		c.fail(w, v, http.StatusInternalServerError, "Reading the approval request failed; see the server log.")
		return req, false
	}
	return req, true
}

func (c *Console) approvalPage(w http.ResponseWriter, v *viewer) {
	req, ok := c.getVisible(w, v, v.r.PathValue("id"))
	if !ok {
		return
	}
	c.renderApproval(w, v, http.StatusOK, req, "", "")
}

func (c *Console) renderApproval(w http.ResponseWriter, v *viewer, code int, req approval.Request, errMsg, notice string) {
	d := approvalData{Request: req, Own: v.owns(req.Requester), Notice: notice}
	d.MayDecide = req.Status == approval.Pending && c.opts.Approvals.MayDecide(v.id)
	c.render(w, code, "approval", page{Title: "Approval request " + req.ID, Nav: "approvals", Viewer: v, Error: errMsg, Data: d})
}

// decide approves or denies a request with the same rules as the CLI and the API (the
// approval store enforces them: approver groups, no self-approval, pending only) and the
// same ledger events.
func (c *Console) decide(w http.ResponseWriter, v *viewer) {
	id, verb := v.r.PathValue("id"), v.r.PathValue("verb")
	comment := strings.TrimSpace(v.r.PostFormValue("comment"))
	var (
		req approval.Request
		err error
	)
	switch verb {
	case "approve":
		req, err = c.opts.Approvals.Approve(v.r.Context(), id, v.id, comment)
	case "deny":
		req, err = c.opts.Approvals.Deny(v.r.Context(), id, v.id, comment)
	default:
		c.fail(w, v, http.StatusNotFound, "no such action")
		return
	}
	if err == nil {
		http.Redirect(w, v.r, Prefix+"approvals/"+req.ID, http.StatusSeeOther)
		return
	}
	code := http.StatusServiceUnavailable
	var se *approval.StatusError
	switch {
	case errors.Is(err, approval.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, approval.ErrOwnRequest), errors.Is(err, approval.ErrNotApprover):
		code = http.StatusForbidden
	case errors.As(err, &se):
		code = http.StatusConflict
	default:
		c.opts.Log.Error("console: decide", "err", err)
		c.fail(w, v, code, "The decision could not be stored or recorded, so nothing changed; try again shortly.")
		return
	}
	ev := c.event(v.r, v.id, EventRefused, "console "+verb+" "+id+" refused: "+err.Error())
	ev.Decision, ev.ApprovalID = "deny", id
	if rerr := c.opts.Ledger.Record(v.r.Context(), ev); rerr != nil {
		c.opts.Log.Error("console: record refused decision", "err", rerr)
	}
	req, ok := c.getVisible(w, v, id)
	if !ok {
		return
	}
	c.renderApproval(w, v, code, req, err.Error(), "")
}
