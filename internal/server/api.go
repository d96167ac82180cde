package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

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
		Decision: v.Get("decision"), Type: ledger.EventType(v.Get("type")), Text: v.Get("text"),
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
