package idp

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"slices"
	"time"

	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// ConsoleClientID is the public web client (authorization code + PKCE, no secret) a web
// console signs people in with. Its redirect URIs are the ones a test allows with
// AllowConsoleRedirect; people log in at the provider's login page (loginPath) with the
// password UserPassword, as they would in a browser.
const ConsoleClientID = "gatehouse-console"

// UserPassword is the password of every user a test registers.
const UserPassword = userPassword

// loginPath is the provider's login page for authorization requests (the example storage's
// default login URL).
const loginPath = "/login/username"

// consoleClient is ConsoleClientID as the provider sees it.
type consoleClient struct{ st *state }

func (consoleClient) GetID() string { return ConsoleClientID }
func (c consoleClient) RedirectURIs() []string {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return slices.Clone(c.st.consoleRedirects)
}
func (consoleClient) PostLogoutRedirectURIs() []string    { return nil }
func (consoleClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (consoleClient) AuthMethod() zoidc.AuthMethod        { return zoidc.AuthMethodNone }
func (consoleClient) ResponseTypes() []zoidc.ResponseType {
	return []zoidc.ResponseType{zoidc.ResponseTypeCode}
}
func (consoleClient) GrantTypes() []zoidc.GrantType { return []zoidc.GrantType{zoidc.GrantTypeCode} }
func (consoleClient) LoginURL(id string) string {
	return loginPath + "?authRequestID=" + url.QueryEscape(id)
}
func (consoleClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (consoleClient) IDTokenLifetime() time.Duration       { return time.Hour }
func (consoleClient) DevMode() bool                        { return true }
func (consoleClient) IsScopeAllowed(string) bool           { return true }
func (consoleClient) IDTokenUserinfoClaimsAssertion() bool { return true }
func (consoleClient) ClockSkew() time.Duration             { return 0 }
func (consoleClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (consoleClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// AllowConsoleRedirect registers a redirect URI of ConsoleClientID (the console's callback).
func (p *Provider) AllowConsoleRedirect(uri string) {
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	p.store.st.consoleRedirects = append(p.store.st.consoleRedirects, uri)
}

// AddUser registers a user with this email (verified), password UserPassword and groups,
// who can then log in at the provider's login page.
func (p *Provider) AddUser(email string, groups ...string) { p.addUser(email, groups) }

// serveLogin is the login page of an authorization request: GET shows a form, POST with
// username and password logs the request's user in and sends the browser on to the
// provider's callback, which redirects to the client with a code.
func (p *Provider) serveLogin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>Test IdP sign-in</title><h1>Test IdP</h1>
<form method="post" action="%s"><input type="hidden" name="id" value="%s">
<label>Username <input id="username" name="username"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button></form>`,
			loginPath, html.EscapeString(r.URL.Query().Get("authRequestID")))
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		id := r.PostForm.Get("id")
		if err := p.store.CheckUsernamePassword(r.PostForm.Get("username"), r.PostForm.Get("password"), id); err != nil {
			http.Error(w, "wrong username or password", http.StatusForbidden)
			return
		}
		http.Redirect(w, r, "/authorize/callback?id="+url.QueryEscape(id), http.StatusFound)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}
