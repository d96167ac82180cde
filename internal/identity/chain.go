package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/gatehouse/gatehouse/internal/config"
)

// Chain is the Authenticator and Validator the doors use: it routes a presented secret by
// its shape, Gatehouse tokens (TokenPrefix) to Tokens and JWTs to OIDC, so no secret is ever
// tried against the wrong verifier and the failure cause stays precise. Either field may be
// nil when that kind of login is not configured.
type Chain struct {
	Tokens *Tokens
	OIDC   *OIDC
}

// Authenticate implements Authenticator.
func (c *Chain) Authenticate(ctx context.Context, user, secret string) (*Identity, error) {
	switch {
	case secret == "":
		return nil, fail(CauseEmptySecret, nil)
	case strings.HasPrefix(secret, TokenPrefix):
		if c.Tokens == nil {
			return nil, fail(CauseNotRecognised, errors.New("gatehouse tokens are not enabled"))
		}
		return c.Tokens.Authenticate(ctx, user, secret)
	case LooksLikeJWT(secret):
		if c.OIDC == nil {
			return nil, fail(CauseUnknownIssuer, errors.New("no oidc issuer is configured"))
		}
		return c.OIDC.Authenticate(ctx, user, secret)
	default:
		return nil, fail(CauseNotRecognised, nil)
	}
}

// StillValid implements Validator by asking whichever authenticator vouched for the identity.
func (c *Chain) StillValid(ctx context.Context, id *Identity) error {
	if id == nil {
		return errors.New("check identity: nil identity")
	}
	switch {
	case id.AuthMethod == AuthMethodToken && c.Tokens != nil:
		return c.Tokens.StillValid(ctx, id)
	case id.AuthMethod == AuthMethodOIDC && c.OIDC != nil:
		return c.OIDC.StillValid(ctx, id)
	default:
		return fail(CauseNotRecognised, errors.New("identity from an authenticator that is not configured: "+id.AuthMethod))
	}
}

// NewChain builds the authenticator a server uses: Gatehouse tokens from the store db (opened
// with store.Open; the identity schema is migrated here) and, when issuers are configured,
// OIDC. Nothing here contacts an identity provider; call chain.OIDC.Warm in a goroutine to
// discover issuers early.
func NewChain(ctx context.Context, db *sql.DB, issuers []config.OIDC, tokenOpts TokensOptions, oidcOpts OIDCOptions) (*Chain, error) {
	tokens, err := NewTokens(ctx, db, tokenOpts)
	if err != nil {
		return nil, err
	}
	c := &Chain{Tokens: tokens}
	if len(issuers) > 0 {
		if c.OIDC, err = NewOIDC(issuers, oidcOpts); err != nil {
			return nil, fmt.Errorf("configure oidc: %w", err)
		}
	}
	return c, nil
}
