package idp_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// TestTokensVerify checks the provider's tokens against Gatehouse's real OIDC verifier:
// claims chosen by the test arrive, expiry and rotation behave like a real IdP.
func TestTokensVerify(t *testing.T) {
	p := idp.Start(t)
	o, err := identity.NewOIDC([]config.OIDC{{Issuer: p.Issuer, Audience: []string{p.ClientID, idp.WebClientID}, CAFile: p.CAFile}},
		identity.OIDCOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	id, err := o.Authenticate(ctx, "ann@corp.example", p.AccessToken(t, "ann@corp.example", "dba", "oncall"))
	if err != nil || id.Subject != "ann@corp.example" || !slices.Equal(id.Groups, []string{"dba", "oncall"}) || id.Kind != identity.Human {
		t.Fatalf("access token: %+v, %v", id, err)
	}
	id, err = o.Authenticate(ctx, "bot", p.Token(t, idp.Claims{Subject: "bot", Extra: map[string]any{identity.KindClaim: "agent"}}))
	if err != nil || id.Kind != identity.Agent {
		t.Fatalf("agent claim: %+v, %v", id, err)
	}
	id, err = o.Authenticate(ctx, "ben@corp.example", p.IDToken(t, "ben@corp.example", "analysts"))
	if err != nil || id.Subject != "ben@corp.example" || !slices.Equal(id.Groups, []string{"analysts"}) {
		t.Fatalf("id token: %+v, %v", id, err)
	}
	if _, err := o.Authenticate(ctx, "ann@corp.example", p.Token(t, idp.Claims{Subject: "ann@corp.example", TTL: -time.Minute})); err == nil {
		t.Fatal("expired token accepted")
	}
	if _, err := o.Authenticate(ctx, "ann@corp.example", p.Token(t, idp.Claims{Subject: "ann@corp.example", Audience: []string{"other"}})); err == nil {
		t.Fatal("token for another audience accepted")
	}
	old := p.AccessToken(t, "ann@corp.example")
	p.RotateKey(t, true)
	if _, err := o.Authenticate(ctx, "ann@corp.example", p.AccessToken(t, "ann@corp.example")); err != nil {
		t.Fatalf("token signed by the rotated key: %v", err)
	}
	if _, err := o.Authenticate(ctx, "ann@corp.example", old); err != nil {
		t.Fatalf("old key still published, old token: %v", err)
	}
}
