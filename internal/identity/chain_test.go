package identity

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

func TestChainRoutesBySecretShape(t *testing.T) {
	ctx := context.Background()
	prov := idp.Start(t)
	tokens := openTokens(t, filepath.Join(t.TempDir(), "g.db"), TokensOptions{})
	o, err := NewOIDC([]config.OIDC{issuerConfig(prov, idp.ClientID)}, OIDCOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	chain := &Chain{Tokens: tokens, OIDC: o}
	var _ Authenticator = chain
	var _ Validator = chain

	secret, _, err := tokens.Create(ctx, CreateRequest{Name: "etl", Kind: Service, Groups: []string{"loaders"}})
	if err != nil {
		t.Fatal(err)
	}
	tid, err := chain.Authenticate(ctx, "etl", secret)
	if err != nil || tid.AuthMethod != AuthMethodToken {
		t.Fatalf("token via chain: %+v %v", tid, err)
	}
	oid, err := chain.Authenticate(ctx, idp.ClientID, prov.AccessToken(t, ""))
	if err != nil || oid.AuthMethod != AuthMethodOIDC {
		t.Fatalf("oidc via chain: %+v %v", oid, err)
	}
	for _, id := range []*Identity{tid, oid} {
		if err := chain.StillValid(ctx, id); err != nil {
			t.Fatalf("StillValid(%s): %v", id.AuthMethod, err)
		}
	}
	for _, bad := range []string{"hunter2", "a.b", "postgres://x", " " + secret} {
		_, err := chain.Authenticate(ctx, "etl", bad)
		wantCause(t, err, CauseNotRecognised)
	}
	_, err = chain.Authenticate(ctx, "etl", "")
	wantCause(t, err, CauseEmptySecret)

	// Revocation reaches live sessions through the chain's validator.
	if err := tokens.Revoke(ctx, "etl"); err != nil {
		t.Fatal(err)
	}
	wantCause(t, chain.StillValid(ctx, tid), CauseRevoked)

	// A chain without OIDC refuses JWTs with a precise cause, and vice versa.
	_, err = (&Chain{Tokens: tokens}).Authenticate(ctx, idp.ClientID, prov.AccessToken(t, ""))
	wantCause(t, err, CauseUnknownIssuer)
	_, err = (&Chain{OIDC: o}).Authenticate(ctx, "etl", secret)
	wantCause(t, err, CauseNotRecognised)
	if err := (&Chain{OIDC: o}).StillValid(ctx, tid); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("token identity without token store: %v", err)
	}
	if err := chain.StillValid(ctx, nil); err == nil {
		t.Fatal("nil identity accepted")
	}
}

func TestNewChain(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := NewChain(ctx, db, nil, TokensOptions{}, OIDCOptions{})
	if err != nil || c.Tokens == nil || c.OIDC != nil {
		t.Fatalf("tokens-only chain: %+v %v", c, err)
	}
	// Migrations are idempotent: a second start on the same store works.
	c, err = NewChain(ctx, db, []config.OIDC{{Issuer: "https://idp.example.com", Audience: []string{"gatehouse"}}}, TokensOptions{}, OIDCOptions{})
	if err != nil || c.OIDC == nil {
		t.Fatalf("chain with oidc: %+v %v", c, err)
	}
	if _, err := NewChain(ctx, db, []config.OIDC{{Issuer: "https://idp.example.com"}}, TokensOptions{}, OIDCOptions{}); err == nil {
		t.Fatal("issuer without audience accepted")
	}
}

func BenchmarkTokenAuthenticate(b *testing.B) {
	ctx := context.Background()
	tokens := openTokens(b, filepath.Join(b.TempDir(), "g.db"), TokensOptions{})
	secret, _, err := tokens.Create(ctx, CreateRequest{Name: "bench", Kind: Agent, Groups: []string{"g1", "g2"}})
	if err != nil {
		b.Fatal(err)
	}
	chain := &Chain{Tokens: tokens}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := chain.Authenticate(ctx, "bench", secret); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenStillValid is the per-session periodic check: with a cached generation it
// must cost next to nothing, so thousands of sessions can be checked every two seconds.
func BenchmarkTokenStillValid(b *testing.B) {
	ctx := context.Background()
	tokens := openTokens(b, filepath.Join(b.TempDir(), "g.db"), TokensOptions{})
	secret, _, err := tokens.Create(ctx, CreateRequest{Name: "bench", Kind: Agent})
	if err != nil {
		b.Fatal(err)
	}
	id, err := tokens.Authenticate(ctx, "bench", secret)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := tokens.StillValid(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOIDCAuthenticate(b *testing.B) {
	ctx := context.Background()
	prov := idp.Start(b)
	o, err := NewOIDC([]config.OIDC{issuerConfig(prov, idp.ClientID)}, OIDCOptions{Logger: testLogger(b), DiscoveryTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	tok := prov.AccessToken(b, "")
	if _, err := o.Authenticate(ctx, idp.ClientID, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.Authenticate(ctx, idp.ClientID, tok); err != nil {
			b.Fatal(err)
		}
	}
}
