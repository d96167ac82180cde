// Package console is Gatehouse's web console for security, compliance and approvers: sign-in
// (OIDC authorization code with PKCE, or a pasted Gatehouse token), live sessions (end one),
// approvals decided in the browser, and the ledger's search with exports. It is rendered on
// the server with html/template (every recorded value is escaped, so a statement that holds
// markup shows as text) with htmx and server-sent events for the live parts, all embedded
// in the binary: there is no front-end build step. Every action is itself a ledger event.
package console

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is the path the console is served under.
const Prefix = "/console/"

// Authenticator is what the console needs from internal/identity: the same verification a
// database login gets, and the periodic re-check that ends sessions of revoked credentials.
type Authenticator interface {
	AuthenticateBearer(ctx context.Context, secret string) (*identity.Identity, error)
	StillValid(ctx context.Context, id *identity.Identity) error
}

var _ Authenticator = (*identity.Chain)(nil)

// Recorder writes the console's own events to the ledger; an error means the action must
// not happen (fail closed, like statements).
type Recorder interface {
	Record(ctx context.Context, ev *ledger.Event) error
}

var _ Recorder = (*ledger.Ledger)(nil)

// Options are what a console needs. Auth, Ledger, Events, Approvals, Live, OIDC and URL are
// required.
type Options struct {
	Auth      Authenticator
	Ledger    Recorder
	Events    ledger.Store
	Approvals *approval.Store
	Live      *live.Registry
	// Fleet, when set, is the live sessions of every instance sharing the store, which the
	// console lists and ends sessions through (nil: this instance's Live alone).
	Fleet *live.Fleet
	// OIDC returns the identity providers in force; those with a console_client_id offer a
	// sign-in button.
	OIDC func() []config.OIDC
	// URL returns the console's external base URL, ending in "/console/".
	URL func() string
	Log *slog.Logger
	// EvidenceKey is the ledger's checkpoint signing key, which signs evidence packs;
	// CheckpointFile returns ledger.checkpoint_file ("" for none).
	EvidenceKey    ed25519.PrivateKey
	CheckpointFile func() string
	// Catalog and Targets feed the data map (nil: no data map): the classification
	// catalog and the names of the targets in force.
	Catalog Catalog
	Targets func() []string
	// Policy and Target feed the policy page (nil Policy: no policy page): the engine in
	// force and the configured targets by name.
	Policy Policy
	Target func(name string) (*config.Target, bool)
	// MaskStrategy says how values of a sensitive class are masked for viewers the policy
	// does not show raw values (the policy's default masking profile), for the data map.
	MaskStrategy func(class string) string
	// LedgerHealth says whether the ledger can write (nil: healthy); Instance names this
	// instance's chain, whose head and last checkpoint the overview shows.
	LedgerHealth func() error
	Instance     string
	// Commits is fed the ledger's group-commit durations, for the append latency;
	// IndexBacklog says how many acknowledged records wait for the index (nil: the store
	// indexes as it writes). Both optional.
	Commits      *CommitWindow
	IndexBacklog func() int
	// SessionTTL bounds a console sign-in (default 8h; never beyond the credential's expiry).
	SessionTTL time.Duration
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

// Console serves the web console. Create it with New.
type Console struct {
	opts  Options
	pages map[string]*template.Template

	mu       sync.Mutex
	sessions map[string]*session // by hash of the cookie value
	// ended keeps why a session ended (revoked, expired) by its cookie key until the session
	// would have expired, so every request still carrying the cookie is told the same reason,
	// not only the first one that found out (a live stream often is).
	ended  map[string]endedSession
	logins map[string]*pendingLogin
	links  map[string]*signInLink
	// lastVerify is the last ledger verification run from a console (this instance's or,
	// read from the ledger at verifyAt, any instance's); sensitiveN the cached count of
	// sensitive reads in the last 24 hours, from sensitiveAt.
	lastVerify  *verification
	verifyAt    time.Time
	sensitiveN  int64
	sensitiveAt time.Time
	// exportBatch is how many events an export reads per search (exportBatch).
	exportBatch int
	// dataMapCache is the data map's last counts of readers; dataMapMu is held while they
	// are read or counted, so concurrent viewers count them once.
	dataMapMu    sync.Mutex
	dataMapCache *dataMapReaders
}

// The console's ledger event types. Decisions on approval requests are recorded by the
// approval store as approval.approved / approval.denied, like decisions made through the API.
const (
	EventSignIn       ledger.EventType = "console.sign_in"
	EventSignInFailed ledger.EventType = "console.sign_in_failed"
	EventSignOut      ledger.EventType = "console.sign_out"
	EventSessionEnded ledger.EventType = "console.session_ended"
	EventSearch       ledger.EventType = "console.search"
	EventExport       ledger.EventType = "console.export"
	EventView         ledger.EventType = "console.view"
	EventDownload     ledger.EventType = "console.download"
	EventRescan       ledger.EventType = "console.rescan"
	EventRefused      ledger.EventType = "console.refused"
	// EventVerified records a ledger verification run from the console and its result
	// (Rows: the problems found), so the overview shows the last one after a restart and on
	// every instance sharing the store.
	EventVerified ledger.EventType = "console.ledger_verified"
	// EventSessionKill records that someone ended a live database session (console or API).
	EventSessionKill ledger.EventType = "session.kill"
)

// seeAllGroups see every session, request and event; everyone else sees only their own.
var seeAllGroups = []string{"auditors", "compliance", "security"}

// New parses the templates and returns a console.
func New(opts Options) (*Console, error) {
	if opts.Auth == nil || opts.Ledger == nil || opts.Events == nil || opts.Approvals == nil || opts.Live == nil || opts.OIDC == nil || opts.URL == nil || len(opts.EvidenceKey) == 0 {
		return nil, errors.New("console: Auth, Ledger, Events, Approvals, Live, OIDC, URL and EvidenceKey are required")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 8 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Fleet == nil {
		fl, err := live.NewFleet(context.Background(), opts.Live, opts.Instance, nil, nil, opts.Log)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		opts.Fleet = fl
	}
	c := &Console{opts: opts, pages: map[string]*template.Template{}, sessions: map[string]*session{}, ended: map[string]endedSession{}, logins: map[string]*pendingLogin{},
		links: map[string]*signInLink{}, exportBatch: exportBatch}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: list templates: %w", err)
	}
	for _, name := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(name, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", name)
		if err != nil {
			return nil, fmt.Errorf("console: parse %s: %w", name, err)
		}
		c.pages[base] = t
	}
	return c, nil
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return time.Since(t).Round(time.Second).String()
	},
	"join": strings.Join,
	// rate shows statements per second ("…" until a second sample makes it known).
	"rate": func(r float64) string {
		if r < 0 {
			return "…"
		}
		return strconv.FormatFloat(r, 'f', 1, 64)
	},
	"list": func(s ...string) []string { return s },
}

// Register mounts the console on mux: the pages under Prefix and "/" redirecting there.
func (c *Console) Register(mux *http.ServeMux) {
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /console/static/", c.secure(http.StripPrefix("/console/static/", http.FileServerFS(static))))
	mux.Handle("GET /{$}", http.RedirectHandler(Prefix, http.StatusSeeOther))
	mux.Handle("GET /console", http.RedirectHandler(Prefix, http.StatusSeeOther))

	mux.Handle("GET /console/login", c.secure(http.HandlerFunc(c.loginPage)))
	mux.Handle("POST /console/login/token", c.secure(http.HandlerFunc(c.loginToken)))
	mux.Handle("GET /console/login/oidc", c.secure(http.HandlerFunc(c.loginOIDC)))
	mux.Handle("GET /console/callback", c.secure(http.HandlerFunc(c.callback)))
	mux.Handle("GET /console/login/link/{id}", c.secure(http.HandlerFunc(c.loginLink)))
	mux.Handle("POST /console/logout", c.secure(c.signedIn(c.logout)))

	mux.Handle("GET /console/{$}", c.secure(c.signedIn(c.overview)))
	mux.Handle("GET /console/events/overview", c.secure(c.signedIn(c.overviewStream)))
	mux.Handle("GET /console/sessions", c.secure(c.signedIn(c.sessionsPage)))
	mux.Handle("GET /console/events/sessions", c.secure(c.signedIn(c.sessionsStream)))
	mux.Handle("GET /console/sessions/{id}", c.secure(c.signedIn(c.sessionPage)))
	mux.Handle("GET /console/events/sessions/{id}", c.secure(c.signedIn(c.sessionStream)))
	mux.Handle("POST /console/sessions/{id}/end", c.secure(c.signedIn(c.endSession)))
	mux.Handle("GET /console/approvals", c.secure(c.signedIn(c.approvalsPage)))
	mux.Handle("GET /console/approvals/{id}", c.secure(c.signedIn(c.approvalPage)))
	mux.Handle("POST /console/approvals/{id}/{verb}", c.secure(c.signedIn(c.decide)))
	mux.Handle("GET /console/audit", c.secure(c.signedIn(c.auditPage)))
	mux.Handle("GET /console/audit/export", c.secure(c.signedIn(c.auditExport)))
	mux.Handle("GET /console/audit/events/{instance}/{seq}", c.secure(c.signedIn(c.eventPage)))
	mux.Handle("GET /console/audit/questions/{q}", c.secure(c.signedIn(c.questionPage)))
	mux.Handle("GET /console/datamap", c.secure(c.signedIn(c.dataMapPage)))
	mux.Handle("GET /console/policy", c.secure(c.signedIn(c.policyPage)))
	mux.Handle("GET /console/policy/replay", c.secure(c.signedIn(c.replayPage)))
	mux.Handle("POST /console/policy/replay", c.secure(c.signedIn(c.replay)))
	mux.Handle("POST /console/datamap/{target}/rescan", c.secure(c.signedIn(c.rescan)))
	mux.Handle("GET /console/evidence", c.secure(c.signedIn(c.evidencePage)))
	mux.Handle("GET /console/evidence/download", c.secure(c.signedIn(c.evidenceDownload)))
}

// csp allows only the console's own scripts, styles and connections: no inline script, so
// an injected tag would not run even if escaping ever failed.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

// secure sets the safety headers on every answer and refuses plain HTTP from other machines:
// a session cookie and tokens must not cross a network in clear text.
func (c *Console) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		if r.TLS == nil && !loopbackRequest(r) {
			http.Error(w, "the Gatehouse console is served over plain HTTP to this machine (loopback) only; use HTTPS", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackRequest reports whether the request came from this machine.
func loopbackRequest(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// viewer is the signed-in person looking at a page.
type viewer struct {
	*session
	r *http.Request
}

// SeesAll reports whether the viewer sees everyone's sessions, requests and events.
func (v *viewer) SeesAll() bool { return v.seesAll }

// MayEnd reports whether the viewer may end other people's sessions.
func (v *viewer) MayEnd() bool { return v.mayEnd }

// CSRF is the token every form of the viewer's session carries.
func (v *viewer) CSRF() string { return v.csrf }

// Subject is who is signed in.
func (v *viewer) Subject() string { return v.id.Subject }

// owns reports whether subject is the viewer (names compare case-insensitively, as the
// approval rules do).
func (v *viewer) owns(subject string) bool { return strings.EqualFold(subject, v.id.Subject) }

// page is what every template gets.
type page struct {
	Title  string
	Nav    string
	Viewer *viewer
	Error  string
	Data   any
}

// render writes a full page with status code.
func (c *Console) render(w http.ResponseWriter, code int, name string, p page) {
	t := c.pages[name]
	if t == nil {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		c.opts.Log.Error("console: render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

// fail renders an error page.
func (c *Console) fail(w http.ResponseWriter, v *viewer, code int, msg string) {
	c.render(w, code, "error", page{Title: http.StatusText(code), Viewer: v, Error: msg})
}

// event is a ledger event of a console action by v.
func (c *Console) event(r *http.Request, id *identity.Identity, t ledger.EventType, msg string) *ledger.Event {
	ev := &ledger.Event{Type: t, Time: c.opts.Now(), ClientAddr: r.RemoteAddr, ApplicationName: "gatehouse-console", TLS: r.TLS != nil, Message: msg}
	if id != nil {
		ev.Subject, ev.IdentityKind, ev.Groups, ev.AuthMethod = id.Subject, string(id.Kind), id.Groups, id.AuthMethod
	}
	return ev
}

// record writes ev; on failure it answers 503 and returns false, so the action does not
// happen unrecorded.
func (c *Console) record(w http.ResponseWriter, r *http.Request, v *viewer, ev *ledger.Event) bool {
	if err := c.opts.Ledger.Record(r.Context(), ev); err != nil {
		c.opts.Log.Error("console: record event", "type", ev.Type, "err", err)
		c.fail(w, v, http.StatusServiceUnavailable, "the audit ledger cannot record this action right now, so it was not done; try again shortly")
		return false
	}
	return true
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// mayEnd: approvers and group security may end sessions.
func (c *Console) mayEnd(id *identity.Identity) bool {
	return c.opts.Approvals.MayDecide(id) || id.InGroup("security")
}

// seesAll: the privileged groups and approvers see everything.
func (c *Console) seesAll(id *identity.Identity) bool {
	return c.opts.Approvals.MayDecide(id) || slices.ContainsFunc(seeAllGroups, id.InGroup)
}

// ErrNotAllowed: the identity may not end sessions.
var ErrNotAllowed = errors.New("ending sessions needs membership of an approver group or of group security")

// EndSession ends live session id on behalf of who, recording it first (no record, no kill).
// The console and the HTTP API both end sessions through here.
func (c *Console) EndSession(ctx context.Context, r *http.Request, who *identity.Identity, id string) (live.Session, error) {
	if !c.mayEnd(who) {
		return live.Session{}, ErrNotAllowed
	}
	s, ok := c.opts.Fleet.Get(id)
	if !ok {
		return live.Session{}, live.ErrNotFound
	}
	if !s.Endable {
		return s, live.ErrNotEndable
	}
	where := ""
	if c.opts.Fleet.Shared() {
		where = " on instance " + s.Instance
	}
	ev := c.event(r, who, EventSessionKill, fmt.Sprintf("ended session %s of %s on target %s (from %s)%s", s.ID, s.Subject, s.Target, s.ClientAddr, where))
	ev.SessionID, ev.Target, ev.Environment, ev.Database = s.ID, s.Target, s.Environment, s.Database
	if err := c.opts.Ledger.Record(ctx, ev); err != nil {
		return live.Session{}, fmt.Errorf("record the end of session %s: %w", id, err)
	}
	return c.opts.Fleet.End(ctx, id, who.Subject)
}

// ListSessions returns the live sessions who may see, on every instance sharing the store:
// all of them for the privileged groups and approvers, else their own.
func (c *Console) ListSessions(who *identity.Identity) []live.Session {
	all := c.opts.Fleet.List()
	if c.seesAll(who) {
		return all
	}
	return slices.DeleteFunc(all, func(s live.Session) bool { return !strings.EqualFold(s.Subject, who.Subject) })
}
