package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// AuthenticateBearer authenticates a credential presented on its own, as an HTTP API's
// "Authorization: Bearer" header does, with no login name beside it. The name a login would
// give is taken from the credential itself (the token's stored name for a Gatehouse token,
// the sub claim for an OIDC token) and the credential is then verified exactly as for a
// database login, so the identity and its groups are the ones a session would get.
func (c *Chain) AuthenticateBearer(ctx context.Context, secret string) (*Identity, error) {
	switch {
	case secret == "":
		return nil, fail(CauseEmptySecret, nil)
	case strings.HasPrefix(secret, TokenPrefix):
		if c.Tokens == nil {
			return nil, fail(CauseNotRecognised, errors.New("gatehouse tokens are not enabled"))
		}
		name, err := c.Tokens.nameOf(ctx, secret)
		if err != nil {
			return nil, fail(CauseInternal, err)
		}
		// An unknown id leaves name empty; Authenticate then fails it in constant time.
		return c.Tokens.Authenticate(ctx, name, secret)
	case LooksLikeJWT(secret):
		sub, err := unverifiedSubject(secret)
		if err != nil {
			return nil, fail(CauseMalformed, err)
		}
		return c.Authenticate(ctx, sub, secret)
	default:
		return nil, fail(CauseNotRecognised, nil)
	}
}

// AuthenticateBearerFor is AuthenticateBearer for one resource server (RFC 8707), such as
// the MCP door: an OIDC token must carry resource in its aud; a Gatehouse token, which
// Gatehouse itself issued for all its doors, is checked as by AuthenticateBearer.
func (c *Chain) AuthenticateBearerFor(ctx context.Context, secret, resource string) (*Identity, error) {
	if !LooksLikeJWT(secret) || strings.HasPrefix(secret, TokenPrefix) {
		return c.AuthenticateBearer(ctx, secret)
	}
	if c.OIDC == nil {
		return nil, fail(CauseUnknownIssuer, errors.New("no oidc issuer is configured"))
	}
	sub, err := unverifiedSubject(secret)
	if err != nil {
		return nil, fail(CauseMalformed, err)
	}
	return c.OIDC.AuthenticateFor(ctx, sub, secret, resource)
}

// nameOf returns the name of the token a presented secret claims to be ("" when the id is
// unknown or the secret malformed). It proves nothing: Authenticate checks the secret.
func (t *Tokens) nameOf(ctx context.Context, secret string) (string, error) {
	id, _, ok := parseToken(secret)
	if !ok {
		return "", nil
	}
	var name string
	err := t.db.QueryRowContext(ctx, t.q(`SELECT name FROM identity_tokens WHERE id = ?`), id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up token %s: %w", id, err)
	}
	return name, nil
}
