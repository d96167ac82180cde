package console

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/store"
)

// A console sign-in expires: after the console's session lifetime, or sooner when the
// token signed in with expires first. The browser is sent to the sign-in page saying so, the
// cookie is cleared, and the end is a ledger event.
func TestConsoleSessionExpires(t *testing.T) {
	c, led := testConsole(t)
	ctx := context.Background()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "tokens.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	chain, err := identity.NewChain(ctx, db, nil, identity.TokensOptions{Now: now}, identity.OIDCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.opts.Auth, c.opts.Now, c.opts.SessionTTL = chain, now, time.Hour
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux) // loopback, so plain HTTP is served
	t.Cleanup(srv.Close)

	signIn := func(secret string) *http.Client {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		cl := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := cl.Get(srv.URL + "/console/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var csrf string
		for _, ck := range resp.Cookies() {
			if ck.Name == loginCookie {
				csrf = ck.Value
			}
		}
		resp, err = cl.PostForm(srv.URL+"/console/login/token", url.Values{"csrf": {csrf}, "token": {secret}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("token sign-in: HTTP %d", resp.StatusCode)
		}
		return cl
	}
	// page returns the status and where a redirect goes.
	page := func(cl *http.Client) (int, string) {
		t.Helper()
		resp, err := cl.Get(srv.URL + "/console/sessions")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}

	long, _, err := chain.Tokens.Create(ctx, identity.CreateRequest{Name: "ann@corp.example", Kind: identity.Human, Groups: []string{"security"}, TTL: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	short, _, err := chain.Tokens.Create(ctx, identity.CreateRequest{Name: "bo@corp.example", Kind: identity.Human, TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ann, bo := signIn(long), signIn(short)
	for _, cl := range []*http.Client{ann, bo} {
		if code, _ := page(cl); code != http.StatusOK {
			t.Fatalf("signed in: HTTP %d", code)
		}
	}
	clock.Add(int64(11 * time.Minute)) // past bo's token, within the console's hour
	if code, _ := page(ann); code != http.StatusOK {
		t.Fatalf("ann after 11 minutes: HTTP %d", code)
	}
	if code, loc := page(bo); code != http.StatusSeeOther || loc != "/console/login?ended=expired" {
		t.Fatalf("bo after their token expired: HTTP %d to %q", code, loc)
	}
	clock.Add(int64(50 * time.Minute)) // past the console's hour
	if code, loc := page(ann); code != http.StatusSeeOther || loc != "/console/login?ended=expired" {
		t.Fatalf("ann after the console session's hour: HTTP %d to %q", code, loc)
	}
	// The cookie was cleared: a later request is simply not signed in.
	if code, loc := page(ann); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login") {
		t.Fatalf("ann's next request: HTTP %d to %q", code, loc)
	}
	evs, err := led.Store().Search(ctx, ledger.Query{Type: EventSessionEnded})
	if err != nil || len(evs) != 2 {
		t.Fatalf("console.session_ended events: %d (%v), want 2", len(evs), err)
	}
	for _, ev := range evs {
		if !strings.HasSuffix(ev.Message, "expired") {
			t.Fatalf("session end recorded as %q", ev.Message)
		}
	}
}
