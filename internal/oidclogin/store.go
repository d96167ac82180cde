package oidclogin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Claims are what a login learns from its ID token.
type Claims struct {
	// Subject is the value to log in to Gatehouse with as user: the configured subject claim
	// (default email), else sub, as Gatehouse's own verifier picks it.
	Subject string
	Expiry  time.Time
}

// Verify checks an ID token the IdP just issued (signature by the issuer's JWKS, issuer,
// audience = clientID, expiry) and returns its claims; subjectClaim is Gatehouse's
// oidc.subject_claim (empty: email).
func Verify(ctx context.Context, hc *http.Client, m *Metadata, clientID, subjectClaim, idToken string) (*Claims, error) {
	if m.JWKSURI == "" {
		return nil, errors.New("verify ID token: the issuer advertises no jwks_uri")
	}
	kctx := oidc.ClientContext(ctx, hc)
	v := oidc.NewVerifier(m.Issuer, oidc.NewRemoteKeySet(kctx, m.JWKSURI), &oidc.Config{ClientID: clientID, SupportedSigningAlgs: m.IDTokenSigningAlgs})
	tok, err := v.Verify(kctx, idToken)
	if err != nil {
		return nil, fmt.Errorf("verify ID token: %w", err)
	}
	var raw map[string]any
	if err := tok.Claims(&raw); err != nil {
		return nil, fmt.Errorf("verify ID token: claims: %w", err)
	}
	return claimsOf(raw, tok.Subject, tok.Expiry, subjectClaim), nil
}

func claimsOf(raw map[string]any, sub string, exp time.Time, subjectClaim string) *Claims {
	if subjectClaim == "" {
		subjectClaim = "email"
	}
	s, _ := raw[subjectClaim].(string)
	if s == "" {
		s = sub
	}
	return &Claims{Subject: s, Expiry: exp}
}

// UnverifiedExpiry reads the exp claim of a stored token (the file is the user's own; the
// token is verified when it was obtained and by Gatehouse at every login).
func UnverifiedExpiry(idToken string) (time.Time, error) {
	parts := strings.Split(idToken, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("decode JWT payload: %w", err)
	}
	var c struct {
		Exp float64 `json:"exp"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return time.Time{}, fmt.Errorf("decode JWT payload: %w", err)
	}
	if c.Exp == 0 {
		return time.Time{}, errors.New("JWT has no exp claim")
	}
	return time.Unix(int64(c.Exp), 0), nil
}

// Credential is one stored login.
type Credential struct {
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"client_id"`
	Subject      string    `json:"subject"`
	IDToken      string    `json:"id_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
	Obtained     time.Time `json:"obtained"`
}

// credentialsFile is the on-disk form.
type credentialsFile struct {
	Version int          `json:"version"`
	Logins  []Credential `json:"logins"`
}

// DefaultCredentialsPath is $XDG_CONFIG_HOME/gatehouse/credentials.json (or the
// platform's user config directory).
func DefaultCredentialsPath() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the user config directory: %w", err)
	}
	return filepath.Join(d, "gatehouse", "credentials.json"), nil
}

// LoadCredentials reads the stored logins; a missing file is no logins.
func LoadCredentials(path string) ([]Credential, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var f credentialsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", path, err)
	}
	return f.Logins, nil
}

// FindCredential returns the stored login for this issuer and client, if any.
func FindCredential(creds []Credential, issuer, clientID string) *Credential {
	issuer = strings.TrimSuffix(issuer, "/")
	for i := range creds {
		if strings.TrimSuffix(creds[i].Issuer, "/") == issuer && creds[i].ClientID == clientID {
			return &creds[i]
		}
	}
	return nil
}

// SaveCredential stores c, replacing the login for the same issuer and client, in a file
// only the user can read (0600, directory 0700), written atomically.
func SaveCredential(path string, c Credential) error {
	creds, err := LoadCredentials(path)
	if err != nil {
		return err
	}
	out := []Credential{c}
	for _, o := range creds {
		if !(strings.TrimSuffix(o.Issuer, "/") == strings.TrimSuffix(c.Issuer, "/") && o.ClientID == c.ClientID) {
			out = append(out, o)
		}
	}
	b, err := json.MarshalIndent(credentialsFile{Version: 1, Logins: out}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	return writePrivate(path, append(b, '\n'))
}

// writePrivate replaces path with data, mode 0600, through a temporary file and rename so
// a reader never sees half a file and a looser mode of an old file is not kept.
func writePrivate(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// DefaultPgpassPath is $PGPASSFILE, else ~/.pgpass, as libpq looks for it.
func DefaultPgpassPath() (string, error) {
	if p := os.Getenv("PGPASSFILE"); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the home directory: %w", err)
	}
	return filepath.Join(home, ".pgpass"), nil
}

// pgpassEscape escapes ':' and '\' in a .pgpass field.
func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// WritePgpass sets the password of host:port:database:user in a .pgpass file, replacing
// an entry for the same four fields and keeping every other line; the file ends up 0600
// (libpq ignores a .pgpass others can read).
func WritePgpass(path, host, port, database, user, password string) error {
	if database == "" {
		database = "*"
	}
	key := strings.Join([]string{pgpassEscape(host), pgpassEscape(port), pgpassEscape(database), pgpassEscape(user)}, ":") + ":"
	var lines []string
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read %s: %w", path, err)
	default:
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			if l != "" && !strings.HasPrefix(l, key) {
				lines = append(lines, l)
			}
		}
	}
	lines = append(lines, key+pgpassEscape(password))
	return writePrivate(path, []byte(strings.Join(lines, "\n")+"\n"))
}
