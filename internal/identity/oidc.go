package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/internal/config"
)

// AuthMethodOIDC is the Identity.AuthMethod of an OIDC token login.
const AuthMethodOIDC = "oidc"

// KindClaim lets an identity provider state the Gatehouse kind of a principal ("human",
// "service", "agent") explicitly, for IdPs that issue tokens to agents.
const KindClaim = "gatehouse_kind"

// maxJWTLen bounds what is parsed at all: real ID and access tokens are a few KiB.
const maxJWTLen = 16 << 10

// Defaults for OIDCOptions.
const (
	DefaultDiscoveryTimeout = 10 * time.Second
	DefaultDiscoveryRetry   = 5 * time.Second
)

// OIDCOptions tunes the OIDC authenticator; the zero value is fine for production.
type OIDCOptions struct {
	Logger *slog.Logger
	// Now is the clock used for exp/nbf; default time.Now.
	Now func() time.Time
	// DiscoveryTimeout bounds discovery and key fetches, so an unreachable issuer costs a
	// login at most this long; default DefaultDiscoveryTimeout.
	DiscoveryTimeout time.Duration
	// DiscoveryRetry is how long after a failed discovery (or key fetch) logins fail fast
	// (or use the last good keys) before it is tried again, so a dead IdP is not hammered;
	// default DefaultDiscoveryRetry.
	DiscoveryRetry time.Duration
	// JWKSRefresh is how long fetched signing keys are used before they are fetched again,
	// for issuers whose configuration sets no jwks_refresh; zero follows the JWKS response's
	// Cache-Control (see JWKSOptions.Refresh). Not bounded, so tests can make it short.
	JWKSRefresh time.Duration
	// JWKSMissInterval is the least time between key fetches caused by tokens naming an
	// unknown key id; default DefaultJWKSMissInterval.
	JWKSMissInterval time.Duration
	// JWKSMaxStale is how long the last good keys keep verifying while the IdP cannot be
	// reached; default DefaultJWKSMaxStale.
	JWKSMaxStale time.Duration
}

// OIDC accepts ID tokens and JWT access tokens signed by configured issuers. Discovery is
// lazy (first login for that issuer), bounded by a timeout and retried, so an unreachable
// IdP never blocks startup; signing keys come from the issuer's JWKS through a JWKS cache
// (TTL-bound, rate-limited refetch for unknown key ids, none for bad signatures), so key
// rotation and withdrawal need no restart and tokens cannot drive IdP traffic. It is an
// Authenticator and a Validator. Safe for concurrent use.
type OIDC struct {
	issuers map[string]*oidcIssuer
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration
	retry   time.Duration
	opts    OIDCOptions
}

// oidcIssuer is one trusted issuer and its lazily discovered verifier.
type oidcIssuer struct {
	cfg    config.OIDC
	client *http.Client

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	keys     *JWKS
	failedAt time.Time
	lastErr  error
}

// NewOIDC checks the issuer configuration (URLs, audiences, CA files) without contacting any
// issuer.
func NewOIDC(cfgs []config.OIDC, opts OIDCOptions) (*OIDC, error) {
	o := &OIDC{issuers: map[string]*oidcIssuer{}, log: opts.Logger, now: opts.Now, timeout: opts.DiscoveryTimeout, retry: opts.DiscoveryRetry, opts: opts}
	if o.log == nil {
		o.log = slog.Default()
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.timeout <= 0 {
		o.timeout = DefaultDiscoveryTimeout
	}
	if o.retry <= 0 {
		o.retry = DefaultDiscoveryRetry
	}
	for i, c := range cfgs {
		where := fmt.Sprintf("oidc[%d]", i)
		if c.Line > 0 {
			where += fmt.Sprintf(" (line %d)", c.Line)
		}
		u, err := url.Parse(c.Issuer)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, fmt.Errorf("%s: issuer %q: want an https URL", where, c.Issuer)
		}
		if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("%s: issuer %q: plain http is only allowed for loopback issuers", where, c.Issuer)
		}
		if len(c.Audience) == 0 {
			return nil, fmt.Errorf("%s: issuer %s: audience is required (accepting tokens minted for any application would let them be replayed here)", where, c.Issuer)
		}
		if _, dup := o.issuers[c.Issuer]; dup {
			return nil, fmt.Errorf("%s: issuer %s declared twice", where, c.Issuer)
		}
		if c.SubjectClaim == "" {
			c.SubjectClaim = "email"
		}
		if c.GroupsClaim == "" {
			c.GroupsClaim = "groups"
		}
		if r := time.Duration(c.JWKSRefresh); r != 0 && (r < MinJWKSRefresh || r > MaxJWKSRefresh) {
			return nil, fmt.Errorf("%s: issuer %s: jwks_refresh %s is outside %s..%s", where, c.Issuer, r, MinJWKSRefresh, MaxJWKSRefresh)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%s: issuer %s: read ca_file: %w", where, c.Issuer, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: issuer %s: ca_file %s holds no PEM certificate", where, c.Issuer, c.CAFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		o.issuers[c.Issuer] = &oidcIssuer{cfg: c, client: &http.Client{Transport: tr, Timeout: o.timeout}}
	}
	return o, nil
}

// isLoopbackHost reports whether host names this machine, where plain http cannot be sniffed.
func isLoopbackHost(h string) bool {
	return h == "localhost" || h == "127.0.0.1" || h == "::1" || strings.HasPrefix(h, "127.")
}

// Warm tries discovery and a key fetch for every issuer and logs failures; call it in a
// goroutine at start so the first login does not pay for them. It never fails: logins retry
// later.
func (o *OIDC) Warm(ctx context.Context) {
	for _, is := range o.issuers {
		if _, err := o.verifierFor(ctx, is); err != nil {
			o.log.Warn("oidc discovery failed; will retry on demand", "issuer", is.cfg.Issuer, "err", err)
			continue
		}
		if err := is.keys.Prefetch(ctx); err != nil {
			o.log.Warn("oidc signing keys not fetched; will retry on demand", "issuer", is.cfg.Issuer, "err", err)
		}
	}
}

// verifierFor returns the issuer's verifier, discovering it if needed. After a failure,
// logins fail fast until the retry interval has passed.
func (o *OIDC) verifierFor(ctx context.Context, is *oidcIssuer) (*oidc.IDTokenVerifier, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.verifier != nil {
		return is.verifier, nil
	}
	now := time.Now()
	if !is.failedAt.IsZero() && now.Sub(is.failedAt) < o.retry {
		return nil, fmt.Errorf("discovery failed %s ago (retrying after %s): %w", now.Sub(is.failedAt).Round(time.Millisecond), o.retry, is.lastErr)
	}
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, is.client), o.timeout)
	defer cancel()
	p, err := oidc.NewProvider(dctx, is.cfg.Issuer)
	if err == nil {
		err = o.useProvider(is, p)
	}
	if err != nil {
		is.failedAt, is.lastErr = time.Now(), err
		return nil, fmt.Errorf("discover %s: %w", is.cfg.Issuer, err)
	}
	is.failedAt, is.lastErr = time.Time{}, nil
	o.log.Info("oidc issuer discovered", "issuer", is.cfg.Issuer)
	return is.verifier, nil
}

// useProvider builds the issuer's verifier from its discovery document: signatures are
// checked with a JWKS cache for its jwks_uri (go-oidc's own key set would refetch on every
// bad signature and never drop a withdrawn key), algorithms are those it advertises.
func (o *OIDC) useProvider(is *oidcIssuer, p *oidc.Provider) error {
	var meta struct {
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := p.Claims(&meta); err != nil {
		return fmt.Errorf("read discovery document: %w", err)
	}
	u, err := url.Parse(meta.JWKSURI)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
		return fmt.Errorf("discovery document: jwks_uri %q: want an https URL", meta.JWKSURI)
	}
	var algs []string
	for _, a := range meta.Algs {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) {
			algs = append(algs, a)
		}
	}
	refresh := time.Duration(is.cfg.JWKSRefresh)
	if refresh == 0 {
		refresh = o.opts.JWKSRefresh
	}
	is.keys = NewJWKS(meta.JWKSURI, JWKSOptions{
		Client: is.client, Timeout: o.timeout, Refresh: refresh, MissInterval: o.opts.JWKSMissInterval,
		RetryInterval: o.retry, MaxStale: o.opts.JWKSMaxStale, Logger: o.log.With("issuer", is.cfg.Issuer),
	})
	// The audience is checked against the configured list in Authenticate (go-oidc checks
	// only one client id); expiry, nbf, issuer and the algorithm are go-oidc's. Without
	// advertised algorithms go-oidc allows RS256 only, as before.
	is.verifier = oidc.NewVerifier(is.cfg.Issuer, is.keys, &oidc.Config{SkipClientIDCheck: true, Now: o.now, SupportedSigningAlgs: algs})
	return nil
}

// LooksLikeJWT reports whether s has the shape of a compact JWS (three base64url parts), so a
// password can be routed to OIDC without trying to parse everything as a token.
func LooksLikeJWT(s string) bool {
	if len(s) > maxJWTLen {
		return false
	}
	parts := 0
	partLen := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if partLen == 0 {
				return false
			}
			parts++
			partLen = 0
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			partLen++
		default:
			return false
		}
	}
	return parts == 2 && partLen > 0
}

// unverifiedIssuer reads the iss claim without verifying anything, only to choose which
// issuer's keys to verify with.
func unverifiedIssuer(raw string) (string, error) {
	c, err := unverifiedClaims(raw)
	return c.Iss, err
}

// unverifiedSubject reads the sub claim of a JWT without verifying it, only to name the
// login; verification follows.
func unverifiedSubject(raw string) (string, error) {
	c, err := unverifiedClaims(raw)
	return c.Sub, err
}

// peekedClaims are the claims read before a token is verified, to route its verification.
type peekedClaims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
}

func unverifiedClaims(raw string) (peekedClaims, error) {
	var c peekedClaims
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return c, errors.New("not a compact JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, fmt.Errorf("decode payload: %w", err)
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, fmt.Errorf("parse payload: %w", err)
	}
	return c, nil
}

// classify maps a go-oidc verification error that did not come from the key set to a login
// failure cause.
func classify(err error) string {
	var exp *oidc.TokenExpiredError
	if errors.As(err, &exp) {
		return CauseExpired
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "nbf"):
		return CauseNotYetValid
	case strings.Contains(msg, "different provider"):
		return CauseWrongIssuer
	case strings.Contains(msg, "signature"):
		return CauseBadSignature
	default:
		return CauseMalformed
	}
}

// Authenticate verifies an OIDC token (signature by the issuer's current keys, iss, aud, exp,
// nbf) and checks that user names the same principal: the subject claim, preferred_username,
// email or sub, case-insensitively.
func (o *OIDC) Authenticate(ctx context.Context, user, secret string) (*Identity, error) {
	return o.authenticate(ctx, user, secret, nil)
}

// AuthenticateFor is Authenticate for one resource server (RFC 8707): the token's aud must
// name resource itself, not one of the issuer's configured audiences, so a token minted for
// another resource (the database login's audience included) is refused there.
func (o *OIDC) AuthenticateFor(ctx context.Context, user, secret, resource string) (*Identity, error) {
	if resource == "" {
		return nil, fail(CauseWrongAudience, errors.New("no resource to check the audience against"))
	}
	return o.authenticate(ctx, user, secret, []string{resource})
}

// authenticate verifies secret against audience, or the issuer's configured audiences when
// audience is nil.
func (o *OIDC) authenticate(ctx context.Context, user, secret string, audience []string) (*Identity, error) {
	if secret == "" {
		return nil, fail(CauseEmptySecret, nil)
	}
	if !LooksLikeJWT(secret) {
		return nil, fail(CauseMalformed, nil)
	}
	iss, err := unverifiedIssuer(secret)
	if err != nil {
		return nil, fail(CauseMalformed, err)
	}
	is, ok := o.issuers[iss]
	if !ok {
		return nil, fail(CauseUnknownIssuer, fmt.Errorf("issuer %q is not configured", iss))
	}
	v, err := o.verifierFor(ctx, is)
	if err != nil {
		return nil, fail(CauseIssuerUnavailable, err)
	}
	out := &verifyOutcome{}
	tok, err := v.Verify(context.WithValue(ctx, verifyOutcomeKey{}, out), secret)
	switch {
	case err != nil && errors.Is(out.err, errKeysUnavailable):
		return nil, fail(CauseIssuerUnavailable, err)
	case err != nil && out.err != nil:
		return nil, fail(CauseBadSignature, err)
	case err != nil:
		return nil, fail(classify(err), err)
	}
	if audience == nil {
		audience = is.cfg.Audience
	}
	if !audienceOK(tok.Audience, audience) {
		return nil, fail(CauseWrongAudience, fmt.Errorf("token audience %q, want one of %q", tok.Audience, audience))
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fail(CauseMalformed, fmt.Errorf("decode claims: %w", err))
	}
	subject, fromClaim := stringClaim(claims, is.cfg.SubjectClaim), is.cfg.SubjectClaim
	if subject == "" {
		subject, fromClaim = tok.Subject, "sub"
	}
	if subject == "" {
		return nil, fail(CauseNoSubject, nil)
	}
	if fromClaim == "email" {
		if v, ok := claims["email_verified"].(bool); ok && !v {
			return nil, fail(CauseEmailUnverified, nil)
		}
	}
	matched := false
	for _, cand := range []string{subject, stringClaim(claims, "preferred_username"), stringClaim(claims, "email"), tok.Subject} {
		if cand != "" && strings.EqualFold(cand, user) {
			matched = true
			break
		}
	}
	if !matched {
		return nil, fail(CauseUserMismatch, nil)
	}
	return &Identity{
		Subject:    subject,
		Kind:       kindFromClaims(claims, tok.Subject),
		Groups:     groupsClaim(claims, is.cfg.GroupsClaim),
		Claims:     claims,
		AuthMethod: AuthMethodOIDC,
		Issuer:     tok.Issuer,
		ExpiresAt:  tok.Expiry,
	}, nil
}

// audienceOK reports whether the token was minted for one of the configured audiences.
func audienceOK(have, want []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// lookupClaim finds a claim by name, or by a dotted path into nested objects
// ("realm_access.roles") when no claim has the literal name.
func lookupClaim(claims map[string]any, name string) (any, bool) {
	if v, ok := claims[name]; ok {
		return v, true
	}
	var cur any = claims
	for _, part := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// stringClaim returns a string claim, or "" when absent or not a string.
func stringClaim(claims map[string]any, name string) string {
	v, _ := lookupClaim(claims, name)
	s, _ := v.(string)
	return s
}

// groupsClaim reads groups from a list of strings or a single string.
func groupsClaim(claims map[string]any, name string) []string {
	v, _ := lookupClaim(claims, name)
	switch g := v.(type) {
	case string:
		if g != "" {
			return []string{g}
		}
	case []any:
		out := make([]string, 0, len(g))
		for _, x := range g {
			if s, ok := x.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// kindFromClaims decides the identity kind: an explicit gatehouse_kind claim wins; a token
// whose subject is the OAuth client itself (client-credentials grant, RFC 9068) is a service;
// anything else is a person.
func kindFromClaims(claims map[string]any, sub string) Kind {
	if k := Kind(stringClaim(claims, KindClaim)); k.Valid() {
		return k
	}
	if cid := stringClaim(claims, "client_id"); cid != "" && cid == sub && stringClaim(claims, "email") == "" {
		return Service
	}
	return Human
}

// StillValid ends OIDC sessions when the token they logged in with expires: the IdP's token
// lifetime is the session's lease, so disabling a user at the IdP takes effect within it.
func (o *OIDC) StillValid(ctx context.Context, id *Identity) error {
	if id == nil || id.AuthMethod != AuthMethodOIDC {
		return errors.New("check oidc identity: not an oidc identity")
	}
	exp := id.ExpiresAt
	if exp.IsZero() {
		switch v := id.Claims["exp"].(type) {
		case float64:
			exp = time.Unix(int64(v), 0)
		case int64:
			exp = time.Unix(v, 0)
		case json.Number:
			n, err := v.Int64()
			if err != nil {
				return fail(CauseMalformed, fmt.Errorf("exp claim %q: %w", v, err))
			}
			exp = time.Unix(n, 0)
		default:
			return fail(CauseMalformed, errors.New("oidc identity carries no expiry"))
		}
	}
	if !o.now().Before(exp) {
		return fail(CauseExpired, nil)
	}
	return nil
}
