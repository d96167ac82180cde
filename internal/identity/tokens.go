package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/store"
)

// TokenPrefix starts every Gatehouse token, so the Chain can route a password to the right
// authenticator without guessing and secret scanners can recognise a leaked token.
const TokenPrefix = "gat_"

// DefaultTokenTTL is used when a token is created without a TTL: long enough for a service
// between rotations, short enough that a forgotten token dies on its own.
const DefaultTokenTTL = 720 * time.Hour

// MaxTokenTTL caps how long a token may live; a token that never expires is a liability.
const MaxTokenTTL = 5 * 366 * 24 * time.Hour

// MaxCacheTTL is the longest a Tokens validator may trust its cached view of revocations
// when nothing tells it of changes, so a revoked token's sessions end within seconds.
const MaxCacheTTL = time.Second

// ListenCacheTTL is how long the view may be trusted while a shared store's notifications
// arrive (store.Invalidations): every revocation invalidates it at once, so the periodic
// re-read is only a safety net and need not load the shared database every second.
const ListenCacheTTL = 10 * time.Second

// tokensTopic is the notification topic of token revocations on a shared store.
const tokensTopic = "tokens"

// AuthMethodToken is the Identity.AuthMethod of a Gatehouse token login.
const AuthMethodToken = "token"

// Token layout: "gat_" + 16 hex characters of id + "_" + 43 base64url characters of secret.
// The id is not secret: it makes lookup O(1) by primary key and names the token in logs. The
// id alphabet has no "_", so the first "_" after the prefix always ends the id even though
// base64url secrets may contain "_".
const (
	tokenIDBytes     = 8
	tokenSecretBytes = 32
	tokenIDLen       = 2 * tokenIDBytes
	tokenSecretLen   = 43 // base64.RawURLEncoding.EncodedLen(32)
	tokenHashDomain  = "gatehouse token v1\x00"
	lastUsedEvery    = time.Minute
)

// Errors callers of the token administration API can test for.
var (
	// ErrTokenNameTaken means an active token already has that name; revoke it first.
	ErrTokenNameTaken = errors.New("an active token with this name already exists")
	// ErrTokenNotFound means no active token has that name.
	ErrTokenNotFound = errors.New("no active token with this name")
)

// tokenNameRE keeps token names usable as a PostgreSQL user name in a connection string
// without quoting, since the login user must equal the token name.
var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$`)

// groupRE keeps group names printable and free of separators used in CLI flags and policies.
var groupRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$`)

// tokenMigrations are the identity component's schema, applied in order by store.Migrate.
// Never edit a released entry; append.
var tokenMigrations = []string{
	`CREATE TABLE identity_tokens (
		id            TEXT PRIMARY KEY,
		name          TEXT NOT NULL,
		kind          TEXT NOT NULL,
		groups_json   TEXT NOT NULL,
		secret_hash   BLOB NOT NULL,
		created_at    INTEGER NOT NULL,
		created_by    TEXT NOT NULL,
		expires_at    INTEGER NOT NULL,
		revoked_at    INTEGER,
		revoke_reason TEXT,
		last_used_at  INTEGER
	);
	CREATE UNIQUE INDEX identity_tokens_active_name ON identity_tokens(lower(name)) WHERE revoked_at IS NULL;
	CREATE TABLE identity_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
	INSERT INTO identity_meta(key, value) VALUES ('revocation_generation', 0);`,
}

// tokenPostgresMigrations are tokenMigrations for a PostgreSQL store shared by several
// instances: the same tables and semantics, in PostgreSQL's types (nanosecond times need
// BIGINT). Never edit a released entry; append.
var tokenPostgresMigrations = []string{
	`CREATE TABLE identity_tokens (
		id            TEXT PRIMARY KEY,
		name          TEXT NOT NULL,
		kind          TEXT NOT NULL,
		groups_json   TEXT NOT NULL,
		secret_hash   BYTEA NOT NULL,
		created_at    BIGINT NOT NULL,
		created_by    TEXT NOT NULL,
		expires_at    BIGINT NOT NULL,
		revoked_at    BIGINT,
		revoke_reason TEXT,
		last_used_at  BIGINT
	);
	CREATE UNIQUE INDEX identity_tokens_active_name ON identity_tokens(lower(name)) WHERE revoked_at IS NULL;
	CREATE TABLE identity_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
	INSERT INTO identity_meta(key, value) VALUES ('revocation_generation', 0);`,
}

// Recorder receives token administration events for the ledger. The ledger's writer
// satisfies it; it is an interface here so identity does not depend on how the ledger stores.
type Recorder interface {
	Record(ctx context.Context, e *ledger.Event) error
}

// Token is what Gatehouse keeps about an issued token: everything except the secret, of which
// only a hash exists.
type Token struct {
	ID         string
	Name       string
	Kind       Kind
	Groups     []string
	CreatedAt  time.Time
	CreatedBy  string
	ExpiresAt  time.Time
	RevokedAt  time.Time // zero while not revoked
	LastUsedAt time.Time // zero if never used (updated at most once a minute)
}

// State says whether the token can be used at now: "active", "revoked" or "expired".
func (t Token) State(now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return "revoked"
	case !now.Before(t.ExpiresAt):
		return "expired"
	default:
		return "active"
	}
}

// CreateRequest describes a token to issue.
type CreateRequest struct {
	// Name is the token's identity subject and the user name the client must log in with.
	Name string
	Kind Kind
	// Groups feed policies; they are stored with the token.
	Groups []string
	// TTL is how long the token lives; zero means DefaultTokenTTL.
	TTL time.Duration
	// CreatedBy names who asked (an OS user for the CLI, a console identity), for the ledger.
	CreatedBy string
}

// TokensOptions tunes a Tokens store; the zero value is fine for production.
type TokensOptions struct {
	// Recorder, if set, receives token.create and token.revoke events (never the secret).
	Recorder Recorder
	// Logger receives operational messages; default slog.Default().
	Logger *slog.Logger
	// Now is the clock, replaceable in tests; default time.Now.
	Now func() time.Time
	// CacheTTL bounds how long StillValid trusts its view of revocations made by other
	// processes (the CLI revokes through the same SQLite file, other instances through a
	// shared PostgreSQL store). Default and maximum MaxCacheTTL.
	CacheTTL time.Duration
	// Invalidations, for a shared PostgreSQL store, delivers other instances' revocations
	// as they commit; while it is listening the cached view is trusted up to ListenCacheTTL,
	// and whenever it is not, the store is polled every CacheTTL as without it.
	Invalidations store.Invalidations
}

// Tokens issues, lists, revokes and checks Gatehouse tokens kept in the state store: the
// embedded SQLite database, or a PostgreSQL database shared by several instances (one
// implementation, its queries rebound to the store's dialect). It is an Authenticator and a
// Validator. Safe for concurrent use.
type Tokens struct {
	db       *sql.DB
	dialect  store.Dialect
	inval    store.Invalidations
	rec      Recorder
	log      *slog.Logger
	now      func() time.Time
	cacheTTL time.Duration

	mu           sync.Mutex
	gen          int64                 // revocation generation last read from the store
	genCheckedAt time.Time             // when gen was read; zero forces a re-read
	states       map[string]tokenState // per token id, valid for gen
}

// tokenState is the part of a token StillValid needs.
type tokenState struct {
	missing   bool
	revoked   bool
	expiresAt time.Time
}

// NewTokens migrates the identity schema in db (opened with store.Open, or
// store.OpenPostgres for a store shared by several instances) and returns the token store.
func NewTokens(ctx context.Context, db *sql.DB, opts TokensOptions) (*Tokens, error) {
	if db == nil {
		return nil, errors.New("identity: nil store")
	}
	if err := store.MigrateDialect(ctx, db, "identity", tokenMigrations, tokenPostgresMigrations); err != nil {
		return nil, fmt.Errorf("prepare token store: %w", err)
	}
	t := &Tokens{db: db, dialect: store.DialectOf(db), inval: opts.Invalidations, rec: opts.Recorder, log: opts.Logger, now: opts.Now, cacheTTL: opts.CacheTTL, states: map[string]tokenState{}}
	if t.log == nil {
		t.log = slog.Default()
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.cacheTTL <= 0 || t.cacheTTL > MaxCacheTTL {
		t.cacheTTL = MaxCacheTTL
	}
	if t.inval != nil {
		t.inval.Subscribe(tokensTopic, t.invalidate)
	}
	return t, nil
}

// invalidate makes the next StillValid re-read the revocation generation.
func (t *Tokens) invalidate() {
	t.mu.Lock()
	t.genCheckedAt = time.Time{}
	t.mu.Unlock()
}

// q adapts a query written with ? placeholders to the store's dialect.
func (t *Tokens) q(query string) string { return store.Rebind(t.dialect, query) }

// hashSecret returns the stored form of a token secret. A single SHA-256 is the right tool
// here, unlike for passwords: the secret is 256 bits from crypto/rand, so there is nothing to
// guess and a slow KDF (bcrypt, argon2) would only add milliseconds to every login without
// making an offline attack on a leaked store any less hopeless. The id and a domain string
// are mixed in so a hash cannot be replayed under another token or purpose.
func hashSecret(id, secret string) []byte {
	h := sha256.New()
	h.Write([]byte(tokenHashDomain))
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(secret))
	return h.Sum(nil)
}

// compareHashes compares in time independent of where the inputs differ, so response timing
// cannot be used to find a stored hash byte by byte.
func compareHashes(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// parseToken splits a presented token into id and secret, refusing anything malformed.
func parseToken(tok string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(tok, TokenPrefix)
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, "_")
	if !found || len(id) != tokenIDLen || len(secret) != tokenSecretLen {
		return "", "", false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", "", false
		}
	}
	return id, secret, true
}

// normalizeGroups validates, trims and de-duplicates groups, keeping their order.
func normalizeGroups(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := map[string]bool{}
	for _, g := range in {
		g = strings.TrimSpace(g)
		if !groupRE.MatchString(g) {
			return nil, fmt.Errorf("invalid group %q: use 1-128 letters, digits or . _ : @ / - starting with a letter or digit", g)
		}
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out, nil
}

// Create issues a token and returns its secret, which exists nowhere else afterwards: the
// caller must show it once. Names are unique among active tokens (case-insensitively); an
// expired token's name may be reused.
func (t *Tokens) Create(ctx context.Context, req CreateRequest) (string, Token, error) {
	if !tokenNameRE.MatchString(req.Name) {
		return "", Token{}, fmt.Errorf("create token: invalid name %q: use 1-63 letters, digits or . _ @ - starting with a letter or digit", req.Name)
	}
	if !req.Kind.Valid() {
		return "", Token{}, fmt.Errorf("create token %s: invalid kind %q: want human, service or agent", req.Name, req.Kind)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Minute || ttl > MaxTokenTTL {
		return "", Token{}, fmt.Errorf("create token %s: ttl %s out of range: want between 1m and %s", req.Name, req.TTL, MaxTokenTTL)
	}
	groups, err := normalizeGroups(req.Groups)
	if err != nil {
		return "", Token{}, fmt.Errorf("create token %s: %w", req.Name, err)
	}
	groupsJSON, err := json.Marshal(groups)
	if err != nil {
		return "", Token{}, fmt.Errorf("create token %s: encode groups: %w", req.Name, err)
	}
	var idb [tokenIDBytes]byte
	var sb [tokenSecretBytes]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", Token{}, fmt.Errorf("create token %s: random id: %w", req.Name, err)
	}
	if _, err := rand.Read(sb[:]); err != nil {
		return "", Token{}, fmt.Errorf("create token %s: random secret: %w", req.Name, err)
	}
	id := hex.EncodeToString(idb[:])
	secret := base64.RawURLEncoding.EncodeToString(sb[:])
	now := t.now().UTC()
	tok := Token{ID: id, Name: req.Name, Kind: req.Kind, Groups: groups, CreatedAt: now, CreatedBy: req.CreatedBy, ExpiresAt: now.Add(ttl)}

	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return "", Token{}, fmt.Errorf("create token %s: %w", req.Name, err)
	}
	defer tx.Rollback()
	// Retire expired holders of the name first (a write, so the transaction takes the write
	// lock before it reads anything and cannot hit a stale-snapshot upgrade).
	if _, err := tx.ExecContext(ctx, t.q(`UPDATE identity_tokens SET revoked_at = ?, revoke_reason = 'expired; name reused'
		WHERE lower(name) = lower(?) AND revoked_at IS NULL AND expires_at <= ?`), now.UnixNano(), req.Name, now.UnixNano()); err != nil {
		return "", Token{}, fmt.Errorf("create token %s: retire expired: %w", req.Name, err)
	}
	_, err = tx.ExecContext(ctx, t.q(`INSERT INTO identity_tokens(id, name, kind, groups_json, secret_hash, created_at, created_by, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), id, req.Name, string(req.Kind), string(groupsJSON), hashSecret(id, secret), now.UnixNano(), req.CreatedBy, tok.ExpiresAt.UnixNano())
	if err != nil {
		if store.IsUniqueViolation(err) {
			return "", Token{}, fmt.Errorf("create token %s: %w", req.Name, ErrTokenNameTaken)
		}
		return "", Token{}, fmt.Errorf("create token %s: %w", req.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return "", Token{}, fmt.Errorf("create token %s: %w", req.Name, err)
	}
	// Record after commit: the ledger may live in the same SQLite file and would wait on our
	// write lock. If it cannot be recorded, the token is withdrawn: an unaudited credential
	// must not exist, and its secret has not been shown to anyone yet.
	if t.rec != nil {
		ev := &ledger.Event{Type: ledger.EventTokenCreate, Time: now, Subject: req.CreatedBy, IdentityKind: string(req.Kind), Groups: groups, AuthMethod: AuthMethodToken,
			Message: fmt.Sprintf("created token %s (id %s, kind %s, expires %s)", req.Name, id, req.Kind, tok.ExpiresAt.Format(time.RFC3339))}
		if err := t.rec.Record(ctx, ev); err != nil {
			if _, derr := t.db.ExecContext(context.WithoutCancel(ctx), t.q(`DELETE FROM identity_tokens WHERE id = ?`), id); derr != nil {
				t.log.Error("withdraw unrecorded token", "token", req.Name, "id", id, "err", derr)
			}
			return "", Token{}, fmt.Errorf("create token %s: record in ledger: %w", req.Name, err)
		}
	}
	return TokenPrefix + id + "_" + secret, tok, nil
}

// List returns every token the store knows, active, expired and revoked, oldest first.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	rows, err := t.db.QueryContext(ctx, t.q(`SELECT id, name, kind, groups_json, created_at, created_by, expires_at, revoked_at, last_used_at
		FROM identity_tokens ORDER BY created_at, id`))
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		var (
			tok                  Token
			kind, groupsJSON     string
			created, expires     int64
			revoked, lastUsedRaw sql.NullInt64
		)
		if err := rows.Scan(&tok.ID, &tok.Name, &kind, &groupsJSON, &created, &tok.CreatedBy, &expires, &revoked, &lastUsedRaw); err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		tok.Kind = Kind(kind)
		if err := json.Unmarshal([]byte(groupsJSON), &tok.Groups); err != nil {
			return nil, fmt.Errorf("list tokens: groups of %s: %w", tok.Name, err)
		}
		tok.CreatedAt = time.Unix(0, created).UTC()
		tok.ExpiresAt = time.Unix(0, expires).UTC()
		if revoked.Valid {
			tok.RevokedAt = time.Unix(0, revoked.Int64).UTC()
		}
		if lastUsedRaw.Valid {
			tok.LastUsedAt = time.Unix(0, lastUsedRaw.Int64).UTC()
		}
		out = append(out, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// Revoke revokes the active token called name. Logins with it fail at once, and StillValid
// reports it within the cache TTL in every process sharing the store, so live sessions end.
func (t *Tokens) Revoke(ctx context.Context, name string) error { return t.RevokeBy(ctx, name, "") }

// RevokeBy is Revoke recording who asked, for the ledger.
func (t *Tokens) RevokeBy(ctx context.Context, name, by string) error {
	now := t.now().UTC()
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", name, err)
	}
	defer tx.Rollback()
	var id, kind string
	err = tx.QueryRowContext(ctx, t.q(`UPDATE identity_tokens SET revoked_at = ?, revoke_reason = 'revoked'
		WHERE lower(name) = lower(?) AND revoked_at IS NULL RETURNING id, kind`), now.UnixNano(), name).Scan(&id, &kind)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("revoke token %s: %w", name, ErrTokenNotFound)
	}
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, t.q(`UPDATE identity_meta SET value = value + 1 WHERE key = 'revocation_generation'`)); err != nil {
		return fmt.Errorf("revoke token %s: bump revocation generation: %w", name, err)
	}
	// Other instances sharing the store hear of it at commit and re-check their sessions.
	if err := store.Notify(ctx, t.dialect, tx, tokensTopic); err != nil {
		return fmt.Errorf("revoke token %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("revoke token %s: %w", name, err)
	}
	t.mu.Lock()
	t.genCheckedAt = time.Time{} // our own revocation is seen at once
	t.mu.Unlock()
	if t.rec != nil {
		ev := &ledger.Event{Type: ledger.EventTokenRevoke, Time: now, Subject: by, IdentityKind: kind, AuthMethod: AuthMethodToken,
			Message: fmt.Sprintf("revoked token %s (id %s)", name, id)}
		if err := t.rec.Record(ctx, ev); err != nil {
			// The revocation stands (the safe direction); the caller learns it is unrecorded.
			return fmt.Errorf("revoke token %s: revoked, but not recorded in ledger: %w", name, err)
		}
	}
	return nil
}

// Authenticate checks a Gatehouse token. The login user must equal the token's name
// (case-insensitively): a token is a credential for one named identity, and insisting on the
// name means the user shown by pg_stat_activity, client logs and the ledger always agrees
// with the credential, and a token pasted into the wrong profile fails loudly instead of
// acting as someone else.
func (t *Tokens) Authenticate(ctx context.Context, user, secret string) (*Identity, error) {
	if secret == "" {
		return nil, fail(CauseEmptySecret, nil)
	}
	id, sec, ok := parseToken(secret)
	if !ok {
		return nil, fail(CauseMalformed, nil)
	}
	var (
		name, kind, groupsJSON, createdBy string
		hash                              []byte
		expires                           int64
		revoked, lastUsed                 sql.NullInt64
	)
	err := t.db.QueryRowContext(ctx, t.q(`SELECT name, kind, groups_json, secret_hash, created_by, expires_at, revoked_at, last_used_at
		FROM identity_tokens WHERE id = ?`), id).Scan(&name, &kind, &groupsJSON, &hash, &createdBy, &expires, &revoked, &lastUsed)
	want := hashSecret(id, sec)
	if errors.Is(err, sql.ErrNoRows) {
		// Spend the same comparison an existing id would, so timing says nothing either way.
		compareHashes(want, make([]byte, len(want)))
		return nil, fail(CauseUnknownToken, nil)
	}
	if err != nil {
		return nil, fail(CauseInternal, fmt.Errorf("look up token %s: %w", id, err))
	}
	if !compareHashes(want, hash) {
		return nil, fail(CauseBadSecret, nil)
	}
	now := t.now()
	if revoked.Valid {
		return nil, fail(CauseRevoked, nil)
	}
	exp := time.Unix(0, expires).UTC()
	if !now.Before(exp) {
		return nil, fail(CauseExpired, nil)
	}
	if !strings.EqualFold(user, name) {
		return nil, fail(CauseUserMismatch, nil)
	}
	var groups []string
	if err := json.Unmarshal([]byte(groupsJSON), &groups); err != nil {
		return nil, fail(CauseInternal, fmt.Errorf("decode groups of token %s: %w", id, err))
	}
	if !lastUsed.Valid || now.Sub(time.Unix(0, lastUsed.Int64)) >= lastUsedEvery {
		// At most one write a minute per token: a login storm must not become a write storm.
		if _, err := t.db.ExecContext(ctx, t.q(`UPDATE identity_tokens SET last_used_at = ? WHERE id = ?`), now.UnixNano(), id); err != nil {
			t.log.Warn("record token last use", "token", name, "id", id, "err", err)
		}
	}
	return &Identity{
		Subject:    name,
		Kind:       Kind(kind),
		Groups:     groups,
		Claims:     map[string]any{"token_id": id, "token_name": name, "created_by": createdBy, "exp": exp.Unix()},
		AuthMethod: AuthMethodToken,
		TokenID:    id,
		ExpiresAt:  exp,
	}, nil
}

// StillValid reports whether a token identity may keep its sessions: nil while its token is
// neither revoked nor expired. It is cheap enough to call every few seconds for thousands of
// sessions: the store's revocation generation is read at most once per cache TTL, and a
// token's row only when that generation moved.
func (t *Tokens) StillValid(ctx context.Context, id *Identity) error {
	if id == nil || id.AuthMethod != AuthMethodToken || id.TokenID == "" {
		return fmt.Errorf("check token identity: not a token identity")
	}
	now := t.now()
	if !id.ExpiresAt.IsZero() && !now.Before(id.ExpiresAt) {
		return fail(CauseExpired, nil)
	}
	st, err := t.state(ctx, id.TokenID, now)
	if err != nil {
		return fmt.Errorf("check token %s: %w", id.TokenID, err)
	}
	switch {
	case st.missing:
		return fail(CauseUnknownToken, nil)
	case st.revoked:
		return fail(CauseRevoked, nil)
	case !now.Before(st.expiresAt):
		return fail(CauseExpired, nil)
	}
	return nil
}

// state returns the cached revocation state of token id, refreshing the cache when it is
// older than the cache TTL and the store's revocation generation moved.
func (t *Tokens) state(ctx context.Context, id string, now time.Time) (tokenState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ttl := t.cacheTTL
	if t.inval != nil && t.inval.Listening() {
		ttl = ListenCacheTTL
	}
	if t.genCheckedAt.IsZero() || now.Sub(t.genCheckedAt) >= ttl || now.Before(t.genCheckedAt) {
		var gen int64
		if err := t.db.QueryRowContext(ctx, t.q(`SELECT value FROM identity_meta WHERE key = 'revocation_generation'`)).Scan(&gen); err != nil {
			return tokenState{}, fmt.Errorf("read revocation generation: %w", err)
		}
		if gen != t.gen {
			t.gen = gen
			clear(t.states)
		}
		t.genCheckedAt = now
	}
	if st, ok := t.states[id]; ok {
		return st, nil
	}
	var (
		expires int64
		revoked sql.NullInt64
		st      tokenState
	)
	err := t.db.QueryRowContext(ctx, t.q(`SELECT expires_at, revoked_at FROM identity_tokens WHERE id = ?`), id).Scan(&expires, &revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		st.missing = true
	case err != nil:
		return tokenState{}, fmt.Errorf("read token state: %w", err)
	default:
		st.revoked = revoked.Valid
		st.expiresAt = time.Unix(0, expires)
	}
	t.states[id] = st
	return st, nil
}
