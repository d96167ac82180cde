package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/internal/config"
)

// testLogger sends the package's logs to the test's output, shown only on failure or -v.
func testLogger(t testing.TB) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

// signJWT signs claims with key outside any provider, for forgeries and unreachable issuers.
func signJWT(t testing.TB, key *ecKey, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.priv}, (&jose.SignerOptions{}).WithHeader("kid", key.id).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwtPart decodes one part of a compact JWT.
func jwtPart(t testing.TB, tok string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func issuerConfig(p *testIdP, aud ...string) config.OIDC {
	return config.OIDC{Issuer: p.issuer, Audience: aud, CAFile: p.caFile}
}

func TestOIDCTokensFromARealProvider(t *testing.T) {
	ctx := context.Background()
	a, b, stranger := startIdP(t, nil), startIdP(t, nil), startIdP(t, nil)
	clk := newClock()
	o, err := NewOIDC([]config.OIDC{issuerConfig(a, "gatehouse", webClientID), issuerConfig(b, "gatehouse")}, OIDCOptions{Logger: testLogger(t), Now: clk.Now, DiscoveryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	// A JWT access token from the client-credentials grant: a service, groups from the claim.
	at := a.accessToken(t)
	id, err := o.Authenticate(ctx, ccClientID, at)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != ccClientID || id.Kind != Service || id.AuthMethod != AuthMethodOIDC || id.Issuer != a.issuer ||
		!slices.Equal(id.Groups, []string{"analysts", "oncall"}) || id.ExpiresAt.IsZero() || id.TokenID != "" {
		t.Fatalf("identity = %+v", id)
	}
	if err := o.StillValid(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err = o.Authenticate(ctx, "mallory", at)
	wantCause(t, err, CauseUserMismatch)

	// An ID token from the authorization-code flow: a person, subject is the email.
	it := a.idToken(t)
	t.Logf("id token claims: %v", jwtPart(t, it, 1))
	if jwtPart(t, it, 1)["nonce"] != "n" {
		t.Fatal("not an ID token")
	}
	for _, user := range []string{"test-user@zitadel.ch", "TEST-USER@127.0.0.1"} {
		hid, err := o.Authenticate(ctx, user, it)
		if err != nil {
			t.Fatalf("login as %s: %v", user, err)
		}
		if hid.Subject != "test-user@zitadel.ch" || hid.Kind != Human || !hid.InGroup("analysts") {
			t.Fatalf("identity = %+v", hid)
		}
	}

	// A second configured issuer works side by side; an unconfigured one is refused.
	b.set([]string{"gatehouse"}, []string{"dba"}, nil)
	bid, err := o.Authenticate(ctx, ccClientID, b.accessToken(t))
	if err != nil || bid.Issuer != b.issuer || !slices.Equal(bid.Groups, []string{"dba"}) {
		t.Fatalf("second issuer: %+v %v", bid, err)
	}
	_, err = o.Authenticate(ctx, ccClientID, stranger.accessToken(t))
	wantCause(t, err, CauseUnknownIssuer)

	// The IdP may declare the kind.
	a.set([]string{"gatehouse"}, []string{"bots"}, map[string]any{KindClaim: "agent"})
	aid, err := o.Authenticate(ctx, ccClientID, a.accessToken(t))
	if err != nil || aid.Kind != Agent {
		t.Fatalf("claimed kind: %+v %v", aid, err)
	}

	// An email subject the IdP says is unverified is refused; a verified one is the subject.
	a.set([]string{"gatehouse"}, nil, map[string]any{"email": "svc@example.com", "email_verified": false})
	_, err = o.Authenticate(ctx, "svc@example.com", a.accessToken(t))
	wantCause(t, err, CauseEmailUnverified)
	a.set([]string{"gatehouse"}, nil, map[string]any{"email": "svc@example.com", "email_verified": true})
	eid, err := o.Authenticate(ctx, "svc@example.com", a.accessToken(t))
	if err != nil || eid.Subject != "svc@example.com" {
		t.Fatalf("verified email: %+v %v", eid, err)
	}

	// A token minted for another application is refused.
	a.set([]string{"some-other-app"}, nil, nil)
	_, err = o.Authenticate(ctx, ccClientID, a.accessToken(t))
	wantCause(t, err, CauseWrongAudience)

	// Tampering: a changed signature, or a changed payload under the old signature.
	parts := strings.Split(at, ".")
	sig := []byte(parts[2])
	sig[10] = map[bool]byte{true: 'B', false: 'A'}[sig[10] == 'A']
	_, err = o.Authenticate(ctx, ccClientID, parts[0]+"."+parts[1]+"."+string(sig))
	wantCause(t, err, CauseBadSignature)
	claims := jwtPart(t, at, 1)
	claims["groups"] = []string{"admins"}
	forgedPayload, _ := json.Marshal(claims)
	_, err = o.Authenticate(ctx, ccClientID, parts[0]+"."+base64.RawURLEncoding.EncodeToString(forgedPayload)+"."+parts[2])
	wantCause(t, err, CauseBadSignature)
	// A token claiming the issuer and its key id but signed with someone else's key.
	impostor := newECKey(t, jwtPart(t, at, 0)["kid"].(string))
	_, err = o.Authenticate(ctx, ccClientID, signJWT(t, impostor, claims))
	wantCause(t, err, CauseBadSignature)
	// An unsigned token ("alg":"none") is refused.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]
	if _, err = o.Authenticate(ctx, ccClientID, none); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("alg none: %v", err)
	}

	// Time: not yet valid before nbf; expired after exp, at login and for live sessions.
	clk.Advance(-time.Hour)
	_, err = o.Authenticate(ctx, ccClientID, at)
	wantCause(t, err, CauseNotYetValid)
	clk.Advance(3 * time.Hour)
	_, err = o.Authenticate(ctx, ccClientID, at)
	wantCause(t, err, CauseExpired)
	wantCause(t, o.StillValid(ctx, id), CauseExpired)
	// Without the typed expiry, the exp claim is used.
	noTyped := *id
	noTyped.ExpiresAt = time.Time{}
	wantCause(t, o.StillValid(ctx, &noTyped), CauseExpired)
}

func TestOIDCKeyRotation(t *testing.T) {
	ctx := context.Background()
	a := startIdP(t, nil)
	o, err := NewOIDC([]config.OIDC{issuerConfig(a, "gatehouse")}, OIDCOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	old := a.accessToken(t)
	if _, err := o.Authenticate(ctx, ccClientID, old); err != nil {
		t.Fatal(err)
	}
	// The provider switches to a new key and stops publishing the old one.
	newKey := a.rotate(t, false)
	fresh := a.accessToken(t)
	if kid := jwtPart(t, fresh, 0)["kid"]; kid != newKey.id {
		t.Fatalf("provider signed with %v, want the new key %s", kid, newKey.id)
	}
	if _, err := o.Authenticate(ctx, ccClientID, fresh); err != nil {
		t.Fatalf("token signed with the rotated key refused: %v", err)
	}
	// The retired key no longer verifies anything once the key set was refreshed.
	_, err = o.Authenticate(ctx, ccClientID, old)
	wantCause(t, err, CauseBadSignature)
	// Overlapping rotation: old and new published together, both accepted.
	a.rotate(t, true)
	if _, err := o.Authenticate(ctx, ccClientID, a.accessToken(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Authenticate(ctx, ccClientID, fresh); err != nil {
		t.Fatal(err)
	}
}

// An issuer that is unreachable (here: accepting TCP but never answering) neither blocks
// construction nor any login beyond the discovery timeout, and works once it comes up.
func TestOIDCIssuerDownAtStartup(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// httptest serves the same built-in certificate on every TLS server; write it out now so
	// the configuration can name a CA file before the issuer exists.
	probe := httptest.NewTLSServer(nil)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: probe.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	probe.Close()
	issuer := "https://" + l.Addr().String()

	const timeout, retry = 400 * time.Millisecond, 300 * time.Millisecond
	start := time.Now()
	o, err := NewOIDC([]config.OIDC{{Issuer: issuer, Audience: []string{"gatehouse"}, CAFile: caFile}}, OIDCOptions{Logger: testLogger(t), DiscoveryTimeout: timeout, DiscoveryRetry: retry})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("NewOIDC took %s: it must not contact the issuer", d)
	}
	forged := signJWT(t, newECKey(t, "k"), map[string]any{"iss": issuer, "sub": "x", "aud": "gatehouse", "exp": time.Now().Add(time.Hour).Unix()})
	start = time.Now()
	_, err = o.Authenticate(ctx, "x", forged)
	wantCause(t, err, CauseIssuerUnavailable)
	if d := time.Since(start); d > timeout+time.Second {
		t.Fatalf("login against a dead issuer took %s", d)
	}
	// Within the retry interval logins fail fast instead of waiting again.
	start = time.Now()
	_, err = o.Authenticate(ctx, "x", forged)
	wantCause(t, err, CauseIssuerUnavailable)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("second login waited %s despite the retry interval", d)
	}
	o.Warm(ctx) // logs, never fails

	// The issuer comes up on the same address; after the retry interval logins work.
	p := startIdP(t, l)
	tok := p.accessToken(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		id, err := o.Authenticate(ctx, ccClientID, tok)
		if err == nil {
			if id.Issuer != issuer {
				t.Fatalf("issuer = %q", id.Issuer)
			}
			break
		}
		if Cause(err) != CauseIssuerUnavailable || time.Now().After(deadline) {
			t.Fatalf("issuer up, login still fails: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOIDCConfigValidation(t *testing.T) {
	for _, c := range []config.OIDC{
		{Issuer: "", Audience: []string{"a"}},
		{Issuer: "ftp://idp.example.com", Audience: []string{"a"}},
		{Issuer: "http://idp.example.com", Audience: []string{"a"}},
		{Issuer: "https://idp.example.com"},
		{Issuer: "https://idp.example.com", Audience: []string{"a"}, CAFile: "/nonexistent/ca.pem"},
	} {
		if _, err := NewOIDC([]config.OIDC{c}, OIDCOptions{}); err == nil {
			t.Errorf("NewOIDC(%+v) accepted", c)
		}
	}
	dup := config.OIDC{Issuer: "https://idp.example.com", Audience: []string{"a"}}
	if _, err := NewOIDC([]config.OIDC{dup, dup}, OIDCOptions{}); err == nil {
		t.Error("duplicate issuer accepted")
	}
	if _, err := NewOIDC([]config.OIDC{{Issuer: "http://127.0.0.1:1", Audience: []string{"a"}}}, OIDCOptions{}); err != nil {
		t.Errorf("loopback http issuer refused: %v", err)
	}
}

func TestLooksLikeJWT(t *testing.T) {
	for s, want := range map[string]bool{
		"a.b.c": true, "eyJ0.eyJ0.sig-_": true, "a.b.": false, ".b.c": false, "a..c": false,
		"a.b": false, "a.b.c.d": false, "a.b.c=": false, "gat_x": false, "": false, "pass word": false,
		strings.Repeat("a", maxJWTLen) + ".b.c": false,
	} {
		if got := LooksLikeJWT(s); got != want {
			t.Errorf("LooksLikeJWT(%.20q) = %v", s, got)
		}
	}
}

func TestOIDCClaimHelpers(t *testing.T) {
	claims := map[string]any{
		"groups":       "solo",
		"realm_access": map[string]any{"roles": []any{"r1", 7, "r2", ""}},
		"client_id":    "svc", "email": "",
	}
	if g := groupsClaim(claims, "groups"); !slices.Equal(g, []string{"solo"}) {
		t.Errorf("string groups = %v", g)
	}
	if g := groupsClaim(claims, "realm_access.roles"); !slices.Equal(g, []string{"r1", "r2"}) {
		t.Errorf("nested groups = %v", g)
	}
	if g := groupsClaim(claims, "missing.path"); g != nil {
		t.Errorf("missing groups = %v", g)
	}
	if k := kindFromClaims(claims, "svc"); k != Service {
		t.Errorf("kind = %s", k)
	}
	if k := kindFromClaims(map[string]any{KindClaim: "robot"}, "u"); k != Human {
		t.Errorf("invalid claimed kind gave %s", k)
	}
}
