package identity

import (
	"errors"
	"fmt"
)

// The causes of a failed login. They are for logs, metrics and the ledger only: the client
// always sees ErrInvalidCredentials, so it cannot tell an unknown token from a revoked one.
const (
	CauseUnknownToken      = "unknown token"
	CauseRevoked           = "revoked"
	CauseExpired           = "expired"
	CauseNotYetValid       = "not yet valid"
	CauseUserMismatch      = "user mismatch"
	CauseBadSecret         = "bad secret"
	CauseBadSignature      = "bad signature"
	CauseWrongAudience     = "wrong audience"
	CauseUnknownIssuer     = "unknown issuer"
	CauseWrongIssuer       = "wrong issuer"
	CauseIssuerUnavailable = "issuer unavailable"
	CauseMalformed         = "malformed token"
	CauseNoSubject         = "no subject"
	CauseEmailUnverified   = "email not verified"
	CauseNotRecognised     = "not a gatehouse or oidc token"
	CauseEmptySecret       = "empty secret"
	CauseInternal          = "internal error"
)

// credError is a login failure: it is ErrInvalidCredentials for errors.Is, and carries a
// short, secret-free cause plus the underlying error for logs.
type credError struct {
	cause  string
	detail error
}

// Error is for logs: it names the cause and detail, never the secret.
func (e *credError) Error() string {
	if e.detail != nil {
		return fmt.Sprintf("%s: %s: %v", ErrInvalidCredentials, e.cause, e.detail)
	}
	return fmt.Sprintf("%s: %s", ErrInvalidCredentials, e.cause)
}

// Is makes errors.Is(err, ErrInvalidCredentials) true without exposing the detail chain to
// callers that only look for the sentinel.
func (e *credError) Is(target error) bool { return target == ErrInvalidCredentials }

// Unwrap exposes the detail (for example a store error) to errors.As.
func (e *credError) Unwrap() error { return e.detail }

// fail builds a login failure with a cause and an optional detail.
func fail(cause string, detail error) error { return &credError{cause: cause, detail: detail} }

// Cause returns the short reason a login failed ("unknown token", "revoked", "expired",
// "user mismatch", "bad signature", "wrong audience", ...) for logs, metrics and the ledger.
// It returns "" for nil and CauseInternal for an error that is not a login failure. Doors
// must never send it (or err.Error()) to the client; the client gets
// ErrInvalidCredentials.Error() whatever the cause.
func Cause(err error) string {
	if err == nil {
		return ""
	}
	var ce *credError
	if errors.As(err, &ce) {
		return ce.cause
	}
	return CauseInternal
}
