package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// testLogger sends the package's logs to the test's output, shown only on failure or -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
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

func issuerConfig(p *idp.Provider, aud ...string) config.OIDC {
	return config.OIDC{Issuer: p.Issuer, Audience: aud, CAFile: p.CAFile}
}

func TestOIDCTokensFromARealProvider(t *testing.T) {
	ctx := context.Background()
	a, b, stranger := idp.Start(t), idp.Start(t), idp.Start(t)
	clk := newClock()
	o, err := NewOIDC([]config.OIDC{issuerConfig(a, idp.ClientID, idp.WebClientID), issuerConfig(b, idp.ClientID)}, OIDCOptions{Logger: testLogger(t), Now: clk.Now, DiscoveryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	// A JWT access token from the client-credentials grant: a service, groups from the claim.
	at := a.Token(t, idp.Claims{Groups: []string{"analysts", "oncall"}})
	id, err := o.Authenticate(ctx, idp.ClientID, at)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != idp.ClientID || id.Kind != Service || id.AuthMethod != AuthMethodOIDC || id.Issuer != a.Issuer ||
		!slices.Equal(id.Groups, []string{"analysts", "oncall"}) || id.ExpiresAt.IsZero() || id.TokenID != "" {
		t.Fatalf("identity = %+v", id)
	}
	if err := o.StillValid(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err = o.Authenticate(ctx, "mallory", at)
	wantCause(t, err, CauseUserMismatch)

	// An ID token from the authorization-code flow: a person, subject is the email.
	it := a.IDToken(t, "ann@corp.example", "analysts")
	t.Logf("id token claims: %v", jwtPart(t, it, 1))
	if jwtPart(t, it, 1)["nonce"] != "n" {
		t.Fatal("not an ID token")
	}
	for _, user := range []string{"ann@corp.example", "ANN@Corp.Example"} {
		hid, err := o.Authenticate(ctx, user, it)
		if err != nil {
			t.Fatalf("login as %s: %v", user, err)
		}
		if hid.Subject != "ann@corp.example" || hid.Kind != Human || !hid.InGroup("analysts") {
			t.Fatalf("identity = %+v", hid)
		}
	}

	// A second configured issuer works side by side; an unconfigured one is refused.
	bid, err := o.Authenticate(ctx, idp.ClientID, b.Token(t, idp.Claims{Groups: []string{"dba"}}))
	if err != nil || bid.Issuer != b.Issuer || !slices.Equal(bid.Groups, []string{"dba"}) {
		t.Fatalf("second issuer: %+v %v", bid, err)
	}
	_, err = o.Authenticate(ctx, idp.ClientID, stranger.AccessToken(t, ""))
	wantCause(t, err, CauseUnknownIssuer)

	// The IdP may declare the kind.
	aid, err := o.Authenticate(ctx, idp.ClientID, a.Token(t, idp.Claims{Groups: []string{"bots"}, Extra: map[string]any{KindClaim: "agent"}}))
	if err != nil || aid.Kind != Agent {
		t.Fatalf("claimed kind: %+v %v", aid, err)
	}

	// An email subject the IdP says is unverified is refused; a verified one is the subject.
	_, err = o.Authenticate(ctx, "svc@example.com", a.Token(t, idp.Claims{Extra: map[string]any{"email": "svc@example.com", "email_verified": false}}))
	wantCause(t, err, CauseEmailUnverified)
	eid, err := o.Authenticate(ctx, "svc@example.com", a.Token(t, idp.Claims{Extra: map[string]any{"email": "svc@example.com", "email_verified": true}}))
	if err != nil || eid.Subject != "svc@example.com" {
		t.Fatalf("verified email: %+v %v", eid, err)
	}

	// A token minted for another application is refused.
	_, err = o.Authenticate(ctx, idp.ClientID, a.Token(t, idp.Claims{Audience: []string{"some-other-app"}}))
	wantCause(t, err, CauseWrongAudience)

	// Tampering: a changed signature, or a changed payload under the old signature.
	parts := strings.Split(at, ".")
	sig := []byte(parts[2])
	sig[10] = map[bool]byte{true: 'B', false: 'A'}[sig[10] == 'A']
	_, err = o.Authenticate(ctx, idp.ClientID, parts[0]+"."+parts[1]+"."+string(sig))
	wantCause(t, err, CauseBadSignature)
	claims := jwtPart(t, at, 1)
	claims["groups"] = []string{"admins"}
	forgedPayload, _ := json.Marshal(claims)
	_, err = o.Authenticate(ctx, idp.ClientID, parts[0]+"."+base64.RawURLEncoding.EncodeToString(forgedPayload)+"."+parts[2])
	wantCause(t, err, CauseBadSignature)
	// A token claiming the issuer and its key id but signed with someone else's key.
	impostor := newTestKey(t, "ES256", jwtPart(t, at, 0)["kid"].(string))
	_, err = o.Authenticate(ctx, idp.ClientID, impostor.sign(t, claims))
	wantCause(t, err, CauseBadSignature)
	// A key id chosen to look like another cause does not change the cause.
	_, err = o.Authenticate(ctx, idp.ClientID, newTestKey(t, "ES256", errKeysUnavailable.Error()+" nbf").sign(t, claims))
	wantCause(t, err, CauseBadSignature)
	// An unsigned token ("alg":"none") is refused.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]
	if _, err = o.Authenticate(ctx, idp.ClientID, none); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("alg none: %v", err)
	}

	// Time: not yet valid before nbf; expired after exp, at login and for live sessions.
	clk.Advance(-time.Hour)
	_, err = o.Authenticate(ctx, idp.ClientID, at)
	wantCause(t, err, CauseNotYetValid)
	clk.Advance(3 * time.Hour)
	_, err = o.Authenticate(ctx, idp.ClientID, at)
	wantCause(t, err, CauseExpired)
	wantCause(t, o.StillValid(ctx, id), CauseExpired)
	// Without the typed expiry, the exp claim is used.
	noTyped := *id
	noTyped.ExpiresAt = time.Time{}
	wantCause(t, o.StillValid(ctx, &noTyped), CauseExpired)
}

func TestOIDCKeyRotation(t *testing.T) {
	ctx := context.Background()
	a := idp.Start(t)
	// Each step below rotates right after the previous fetch; the unknown-key rate limit is
	// tested on its own (TestJWKSUnknownKeyIDRateLimited).
	o, err := NewOIDC([]config.OIDC{issuerConfig(a, idp.ClientID)}, OIDCOptions{Logger: testLogger(t), JWKSMissInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	old := a.AccessToken(t, "")
	if _, err := o.Authenticate(ctx, idp.ClientID, old); err != nil {
		t.Fatal(err)
	}
	// The provider switches to a new key and stops publishing the old one.
	a.RotateKey(t, false)
	fresh := a.AccessToken(t, "")
	if jwtPart(t, fresh, 0)["kid"] == jwtPart(t, old, 0)["kid"] {
		t.Fatal("provider did not sign with the new key")
	}
	if _, err := o.Authenticate(ctx, idp.ClientID, fresh); err != nil {
		t.Fatalf("token signed with the rotated key refused: %v", err)
	}
	// The retired key no longer verifies anything once the key set was refreshed.
	time.Sleep(2 * time.Millisecond)
	_, err = o.Authenticate(ctx, idp.ClientID, old)
	wantCause(t, err, CauseBadSignature)
	// Overlapping rotation: old and new published together, both accepted.
	time.Sleep(2 * time.Millisecond)
	a.RotateKey(t, true)
	if _, err := o.Authenticate(ctx, idp.ClientID, a.AccessToken(t, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Authenticate(ctx, idp.ClientID, fresh); err != nil {
		t.Fatal(err)
	}
}

// An issuer that is unreachable (here: accepting requests but never answering) neither blocks
// construction nor any login beyond the discovery timeout, and works once it comes up.
func TestOIDCIssuerDownAtStartup(t *testing.T) {
	ctx := context.Background()
	p := idp.Start(t)
	tok := p.AccessToken(t, "")
	p.SetOutage(idp.Hanging)

	const timeout, retry = 400 * time.Millisecond, 300 * time.Millisecond
	start := time.Now()
	o, err := NewOIDC([]config.OIDC{issuerConfig(p, idp.ClientID)}, OIDCOptions{Logger: testLogger(t), DiscoveryTimeout: timeout, DiscoveryRetry: retry})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("NewOIDC took %s: it must not contact the issuer", d)
	}
	forged := newTestKey(t, "ES256", "k").sign(t, map[string]any{"iss": p.Issuer, "sub": "x", "aud": idp.ClientID, "exp": time.Now().Add(time.Hour).Unix()})
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

	// The issuer comes up; after the retry interval logins work.
	p.SetOutage(idp.Up)
	deadline := time.Now().Add(5 * time.Second)
	for {
		id, err := o.Authenticate(ctx, idp.ClientID, tok)
		if err == nil {
			if id.Issuer != p.Issuer {
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
		{Issuer: "https://idp.example.com", Audience: []string{"a"}, JWKSRefresh: config.Duration(10 * time.Second)},
		{Issuer: "https://idp.example.com", Audience: []string{"a"}, JWKSRefresh: config.Duration(2 * time.Hour)},
	} {
		if _, err := NewOIDC([]config.OIDC{c}, OIDCOptions{}); err == nil {
			t.Errorf("NewOIDC(%+v) accepted", c)
		}
	}
	dup := config.OIDC{Issuer: "https://idp.example.com", Audience: []string{"a"}}
	if _, err := NewOIDC([]config.OIDC{dup, dup}, OIDCOptions{}); err == nil {
		t.Error("duplicate issuer accepted")
	}
	if _, err := NewOIDC([]config.OIDC{{Issuer: "https://idp.example.com", Audience: []string{"a"}, JWKSRefresh: config.Duration(5 * time.Minute)}}, OIDCOptions{}); err != nil {
		t.Errorf("jwks_refresh 5m refused: %v", err)
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
