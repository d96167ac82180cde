// Package idp runs a real OpenID Connect provider (zitadel's op package) on a loopback TLS
// server for tests, so Gatehouse's OIDC login is exercised against discovery, JWKS, key
// rotation and genuinely signed ID and access tokens rather than hand-made JWTs.
//
// Access tokens come from the client-credentials grant (JWT access tokens, RFC 9068 style)
// with the claims a test chooses; ID tokens come from a programmatic authorization-code
// flow for a user the test names, or from the device authorization grant (RFC 8628) for the
// public CLIClientID, whose user code a test approves or denies at the provider's
// verification page (ApproveDevice, DenyDevice), with refresh tokens and knobs for expiry and
// slow_down (device.go). Everything stops when the test ends.
package idp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Fixed client credentials of the provider's two clients.
const (
	// ClientID is the client-credentials client; access tokens are minted for it and carry
	// it as their default audience, so configure Gatehouse with audience [ClientID].
	ClientID     = "gatehouse-e2e"
	clientSecret = "e2e-secret"
	// WebClientID is the authorization-code client whose ID tokens have it as audience.
	WebClientID  = "gatehouse-web"
	webSecret    = "web-secret"
	webRedirect  = "http://127.0.0.1:9/callback"
	userPassword = "verysecure"
)

// Provider is a running OpenID provider.
type Provider struct {
	// Issuer is the https URL to configure as the OIDC issuer.
	Issuer string
	// CAFile holds the PEM certificate of the provider's TLS server (ca_file).
	CAFile string
	// ClientID is the audience of access tokens (and the client-credentials client).
	ClientID string

	srv   *httptest.Server
	store *opStorage

	// tokenMu serializes token requests so each one carries the claims its caller chose.
	tokenMu sync.Mutex

	keyFetches atomic.Int64

	outageMu sync.Mutex
	outage   Outage
	healed   chan struct{} // closed when a Hanging outage ends
}

// Outage is how the provider misbehaves, to test what Gatehouse does when its IdP fails.
type Outage int

// The outage modes.
const (
	// Up serves normally.
	Up Outage = iota
	// Failing answers every request with 503 Service Unavailable.
	Failing
	// Hanging accepts requests and never answers them (until the client gives up or the
	// outage ends), the worst case for a caller without a timeout.
	Hanging
)

// SetOutage switches the provider into (or, with Up, out of) an outage. Everything is
// affected, token requests of the test included: mint tokens before.
func (p *Provider) SetOutage(o Outage) {
	p.outageMu.Lock()
	defer p.outageMu.Unlock()
	if p.outage == Hanging && o != Hanging {
		close(p.healed)
	}
	if o == Hanging && p.outage != Hanging {
		p.healed = make(chan struct{})
	}
	p.outage = o
}

// KeyFetches reports how many requests for the JWKS (the jwks_uri, /keys) the provider has
// received, outages included, so tests can count what logins make Gatehouse fetch.
func (p *Provider) KeyFetches() int64 { return p.keyFetches.Load() }

// serve counts key fetches and applies the outage before the provider proper.
func (p *Provider) serve(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keys" {
			p.keyFetches.Add(1)
		}
		p.outageMu.Lock()
		o, healed := p.outage, p.healed
		p.outageMu.Unlock()
		switch o {
		case Failing:
			http.Error(w, "identity provider unavailable (test outage)", http.StatusServiceUnavailable)
			return
		case Hanging:
			select {
			case <-r.Context().Done():
				return
			case <-healed:
			}
		}
		if r.URL.Path == loginPath {
			p.serveLogin(w, r)
			return
		}
		if r.URL.Path == deviceFormPath {
			p.serveDeviceForm(w, r)
			return
		}
		if p.interceptDevicePoll(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Claims describe one access token.
type Claims struct {
	// Subject goes into the email claim, which Gatehouse uses as the identity's subject.
	Subject string
	Groups  []string
	// Audience defaults to [ClientID].
	Audience []string
	// TTL is the token's lifetime from now; default one hour. Negative gives a token that
	// has already expired.
	TTL time.Duration
	// Extra claims (e.g. "gatehouse_kind": "agent").
	Extra map[string]any
}

// state is what the storage hands out, guarded by mu.
type state struct {
	mu      sync.Mutex
	keys    []*ecKey // published; the last one signs
	pending Claims   // the claims of the access token being minted
	users   map[string]*storage.User
	groups  map[string][]string // by user ID, for ID tokens

	// Device authorization (device.go).
	cliIDTokenTTL time.Duration
	refresh       map[string]*cliRefresh // the CLI client's live refresh tokens
	refreshes     int
	expired       map[*op.DeviceAuthorizationState]bool
	slowDowns     int
	polls         []time.Time

	// consoleRedirects are ConsoleClientID's redirect URIs (console.go).
	consoleRedirects []string
}

// opStorage is the example storage (authorization-code machinery) with what tests control
// overridden: signing keys, the client-credentials client, token claims and users.
type opStorage struct {
	*storage.Storage
	st *state
}

// userStore serves the users the test registered.
type userStore struct{ st *state }

func (u userStore) GetUserByID(id string) *storage.User {
	u.st.mu.Lock()
	defer u.st.mu.Unlock()
	return u.st.users[id]
}

func (u userStore) GetUserByUsername(name string) *storage.User {
	u.st.mu.Lock()
	defer u.st.mu.Unlock()
	for _, usr := range u.st.users {
		if strings.EqualFold(usr.Username, name) {
			return usr
		}
	}
	return nil
}

func (userStore) ExampleClientID() string { return "service" }

// ecKey is an ES256 signing key; ecPub is its published half.
type ecKey struct {
	id   string
	priv *ecdsa.PrivateKey
}

func (k *ecKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k *ecKey) Key() any                                    { return k.priv }
func (k *ecKey) ID() string                                  { return k.id }

type ecPub struct{ k *ecKey }

func (p ecPub) ID() string                         { return p.k.id }
func (p ecPub) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (p ecPub) Use() string                        { return "sig" }
func (p ecPub) Key() any                           { return &p.k.priv.PublicKey }

func newECKey() (*ecKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate key id: %w", err)
	}
	return &ecKey{id: fmt.Sprintf("key-%x", b), priv: priv}, nil
}

// ccClient may only use the client-credentials grant and gets JWT access tokens.
type ccClient struct{}

func (ccClient) GetID() string                       { return ClientID }
func (ccClient) RedirectURIs() []string              { return nil }
func (ccClient) PostLogoutRedirectURIs() []string    { return nil }
func (ccClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (ccClient) AuthMethod() zoidc.AuthMethod        { return zoidc.AuthMethodBasic }
func (ccClient) ResponseTypes() []zoidc.ResponseType { return nil }
func (ccClient) GrantTypes() []zoidc.GrantType {
	return []zoidc.GrantType{zoidc.GrantTypeClientCredentials}
}
func (ccClient) LoginURL(string) string               { return "" }
func (ccClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (ccClient) IDTokenLifetime() time.Duration       { return time.Hour }
func (ccClient) DevMode() bool                        { return false }
func (ccClient) IsScopeAllowed(string) bool           { return true }
func (ccClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (ccClient) ClockSkew() time.Duration             { return 0 }
func (ccClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (ccClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

type ccRequest struct {
	aud    []string
	scopes []string
}

func (r ccRequest) GetSubject() string    { return ClientID }
func (r ccRequest) GetAudience() []string { return r.aud }
func (r ccRequest) GetScopes() []string   { return r.scopes }

// assertingClient is the example web client, asking for profile and email claims inside
// the ID token (as many IdPs do) rather than only at the userinfo endpoint.
type assertingClient struct{ op.Client }

func (assertingClient) IDTokenUserinfoClaimsAssertion() bool { return true }

// GetClientByClientID serves the web client with claims asserted in the ID token.
func (s *opStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	if id == CLIClientID {
		return cliClient{s.st}, nil
	}
	if id == ConsoleClientID {
		return consoleClient{s.st}, nil
	}
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return assertingClient{c}, nil
}

// ClientCredentials authenticates the client-credentials client.
func (s *opStorage) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	if id != ClientID || secret != clientSecret {
		return nil, fmt.Errorf("wrong client credentials")
	}
	return ccClient{}, nil
}

// ClientCredentialsTokenRequest mints the request with the pending audience.
func (s *opStorage) ClientCredentialsTokenRequest(_ context.Context, _ string, scopes []string) (op.TokenRequest, error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return ccRequest{aud: append([]string(nil), s.st.pending.Audience...), scopes: scopes}, nil
}

// CreateAccessToken returns a token id and the pending expiry (an hour for device grants).
func (s *opStorage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	if _, ok := req.(*op.DeviceAuthorizationState); ok {
		id, err := newOpaque("at-")
		return id, time.Now().Add(time.Hour), err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return fmt.Sprintf("at-%d", time.Now().UnixNano()), time.Now().Add(s.st.pending.TTL), nil
}

// GetPrivateClaimsFromScopes puts email, groups and extra claims into JWT access tokens.
func (s *opStorage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	c := map[string]any{"groups": append([]string{}, s.st.pending.Groups...)}
	if s.st.pending.Subject != "" {
		c["email"] = s.st.pending.Subject
	}
	for k, v := range s.st.pending.Extra {
		c[k] = v
	}
	return c, nil
}

// SetUserinfoFromRequest adds the user's groups to ID tokens.
func (s *opStorage) SetUserinfoFromRequest(ctx context.Context, ui *zoidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	ui.AppendClaims("groups", append([]string{}, s.st.groups[req.GetSubject()]...))
	return nil
}

// SigningKey serves the newest key.
func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return s.st.keys[len(s.st.keys)-1], nil
}

// SignatureAlgorithms is ES256 only.
func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

// KeySet publishes every current key.
func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	out := make([]op.Key, 0, len(s.st.keys))
	for _, k := range s.st.keys {
		out = append(out, ecPub{k})
	}
	return out, nil
}

// Start starts a provider on a fresh loopback TLS listener and returns it once it serves.
func Start(t testing.TB) *Provider {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("idp: listen: %v", err)
	}
	issuer := "https://" + l.Addr().String()
	key, err := newECKey()
	if err != nil {
		t.Fatalf("idp: %v", err)
	}
	st := &state{keys: []*ecKey{key}, users: map[string]*storage.User{}, groups: map[string][]string{},
		cliIDTokenTTL: time.Hour, refresh: map[string]*cliRefresh{}, expired: map[*op.DeviceAuthorizationState]bool{}}
	s := &opStorage{st: st, Storage: storage.NewStorageWithClients(userStore{st}, map[string]*storage.Client{
		WebClientID: storage.WebClient(WebClientID, webSecret, webRedirect),
		// Registered so the example storage accepts its device codes; GetClientByClientID
		// serves it as the public cliClient.
		CLIClientID: storage.DeviceClient(CLIClientID, ""),
	})}
	prov, err := op.NewProvider(&op.Config{
		CryptoKey: sha256.Sum256([]byte(issuer)), CodeMethodS256: true, GrantTypeRefreshToken: true,
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime: 5 * time.Minute, PollInterval: DevicePollInterval, UserFormPath: deviceFormPath,
			UserCode: op.UserCodeBase20,
		},
	}, s, op.StaticIssuer(issuer))
	if err != nil {
		t.Fatalf("idp: new provider: %v", err)
	}
	p := &Provider{Issuer: issuer, ClientID: ClientID, store: s}
	srv := httptest.NewUnstartedServer(p.serve(prov))
	_ = srv.Listener.Close()
	srv.Listener = l
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// Registered after srv.Close, so it runs first: a hanging request must end before
	// Close waits for it.
	t.Cleanup(func() { p.SetOutage(Up) })
	p.srv = srv
	caFile := filepath.Join(t.TempDir(), "idp-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatalf("idp: write CA file: %v", err)
	}
	p.CAFile = caFile
	return p
}

// RotateKey makes a fresh key the signer; keepOld keeps publishing the previous keys (a
// graceful rotation), otherwise tokens signed before no longer verify.
func (p *Provider) RotateKey(t testing.TB, keepOld bool) {
	t.Helper()
	k, err := newECKey()
	if err != nil {
		t.Fatalf("idp: %v", err)
	}
	p.store.st.mu.Lock()
	defer p.store.st.mu.Unlock()
	if keepOld {
		p.store.st.keys = append(p.store.st.keys, k)
	} else {
		p.store.st.keys = []*ecKey{k}
	}
}

// AccessToken returns a one-hour JWT access token for ClientID whose email claim is subject
// and whose groups claim is groups.
func (p *Provider) AccessToken(t testing.TB, subject string, groups ...string) string {
	t.Helper()
	return p.Token(t, Claims{Subject: subject, Groups: groups})
}

// Token returns a JWT access token with the given claims, obtained through the
// client-credentials grant.
func (p *Provider) Token(t testing.TB, c Claims) string {
	t.Helper()
	if len(c.Audience) == 0 {
		c.Audience = []string{p.ClientID}
	}
	if c.TTL == 0 {
		c.TTL = time.Hour
	}
	p.tokenMu.Lock()
	defer p.tokenMu.Unlock()
	p.store.st.mu.Lock()
	p.store.st.pending = c
	p.store.st.mu.Unlock()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}
	req, err := http.NewRequest(http.MethodPost, p.Issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("idp: token request: %v", err)
	}
	req.SetBasicAuth(ClientID, clientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		AccessToken string `json:"access_token"`
	}
	p.do(t, req, &out)
	if out.AccessToken == "" {
		t.Fatal("idp: no access token in response")
	}
	return out.AccessToken
}

// IDToken registers a user with this email (verified) and groups, drives the
// authorization-code flow for WebClientID programmatically and returns the ID token.
func (p *Provider) IDToken(t testing.TB, email string, groups ...string) string {
	t.Helper()
	p.addUser(email, groups)
	c := p.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	q := url.Values{"client_id": {WebClientID}, "redirect_uri": {webRedirect}, "response_type": {"code"},
		"scope": {"openid email profile"}, "state": {"st"}, "nonce": {"n"}}
	location := func(u string) *url.URL {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("idp: GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("idp: GET %s: %s %s", u, resp.Status, body)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatalf("idp: redirect location: %v", err)
		}
		return loc
	}
	login := location(p.Issuer + "/authorize?" + q.Encode())
	reqID := login.Query().Get("authRequestID")
	if err := p.store.CheckUsernamePassword(email, userPassword, reqID); err != nil {
		t.Fatalf("idp: log user in: %v", err)
	}
	cb := location(p.Issuer + "/authorize/callback?id=" + url.QueryEscape(reqID))
	code := cb.Query().Get("code")
	if code == "" {
		t.Fatalf("idp: no code in %s", cb)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {webRedirect}}
	req, err := http.NewRequest(http.MethodPost, p.Issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("idp: token request: %v", err)
	}
	req.SetBasicAuth(WebClientID, webSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		IDToken string `json:"id_token"`
	}
	p.do(t, req, &out)
	if out.IDToken == "" {
		t.Fatal("idp: no id token in response")
	}
	return out.IDToken
}

func (p *Provider) do(t testing.TB, req *http.Request, out any) {
	t.Helper()
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("idp: %s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("idp: %s %s: %s %s", req.Method, req.URL, resp.Status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("idp: decode %s: %v", body, err)
	}
}
