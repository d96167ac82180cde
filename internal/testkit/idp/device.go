package idp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// CLIClientID is the public (secret-less, native) client a command-line tool uses for the
// device authorization grant (RFC 8628) and refresh tokens, as `gatehouse login` does. Its ID
// tokens carry the email and groups claims and have it as their audience.
const CLIClientID = "gatehouse-cli"

// DevicePollInterval is the polling interval the provider announces for device codes.
const DevicePollInterval = time.Second

// deviceFormPath is the verification URI: the page where the user enters the user code.
const deviceFormPath = "/device"

// cliClient is the public device-flow client.
type cliClient struct{ st *state }

func (cliClient) GetID() string                       { return CLIClientID }
func (cliClient) RedirectURIs() []string              { return nil }
func (cliClient) PostLogoutRedirectURIs() []string    { return nil }
func (cliClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (cliClient) AuthMethod() zoidc.AuthMethod        { return zoidc.AuthMethodNone }
func (cliClient) ResponseTypes() []zoidc.ResponseType { return nil }
func (cliClient) GrantTypes() []zoidc.GrantType {
	return []zoidc.GrantType{zoidc.GrantTypeDeviceCode, zoidc.GrantTypeRefreshToken}
}
func (cliClient) LoginURL(string) string              { return "" }
func (cliClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c cliClient) IDTokenLifetime() time.Duration {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.cliIDTokenTTL
}
func (cliClient) DevMode() bool                        { return false }
func (cliClient) IsScopeAllowed(string) bool           { return true }
func (cliClient) IDTokenUserinfoClaimsAssertion() bool { return true }
func (cliClient) ClockSkew() time.Duration             { return 0 }
func (cliClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (cliClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// cliRefresh is what a refresh token issued to the CLI client stands for.
type cliRefresh struct {
	subject  string
	scopes   []string
	audience []string
	authTime time.Time
	amr      []string
}

func (r *cliRefresh) GetAMR() []string             { return r.amr }
func (r *cliRefresh) GetAudience() []string        { return r.audience }
func (r *cliRefresh) GetAuthTime() time.Time       { return r.authTime }
func (r *cliRefresh) GetClientID() string          { return CLIClientID }
func (r *cliRefresh) GetScopes() []string          { return r.scopes }
func (r *cliRefresh) GetSubject() string           { return r.subject }
func (r *cliRefresh) SetCurrentScopes(sc []string) { r.scopes = sc }

func newOpaque(prefix string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate %s: %w", prefix, err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// CreateAccessAndRefreshTokens issues (and on refresh rotates) the CLI client's refresh
// tokens; other clients keep the example storage's.
func (s *opStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	var r *cliRefresh
	switch q := req.(type) {
	case *op.DeviceAuthorizationState:
		if q.ClientID != CLIClientID {
			return s.Storage.CreateAccessAndRefreshTokens(ctx, req, current)
		}
		r = &cliRefresh{subject: q.Subject, scopes: slices.Clone(q.Scopes), audience: slices.Clone(q.GetAudience()),
			authTime: q.AuthTime, amr: q.AMR}
	case *cliRefresh:
		r = &cliRefresh{subject: q.subject, scopes: slices.Clone(q.scopes), audience: slices.Clone(q.audience),
			authTime: q.authTime, amr: q.amr}
	default:
		return s.Storage.CreateAccessAndRefreshTokens(ctx, req, current)
	}
	rt, err := newOpaque("rt-")
	if err != nil {
		return "", "", time.Time{}, err
	}
	at, err := newOpaque("at-")
	if err != nil {
		return "", "", time.Time{}, err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if current != "" {
		if _, ok := s.st.refresh[current]; !ok {
			return "", "", time.Time{}, op.ErrInvalidRefreshToken
		}
		delete(s.st.refresh, current)
	}
	s.st.refresh[rt] = r
	s.st.refreshes++
	return at, rt, time.Now().Add(time.Hour), nil
}

// TokenRequestByRefreshToken serves the CLI client's refresh tokens first.
func (s *opStorage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	s.st.mu.Lock()
	r, ok := s.st.refresh[token]
	s.st.mu.Unlock()
	if ok {
		c := *r
		return &c, nil
	}
	return s.Storage.TokenRequestByRefreshToken(ctx, token)
}

// GetDeviceAuthorizatonState reports device codes the test expired as expired.
func (s *opStorage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	st, err := s.Storage.GetDeviceAuthorizatonState(ctx, clientID, deviceCode)
	if err != nil {
		return nil, err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if s.st.expired[st] {
		c := *st
		c.Expires = time.Now().Add(-time.Second)
		return &c, nil
	}
	return st, nil
}

// serveDeviceForm is the verification page: GET shows a form for the user code, POST with
// user_code, username, password and action (allow or deny) decides it, as a user in a
// browser would.
func (p *Provider) serveDeviceForm(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<form method="post"><input name="user_code" value="%s"><input name="username"><input name="password" type="password"><button name="action" value="allow">Allow</button><button name="action" value="deny">Deny</button></form>`,
			html.EscapeString(r.URL.Query().Get("user_code")))
		return
	case http.MethodPost:
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	code := strings.ToUpper(strings.TrimSpace(r.PostForm.Get("user_code")))
	u := userStore{p.store.st}.GetUserByUsername(r.PostForm.Get("username"))
	if u == nil || u.Password != r.PostForm.Get("password") {
		http.Error(w, "wrong username or password", http.StatusForbidden)
		return
	}
	ctx := r.Context()
	if _, err := p.store.GetDeviceAuthorizationByUserCode(ctx, code); err != nil {
		http.Error(w, "unknown user code", http.StatusNotFound)
		return
	}
	var err error
	switch r.PostForm.Get("action") {
	case "allow":
		err = p.store.CompleteDeviceAuthorization(ctx, code, u.ID)
	case "deny":
		err = p.store.DenyDeviceAuthorization(ctx, code)
	default:
		http.Error(w, "action must be allow or deny", http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "Done: you may close this window.")
}

// addUser registers a user with this email (verified) and groups and returns its ID.
func (p *Provider) addUser(email string, groups []string) string {
	id := "u-" + strings.ToLower(email)
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	p.store.st.users[id] = &storage.User{ID: id, Username: email, Password: userPassword, FirstName: "Test",
		LastName: "User", Email: email, EmailVerified: true, PreferredLanguage: language.English}
	p.store.st.groups[id] = append([]string(nil), groups...)
	return id
}

// decideDevice plays the user at the verification page: register the user, log in and
// allow or deny the user code.
func (p *Provider) decideDevice(t testing.TB, userCode, email, action string, groups []string) {
	t.Helper()
	p.addUser(email, groups)
	form := url.Values{"user_code": {userCode}, "username": {email}, "password": {userPassword}, "action": {action}}
	req, err := http.NewRequest(http.MethodPost, p.Issuer+deviceFormPath, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("idp: device form request: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("idp: submit device form: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("idp: device form for %s: %s", userCode, resp.Status)
	}
}

// ApproveDevice is the user with this email (registered with these groups) entering the
// user code at the verification page and allowing the device; the polling client then gets
// an ID token for them.
func (p *Provider) ApproveDevice(t testing.TB, userCode, email string, groups ...string) {
	t.Helper()
	p.decideDevice(t, userCode, email, "allow", groups)
}

// DenyDevice is the user entering the user code and denying the device (access_denied).
func (p *Provider) DenyDevice(t testing.TB, userCode, email string) {
	t.Helper()
	p.decideDevice(t, userCode, email, "deny", nil)
}

// ExpireDevice makes the device code behind this user code expired (expired_token), as if
// its lifetime had passed without the user acting.
func (p *Provider) ExpireDevice(t testing.TB, userCode string) {
	t.Helper()
	st, err := p.store.GetDeviceAuthorizationByUserCode(context.Background(), userCode)
	if err != nil {
		t.Fatalf("idp: expire device code %s: %v", userCode, err)
	}
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	p.store.st.expired[st] = true
}

// SetCLIIDTokenTTL sets the lifetime of ID tokens issued to CLIClientID (default one hour),
// to test what a client does when its stored ID token has expired.
func (p *Provider) SetCLIIDTokenTTL(d time.Duration) {
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	p.store.st.cliIDTokenTTL = d
}

// SlowDown makes the next n device-code token polls answer slow_down (RFC 8628 3.5).
func (p *Provider) SlowDown(n int) {
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	p.store.st.slowDowns = n
}

// DevicePolls returns when each device-code token request arrived, to check a client's
// polling honours the interval.
func (p *Provider) DevicePolls() []time.Time {
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	return slices.Clone(p.store.st.polls)
}

// Refreshes counts refresh tokens issued to CLIClientID (device grants and refresh grants).
func (p *Provider) Refreshes() int {
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	return p.store.st.refreshes
}

// interceptDevicePoll records a device-code token request and answers slow_down when the
// test asked for it; it reports whether it answered.
func (p *Provider) interceptDevicePoll(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != "/oauth/token" || r.Method != http.MethodPost {
		return false
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != string(zoidc.GrantTypeDeviceCode) {
		return false
	}
	p.store.st.mu.Lock()
	p.store.st.polls = append(p.store.st.polls, time.Now())
	slow := p.store.st.slowDowns > 0
	if slow {
		p.store.st.slowDowns--
	}
	p.store.st.mu.Unlock()
	if !slow {
		return false
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprint(w, `{"error":"slow_down","error_description":"polling too fast (test)"}`)
	return true
}
