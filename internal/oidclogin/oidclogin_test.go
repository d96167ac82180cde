package oidclogin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/oidclogin"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

func setup(t *testing.T) (*idp.Provider, *oidclogin.Client, context.Context) {
	t.Helper()
	p := idp.Start(t)
	hc, err := oidclogin.HTTPClient(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	m, err := oidclogin.Discover(ctx, hc, p.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	return p, &oidclogin.Client{ClientID: idp.CLIClientID, Meta: m, HTTP: hc}, ctx
}

// The device grant against the real provider: the code is approved at the verification page
// after a slow_down, which the client honours (interval + 5 s), and the ID token verifies
// with the email as subject. The refresh token renews it and is rotated.
func TestDeviceFlowApproveSlowDownRefresh(t *testing.T) {
	p, c, ctx := setup(t)
	scopes := c.Meta.Scopes()
	if !slices.Equal(scopes, []string{"openid", "email", "groups", "offline_access"}) {
		t.Fatalf("scopes %v", scopes)
	}
	da, err := c.StartDevice(ctx, scopes)
	if err != nil {
		t.Fatal(err)
	}
	if da.Interval != 1 || !strings.Contains(da.VerificationURIComplete, "user_code="+da.UserCode) ||
		!strings.HasPrefix(da.VerificationURI, p.Issuer) {
		t.Fatalf("device authorization: %+v", da)
	}
	start := time.Now()
	var intervals []time.Duration
	c.PollStarted = func(iv time.Duration) {
		intervals = append(intervals, iv)
		switch len(intervals) {
		case 1:
			p.SlowDown(1)
		case 2:
			p.ApproveDevice(t, da.UserCode, "ann@corp.example", "dba")
		}
	}
	tok, err := c.PollDevice(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	polls := p.DevicePolls()
	if len(polls) != 2 || polls[0].Sub(start) < time.Second || polls[1].Sub(polls[0]) < time.Second+oidclogin.SlowDownStep {
		t.Fatalf("polls at %v after start %v (intervals %v)", polls, start, intervals)
	}
	if !slices.Equal(intervals, []time.Duration{time.Second, time.Second + oidclogin.SlowDownStep}) {
		t.Fatalf("intervals %v", intervals)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token despite offline_access")
	}
	cl, err := oidclogin.Verify(ctx, c.HTTP, c.Meta, idp.CLIClientID, "", tok.IDToken)
	if err != nil || cl.Subject != "ann@corp.example" || time.Until(cl.Expiry) < 50*time.Minute {
		t.Fatalf("claims %+v, %v", cl, err)
	}
	if _, err := oidclogin.Verify(ctx, c.HTTP, c.Meta, "another-client", "", tok.IDToken); err == nil {
		t.Fatal("ID token accepted for another audience")
	}

	re, err := c.Refresh(ctx, tok.RefreshToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if re.IDToken == tok.IDToken || re.RefreshToken == "" || re.RefreshToken == tok.RefreshToken {
		t.Fatal("refresh did not give a new ID token and a rotated refresh token")
	}
	if cl, err := oidclogin.Verify(ctx, c.HTTP, c.Meta, idp.CLIClientID, "", re.IDToken); err != nil || cl.Subject != "ann@corp.example" {
		t.Fatalf("refreshed claims %+v, %v", cl, err)
	}
	var oe *oidclogin.OAuthError
	if _, err := c.Refresh(ctx, tok.RefreshToken, nil); !errors.As(err, &oe) || oe.Code != "invalid_grant" {
		t.Fatalf("reused refresh token: %v", err)
	}
}

func TestDeviceFlowDeniedAndExpired(t *testing.T) {
	p, c, ctx := setup(t)
	for _, tc := range []struct {
		name string
		act  func(code string)
		want error
	}{
		{"denied", func(code string) { p.DenyDevice(t, code, "ann@corp.example") }, oidclogin.ErrAccessDenied},
		{"expired", func(code string) { p.ExpireDevice(t, code) }, oidclogin.ErrExpired},
	} {
		da, err := c.StartDevice(ctx, c.Meta.Scopes())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		c.PollStarted = func(time.Duration) {
			if n++; n == 2 { // the first poll is authorization_pending
				tc.act(da.UserCode)
			}
		}
		if _, err := c.PollDevice(ctx, da); !errors.Is(err, tc.want) || n != 2 {
			t.Fatalf("%s: %v after %d polls", tc.name, err, n)
		}
	}
	// The client's own clock ends a code whose lifetime passed, without asking.
	da, err := c.StartDevice(ctx, c.Meta.Scopes())
	if err != nil {
		t.Fatal(err)
	}
	da.Expires = time.Now()
	before := len(p.DevicePolls())
	c.PollStarted = nil
	if _, err := c.PollDevice(ctx, da); !errors.Is(err, oidclogin.ErrExpired) || len(p.DevicePolls()) != before {
		t.Fatalf("locally expired code: %v", err)
	}
	// Cancelling the context stops the wait.
	da, err = c.StartDevice(ctx, c.Meta.Scopes())
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if _, err := c.PollDevice(cctx, da); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled wait: %v", err)
	}
}

func TestDiscoverRefusesWrongIssuerAndPlainHTTP(t *testing.T) {
	p, c, ctx := setup(t)
	if _, err := oidclogin.Discover(ctx, c.HTTP, "http://idp.example.com"); err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("plain http issuer: %v", err)
	}
	// The provider's certificate is for 127.0.0.1; its document names that issuer, not localhost.
	other := strings.Replace(p.Issuer, "127.0.0.1", "localhost", 1)
	if _, err := oidclogin.Discover(ctx, c.HTTP, other); err == nil {
		t.Fatal("discovery under another name accepted")
	}
	plain, _ := oidclogin.HTTPClient("")
	if _, err := oidclogin.Discover(ctx, plain, p.Issuer); err == nil {
		t.Fatal("untrusted IdP certificate accepted without --ca-file")
	}
}

func TestStoreFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cfg", "gatehouse", "credentials.json")
	a := oidclogin.Credential{Issuer: "https://a", ClientID: "cli", Subject: "ann", IDToken: "t1"}
	b := oidclogin.Credential{Issuer: "https://b", ClientID: "cli", Subject: "ann", IDToken: "t2"}
	for _, c := range []oidclogin.Credential{a, b, {Issuer: "https://a/", ClientID: "cli", Subject: "ann", IDToken: "t3"}} {
		if err := oidclogin.SaveCredential(path, c); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := oidclogin.LoadCredentials(path)
	if err != nil || len(creds) != 2 {
		t.Fatalf("%v %v", creds, err)
	}
	if c := oidclogin.FindCredential(creds, "https://a", "cli"); c == nil || c.IDToken != "t3" {
		t.Fatalf("replaced login: %+v", c)
	}
	if oidclogin.FindCredential(creds, "https://a", "other") != nil {
		t.Fatal("found a login of another client")
	}
	for _, f := range []string{path, filepath.Dir(path)} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]os.FileMode{false: 0o600, true: 0o700}[st.IsDir()]; st.Mode().Perm() != want {
			t.Fatalf("%s mode %v", f, st.Mode().Perm())
		}
	}

	pg := filepath.Join(dir, "pgpass")
	if err := os.WriteFile(pg, []byte("other:5432:*:bob:pw\nh:1:*:ann:old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := oidclogin.WritePgpass(pg, "h", "1", "", "ann", `new:pw\x`); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(pg)
	if string(got) != "other:5432:*:bob:pw\nh:1:*:ann:new\\:pw\\\\x\n" {
		t.Fatalf("pgpass:\n%s", got)
	}
	if st, _ := os.Stat(pg); st.Mode().Perm() != 0o600 {
		t.Fatalf("pgpass mode %v", st.Mode().Perm())
	}
	if _, err := oidclogin.UnverifiedExpiry("a.b"); err == nil {
		t.Fatal("expiry of a non-JWT")
	}
}
