package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// auditGroups may read the ledger through the API: people whose job is to answer auditors.
var auditGroups = []string{"auditors", "compliance", "dba"}

// registerAuditAPI serves the ledger's search and the auditor's standing questions as JSON,
// for the console and for scripts. Callers authenticate with HTTP Basic auth exactly as they
// log in to a database (user = token name or OIDC subject, password = the token), must be in
// one of auditGroups, and every call is itself recorded in the ledger.
func (in *Instance) registerAuditAPI(mux *http.ServeMux) {
	in.registerApprovalAPI(mux)
	mux.HandleFunc("GET /api/v1/audit/events", in.auditHandler(func(ctx context.Context, st ledger.Store, q ledger.Query, r *http.Request) (any, error) {
		return st.Search(ctx, q)
	}))
	mux.HandleFunc("GET /api/v1/audit/who-dropped", in.auditHandler(func(ctx context.Context, st ledger.Store, q ledger.Query, r *http.Request) (any, error) {
		if q.Table == "" {
			return nil, errBadRequest("table is required")
		}
		return st.WhoDropped(ctx, q.Table, q.Range(time.Now()))
	}))
	mux.HandleFunc("GET /api/v1/audit/pii-readers", in.auditHandler(func(ctx context.Context, st ledger.Store, q ledger.Query, r *http.Request) (any, error) {
		class := q.Class
		if class == "" {
			class = "pii"
		}
		return st.PIIReaders(ctx, class, q.Range(time.Now()))
	}))
	mux.HandleFunc("GET /api/v1/audit/agents", in.auditHandler(func(ctx context.Context, st ledger.Store, q ledger.Query, r *http.Request) (any, error) {
		if q.Table == "" {
			return nil, errBadRequest("table is required")
		}
		return st.AgentsQueried(ctx, q.Table, q.Range(time.Now()))
	}))
}

type errBadRequest string

func (e errBadRequest) Error() string { return string(e) }

func (in *Instance) auditHandler(run func(context.Context, ledger.Store, ledger.Query, *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, secret, ok := r.BasicAuth()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="gatehouse"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "authenticate with your Gatehouse or OIDC token (HTTP Basic: user = token name or subject)"})
			return
		}
		id, err := in.auth.Authenticate(r.Context(), user, secret)
		if err != nil {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": identity.ErrInvalidCredentials.Error()})
			return
		}
		if !slices.ContainsFunc(auditGroups, id.InGroup) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "reading the ledger needs membership of one of the groups auditors, compliance or dba"})
			return
		}
		q, err := queryFromURL(r)
		if err == nil {
			err = q.Validate()
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		ev := &ledger.Event{Type: ledger.EventAdmin, Time: time.Now(), Subject: id.Subject, IdentityKind: string(id.Kind),
			Groups: id.Groups, AuthMethod: id.AuthMethod, ClientAddr: r.RemoteAddr, Message: "api " + r.URL.Path + "?" + r.URL.RawQuery}
		if err := in.ledger.Record(r.Context(), ev); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the audit ledger cannot record this request; try again shortly"})
			return
		}
		res, err := run(r.Context(), in.ledger.Store(), q, r)
		var bad errBadRequest
		switch {
		case errors.As(err, &bad):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		case err != nil:
			in.log.Error("audit api", "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "search failed; see the server log"})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"results": res})
		}
	}
}

// queryFromURL reads the same filters `gatehouse audit search` takes.
func queryFromURL(r *http.Request) (ledger.Query, error) {
	v := r.URL.Query()
	q := ledger.Query{
		Identity: v.Get("identity"), IdentityKind: v.Get("kind"), Target: v.Get("target"), Environment: v.Get("env"),
		StatementKind: v.Get("statement"), Category: v.Get("category"), Table: v.Get("table"), Class: v.Get("class"),
		Decision: v.Get("decision"), Type: ledger.EventType(v.Get("type")), Text: v.Get("text"), Via: v.Get("via"),
		Rule: v.Get("rule"),
	}
	var err error
	if s := v.Get("since"); s != "" {
		if q.Since, err = config.ParseDuration(s); err != nil {
			return q, errBadRequest("since: " + err.Error())
		}
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if s := v.Get(f.name); s != "" {
			if *f.dst, err = time.Parse(time.RFC3339, s); err != nil {
				return q, errBadRequest(f.name + ": expected RFC 3339, e.g. 2026-01-31T00:00:00Z")
			}
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil {
			return q, errBadRequest("limit: expected a number")
		}
	}
	return q, nil
}

// registerApprovalAPI serves the approval workflow. Approvers decide requests with their own
// credential, exactly as they would log in to a database: "Authorization: Bearer <Gatehouse
// token or OIDC token>", or HTTP Basic (user = token name or subject, password = the token).
// Their identity and groups come from internal/identity, so "someone else's approval" means
// another authenticated principal. Every call is recorded in the ledger: decisions as
// approval.approved/approval.denied events, reads and refused attempts as admin events.
func (in *Instance) registerApprovalAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/approvals", in.approvalRead(func(r *http.Request, id *identityInfo) (int, any) {
		f := approval.Filter{Status: approval.Status(r.URL.Query().Get("status"))}
		if f.Status != "" && !approval.ValidStatus(f.Status) {
			return http.StatusBadRequest, map[string]string{"error": "status: expected pending, approved, denied, expired or used"}
		}
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return http.StatusBadRequest, map[string]string{"error": "limit: expected a number"}
			}
			f.Limit = n
		}
		if !id.seesAll {
			f.Requester = id.Subject
		}
		list, err := in.approvals.List(r.Context(), f)
		if err != nil {
			in.log.Error("approvals api: list", "err", err)
			return http.StatusInternalServerError, map[string]string{"error": "listing approval requests failed; see the server log"}
		}
		return http.StatusOK, map[string]any{"results": list}
	}))
	mux.HandleFunc("GET /api/v1/approvals/{id}", in.approvalRead(func(r *http.Request, id *identityInfo) (int, any) {
		req, err := in.approvals.Get(r.Context(), r.PathValue("id"))
		if errors.Is(err, approval.ErrNotFound) || (err == nil && !id.seesAll && !strings.EqualFold(req.Requester, id.Subject)) {
			return http.StatusNotFound, map[string]string{"error": approval.ErrNotFound.Error()}
		}
		if err != nil {
			in.log.Error("approvals api: get", "err", err)
			return http.StatusInternalServerError, map[string]string{"error": "reading the approval request failed; see the server log"}
		}
		return http.StatusOK, map[string]any{"approval": req}
	}))
	mux.HandleFunc("POST /api/v1/approvals/{id}/approve", in.approvalDecide(in.approvalsApprove))
	mux.HandleFunc("POST /api/v1/approvals/{id}/deny", in.approvalDecide(in.approvalsDeny))
}

func (in *Instance) approvalsApprove(ctx context.Context, id string, who *identityInfo, comment string) (approval.Request, error) {
	return in.approvals.Approve(ctx, id, who.Identity, comment)
}

func (in *Instance) approvalsDeny(ctx context.Context, id string, who *identityInfo, comment string) (approval.Request, error) {
	return in.approvals.Deny(ctx, id, who.Identity, comment)
}

// identityInfo is the authenticated caller of the approval API.
type identityInfo struct {
	*identity.Identity
	// seesAll: approvers and auditors see every request; others only their own.
	seesAll bool
}

// apiIdentity authenticates an API caller by Bearer credential or HTTP Basic auth.
func (in *Instance) apiIdentity(w http.ResponseWriter, r *http.Request) (*identityInfo, bool) {
	var (
		id  *identity.Identity
		err error
	)
	if user, secret, ok := r.BasicAuth(); ok {
		id, err = in.auth.Authenticate(r.Context(), user, secret)
	} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		id, err = in.auth.AuthenticateBearer(r.Context(), strings.TrimSpace(tok))
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse", Basic realm="gatehouse"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "authenticate with your Gatehouse or OIDC token: Authorization: Bearer <token>, or HTTP Basic (user = token name or subject)"})
		return nil, false
	}
	if err != nil {
		in.log.Info("approvals api: authentication failed", "err", err)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": identity.ErrInvalidCredentials.Error()})
		return nil, false
	}
	return &identityInfo{Identity: id, seesAll: in.approvals.MayDecide(id) || slices.ContainsFunc(auditGroups, id.InGroup)}, true
}

// apiEvent is the admin event recording one API call by id.
func apiEvent(r *http.Request, id *identity.Identity, msg string) *ledger.Event {
	return &ledger.Event{Type: ledger.EventAdmin, Time: time.Now(), Subject: id.Subject, IdentityKind: string(id.Kind),
		Groups: id.Groups, AuthMethod: id.AuthMethod, ClientAddr: r.RemoteAddr, Message: msg}
}

// approvalRead wraps a read of the approval API: authenticate, record, answer.
func (in *Instance) approvalRead(run func(*http.Request, *identityInfo) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := in.apiIdentity(w, r)
		if !ok {
			return
		}
		msg := "api " + r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			msg += "?" + r.URL.RawQuery
		}
		if err := in.ledger.Record(r.Context(), apiEvent(r, id.Identity, msg)); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the audit ledger cannot record this request; try again shortly"})
			return
		}
		code, body := run(r, id)
		writeJSON(w, code, body)
	}
}

// maxDecisionBody bounds a decision's request body (a JSON object with a comment).
const maxDecisionBody = 64 << 10

// approvalDecide wraps approve and deny: authenticate, read the comment, decide. A decision
// is on record as its approval event; a refused attempt as an admin event.
func (in *Instance) approvalDecide(decide func(context.Context, string, *identityInfo, string) (approval.Request, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := in.apiIdentity(w, r)
		if !ok {
			return
		}
		// A JSON content type cannot be sent cross-site without a CORS preflight, so a page
		// in an approver's browser cannot ride on remembered Basic credentials.
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": `send Content-Type: application/json with a body like {"comment": "..."} (the body may be {})`})
			return
		}
		var body struct {
			Comment string `json:"comment"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxDecisionBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body: expected a JSON object like {\"comment\": \"...\"}"})
			return
		}
		req, err := decide(r.Context(), r.PathValue("id"), id, body.Comment)
		code, msg := http.StatusOK, ""
		var se *approval.StatusError
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]any{"approval": req})
			return
		case errors.Is(err, approval.ErrNotFound):
			code, msg = http.StatusNotFound, err.Error()
		case errors.Is(err, approval.ErrOwnRequest):
			code, msg = http.StatusForbidden, err.Error()
		case errors.Is(err, approval.ErrNotApprover):
			code, msg = http.StatusForbidden, err.Error()+" ("+strings.Join(in.approvals.Approvers(), ", ")+")"
		case errors.As(err, &se):
			code, msg = http.StatusConflict, err.Error()
		default:
			in.log.Error("approvals api: decide", "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the decision could not be stored or recorded, so nothing changed; try again shortly"})
			return
		}
		ev := apiEvent(r, id.Identity, "api "+r.Method+" "+r.URL.Path+" refused: "+msg)
		ev.Decision = "deny"
		if err := in.ledger.Record(r.Context(), ev); err != nil {
			in.log.Error("approvals api: record refused decision", "err", err)
		}
		writeJSON(w, code, map[string]string{"error": msg})
	}
}
