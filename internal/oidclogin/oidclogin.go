// Package oidclogin gets a human an OIDC ID token to use as their Gatehouse database
// password: the OAuth 2.0 Device Authorization Grant (RFC 8628) against the company IdP,
// found by OpenID discovery, and the refresh_token grant to renew it without a browser. It
// is the engine of `gatehouse login`; it speaks plain net/http so the command needs no
// OAuth library, and it never logs a token.
package oidclogin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Errors of the device flow that the user must act on; PollDevice wraps them with the IdP's
// description when it gave one.
var (
	// ErrAccessDenied: the user (or the IdP's policy) denied the request.
	ErrAccessDenied = errors.New("the login was denied at the identity provider")
	// ErrExpired: the device code expired before the user approved it.
	ErrExpired = errors.New("the code expired before it was approved")
)

// SlowDownStep is how much a slow_down answer adds to the polling interval (RFC 8628 3.5).
const SlowDownStep = 5 * time.Second

// defaultInterval is the polling interval when the IdP names none (RFC 8628 3.2).
const defaultInterval = 5 * time.Second

// maxBody bounds what is read from the IdP.
const maxBody = 1 << 20

// OAuthError is an error answer of the authorization server (RFC 6749 5.2).
type OAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
	// Status is the HTTP status of the answer.
	Status int `json:"-"`
}

func (e *OAuthError) Error() string {
	if e.Description != "" {
		return fmt.Sprintf("%s: %s", e.Code, e.Description)
	}
	return e.Code
}

// Metadata is the part of the issuer's discovery document a login needs.
type Metadata struct {
	Issuer                      string   `json:"issuer"`
	AuthorizationEndpoint       string   `json:"authorization_endpoint"`
	TokenEndpoint               string   `json:"token_endpoint"`
	DeviceAuthorizationEndpoint string   `json:"device_authorization_endpoint"`
	JWKSURI                     string   `json:"jwks_uri"`
	ScopesSupported             []string `json:"scopes_supported"`
	GrantTypesSupported         []string `json:"grant_types_supported"`
	IDTokenSigningAlgs          []string `json:"id_token_signing_alg_values_supported"`
}

// DeviceAuth is the IdP's answer to a device authorization request. DeviceCode is a
// secret of this client; the user sees only UserCode and the verification URIs.
type DeviceAuth struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
	// Expires is when the device code lapses, from ExpiresIn at receipt.
	Expires time.Time `json:"-"`
}

// Tokens is a successful token response.
type Tokens struct {
	IDToken      string `json:"id_token"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
}

// Client performs logins against one issuer for one (public) client ID.
type Client struct {
	ClientID string
	Meta     *Metadata
	HTTP     *http.Client
	// PollStarted, when set, is called before each token poll, so callers (and tests) can
	// show or check progress.
	PollStarted func(interval time.Duration)
}

// HTTPClient returns a client with a request timeout that trusts the system roots plus,
// when caFile is set, the PEM certificates in it (an IdP with a private CA).
func HTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// Discover reads the issuer's OpenID configuration and checks it names the same issuer.
func Discover(ctx context.Context, hc *http.Client, issuer string) (*Metadata, error) {
	issuer = strings.TrimSuffix(issuer, "/")
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("issuer %q is not a URL", issuer)
	}
	if u.Scheme != "https" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("issuer %q: must be https (tokens would cross the network in the clear)", issuer)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, fmt.Errorf("discovery request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", issuer, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("discover %s: read: %w", issuer, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discover %s: %s", issuer, resp.Status)
	}
	var m Metadata
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("discover %s: decode: %w", issuer, err)
	}
	if strings.TrimSuffix(m.Issuer, "/") != issuer {
		return nil, fmt.Errorf("discover %s: the document names issuer %q", issuer, m.Issuer)
	}
	if m.TokenEndpoint == "" {
		return nil, fmt.Errorf("discover %s: no token_endpoint", issuer)
	}
	return &m, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Scopes returns what a login asks for: openid, email and groups, plus offline_access
// (a refresh token) when the issuer advertises it.
func (m *Metadata) Scopes() []string {
	s := []string{"openid", "email", "groups"}
	if slices.Contains(m.ScopesSupported, "offline_access") {
		s = append(s, "offline_access")
	}
	return s
}

// StartDevice asks for a device code and user code (RFC 8628 3.1).
func (c *Client) StartDevice(ctx context.Context, scopes []string) (*DeviceAuth, error) {
	if c.Meta.DeviceAuthorizationEndpoint == "" {
		return nil, fmt.Errorf("issuer %s advertises no device_authorization_endpoint: it does not support the device authorization grant", c.Meta.Issuer)
	}
	form := url.Values{"client_id": {c.ClientID}, "scope": {strings.Join(scopes, " ")}}
	var da DeviceAuth
	if err := c.post(ctx, c.Meta.DeviceAuthorizationEndpoint, form, &da); err != nil {
		return nil, fmt.Errorf("device authorization request: %w", err)
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" {
		return nil, errors.New("device authorization request: the answer lacks device_code, user_code or verification_uri")
	}
	if da.ExpiresIn <= 0 {
		da.ExpiresIn = 600
	}
	da.Expires = time.Now().Add(time.Duration(da.ExpiresIn) * time.Second)
	return &da, nil
}

// PollDevice polls the token endpoint until the user approves (tokens), denies
// (ErrAccessDenied) or the code expires (ErrExpired), honouring the interval and slow_down.
func (c *Client) PollDevice(ctx context.Context, da *DeviceAuth) (*Tokens, error) {
	interval := time.Duration(da.Interval) * time.Second
	if interval <= 0 {
		interval = defaultInterval
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {da.DeviceCode}, "client_id": {c.ClientID}}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for approval: %w", ctx.Err())
		case <-timer.C:
		}
		if time.Now().After(da.Expires) {
			return nil, ErrExpired
		}
		if c.PollStarted != nil {
			c.PollStarted(interval)
		}
		var tok Tokens
		err := c.post(ctx, c.Meta.TokenEndpoint, form, &tok)
		var oe *OAuthError
		switch {
		case err == nil:
			if tok.IDToken == "" {
				return nil, errors.New("the identity provider returned no ID token (was the openid scope refused?)")
			}
			return &tok, nil
		case errors.As(err, &oe) && oe.Code == "authorization_pending":
		case errors.As(err, &oe) && oe.Code == "slow_down":
			interval += SlowDownStep
		case errors.As(err, &oe) && oe.Code == "access_denied":
			return nil, withDescription(ErrAccessDenied, oe)
		case errors.As(err, &oe) && oe.Code == "expired_token":
			return nil, withDescription(ErrExpired, oe)
		default:
			return nil, fmt.Errorf("poll the token endpoint: %w", err)
		}
		timer.Reset(interval)
	}
}

func withDescription(base error, oe *OAuthError) error {
	if oe.Description == "" {
		return base
	}
	return fmt.Errorf("%w (%s)", base, oe.Description)
}

// Refresh redeems a refresh token (RFC 6749 6) for a new ID token and, usually, a new
// refresh token.
func (c *Client) Refresh(ctx context.Context, refreshToken string, scopes []string) (*Tokens, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}, "client_id": {c.ClientID}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	var tok Tokens
	if err := c.post(ctx, c.Meta.TokenEndpoint, form, &tok); err != nil {
		return nil, fmt.Errorf("refresh: %w", err)
	}
	if tok.IDToken == "" {
		return nil, errors.New("refresh: the identity provider returned no ID token")
	}
	return &tok, nil
}

// ExchangeCode redeems an authorization code (RFC 6749 4.1.3) with its PKCE verifier
// (RFC 7636), as a public client: the web console's sign-in.
func (c *Client) ExchangeCode(ctx context.Context, code, redirectURI, verifier string) (*Tokens, error) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI},
		"client_id": {c.ClientID}, "code_verifier": {verifier}}
	var tok Tokens
	if err := c.post(ctx, c.Meta.TokenEndpoint, form, &tok); err != nil {
		return nil, fmt.Errorf("exchange authorization code: %w", err)
	}
	if tok.IDToken == "" {
		return nil, errors.New("exchange authorization code: the identity provider returned no ID token")
	}
	return &tok, nil
}

// post sends a form and decodes a 200 answer into out, or returns the OAuthError.
func (c *Client) post(ctx context.Context, endpoint string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		return nil
	}
	oe := &OAuthError{Status: resp.StatusCode}
	if json.Unmarshal(body, oe) == nil && oe.Code != "" {
		return oe
	}
	return fmt.Errorf("%s from %s", resp.Status, endpoint)
}
