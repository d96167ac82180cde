package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults and bounds of JWKSOptions.
const (
	// DefaultJWKSRefresh is how long a fetched key set is used when the IdP's response says
	// nothing about caching (no Cache-Control max-age).
	DefaultJWKSRefresh = 10 * time.Minute
	// MinJWKSRefresh and MaxJWKSRefresh bound a max-age the IdP sends and a configured
	// refresh interval: below the minimum the IdP would be fetched needlessly often, above
	// the maximum a key the IdP withdrew would keep verifying for too long.
	MinJWKSRefresh = time.Minute
	MaxJWKSRefresh = time.Hour
	// DefaultJWKSMissInterval is the least time between two fetches caused by tokens naming
	// a key id the cached set does not hold, so made-up key ids cannot drive IdP traffic.
	DefaultJWKSMissInterval = 30 * time.Second
	// DefaultJWKSMaxStale is how long the last good key set keeps verifying while the IdP
	// cannot be reached; after that logins fail closed. Tokens live about an hour, so six
	// hours covers an IdP outage for everybody already holding a token, without trusting a
	// possibly withdrawn key indefinitely.
	DefaultJWKSMaxStale = 6 * time.Hour
	// maxJWKSBytes bounds a JWKS response; real ones are a few KiB.
	maxJWKSBytes = 1 << 20
)

// errKeysUnavailable marks errors meaning "the issuer's keys could not be had", so a login
// failure is classified as an unavailable issuer rather than a bad token.
var errKeysUnavailable = errors.New("signing keys unavailable")

// verifyOutcomeKey carries a *verifyOutcome in the context of a verification: go-oidc keeps
// only the text of a key set's error, and the text holds the token's key id, which the
// token's author chooses; the typed error is read from here instead.
type verifyOutcomeKey struct{}

// verifyOutcome receives the error of JWKS.VerifySignature.
type verifyOutcome struct{ err error }

// maxKidLen bounds how much of a token's key id goes into error messages and logs.
const maxKidLen = 64

// signingAlgs are the asymmetric JWS algorithms a key set verifies, as go-oidc supports them.
// Symmetric (HS*) algorithms are excluded: a public key must never become an HMAC secret.
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.EdDSA,
}

// JWKSOptions tunes a JWKS; zero values take the defaults above.
type JWKSOptions struct {
	// Client fetches the key set; its Timeout (or Timeout below) bounds a fetch.
	Client *http.Client
	// Timeout bounds one fetch, and so how long a login can wait for keys; default
	// DefaultDiscoveryTimeout.
	Timeout time.Duration
	// Refresh, when set, is how long a fetched set is used regardless of the response's
	// Cache-Control (not bounded here: the configuration bounds it). Zero honours max-age
	// within [MinJWKSRefresh, MaxJWKSRefresh], DefaultJWKSRefresh without one.
	Refresh time.Duration
	// MissInterval is the least time between fetches for unknown key ids; default
	// DefaultJWKSMissInterval.
	MissInterval time.Duration
	// RetryInterval is how long after a failed fetch no new fetch is tried (the last good
	// keys are used meanwhile); default DefaultDiscoveryRetry.
	RetryInterval time.Duration
	// MaxStale is how old the last good set may become while fetches fail before
	// verification fails closed; default DefaultJWKSMaxStale.
	MaxStale time.Duration
	// Logger receives fetch results (debug) and failures (warn); never tokens.
	Logger *slog.Logger
}

// JWKS is an oidc.KeySet for one issuer's jwks_uri that bounds what tokens can make
// Gatehouse do to the IdP and how long withdrawn keys are trusted:
//   - the fetched set is cached for a TTL (Cache-Control max-age, bounded), so a key the IdP
//     withdrew stops verifying within it;
//   - a token naming a cached key id whose signature does not verify is refused without any
//     fetch; a token naming an unknown key id causes at most one fetch per MissInterval;
//   - concurrent logins needing a fetch share one HTTP request, bounded by a timeout and by
//     each login's context;
//   - while the IdP cannot be reached the last good set keeps verifying up to MaxStale after
//     it was fetched, then verification fails closed.
//
// Safe for concurrent use.
type JWKS struct {
	url  string
	opts JWKSOptions
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	cur      *keySnapshot // last good set; nil before the first successful fetch
	inflight *jwksFetch   // the fetch under way, shared by everyone waiting for it
	// lastAttempt is when the latest fetch started and lastErr how it ended (nil: success).
	lastAttempt time.Time
	lastErr     error
	// lastMiss is when the latest fetch for an unknown key id started.
	lastMiss time.Time
}

// keySnapshot is one fetched key set.
type keySnapshot struct {
	keys    []jose.JSONWebKey
	fetched time.Time
	ttl     time.Duration
}

// jwksFetch is one HTTP fetch that any number of callers wait for.
type jwksFetch struct {
	done chan struct{}
	snap *keySnapshot
	err  error
}

// NewJWKS returns a key set for the JWKS at url; nothing is fetched until it is needed (or
// Prefetch is called).
func NewJWKS(url string, opts JWKSOptions) *JWKS {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultDiscoveryTimeout
	}
	if opts.MissInterval <= 0 {
		opts.MissInterval = DefaultJWKSMissInterval
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultDiscoveryRetry
	}
	if opts.MaxStale <= 0 {
		opts.MaxStale = DefaultJWKSMaxStale
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &JWKS{url: url, opts: opts, log: log.With("jwks_uri", url), now: time.Now}
}

// Prefetch loads the key set if it is missing or expired, so the first login does not wait.
func (k *JWKS) Prefetch(ctx context.Context) error {
	_, err := k.current(ctx)
	return err
}

// VerifySignature verifies the JWS signature of jwt with the issuer's current keys and
// returns its payload. go-oidc's verifier has already checked the algorithm against the
// issuer's list; claims are not looked at here.
func (k *JWKS) VerifySignature(ctx context.Context, jwt string) (payload []byte, err error) {
	if out, ok := ctx.Value(verifyOutcomeKey{}).(*verifyOutcome); ok {
		defer func() { out.err = err }()
	}
	return k.verifySignature(ctx, jwt)
}

// verifySignature is VerifySignature without reporting the outcome.
func (k *JWKS) verifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, signingAlgs)
	if err != nil {
		return nil, fmt.Errorf("parse jws: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("jws carries %d signatures, want 1", len(jws.Signatures))
	}
	kid := jws.Signatures[0].Header.KeyID
	if len(kid) > maxKidLen {
		kid = kid[:maxKidLen] + "..."
	}
	snap, err := k.current(ctx)
	if err != nil {
		return nil, err
	}
	payload, known := snap.verify(jws)
	if payload != nil {
		return payload, nil
	}
	if known {
		// The key is cached: a bad signature is a forgery or corruption, and fetching the
		// set again would only let forged tokens drive requests to the IdP.
		return nil, fmt.Errorf("signature does not verify with key %q", kid)
	}
	// An unknown key id may be a rotation the cache has not seen yet.
	snap, fetched, err := k.refreshForMiss(ctx, snap)
	if err != nil {
		return nil, err
	}
	if payload, known = snap.verify(jws); payload != nil {
		return payload, nil
	}
	switch {
	case known:
		return nil, fmt.Errorf("signature does not verify with key %q", kid)
	case !fetched:
		return nil, fmt.Errorf("signature: no key %q in the issuer's key set (fetched %s ago; unknown key ids refetch it at most every %s)",
			kid, k.now().Sub(snap.fetched).Round(time.Millisecond), k.opts.MissInterval)
	default:
		return nil, fmt.Errorf("signature: no key %q in the issuer's freshly fetched key set", kid)
	}
}

// verify tries the keys that may have made the signature. known reports whether the set
// holds the token's key id; a token without one is never "known", so when no key verifies
// it the set may be refetched as for an unknown id (rate-limited the same way).
func (s *keySnapshot) verify(jws *jose.JSONWebSignature) (payload []byte, known bool) {
	h := jws.Signatures[0].Header
	for i := range s.keys {
		key := &s.keys[i]
		if h.KeyID != "" && key.KeyID != h.KeyID {
			continue
		}
		if h.KeyID != "" {
			known = true
		}
		if key.Algorithm != "" && key.Algorithm != h.Algorithm {
			continue
		}
		if p, err := jws.Verify(key.Key); err == nil {
			return p, true
		}
	}
	return nil, known
}

// current returns a key set that may be used now: the cached one while its TTL lasts,
// else a fresh one; if the IdP cannot be reached, the last good one until MaxStale.
func (k *JWKS) current(ctx context.Context) (*keySnapshot, error) {
	k.mu.Lock()
	cur := k.cur
	now := k.now()
	if cur != nil && now.Before(cur.fetched.Add(cur.ttl)) {
		k.mu.Unlock()
		return cur, nil
	}
	reason := "expired"
	if cur == nil {
		reason = "first use"
	}
	f := k.inflight
	if f == nil && (k.lastErr == nil || now.Sub(k.lastAttempt) >= k.opts.RetryInterval) {
		f = k.startLocked(ctx, reason)
	}
	lastErr := k.lastErr
	k.mu.Unlock()

	if f != nil {
		snap, err := k.wait(ctx, f)
		if err == nil {
			return snap, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = errors.New("no fetch has completed yet")
	}
	if cur == nil {
		return nil, fmt.Errorf("%w: fetch %s: %w", errKeysUnavailable, k.url, lastErr)
	}
	age := k.now().Sub(cur.fetched)
	if age > k.opts.MaxStale {
		return nil, fmt.Errorf("%w: last good key set is %s old, beyond the maximum staleness %s (failing closed): %w",
			errKeysUnavailable, age.Round(time.Second), k.opts.MaxStale, lastErr)
	}
	return cur, nil
}

// refreshForMiss fetches the set again for a token naming a key id that seen is missing,
// unless a fetch happened within MissInterval; it joins a fetch already under way. It
// returns the newest set and whether it was fetched for (or while) this call.
func (k *JWKS) refreshForMiss(ctx context.Context, seen *keySnapshot) (*keySnapshot, bool, error) {
	k.mu.Lock()
	cur := k.cur
	if cur != seen && cur != nil {
		// Someone else fetched since this call looked: use theirs.
		k.mu.Unlock()
		return cur, true, nil
	}
	f := k.inflight
	if f == nil {
		now := k.now()
		if !k.lastMiss.IsZero() && now.Sub(k.lastMiss) < k.opts.MissInterval {
			k.mu.Unlock()
			k.log.Debug("jwks: unknown key id; refetch rate-limited", "miss_interval", k.opts.MissInterval)
			return seen, false, nil
		}
		if k.lastErr != nil && now.Sub(k.lastAttempt) < k.opts.RetryInterval {
			err := k.lastErr
			k.mu.Unlock()
			return nil, false, fmt.Errorf("%w: refetch for an unknown key id: last fetch failed %s ago: %w", errKeysUnavailable, now.Sub(k.lastAttempt).Round(time.Millisecond), err)
		}
		k.lastMiss = now
		f = k.startLocked(ctx, "unknown key id")
	}
	k.mu.Unlock()
	snap, err := k.wait(ctx, f)
	if err != nil {
		return nil, false, fmt.Errorf("%w: refetch for an unknown key id: %w", errKeysUnavailable, err)
	}
	return snap, true, nil
}

// startLocked starts a fetch; k.mu is held. The fetch runs detached from the caller, whose
// context may end before others waiting for the same fetch are done, but within Timeout.
func (k *JWKS) startLocked(ctx context.Context, reason string) *jwksFetch {
	f := &jwksFetch{done: make(chan struct{})}
	k.inflight = f
	k.lastAttempt = k.now()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.opts.Timeout)
	go func() {
		defer cancel()
		start := time.Now()
		snap, err := k.fetch(fctx)
		k.mu.Lock()
		k.inflight = nil
		k.lastErr = err
		var stale time.Duration
		hasLast := k.cur != nil
		if err == nil {
			k.cur = snap
		} else if hasLast {
			stale = k.now().Sub(k.cur.fetched)
		}
		k.mu.Unlock()
		switch {
		case err == nil:
			k.log.Debug("jwks fetched", "reason", reason, "keys", len(snap.keys), "ttl", snap.ttl, "took", time.Since(start).Round(time.Millisecond))
		case !hasLast:
			k.log.Warn("jwks fetch failed; no keys to verify with", "reason", reason, "err", err)
		case stale > k.opts.MaxStale:
			k.log.Warn("jwks fetch failed; last good keys are beyond the maximum staleness, logins fail closed", "reason", reason, "err", err,
				"keys_age", stale.Round(time.Second), "max_stale", k.opts.MaxStale)
		default:
			k.log.Warn("jwks fetch failed; still verifying with the last good keys", "reason", reason, "err", err,
				"keys_age", stale.Round(time.Second), "max_stale", k.opts.MaxStale, "retry_after", k.opts.RetryInterval)
		}
		f.snap, f.err = snap, err
		close(f.done)
	}()
	return f
}

// wait waits for f, or for ctx to end.
func (k *JWKS) wait(ctx context.Context, f *jwksFetch) (*keySnapshot, error) {
	select {
	case <-f.done:
		return f.snap, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for jwks fetch: %w", ctx.Err())
	}
}

// fetch makes one HTTP request for the key set and parses it.
func (k *JWKS) fetch(ctx context.Context) (*keySnapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("build jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := k.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get jwks: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read jwks: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get jwks: %s", resp.Status)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks larger than %d bytes", maxJWKSBytes)
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return nil, err
	}
	if skipped > 0 {
		k.log.Debug("jwks: keys skipped (unsupported type or algorithm, not for signing, or invalid)", "skipped", skipped)
	}
	ttl := k.opts.Refresh
	if ttl <= 0 {
		ttl = cacheTTL(resp.Header)
	}
	return &keySnapshot{keys: keys, fetched: k.now(), ttl: ttl}, nil
}

// parseJWKS reads a JWK set, keeping the public signing keys of supported types and
// algorithms and skipping the rest (RFC 7517 section 5: unknown keys are ignored, not fatal).
func parseJWKS(body []byte) (keys []jose.JSONWebKey, skipped int, err error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, 0, fmt.Errorf("parse jwks: %w", err)
	}
	if raw.Keys == nil {
		return nil, 0, errors.New("parse jwks: no \"keys\" member")
	}
	supported := map[string]bool{}
	for _, a := range signingAlgs {
		supported[string(a)] = true
	}
	for _, r := range raw.Keys {
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(r, &jwk); err != nil {
			skipped++
			continue
		}
		if (jwk.Algorithm != "" && !supported[jwk.Algorithm]) || (jwk.Use != "" && jwk.Use != "sig") {
			skipped++
			continue
		}
		pub := jwk.Public()
		switch pub.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			skipped++
			continue
		}
		if !pub.Valid() {
			skipped++
			continue
		}
		keys = append(keys, pub)
	}
	return keys, skipped, nil
}

// cacheTTL reads how long the response may be cached: max-age less Age, bounded to
// [MinJWKSRefresh, MaxJWKSRefresh]; no-store or no-cache mean the minimum; nothing means
// DefaultJWKSRefresh.
func cacheTTL(h http.Header) time.Duration {
	ttl := time.Duration(-1)
	for _, d := range strings.Split(h.Get("Cache-Control"), ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return MinJWKSRefresh
		case "max-age":
			if n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64); err == nil && n >= 0 {
				ttl = time.Duration(min(n, int64(MaxJWKSRefresh/time.Second))) * time.Second
			}
		}
	}
	if ttl < 0 {
		return DefaultJWKSRefresh
	}
	if age, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && age > 0 {
		ttl -= time.Duration(min(age, int64(MaxJWKSRefresh/time.Second))) * time.Second
	}
	return max(MinJWKSRefresh, min(MaxJWKSRefresh, ttl))
}
