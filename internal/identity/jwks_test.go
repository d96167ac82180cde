package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// testKey is a signing key of one algorithm, for tokens made outside any provider:
// forgeries, unreachable issuers, algorithms the test provider does not use.
type testKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func newTestKey(t testing.TB, alg jose.SignatureAlgorithm, kid string) *testKey {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no test key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{kid: kid, alg: alg, priv: priv}
}

// public is the key as an IdP publishes it.
func (k *testKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign makes a compact JWS of claims with this key, naming its key id.
func (k *testKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, (&jose.SignerOptions{}).WithHeader("kid", k.kid).WithType("JWT"))
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

// jwksTestIssuer is the issuer of tokens verified against a jwksServer.
const jwksTestIssuer = "https://issuer.test"

// tokenBy signs ordinary claims with k.
func tokenBy(t testing.TB, k *testKey) string {
	return k.sign(t, map[string]any{"iss": jwksTestIssuer, "sub": "ann", "aud": "gatehouse", "exp": time.Now().Add(time.Hour).Unix()})
}

// jwksServer serves a JWK set on loopback and counts the requests, which is what the key
// set's limits are about.
type jwksServer struct {
	srv     *httptest.Server
	fetches atomic.Int64

	mu           sync.Mutex
	keys         []jose.JSONWebKey
	cacheControl string
	status       int           // answer with this status instead of the set when not 0
	delay        time.Duration // answer after this long
}

func startJWKS(t testing.TB, keys ...*testKey) *jwksServer {
	s := &jwksServer{}
	s.publish(keys...)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		set, cc, status, delay := jose.JSONWebKeySet{Keys: s.keys}, s.cacheControl, s.status, s.delay
		s.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		if status != 0 {
			http.Error(w, "down", status)
			return
		}
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// publish replaces the published keys (a rotation, or a withdrawal).
func (s *jwksServer) publish(keys ...*testKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = nil
	for _, k := range keys {
		s.keys = append(s.keys, k.public())
	}
}

func (s *jwksServer) setStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

func (s *jwksServer) setDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

func (s *jwksServer) setCacheControl(cc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cacheControl = cc
}

func (s *jwksServer) keySet(t testing.TB, opts JWKSOptions) *JWKS {
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	return NewJWKS(s.srv.URL, opts)
}

// fetchedAt is when the key set's current keys were fetched.
func (k *JWKS) fetchedAt() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur == nil {
		return time.Time{}
	}
	return k.cur.fetched
}

// wantVerified fails unless tok verifies.
func wantVerified(t testing.TB, ks *JWKS, tok, what string) {
	t.Helper()
	if _, err := ks.VerifySignature(context.Background(), tok); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantRefused fails unless tok is refused as a bad token (not for want of keys).
func wantRefused(t testing.TB, ks *JWKS, tok, what string) {
	t.Helper()
	_, err := ks.VerifySignature(context.Background(), tok)
	if err == nil || errors.Is(err, errKeysUnavailable) {
		t.Fatalf("%s: want a bad signature, got %v", what, err)
	}
}

func TestJWKSAlgorithms(t *testing.T) {
	rs, es, ed := newTestKey(t, jose.RS256, "rs"), newTestKey(t, jose.ES256, "es"), newTestKey(t, jose.EdDSA, "ed")
	s := startJWKS(t, rs, es, ed)
	ks := s.keySet(t, JWKSOptions{})
	v := oidc.NewVerifier(jwksTestIssuer, ks, &oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: []string{"RS256", "ES256", "EdDSA"}})
	for _, k := range []*testKey{rs, es, ed} {
		tok, err := v.Verify(context.Background(), tokenBy(t, k))
		if err != nil || tok.Subject != "ann" {
			t.Fatalf("%s: %+v %v", k.alg, tok, err)
		}
	}
	// A token naming the RSA key but made with the EC key under ES256 is refused: the
	// published key says RS256.
	wantRefused(t, ks, tokenBy(t, &testKey{kid: "rs", alg: jose.ES256, priv: es.priv}), "ES256 under an RS256 key id")
	// A token without a key id is tried against every key.
	wantVerified(t, ks, tokenBy(t, &testKey{alg: jose.EdDSA, priv: ed.priv}), "token without kid")
	if n := s.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

func TestParseJWKS(t *testing.T) {
	rs, ed := newTestKey(t, jose.RS256, "rs"), newTestKey(t, jose.EdDSA, "ed")
	pub, err := json.Marshal(rs.public())
	if err != nil {
		t.Fatal(err)
	}
	// A private key published by mistake is used by its public half only.
	private, err := json.Marshal(jose.JSONWebKey{Key: ed.priv, KeyID: "ed", Algorithm: "EdDSA"})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"keys":[` + string(pub) + `,` + string(private) + `,
		{"kty":"oct","kid":"hmac","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
		{"kty":"oct","kid":"hmac2","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
		{"kty":"EC","kid":"k1","alg":"ES256K","crv":"secp256k1","x":"AA","y":"AA"},
		{"kty":"OKP","kid":"x448","crv":"X448","x":"AA"},
		` + strings.Replace(string(pub), `"use":"sig"`, `"use":"enc"`, 1) + `,
		{"kty":"RSA","kid":"broken"},
		"not an object"]}`
	keys, skipped, err := parseJWKS([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyID != "rs" || keys[1].KeyID != "ed" || !keys[1].IsPublic() || skipped != 7 {
		t.Fatalf("kept %d keys %+v, skipped %d", len(keys), keys, skipped)
	}
	for _, bad := range []string{`{}`, `[]`, `nonsense`} {
		if _, _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("parseJWKS(%s) accepted", bad)
		}
	}
	if keys, _, err := parseJWKS([]byte(`{"keys":[]}`)); err != nil || len(keys) != 0 {
		t.Errorf("empty set: %v %v", keys, err)
	}
}

// A token naming a cached key id whose signature does not verify is refused without any
// request to the IdP, however often it is tried.
func TestJWKSForgedSignatureCausesNoFetch(t *testing.T) {
	key := newTestKey(t, jose.ES256, "k1")
	s := startJWKS(t, key)
	ks := s.keySet(t, JWKSOptions{MissInterval: time.Millisecond})
	good := tokenBy(t, key)
	wantVerified(t, ks, good, "genuine token")
	forger := newTestKey(t, jose.ES256, "k1")
	parts := strings.Split(good, ".")
	forgeries := []string{parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))}
	for range 9 {
		forgeries = append(forgeries, tokenBy(t, forger))
	}
	const n = 200
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for i := range n {
		wg.Go(func() {
			tok := forgeries[i%len(forgeries)]
			if _, err := ks.VerifySignature(context.Background(), tok); err == nil || errors.Is(err, errKeysUnavailable) {
				accepted.Add(1)
			}
		})
	}
	wg.Wait()
	if a := accepted.Load(); a != 0 {
		t.Fatalf("%d forgeries not refused as bad signatures", a)
	}
	if f := s.fetches.Load(); f != 1 {
		t.Fatalf("%d forged logins caused %d extra JWKS fetches, want 0", n, f-1)
	}
}

// Tokens naming unknown key ids make at most one fetch per MissInterval, however many.
func TestJWKSUnknownKeyIDRateLimited(t *testing.T) {
	key, ghost := newTestKey(t, jose.ES256, "k1"), newTestKey(t, jose.ES256, "ghost")
	s := startJWKS(t, key)
	const window, run = 200 * time.Millisecond, time.Second
	ks := s.keySet(t, JWKSOptions{MissInterval: window})
	wantVerified(t, ks, tokenBy(t, key), "genuine token")
	unknown := tokenBy(t, ghost)
	start := time.Now()
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Since(start) < run {
				attempts.Add(1)
				if _, err := ks.VerifySignature(context.Background(), unknown); err == nil {
					t.Error("token of an unpublished key verified")
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	extra := s.fetches.Load() - 1
	t.Logf("%d attempts with an unknown key id in %s caused %d fetches (window %s)", attempts.Load(), elapsed, extra, window)
	if limit := int64(elapsed/window) + 1; extra < 2 || extra > limit {
		t.Fatalf("%d fetches, want 2..%d", extra, limit)
	}
	// Once the IdP publishes the key, the next window picks it up with one fetch.
	s.publish(key, ghost)
	time.Sleep(window)
	before := s.fetches.Load()
	wantVerified(t, ks, unknown, "token of the newly published key")
	wantVerified(t, ks, unknown, "token of the newly published key, again")
	if f := s.fetches.Load() - before; f != 1 {
		t.Fatalf("rotation took %d fetches, want 1", f)
	}
}

// Concurrent logins needing keys share one fetch: on a cold cache and during a rotation.
func TestJWKSConcurrentFetchesCoalesce(t *testing.T) {
	old, next := newTestKey(t, jose.ES256, "old"), newTestKey(t, jose.RS256, "next")
	s := startJWKS(t, old)
	s.setDelay(150 * time.Millisecond)
	// No rate limit worth the name: only coalescing keeps this to one fetch each.
	ks := s.keySet(t, JWKSOptions{MissInterval: time.Millisecond})
	burst := func(tok string) {
		t.Helper()
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range 32 {
			wg.Go(func() {
				if _, err := ks.VerifySignature(context.Background(), tok); err != nil {
					failed.Add(1)
					t.Log(err)
				}
			})
		}
		wg.Wait()
		if f := failed.Load(); f != 0 {
			t.Fatalf("%d logins failed", f)
		}
	}
	burst(tokenBy(t, old))
	if f := s.fetches.Load(); f != 1 {
		t.Fatalf("cold cache: %d fetches, want 1", f)
	}
	s.publish(old, next)
	burst(tokenBy(t, next))
	if f := s.fetches.Load(); f != 2 {
		t.Fatalf("rotation: %d fetches in all, want 2", f)
	}
}

// A key the IdP withdrew stops verifying once the cached set's TTL has run out.
func TestJWKSWithdrawnKeyStopsVerifying(t *testing.T) {
	a, b := newTestKey(t, jose.ES256, "a"), newTestKey(t, jose.ES256, "b")
	s := startJWKS(t, a, b)
	const ttl = 300 * time.Millisecond
	ks := s.keySet(t, JWKSOptions{Refresh: ttl})
	tokA, tokB := tokenBy(t, a), tokenBy(t, b)
	wantVerified(t, ks, tokA, "key a published")
	s.publish(b)
	// Within the TTL the cached set still holds a: this is the bound being tested.
	if time.Since(ks.fetchedAt()) < ttl/2 {
		wantVerified(t, ks, tokA, "key a withdrawn, cache still fresh")
	}
	time.Sleep(time.Until(ks.fetchedAt().Add(ttl + 20*time.Millisecond)))
	wantRefused(t, ks, tokA, "key a withdrawn, TTL over")
	wantVerified(t, ks, tokB, "key b still published")
	// First use, expiry, and one (rate-limited) refetch because a's key id is now unknown.
	wantRefused(t, ks, tokA, "key a withdrawn, again")
	if f := s.fetches.Load(); f != 3 {
		t.Fatalf("%d fetches, want 3", f)
	}
}

func TestJWKSCacheTTL(t *testing.T) {
	for _, c := range []struct {
		cc, age string
		want    time.Duration
	}{
		{"", "", DefaultJWKSRefresh},
		{"public, max-age=90", "", 90 * time.Second},
		{"max-age=600, must-revalidate", "100", 500 * time.Second},
		{"max-age=5", "", MinJWKSRefresh},
		{"max-age=86400", "", MaxJWKSRefresh},
		{"max-age=99999999999999999999", "", DefaultJWKSRefresh},
		{"no-store", "", MinJWKSRefresh},
		{"Max-Age=120, no-cache", "", MinJWKSRefresh},
		{"max-age=junk", "", DefaultJWKSRefresh},
	} {
		h := http.Header{}
		if c.cc != "" {
			h.Set("Cache-Control", c.cc)
		}
		if c.age != "" {
			h.Set("Age", c.age)
		}
		if got := cacheTTL(h); got != c.want {
			t.Errorf("Cache-Control %q Age %q: ttl %s, want %s", c.cc, c.age, got, c.want)
		}
	}
	// The header of a real fetch sets the TTL.
	key := newTestKey(t, jose.ES256, "k")
	s := startJWKS(t, key)
	s.setCacheControl("max-age=90")
	ks := s.keySet(t, JWKSOptions{})
	wantVerified(t, ks, tokenBy(t, key), "genuine token")
	ks.mu.Lock()
	ttl := ks.cur.ttl
	ks.mu.Unlock()
	if ttl != 90*time.Second {
		t.Fatalf("ttl %s after max-age=90", ttl)
	}
}

// While the IdP is down the last good keys keep verifying, with bounded retries, until
// MaxStale after their fetch; then verification fails closed; it recovers with the IdP.
func TestJWKSIdPDownServesLastGoodKeysUntilMaxStale(t *testing.T) {
	key := newTestKey(t, jose.ES256, "k")
	s := startJWKS(t, key)
	const ttl, retry, maxStale = 100 * time.Millisecond, 100 * time.Millisecond, 900 * time.Millisecond
	var logs syncBuffer
	ks := s.keySet(t, JWKSOptions{Refresh: ttl, RetryInterval: retry, MaxStale: maxStale, Timeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), &logs), nil))})
	tok := tokenBy(t, key)
	wantVerified(t, ks, tok, "IdP up")
	fetched := ks.fetchedAt()
	s.setStatus(http.StatusServiceUnavailable)
	before := s.fetches.Load()
	logins := 0
	for time.Since(fetched) < maxStale-300*time.Millisecond {
		wantVerified(t, ks, tok, "IdP down, keys within max staleness")
		logins++
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(fetched)
	tries := s.fetches.Load() - before
	t.Logf("%d logins in %s of outage made %d fetch attempts", logins, elapsed, tries)
	if tries < 2 || tries > int64(elapsed/retry)+1 {
		t.Fatalf("%d fetch attempts during the outage, want 2..%d", tries, int64(elapsed/retry)+1)
	}
	if !strings.Contains(logs.String(), "still verifying with the last good keys") {
		t.Fatalf("no warning about the stale keys in the log:\n%s", logs.String())
	}
	time.Sleep(time.Until(fetched.Add(maxStale + 50*time.Millisecond)))
	_, err := ks.VerifySignature(context.Background(), tok)
	if !errors.Is(err, errKeysUnavailable) || !strings.Contains(err.Error(), "maximum staleness") {
		t.Fatalf("beyond max staleness: want keys unavailable, got %v", err)
	}
	if !strings.Contains(logs.String(), "beyond the maximum staleness") {
		t.Fatalf("no fail-closed warning in the log:\n%s", logs.String())
	}
	s.setStatus(0)
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := ks.VerifySignature(context.Background(), tok)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("IdP back, still refused: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer for concurrent log writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Against the real provider: forgeries with its key id cost it nothing, unknown key ids one
// fetch per window, a rotation one fetch however many logins see it at once.
func TestOIDCLoginsDoNotDriveKeyFetches(t *testing.T) {
	ctx := context.Background()
	p := idp.Start(t)
	const window = 400 * time.Millisecond
	o, err := NewOIDC([]config.OIDC{issuerConfig(p, idp.ClientID)}, OIDCOptions{Logger: testLogger(t), JWKSMissInterval: window})
	if err != nil {
		t.Fatal(err)
	}
	good := p.AccessToken(t, "")
	if _, err := o.Authenticate(ctx, idp.ClientID, good); err != nil {
		t.Fatal(err)
	}
	if f := p.KeyFetches(); f != 1 {
		t.Fatalf("%d key fetches after the first login, want 1", f)
	}
	claims := jwtPart(t, good, 1)
	forger := newTestKey(t, jose.ES256, jwtPart(t, good, 0)["kid"].(string))
	for range 50 {
		_, err := o.Authenticate(ctx, idp.ClientID, forger.sign(t, claims))
		wantCause(t, err, CauseBadSignature)
	}
	if f := p.KeyFetches(); f != 1 {
		t.Fatalf("50 forged logins with a known key id caused %d key fetches, want 0", f-1)
	}
	stranger := newTestKey(t, jose.ES256, "no-such-key")
	start := time.Now()
	for range 50 {
		_, err := o.Authenticate(ctx, idp.ClientID, stranger.sign(t, claims))
		wantCause(t, err, CauseBadSignature)
	}
	if f := p.KeyFetches(); time.Since(start) < window && f != 2 {
		t.Fatalf("50 logins with an unknown key id caused %d key fetches, want 1", f-1)
	}
	time.Sleep(window)
	p.RotateKey(t, true)
	fresh := p.AccessToken(t, "")
	before := p.KeyFetches()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := o.Authenticate(ctx, idp.ClientID, fresh); err != nil {
				t.Errorf("token of the rotated key: %v", err)
			}
		})
	}
	wg.Wait()
	if f := p.KeyFetches() - before; f != 1 {
		t.Fatalf("16 concurrent logins during a rotation caused %d key fetches, want 1", f)
	}
}

// Against the real provider hanging: logins wait at most the fetch timeout (or their own
// deadline), go on with the last good keys until the maximum staleness, then are refused as
// "issuer unavailable" with the reason in the log.
func TestOIDCIdPHangingUsesLastGoodKeysThenFailsClosed(t *testing.T) {
	ctx := context.Background()
	p := idp.Start(t)
	const timeout, ttl, maxStale = 300 * time.Millisecond, 200 * time.Millisecond, 1500 * time.Millisecond
	var logs syncBuffer
	o, err := NewOIDC([]config.OIDC{issuerConfig(p, idp.ClientID)}, OIDCOptions{
		Logger:           slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), &logs), nil)),
		DiscoveryTimeout: timeout, DiscoveryRetry: 200 * time.Millisecond, JWKSRefresh: ttl, JWKSMaxStale: maxStale,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := p.AccessToken(t, "")
	if _, err := o.Authenticate(ctx, idp.ClientID, tok); err != nil {
		t.Fatal(err)
	}
	fetched := o.issuers[p.Issuer].keys.fetchedAt()
	p.SetOutage(idp.Hanging)
	time.Sleep(time.Until(fetched.Add(ttl)))
	// A login whose own deadline is short gives up waiting for the fetch and uses the last
	// good keys.
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	start := time.Now()
	_, err = o.Authenticate(dctx, idp.ClientID, tok)
	cancel()
	if d := time.Since(start); err != nil || d > 250*time.Millisecond {
		t.Fatalf("login with a 50ms deadline while the IdP hangs: %v after %s", err, d)
	}
	var slowest time.Duration
	for time.Since(fetched) < maxStale-timeout-200*time.Millisecond {
		start := time.Now()
		if _, err := o.Authenticate(ctx, idp.ClientID, tok); err != nil {
			t.Fatalf("IdP hanging, keys %s old: %v", time.Since(fetched), err)
		}
		slowest = max(slowest, time.Since(start))
		time.Sleep(10 * time.Millisecond)
	}
	if slowest > timeout+200*time.Millisecond {
		t.Fatalf("a login waited %s for a hanging IdP, timeout %s", slowest, timeout)
	}
	time.Sleep(time.Until(fetched.Add(maxStale + 50*time.Millisecond)))
	start = time.Now()
	_, err = o.Authenticate(ctx, idp.ClientID, tok)
	wantCause(t, err, CauseIssuerUnavailable)
	if d := time.Since(start); d > timeout+200*time.Millisecond {
		t.Fatalf("refusal took %s", d)
	}
	if !strings.Contains(err.Error(), "maximum staleness") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	if !strings.Contains(logs.String(), "beyond the maximum staleness") {
		t.Fatalf("no fail-closed warning in the log:\n%s", logs.String())
	}
	for _, secret := range []string{tok, strings.Split(tok, ".")[2]} {
		if strings.Contains(logs.String(), secret) {
			t.Fatal("the token appears in the log")
		}
	}
}
