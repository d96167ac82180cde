package identity

import (
	"context"
	"errors"
	"strings"
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
