package mcp

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
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/store"
)

// The token exchange (RFC 8693) lets a person who signed in with `gatehouse login` use the
// MCP door through the stdio bridge. The login's ID token is minted for the CLI client, not
// for the MCP resource, so the door refuses it (RFC 8707: a token for another audience is
// never accepted). The bridge trades it at ExchangePath for a short-lived Gatehouse-issued
// bearer token whose audience is the MCP resource and whose scope is gatehouse:mcp: issued
// only to an OIDC token that passes exactly the checks of a database login, recorded on the
// ledger (token.create, token.revoke; a refused exchange is a login.failed), hashed at rest,
// expiring with the signed-in token at the latest, and revocable (RevokePath).

// ExchangePath and RevokePath are where the door (and the HTTP API) serve the token exchange
// and the revocation of an exchanged token (RFC 7009 style: the holder revokes it).
const (
	ExchangePath = "/api/v1/mcp/token"
	RevokePath   = "/api/v1/mcp/revoke"
)

// RFC 8693 identifiers.
const (
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
)

// ExchangedTokenPrefix starts every token the exchange issues, so a door routes it here
// without trying it elsewhere.
const ExchangedTokenPrefix = "gmx_"

// AuthMethodExchange is the AuthMethod of an identity proven by an exchanged token.
const AuthMethodExchange = "mcp-token-exchange"

// SubjectAuthenticator verifies the token presented for exchange as a database login would
// (identity.Chain does).
type SubjectAuthenticator interface {
	AuthenticateBearer(ctx context.Context, secret string) (*identity.Identity, error)
}

// Recorder writes the exchange's ledger events.
type Recorder interface {
	Record(ctx context.Context, ev *ledger.Event) error
}

// Exchange issues, checks and revokes MCP tokens obtained by token exchange. Their rows live
// in the state store beside Gatehouse tokens (SQLite, or the PostgreSQL store instances
// share, so any instance accepts and revokes them).
type Exchange struct {
	db      *sql.DB
	dialect store.Dialect
	subject SubjectAuthenticator
	rec     Recorder
	// resource is the MCP door's public URL: the audience of every token issued.
	resource string
	ttl      time.Duration
	log      *slog.Logger
}

var exchangeMigrations = []string{`CREATE TABLE mcp_exchanged_tokens (
	id          TEXT PRIMARY KEY,
	secret_hash TEXT NOT NULL,
	subject     TEXT NOT NULL,
	kind        TEXT NOT NULL,
	groups_json TEXT NOT NULL,
	issuer      TEXT NOT NULL,
	resource    TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	revoked_at  INTEGER
)`}

var exchangePostgresMigrations = []string{`CREATE TABLE mcp_exchanged_tokens (
	id          TEXT PRIMARY KEY,
	secret_hash TEXT NOT NULL,
	subject     TEXT NOT NULL,
	kind        TEXT NOT NULL,
	groups_json TEXT NOT NULL,
	issuer      TEXT NOT NULL,
	resource    TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL,
	revoked_at  BIGINT
)`}

// NewExchange prepares the exchange's table in db. resource is the MCP door's public URL and
// ttl the longest life of an issued token.
func NewExchange(ctx context.Context, db *sql.DB, subject SubjectAuthenticator, rec Recorder, resource string, ttl time.Duration, log *slog.Logger) (*Exchange, error) {
	if err := store.MigrateDialect(ctx, db, "mcp_exchange", exchangeMigrations, exchangePostgresMigrations); err != nil {
		return nil, fmt.Errorf("prepare the MCP token exchange's table: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Exchange{db: db, dialect: store.DialectOf(db), subject: subject, rec: rec, resource: resource, ttl: ttl, log: log}, nil
}

func (e *Exchange) q(query string) string { return store.Rebind(e.dialect, query) }

func hashExchanged(id, secret string) string {
	h := sha256.Sum256([]byte(id + ":" + secret))
	return hex.EncodeToString(h[:])
}

// oauthError is an RFC 6749 §5.2 error answer.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}

// ServeExchange answers a token-exchange request (RFC 8693 §2): the subject token (the OIDC
// ID token of `gatehouse login`, or another token of a configured issuer) is verified as a
// database login is; the answer is a bearer token for the MCP resource with scope
// gatehouse:mcp.
func (e *Exchange) ServeExchange(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request is not a form")
		return
	}
	f := r.PostForm
	switch {
	case f.Get("grant_type") != GrantTokenExchange:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be "+GrantTokenExchange)
		return
	case f.Get("subject_token") == "":
		oauthError(w, http.StatusBadRequest, "invalid_request", "subject_token is required")
		return
	case !slices.Contains([]string{TokenTypeIDToken, TokenTypeJWT, TokenTypeAccess}, f.Get("subject_token_type")):
		oauthError(w, http.StatusBadRequest, "invalid_request", "subject_token_type must be an OIDC ID token, a JWT or an access token")
		return
	case f.Get("requested_token_type") != "" && f.Get("requested_token_type") != TokenTypeAccess:
		oauthError(w, http.StatusBadRequest, "invalid_request", "only access tokens are issued")
		return
	}
	for _, name := range []string{"resource", "audience"} {
		for _, v := range f[name] {
			if v != e.resource {
				oauthError(w, http.StatusBadRequest, "invalid_target", fmt.Sprintf("this server issues tokens for %s only", e.resource))
				return
			}
		}
	}
	if s := f.Get("scope"); s != "" && !slices.Equal(strings.Fields(s), []string{Scope}) {
		oauthError(w, http.StatusBadRequest, "invalid_scope", "the only scope issued is "+Scope)
		return
	}
	tok, exp, err := e.issue(r.Context(), f.Get("subject_token"), r.RemoteAddr)
	var grant *grantError
	switch {
	case errors.As(err, &grant):
		oauthError(w, http.StatusBadRequest, "invalid_grant", grant.msg)
		return
	case err != nil:
		e.log.Error("mcp token exchange", "err", err)
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the token cannot be issued right now; try again shortly")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "issued_token_type": TokenTypeAccess, "token_type": "Bearer",
		"expires_in": int64(time.Until(exp).Seconds()), "scope": Scope,
	})
}

// grantError is a refused subject token: the client is told only that it was refused.
type grantError struct{ msg string }

func (g *grantError) Error() string { return g.msg }

// issue verifies the subject token and issues an MCP token, on record before it is shown.
func (e *Exchange) issue(ctx context.Context, subjectToken, addr string) (string, time.Time, error) {
	id, err := e.subject.AuthenticateBearer(ctx, subjectToken)
	if err == nil && (id == nil || id.AuthMethod != identity.AuthMethodOIDC) {
		err = errors.New("only an OIDC sign-in is exchanged; Gatehouse tokens work at the MCP door as they are")
	}
	if err != nil {
		ev := &ledger.Event{Type: ledger.EventLoginFailed, Time: time.Now(), ClientAddr: addr, ApplicationName: "mcp token exchange",
			Message: "mcp token exchange refused: " + err.Error()}
		if rerr := e.rec.Record(ctx, ev); rerr != nil {
			return "", time.Time{}, fmt.Errorf("record the refused exchange: %w", rerr)
		}
		return "", time.Time{}, &grantError{msg: "the subject token was refused"}
	}
	now := time.Now().UTC()
	exp := now.Add(e.ttl)
	if !id.ExpiresAt.IsZero() && id.ExpiresAt.Before(exp) {
		// Never outlive the sign-in it came from.
		exp = id.ExpiresAt
	}
	var idb [8]byte
	var sb [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", time.Time{}, err
	}
	if _, err := rand.Read(sb[:]); err != nil {
		return "", time.Time{}, err
	}
	tid, secret := hex.EncodeToString(idb[:]), base64.RawURLEncoding.EncodeToString(sb[:])
	groups, err := json.Marshal(id.Groups)
	if err != nil {
		return "", time.Time{}, err
	}
	if _, err := e.db.ExecContext(ctx, e.q(`INSERT INTO mcp_exchanged_tokens(id, secret_hash, subject, kind, groups_json, issuer, resource, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`), tid, hashExchanged(tid, secret), id.Subject, string(id.Kind), string(groups), id.Issuer, e.resource, now.UnixNano(), exp.UnixNano()); err != nil {
		return "", time.Time{}, fmt.Errorf("store exchanged token: %w", err)
	}
	ev := &ledger.Event{Type: ledger.EventTokenCreate, Time: now, Subject: id.Subject, IdentityKind: string(id.Kind), Groups: id.Groups,
		AuthMethod: identity.AuthMethodOIDC, ClientAddr: addr, ApplicationName: "mcp token exchange",
		Message: fmt.Sprintf("exchanged an OIDC token of %s for MCP token %s (audience %s, scope %s, expires %s)", id.Issuer, tid, e.resource, Scope, exp.Format(time.RFC3339))}
	if err := e.rec.Record(ctx, ev); err != nil {
		// An unaudited credential must not exist; its secret was shown to no one.
		if _, derr := e.db.ExecContext(context.WithoutCancel(ctx), e.q(`DELETE FROM mcp_exchanged_tokens WHERE id = ?`), tid); derr != nil {
			e.log.Error("withdraw unrecorded MCP token", "id", tid, "err", derr)
		}
		return "", time.Time{}, fmt.Errorf("record the exchanged token: %w", err)
	}
	return ExchangedTokenPrefix + tid + "_" + secret, exp, nil
}

// parseExchanged splits a token into its id and secret.
func parseExchanged(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, ExchangedTokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	return id, secret, ok && len(id) == 16 && secret != ""
}

// Authenticate checks an exchanged token for resource: issued for it, not expired, not
// revoked. The identity is the signed-in person's at the time of the exchange.
func (e *Exchange) Authenticate(ctx context.Context, tok, resource string) (*identity.Identity, error) {
	id, secret, ok := parseExchanged(tok)
	if !ok {
		return nil, errors.New("malformed MCP token")
	}
	var hash, subject, kind, groupsJSON, issuer, aud string
	var expires int64
	var revoked sql.NullInt64
	err := e.db.QueryRowContext(ctx, e.q(`SELECT secret_hash, subject, kind, groups_json, issuer, resource, expires_at, revoked_at
		FROM mcp_exchanged_tokens WHERE id = ?`), id).Scan(&hash, &subject, &kind, &groupsJSON, &issuer, &aud, &expires, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errors.New("unknown MCP token")
	}
	if err != nil {
		return nil, fmt.Errorf("look up MCP token: %w", err)
	}
	switch {
	case subtle.ConstantTimeCompare([]byte(hash), []byte(hashExchanged(id, secret))) != 1:
		return nil, errors.New("wrong MCP token secret")
	case revoked.Valid:
		return nil, errors.New("MCP token revoked")
	case !time.Now().Before(time.Unix(0, expires)):
		return nil, errors.New("MCP token expired")
	case aud != resource:
		return nil, fmt.Errorf("MCP token issued for %s, not this resource", aud)
	}
	var groups []string
	if err := json.Unmarshal([]byte(groupsJSON), &groups); err != nil {
		return nil, fmt.Errorf("decode MCP token groups: %w", err)
	}
	exp := time.Unix(0, expires).UTC()
	return &identity.Identity{Subject: subject, Kind: identity.Kind(kind), Groups: groups, AuthMethod: AuthMethodExchange,
		TokenID: "mcp:" + id, Issuer: issuer, ExpiresAt: exp,
		Claims: map[string]any{"aud": aud, "scope": Scope, "exp": exp.Unix(), "token_id": id, "iss": issuer}}, nil
}

// ServeRevoke revokes the exchanged token in the form's "token" (RFC 7009 §2: the answer is
// 200 whether or not the token was known).
func (e *Exchange) ServeRevoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request is not a form")
		return
	}
	if err := e.Revoke(r.Context(), r.PostForm.Get("token")); err != nil {
		e.log.Error("revoke MCP token", "err", err)
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the token cannot be revoked right now; try again shortly")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// Revoke revokes an exchanged token presented by its holder (an unknown one is ignored).
func (e *Exchange) Revoke(ctx context.Context, tok string) error {
	ident, err := e.Authenticate(ctx, tok, e.resource)
	if err != nil {
		return nil
	}
	id, _, _ := parseExchanged(tok)
	now := time.Now().UTC()
	if _, err := e.db.ExecContext(ctx, e.q(`UPDATE mcp_exchanged_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`), now.UnixNano(), id); err != nil {
		return fmt.Errorf("revoke MCP token: %w", err)
	}
	ev := &ledger.Event{Type: ledger.EventTokenRevoke, Time: now, Subject: ident.Subject, IdentityKind: string(ident.Kind), Groups: ident.Groups,
		AuthMethod: AuthMethodExchange, Message: fmt.Sprintf("revoked MCP token %s (audience %s) by its holder", id, e.resource)}
	return e.rec.Record(ctx, ev)
}

// ExchangedToken is what is kept of an issued MCP token (never its secret).
type ExchangedToken struct {
	ID        string
	Subject   string
	Issuer    string
	Resource  string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Active lists the exchanged tokens neither revoked nor expired, newest first.
func (e *Exchange) Active(ctx context.Context) ([]ExchangedToken, error) {
	rows, err := e.db.QueryContext(ctx, e.q(`SELECT id, subject, issuer, resource, created_at, expires_at FROM mcp_exchanged_tokens
		WHERE revoked_at IS NULL AND expires_at > ? ORDER BY created_at DESC`), time.Now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("list MCP tokens: %w", err)
	}
	defer rows.Close()
	var out []ExchangedToken
	for rows.Next() {
		var t ExchangedToken
		var created, expires int64
		if err := rows.Scan(&t.ID, &t.Subject, &t.Issuer, &t.Resource, &created, &expires); err != nil {
			return nil, fmt.Errorf("list MCP tokens: %w", err)
		}
		t.CreatedAt, t.ExpiresAt = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC()
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeSubject revokes every active exchanged token of subject on behalf of by (an
// administrator), on the ledger, and returns how many it revoked.
func (e *Exchange) RevokeSubject(ctx context.Context, subject, by string) (int64, error) {
	now := time.Now().UTC()
	res, err := e.db.ExecContext(ctx, e.q(`UPDATE mcp_exchanged_tokens SET revoked_at = ? WHERE lower(subject) = lower(?) AND revoked_at IS NULL AND expires_at > ?`),
		now.UnixNano(), subject, now.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("revoke MCP tokens of %s: %w", subject, err)
	}
	n, _ := res.RowsAffected()
	ev := &ledger.Event{Type: ledger.EventTokenRevoke, Time: now, Subject: by, AuthMethod: "os",
		Message: fmt.Sprintf("revoked %d MCP token(s) of %s issued by the token exchange", n, subject)}
	if err := e.rec.Record(ctx, ev); err != nil {
		return n, fmt.Errorf("record the revocation: %w", err)
	}
	return n, nil
}
