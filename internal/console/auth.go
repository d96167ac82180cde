package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/oidclogin"
)

// Cookie names. The session cookie is scoped to the console's path.
const (
	sessionCookie = "gatehouse_console"
	loginCookie   = "gatehouse_console_login"
)

// session is one console sign-in, kept in memory (a restart signs everyone out).
type session struct {
	key     string // hash of the cookie value
	id      *identity.Identity
	csrf    string
	expires time.Time
	seesAll bool
	mayEnd  bool
}

// pendingLogin is an OIDC sign-in between the redirect to the IdP and its callback.
type pendingLogin struct {
	issuer   int
	verifier string
	nonce    string
	expires  time.Time
}

// loginTTL bounds how long a browser may take at the IdP.
const loginTTL = 10 * time.Minute

// maxPendingLogins bounds the memory unauthenticated visitors can make the console hold.
const maxPendingLogins = 10000

func cookieKey(v string) string {
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:])
}

// cookie builds a console cookie: HttpOnly, SameSite=Lax, Secure under TLS.
func cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: Prefix, HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: r.TLS != nil, MaxAge: maxAge}
}

// startSession signs id in: a new random cookie, a CSRF token, and a ledger event.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, id *identity.Identity, how string) bool {
	now := c.opts.Now()
	expires := now.Add(c.opts.SessionTTL)
	if !id.ExpiresAt.IsZero() && id.ExpiresAt.Before(expires) {
		expires = id.ExpiresAt
	}
	value := randomToken(32)
	s := &session{key: cookieKey(value), id: id, csrf: randomToken(24), expires: expires, seesAll: c.seesAll(id), mayEnd: c.mayEnd(id)}
	if !c.record(w, r, nil, c.event(r, id, EventSignIn, "console sign-in ("+how+")")) {
		return false
	}
	c.mu.Lock()
	for k, old := range c.sessions {
		if now.After(old.expires) {
			delete(c.sessions, k)
		}
	}
	c.sessions[s.key] = s
	c.mu.Unlock()
	http.SetCookie(w, cookie(r, sessionCookie, value, int(expires.Sub(now).Seconds())))
	return true
}

// signedIn runs next for a signed-in viewer whose credential is still valid; POSTs must
// carry the session's CSRF token. A revoked or expired credential ends the console session
// like it ends a database session.
func (c *Console) signedIn(next func(http.ResponseWriter, *viewer)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, why := c.lookup(r)
		if s == nil {
			if why != "" {
				http.SetCookie(w, cookie(r, sessionCookie, "", -1))
			}
			if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/console/events/") {
				q := url.Values{}
				if why != "" {
					q.Set("ended", why)
				}
				http.Redirect(w, r, Prefix+"login?"+q.Encode(), http.StatusSeeOther)
				return
			}
			http.Error(w, "sign in to the Gatehouse console first", http.StatusUnauthorized)
			return
		}
		v := &viewer{session: s, r: r}
		if r.Method == http.MethodPost {
			sent := r.Header.Get("X-CSRF-Token")
			if sent == "" {
				sent = r.PostFormValue("csrf")
			}
			if subtle.ConstantTimeCompare([]byte(sent), []byte(s.csrf)) != 1 {
				ev := c.event(r, s.id, EventRefused, "console POST "+r.URL.Path+" refused: missing or wrong CSRF token")
				ev.Decision = "deny"
				_ = c.opts.Ledger.Record(r.Context(), ev)
				c.fail(w, v, http.StatusForbidden, "This form is missing its CSRF token (or it is stale): reload the page and try again.")
				return
			}
		}
		next(w, v)
	}
}

// lookup finds the request's console session and re-checks its credential. why says why a
// presented session is no longer good ("" when there was none).
func (c *Console) lookup(r *http.Request) (*session, string) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, ""
	}
	key := cookieKey(ck.Value)
	c.mu.Lock()
	s := c.sessions[key]
	gone, wasEnded := c.ended[key]
	c.mu.Unlock()
	if s == nil {
		if wasEnded && c.opts.Now().Before(gone.until) {
			return nil, gone.why
		}
		return nil, "signed-out"
	}
	if c.opts.Now().After(s.expires) {
		c.endConsoleSession(r, s, "expired")
		return nil, "expired"
	}
	if err := c.opts.Auth.StillValid(r.Context(), s.id); err != nil {
		if errors.Is(err, identity.ErrInvalidCredentials) {
			c.endConsoleSession(r, s, "revoked")
			return nil, "revoked"
		}
		// The check could not be made (store unreachable): the session stays, as database
		// sessions do, and the next request checks again.
		c.opts.Log.Warn("console: could not re-check a session's credential", "subject", s.id.Subject, "err", err)
	}
	return s, ""
}

// endConsoleSession drops s and records why.
func (c *Console) endConsoleSession(r *http.Request, s *session, why string) {
	c.mu.Lock()
	_, had := c.sessions[s.key]
	delete(c.sessions, s.key)
	now := c.opts.Now()
	for k, e := range c.ended {
		if now.After(e.until) {
			delete(c.ended, k)
		}
	}
	c.ended[s.key] = endedSession{why: why, until: s.expires}
	c.mu.Unlock()
	if had {
		if err := c.opts.Ledger.Record(context.WithoutCancel(r.Context()), c.event(r, s.id, EventSessionEnded, "console session ended: "+why)); err != nil {
			c.opts.Log.Error("console: record session end", "err", err)
		}
	}
}

// endedSession is why a console session ended, remembered until it would have expired.
type endedSession struct {
	why   string
	until time.Time
}

// stillValid re-checks a long-lived request's session (the live streams).
func (c *Console) stillValid(r *http.Request, s *session) bool {
	c.mu.Lock()
	_, ok := c.sessions[s.key]
	c.mu.Unlock()
	if !ok {
		return false
	}
	got, _ := c.lookup(r)
	return got == s
}

// loginData is the sign-in page's model.
type loginData struct {
	Issuers []issuerButton
	CSRF    string
	Ended   string
}

type issuerButton struct {
	Index  int
	Issuer string
}

// loginPage offers the configured IdPs and the token form. The token form's CSRF token is a
// double-submit cookie, since there is no session yet.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.renderLogin(w, r, http.StatusOK, "")
}

func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	csrf := randomToken(24)
	http.SetCookie(w, cookie(r, loginCookie, csrf, int(loginTTL.Seconds())))
	d := loginData{CSRF: csrf}
	switch r.URL.Query().Get("ended") {
	case "revoked":
		d.Ended = "Your console session ended: the credential you signed in with was revoked or is no longer valid."
	case "expired":
		d.Ended = "Your console session expired; sign in again."
	}
	for i, o := range c.opts.OIDC() {
		if o.ConsoleClientID != "" {
			d.Issuers = append(d.Issuers, issuerButton{Index: i, Issuer: o.Issuer})
		}
	}
	c.render(w, code, "login", page{Title: "Sign in", Error: msg, Data: d})
}

// loginToken signs in with a pasted Gatehouse token.
func (c *Console) loginToken(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(loginCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostFormValue("csrf"))) != 1 {
		c.renderLogin(w, r, http.StatusForbidden, "The sign-in form was stale (missing CSRF token); try again.")
		return
	}
	secret := strings.TrimSpace(r.PostFormValue("token"))
	id, err := c.opts.Auth.AuthenticateBearer(r.Context(), secret)
	if err != nil || id == nil {
		c.signInFailed(r, "token", err)
		c.renderLogin(w, r, http.StatusUnauthorized, "Invalid credentials.")
		return
	}
	if c.startSession(w, r, id, "token") {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
	}
}

// signInFailed records a failed sign-in; the cause stays in the ledger and the log.
func (c *Console) signInFailed(r *http.Request, how string, err error) {
	cause := "no identity"
	if err != nil {
		cause = err.Error()
	}
	ev := c.event(r, nil, EventSignInFailed, "console sign-in failed ("+how+"): "+cause)
	ev.Decision = "deny"
	if rerr := c.opts.Ledger.Record(r.Context(), ev); rerr != nil {
		c.opts.Log.Error("console: record failed sign-in", "err", rerr)
	}
	c.opts.Log.Info("console sign-in failed", "how", how, "cause", cause)
}

// redirectURI is the console's OIDC callback.
func (c *Console) redirectURI() string { return c.opts.URL() + "callback" }

// issuerClient discovers issuer i and returns a client for its console client id.
func (c *Console) issuerClient(ctx context.Context, i int) (*oidclogin.Client, config.OIDC, error) {
	list := c.opts.OIDC()
	if i < 0 || i >= len(list) || list[i].ConsoleClientID == "" {
		return nil, config.OIDC{}, errors.New("no such identity provider for the console")
	}
	o := list[i]
	hc, err := oidclogin.HTTPClient(o.CAFile)
	if err != nil {
		return nil, o, err
	}
	meta, err := oidclogin.Discover(ctx, hc, o.Issuer)
	if err != nil {
		return nil, o, err
	}
	if meta.AuthorizationEndpoint == "" {
		return nil, o, fmt.Errorf("issuer %s announces no authorization_endpoint", o.Issuer)
	}
	return &oidclogin.Client{ClientID: o.ConsoleClientID, Meta: meta, HTTP: hc}, o, nil
}

// loginOIDC sends the browser to the IdP: authorization code with PKCE (S256), a state bound
// to this browser by a cookie, and a nonce checked in the ID token.
func (c *Console) loginOIDC(w http.ResponseWriter, r *http.Request) {
	i, _ := strconv.Atoi(r.URL.Query().Get("issuer"))
	cl, _, err := c.issuerClient(r.Context(), i)
	if err != nil {
		c.opts.Log.Warn("console: identity provider unavailable", "err", err)
		c.renderLogin(w, r, http.StatusBadGateway, "The identity provider cannot be reached right now; try again, or sign in with a token.")
		return
	}
	state, nonce, verifier := randomToken(24), randomToken(24), oauth2.GenerateVerifier()
	now := c.opts.Now()
	c.mu.Lock()
	for k, p := range c.logins {
		if now.After(p.expires) {
			delete(c.logins, k)
		}
	}
	full := len(c.logins) >= maxPendingLogins
	if !full {
		c.logins[state] = &pendingLogin{issuer: i, verifier: verifier, nonce: nonce, expires: now.Add(loginTTL)}
	}
	c.mu.Unlock()
	if full {
		c.renderLogin(w, r, http.StatusServiceUnavailable, "Too many sign-ins in progress; try again in a few minutes.")
		return
	}
	http.SetCookie(w, cookie(r, loginCookie+"_state", state, int(loginTTL.Seconds())))
	q := url.Values{"response_type": {"code"}, "client_id": {cl.ClientID}, "redirect_uri": {c.redirectURI()},
		"scope": {"openid email profile groups"}, "state": {state}, "nonce": {nonce},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	sep := "?"
	if strings.Contains(cl.Meta.AuthorizationEndpoint, "?") {
		sep = "&"
	}
	http.Redirect(w, r, cl.Meta.AuthorizationEndpoint+sep+q.Encode(), http.StatusFound)
}

// callback finishes an OIDC sign-in: the state must be this browser's, the code is redeemed
// with the PKCE verifier, and the ID token is verified by the same authenticator as a
// database login (issuer, audience, signature, expiry, groups), then its nonce is checked.
func (c *Console) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	ck, err := r.Cookie(loginCookie + "_state")
	c.mu.Lock()
	p := c.logins[state]
	delete(c.logins, state)
	c.mu.Unlock()
	http.SetCookie(w, cookie(r, loginCookie+"_state", "", -1))
	if state == "" || err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(state)) != 1 || p == nil || c.opts.Now().After(p.expires) {
		c.signInFailed(r, "oidc", errors.New("unknown, expired or foreign state"))
		c.renderLogin(w, r, http.StatusBadRequest, "That sign-in was not started here or took too long; try again.")
		return
	}
	if e := q.Get("error"); e != "" {
		c.signInFailed(r, "oidc", fmt.Errorf("identity provider answered %s", e))
		c.renderLogin(w, r, http.StatusUnauthorized, "The identity provider did not sign you in.")
		return
	}
	cl, o, err := c.issuerClient(r.Context(), p.issuer)
	if err != nil {
		c.signInFailed(r, "oidc", err)
		c.renderLogin(w, r, http.StatusBadGateway, "The identity provider cannot be reached right now; try again.")
		return
	}
	tok, err := cl.ExchangeCode(r.Context(), q.Get("code"), c.redirectURI(), p.verifier)
	if err != nil {
		c.signInFailed(r, "oidc", err)
		c.renderLogin(w, r, http.StatusUnauthorized, "Invalid credentials.")
		return
	}
	id, err := c.opts.Auth.AuthenticateBearer(r.Context(), tok.IDToken)
	if err == nil && (id == nil || strings.TrimSuffix(id.Issuer, "/") != strings.TrimSuffix(o.Issuer, "/")) {
		err = errors.New("the ID token was not issued by the identity provider the sign-in started at")
	}
	if err == nil {
		if n, _ := id.Claims["nonce"].(string); subtle.ConstantTimeCompare([]byte(n), []byte(p.nonce)) != 1 {
			err = errors.New("the ID token's nonce does not match the sign-in")
		}
	}
	if err != nil {
		c.signInFailed(r, "oidc", err)
		c.renderLogin(w, r, http.StatusUnauthorized, "Invalid credentials.")
		return
	}
	if c.startSession(w, r, id, "oidc") {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
	}
}

// logout ends the console session.
func (c *Console) logout(w http.ResponseWriter, v *viewer) {
	c.mu.Lock()
	delete(c.sessions, v.key)
	c.mu.Unlock()
	_ = c.opts.Ledger.Record(v.r.Context(), c.event(v.r, v.id, EventSignOut, "console sign-out"))
	http.SetCookie(w, cookie(v.r, sessionCookie, "", -1))
	http.Redirect(w, v.r, Prefix+"login", http.StatusSeeOther)
}
