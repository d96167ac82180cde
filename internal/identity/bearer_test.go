package identity

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// A bearer credential carries no login name: the identity must be exactly the one a database
// login with the same credential gets, and nothing else may pass.
func TestAuthenticateBearer(t *testing.T) {
	ctx := context.Background()
	tokens := openTokens(t, filepath.Join(t.TempDir(), "s.db"), TokensOptions{})
	secret, _, err := tokens.Create(ctx, CreateRequest{Name: "approver-bot", Kind: Service, Groups: []string{"dba"}})
	if err != nil {
		t.Fatal(err)
	}
	p := idp.Start(t)
	o, err := NewOIDC([]config.OIDC{issuerConfig(p, idp.ClientID, idp.WebClientID)}, OIDCOptions{Logger: testLogger(t), DiscoveryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := &Chain{Tokens: tokens, OIDC: o}

	id, err := c.AuthenticateBearer(ctx, secret)
	if err != nil || id.Subject != "approver-bot" || id.Kind != Service || !id.InGroup("dba") || id.AuthMethod != AuthMethodToken {
		t.Fatalf("token bearer: %+v %v", id, err)
	}
	// A well-formed token of an id that does not exist, a wrong secret, and junk all fail
	// as invalid credentials.
	forged := secret[:len(secret)-4] + "AAAA"
	if forged == secret {
		forged = secret[:len(secret)-4] + "BBBB"
	}
	_, err = c.AuthenticateBearer(ctx, forged)
	wantCause(t, err, CauseBadSecret)
	_, err = c.AuthenticateBearer(ctx, TokenPrefix+"0123456789abcdef_"+secret[len(secret)-43:])
	wantCause(t, err, CauseUnknownToken)
	_, err = c.AuthenticateBearer(ctx, "password")
	wantCause(t, err, CauseNotRecognised)
	_, err = c.AuthenticateBearer(ctx, "")
	wantCause(t, err, CauseEmptySecret)

	it := p.IDToken(t, "ann@corp.example", "dba")
	hid, err := c.AuthenticateBearer(ctx, it)
	if err != nil || hid.Subject != "ann@corp.example" || hid.Kind != Human || !hid.InGroup("dba") {
		t.Fatalf("oidc bearer: %+v %v", hid, err)
	}
	// A token whose signature does not verify is refused even though its claims parse.
	_, err = c.AuthenticateBearer(ctx, it[:len(it)-6]+"AAAAAA")
	if err == nil {
		t.Fatal("tampered ID token accepted")
	}
}
