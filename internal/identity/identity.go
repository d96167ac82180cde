// Package identity says who is on a connection. Every session in Gatehouse is bound to an
// Identity that came from a Gatehouse-issued token or an OIDC token, never from a shared
// database password, so every ledger event can name a real person, service or agent.
package identity

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Kind separates people from machines, because policies and auditors treat them differently
// ("how many AI agents queried customers last week?").
type Kind string

// The kinds of identity Gatehouse knows.
const (
	Human   Kind = "human"
	Service Kind = "service"
	Agent   Kind = "agent"
)

// Valid reports whether k is one of the known kinds, so bad input is refused early.
func (k Kind) Valid() bool { return k == Human || k == Service || k == Agent }

// Identity is the authenticated principal behind a session.
type Identity struct {
	// Subject is the stable name policies and the ledger use: an email for people, the
	// token name for services and agents.
	Subject string
	Kind    Kind
	Groups  []string
	// Claims carries the raw OIDC claims (or token metadata) so policies can use them.
	Claims map[string]any
	// AuthMethod says how the identity proved itself: "token" or "oidc".
	AuthMethod string
	// TokenID identifies the Gatehouse token used, so a revocation can find live sessions.
	TokenID string
	// Issuer is the OIDC issuer, empty for Gatehouse tokens.
	Issuer string
	// ExpiresAt is when the credential behind the identity stops being valid (the token's
	// expiry or the OIDC token's exp), so a session does not outlive its credential. Zero
	// means no known expiry.
	ExpiresAt time.Time
}

// InGroup reports membership, the usual question a policy asks.
func (i *Identity) InGroup(g string) bool { return i != nil && slices.Contains(i.Groups, g) }

// ErrInvalidCredentials is the single answer to every failed login, whatever the cause, so a
// client cannot probe which tokens exist. The cause goes to logs and metrics only.
var ErrInvalidCredentials = errors.New("invalid credentials")

// Authenticator turns a secret a client presented into an Identity. Doors call it; they never
// look inside the secret themselves.
type Authenticator interface {
	// Authenticate checks secret presented for the login name user. Failures wrap
	// ErrInvalidCredentials.
	Authenticate(ctx context.Context, user, secret string) (*Identity, error)
}

// Validator re-checks an identity during a session, so a revoked token ends live sessions.
type Validator interface {
	// StillValid returns nil while the identity may keep its sessions open, and an error
	// wrapping ErrInvalidCredentials once it may not (revoked, expired, unknown). Any other
	// error means the check could not be made (for example the store is unreachable) and
	// says nothing about the identity; doors keep the session and check again.
	StillValid(ctx context.Context, id *Identity) error
}
