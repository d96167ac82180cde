package identity

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

// testIdP is a real OpenID provider (zitadel's op package) on a loopback TLS server. It keeps
// the example storage for the authorization-code machinery and overrides what the tests need
// to control: the signing keys (for rotation), the client-credentials client (JWT access
// tokens with a chosen audience and groups) and the groups claim of ID tokens.
type testIdP struct {
	*storage.Storage

	srv      *httptest.Server
	issuer   string
	caFile   string
	provider *op.Provider

	mu       sync.Mutex
	keys     []*ecKey // published; the last one signs
	audience []string
	groups   []string
	claims   map[string]any
}

const (
	ccClientID     = "reporting-svc"
	ccClientSecret = "reporting-secret"
	webClientID    = "gatehouse-web"
	webSecret      = "web-secret"
	webRedirect    = "http://127.0.0.1:9/callback"
)

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

func newECKey(t testing.TB, id string) *ecKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &ecKey{id: id, priv: priv}
}

// ccClient is a confidential client that may only use the client-credentials grant and gets
// JWT access tokens.
type ccClient struct{}

func (ccClient) GetID() string                       { return ccClientID }
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

func (r ccRequest) GetSubject() string    { return ccClientID }
func (r ccRequest) GetAudience() []string { return r.aud }
func (r ccRequest) GetScopes() []string   { return r.scopes }

// assertingClient is the example web client, but asking for profile and email claims inside
// the ID token (as many IdPs do by default) rather than only at the userinfo endpoint.
type assertingClient struct{ op.Client }

func (assertingClient) IDTokenUserinfoClaimsAssertion() bool { return true }

// GetClientByClientID serves the web client with claims asserted in the ID token.
func (p *testIdP) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := p.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return assertingClient{c}, nil
}

// ClientCredentials authenticates the client-credentials client.
func (p *testIdP) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	if id != ccClientID || secret != ccClientSecret {
		return nil, fmt.Errorf("wrong client credentials")
	}
	return ccClient{}, nil
}

// ClientCredentialsTokenRequest mints the request with the audience the test chose.
func (p *testIdP) ClientCredentialsTokenRequest(_ context.Context, _ string, scopes []string) (op.TokenRequest, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ccRequest{aud: append([]string(nil), p.audience...), scopes: scopes}, nil
}

// CreateAccessToken returns a token id and a one-hour expiry.
func (p *testIdP) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return fmt.Sprintf("at-%d", time.Now().UnixNano()), time.Now().Add(time.Hour), nil
}

// GetPrivateClaimsFromScopes puts groups (and extra claims) into JWT access tokens.
func (p *testIdP) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := map[string]any{"groups": append([]string(nil), p.groups...)}
	for k, v := range p.claims {
		c[k] = v
	}
	return c, nil
}

// SetUserinfoFromRequest adds groups to ID tokens on top of the example's profile claims.
func (p *testIdP) SetUserinfoFromRequest(ctx context.Context, ui *zoidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := p.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ui.AppendClaims("groups", append([]string(nil), p.groups...))
	return nil
}

// SigningKey, SignatureAlgorithms and KeySet serve the rotatable keys.
func (p *testIdP) SigningKey(context.Context) (op.SigningKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[len(p.keys)-1], nil
}

func (p *testIdP) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

func (p *testIdP) KeySet(context.Context) ([]op.Key, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]op.Key, 0, len(p.keys))
	for _, k := range p.keys {
		out = append(out, ecPub{k})
	}
	return out, nil
}

// rotate makes a fresh key the signer; keepOld keeps publishing the previous keys.
func (p *testIdP) rotate(t testing.TB, keepOld bool) *ecKey {
	k := newECKey(t, fmt.Sprintf("key-%d", time.Now().UnixNano()))
	p.mu.Lock()
	defer p.mu.Unlock()
	if keepOld {
		p.keys = append(p.keys, k)
	} else {
		p.keys = []*ecKey{k}
	}
	return k
}

func (p *testIdP) set(aud, groups []string, claims map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.audience, p.groups, p.claims = aud, groups, claims
}

// startIdP starts a provider on l (a fresh loopback listener when nil) and returns it once it
// serves. The listener may have been handed out before, to simulate an issuer that comes up
// late.
func startIdP(t testing.TB, l net.Listener) *testIdP {
	t.Helper()
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	issuer := "https://" + l.Addr().String()
	p := &testIdP{issuer: issuer, audience: []string{"gatehouse"}, groups: []string{"analysts", "oncall"}}
	p.keys = []*ecKey{newECKey(t, "key-initial")}
	p.Storage = storage.NewStorageWithClients(storage.NewUserStore(issuer), map[string]*storage.Client{
		webClientID: storage.WebClient(webClientID, webSecret, webRedirect),
	})
	var handler atomic.Pointer[http.Handler]
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.srv = srv
	prov, err := op.NewProvider(&op.Config{CryptoKey: sha256.Sum256([]byte(issuer)), CodeMethodS256: true}, p, op.StaticIssuer(issuer))
	if err != nil {
		t.Fatal(err)
	}
	p.provider = prov
	var h http.Handler = prov
	handler.Store(&h)
	p.caFile = filepath.Join(t.TempDir(), "idp-ca.pem")
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// accessToken obtains a JWT access token through the client-credentials grant.
func (p *testIdP) accessToken(t testing.TB) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}
	req, err := http.NewRequest(http.MethodPost, p.issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(ccClientID, ccClientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		AccessToken string `json:"access_token"`
	}
	p.do(t, req, &out)
	if out.AccessToken == "" {
		t.Fatal("no access token in response")
	}
	return out.AccessToken
}

// idToken drives the authorization-code flow programmatically (authorize, log the example
// user in, callback, code exchange) and returns the ID token.
func (p *testIdP) idToken(t testing.TB) string {
	t.Helper()
	c := p.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	q := url.Values{"client_id": {webClientID}, "redirect_uri": {webRedirect}, "response_type": {"code"},
		"scope": {"openid email profile"}, "state": {"st"}, "nonce": {"n"}}
	location := func(u string) *url.URL {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("GET %s: %s %s", u, resp.Status, body)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	login := location(p.issuer + "/authorize?" + q.Encode())
	reqID := login.Query().Get("authRequestID")
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(p.issuer, "https://"))
	if err := p.CheckUsernamePassword("test-user@"+host, "verysecure", reqID); err != nil {
		t.Fatal(err)
	}
	cb := location(p.issuer + "/authorize/callback?id=" + url.QueryEscape(reqID))
	code := cb.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", cb)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {webRedirect}}
	req, err := http.NewRequest(http.MethodPost, p.issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(webClientID, webSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		IDToken string `json:"id_token"`
	}
	p.do(t, req, &out)
	if out.IDToken == "" {
		t.Fatal("no id token in response")
	}
	return out.IDToken
}

func (p *testIdP) do(t testing.TB, req *http.Request, out any) {
	t.Helper()
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %s", req.Method, req.URL, resp.Status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}
