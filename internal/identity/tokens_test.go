package identity

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/store"
)

// clock is a settable time source shared by a test and the code under test.
type clock struct{ ns atomic.Int64 }

func newClock() *clock                   { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// memRecorder keeps ledger events in memory; the ledger's own writer is tested in its package.
type memRecorder struct {
	mu     sync.Mutex
	events []ledger.Event
	fail   error
}

func (r *memRecorder) Record(_ context.Context, e *ledger.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, *e)
	return nil
}

func openTokens(t testing.TB, path string, opts TokensOptions) *Tokens {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tok, err := NewTokens(ctx, db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantCause(t *testing.T, err error, cause string) {
	t.Helper()
	if !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("error %v is not ErrInvalidCredentials", err)
	}
	if got := Cause(err); got != cause {
		t.Fatalf("cause = %q, want %q (err %v)", got, cause, err)
	}
}

func TestTokenLifecycle(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	rec := &memRecorder{}
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	tokens := openTokens(t, path, TokensOptions{Recorder: rec, Now: clk.Now})

	secret, tok, err := tokens.Create(ctx, CreateRequest{Name: "support-bot", Kind: Agent, Groups: []string{"analysts", " support ", "analysts"}, TTL: time.Hour, CreatedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, TokenPrefix+tok.ID+"_") || len(secret) != len(TokenPrefix)+tokenIDLen+1+tokenSecretLen {
		t.Fatalf("unexpected token shape %d chars", len(secret))
	}
	if got := strings.Join(tok.Groups, ","); got != "analysts,support" {
		t.Fatalf("groups = %q", got)
	}

	id, err := tokens.Authenticate(ctx, "Support-Bot", secret)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "support-bot" || id.Kind != Agent || id.AuthMethod != "token" || id.TokenID != tok.ID || !id.InGroup("support") || !id.ExpiresAt.Equal(tok.ExpiresAt) {
		t.Fatalf("identity = %+v", id)
	}
	if err := tokens.StillValid(ctx, id); err != nil {
		t.Fatal(err)
	}

	// Every way of getting it wrong fails with the one sentinel and a distinct cause.
	_, err = tokens.Authenticate(ctx, "someone-else", secret)
	wantCause(t, err, CauseUserMismatch)
	flipped := []byte(secret)
	flipped[len(flipped)-3] ^= 1
	_, err = tokens.Authenticate(ctx, "support-bot", string(flipped))
	wantCause(t, err, CauseBadSecret)
	_, err = tokens.Authenticate(ctx, "support-bot", TokenPrefix+"0123456789abcdef_"+secret[len(secret)-tokenSecretLen:])
	wantCause(t, err, CauseUnknownToken)
	for _, bad := range []string{"gat_", "gat_xyz", "gat_0123456789ABCDEF_" + secret[len(secret)-tokenSecretLen:], secret + "x", "password"} {
		_, err = tokens.Authenticate(ctx, "support-bot", bad)
		wantCause(t, err, CauseMalformed)
	}
	_, err = tokens.Authenticate(ctx, "support-bot", "")
	wantCause(t, err, CauseEmptySecret)
	if err.Error() == "" || strings.Contains(err.Error(), secret) {
		t.Fatal("error text must not carry the secret")
	}

	// Names are unique among active tokens, case-insensitively.
	if _, _, err := tokens.Create(ctx, CreateRequest{Name: "SUPPORT-BOT", Kind: Service, TTL: time.Hour}); !errors.Is(err, ErrTokenNameTaken) {
		t.Fatalf("duplicate name: err = %v", err)
	}

	// last_used_at is kept.
	list, err := tokens.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].LastUsedAt.IsZero() || list[0].State(clk.Now()) != "active" || list[0].CreatedBy != "alice" {
		t.Fatalf("list = %+v", list)
	}

	// Revocation: refused at once, seen by the validator at once in the same process.
	if err := tokens.RevokeBy(ctx, "support-bot", "bob"); err != nil {
		t.Fatal(err)
	}
	_, err = tokens.Authenticate(ctx, "support-bot", secret)
	wantCause(t, err, CauseRevoked)
	wantCause(t, tokens.StillValid(ctx, id), CauseRevoked)
	if err := tokens.Revoke(ctx, "support-bot"); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	// The name is free again once revoked.
	if _, _, err := tokens.Create(ctx, CreateRequest{Name: "support-bot", Kind: Agent, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}

	// Expiry: refused at login and by the validator; the name can then be reused.
	s2, _, err := tokens.Create(ctx, CreateRequest{Name: "nightly", Kind: Service, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := tokens.Authenticate(ctx, "nightly", s2)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	_, err = tokens.Authenticate(ctx, "nightly", s2)
	wantCause(t, err, CauseExpired)
	wantCause(t, tokens.StillValid(ctx, id2), CauseExpired)
	if _, _, err := tokens.Create(ctx, CreateRequest{Name: "nightly", Kind: Service}); err != nil {
		t.Fatalf("reuse expired name: %v", err)
	}
	list, err = tokens.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]int{}
	for _, tk := range list {
		states[tk.Name+"/"+tk.State(clk.Now())]++
		if tk.Name == "nightly" && tk.State(clk.Now()) == "active" && !tk.ExpiresAt.Equal(tk.CreatedAt.Add(DefaultTokenTTL)) {
			t.Fatalf("default ttl not applied: %+v", tk)
		}
	}
	if states["support-bot/revoked"] != 1 || states["support-bot/active"] != 1 || states["nightly/revoked"] != 1 || states["nightly/active"] != 1 {
		t.Fatalf("states = %v", states)
	}

	// The ledger saw every change, never a secret.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var types []string
	for _, e := range rec.events {
		types = append(types, string(e.Type))
		if strings.Contains(e.Message, secret[len(secret)-tokenSecretLen:]) {
			t.Fatal("ledger event carries a secret")
		}
	}
	if got := strings.Join(types, " "); got != "token.create token.revoke token.create token.create token.create" {
		t.Fatalf("ledger events = %s", got)
	}
	if rec.events[0].Subject != "alice" || rec.events[1].Subject != "bob" {
		t.Fatalf("actors = %q %q", rec.events[0].Subject, rec.events[1].Subject)
	}
}

func TestTokenCreateValidation(t *testing.T) {
	ctx := context.Background()
	tokens := openTokens(t, filepath.Join(t.TempDir(), "g.db"), TokensOptions{})
	for _, req := range []CreateRequest{
		{Name: "", Kind: Agent},
		{Name: "has space", Kind: Agent},
		{Name: "-dash", Kind: Agent},
		{Name: strings.Repeat("a", 64), Kind: Agent},
		{Name: "ok", Kind: "robot"},
		{Name: "ok", Kind: ""},
		{Name: "ok", Kind: Agent, TTL: -time.Hour},
		{Name: "ok", Kind: Agent, TTL: time.Second},
		{Name: "ok", Kind: Agent, TTL: 100 * 365 * 24 * time.Hour},
		{Name: "ok", Kind: Agent, Groups: []string{""}},
		{Name: "ok", Kind: Agent, Groups: []string{"a,b"}},
	} {
		if _, _, err := tokens.Create(ctx, req); err == nil {
			t.Errorf("Create(%+v) succeeded", req)
		}
	}
	list, err := tokens.List(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("list after refused creates: %v %v", list, err)
	}
}

// An unrecordable creation must not leave a usable token behind.
func TestTokenCreateWithdrawnWhenLedgerFails(t *testing.T) {
	ctx := context.Background()
	rec := &memRecorder{fail: errors.New("ledger full")}
	tokens := openTokens(t, filepath.Join(t.TempDir(), "g.db"), TokensOptions{Recorder: rec})
	if _, _, err := tokens.Create(ctx, CreateRequest{Name: "x", Kind: Agent}); err == nil || !strings.Contains(err.Error(), "ledger full") {
		t.Fatalf("err = %v", err)
	}
	list, err := tokens.List(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("token left behind: %v %v", list, err)
	}
}

// Only a hash is at rest: the secret appears in no file of the store (database, WAL, shm).
func TestTokenHashOnlyAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "gatehouse.db")
	tokens := openTokens(t, path, TokensOptions{})
	var secrets []string
	for _, n := range []string{"a", "b", "c"} {
		s, tok, err := tokens.Create(ctx, CreateRequest{Name: n, Kind: Service})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tokens.Authenticate(ctx, n, s); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s)
		_ = tok
	}
	files, err := filepath.Glob(path + "*")
	if err != nil || len(files) == 0 {
		t.Fatalf("store files: %v %v", files, err)
	}
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	foundHash := false
	for _, s := range secrets {
		id, sec, ok := parseToken(s)
		if !ok {
			t.Fatal("created token does not parse")
		}
		if bytes.Contains(all, []byte(sec)) || bytes.Contains(all, []byte(s)) {
			t.Fatalf("secret of %s found at rest", id)
		}
		if !bytes.Contains(all, []byte(id)) {
			t.Fatalf("token id %s not found at rest: the check reads the wrong files", id)
		}
		if bytes.Contains(all, hashSecret(id, sec)) {
			foundHash = true
		}
	}
	if !foundHash {
		t.Fatal("no hash found at rest: the check reads the wrong files")
	}
}

// A revocation made by another process (the CLI, through the same SQLite file) is seen by a
// serving process's validator within the cache TTL.
func TestValidatorSeesForeignRevocationWithinTTL(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gatehouse.db")
	const ttl = 300 * time.Millisecond
	server := openTokens(t, path, TokensOptions{CacheTTL: ttl})
	cli := openTokens(t, path, TokensOptions{})

	var ids []*Identity
	for _, n := range []string{"keep", "drop"} {
		s, _, err := cli.Create(ctx, CreateRequest{Name: n, Kind: Agent})
		if err != nil {
			t.Fatal(err)
		}
		id, err := server.Authenticate(ctx, n, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := server.StillValid(ctx, id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := cli.Revoke(ctx, "drop"); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // the revocation is committed from here on
	var seen time.Duration
	for {
		err := server.StillValid(ctx, ids[1])
		if err != nil {
			wantCause(t, err, CauseRevoked)
			seen = time.Since(start)
			break
		}
		if time.Since(start) > 5*ttl {
			t.Fatalf("revocation not seen after %s", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if seen > ttl+250*time.Millisecond { // slack for a loaded 2-core machine

		t.Fatalf("revocation seen after %s, cache TTL %s", seen, ttl)
	}
	if err := server.StillValid(ctx, ids[0]); err != nil {
		t.Fatalf("unrelated token affected: %v", err)
	}
	t.Logf("foreign revocation seen after %s (cache TTL %s)", seen, ttl)
}

// The secret comparison must take the same time whether the first or the last byte is wrong.
// Comparing hashes with subtle.ConstantTimeCompare gives that by construction; this test
// guards against someone "optimising" it into bytes.Equal on the raw secret.
func TestTokenCompareConstantTime(t *testing.T) {
	ctx := context.Background()
	tokens := openTokens(t, filepath.Join(t.TempDir(), "g.db"), TokensOptions{})
	secret, _, err := tokens.Create(ctx, CreateRequest{Name: "ct", Kind: Agent})
	if err != nil {
		t.Fatal(err)
	}
	// Timing differences on 32 bytes drown in noise, so the property is measured on the
	// comparison Authenticate uses with inputs large enough that a short-circuiting compare
	// (bytes.Equal) would be orders of magnitude faster when the first byte differs.
	id, sec, _ := parseToken(secret)
	wrongFirst := []byte(sec)
	wrongFirst[0] ^= 1
	wrongLast := []byte(sec)
	wrongLast[len(wrongLast)-1] ^= 1
	for _, w := range [][]byte{wrongFirst, wrongLast} {
		_, err := tokens.Authenticate(ctx, "ct", TokenPrefix+id+"_"+string(w))
		wantCause(t, err, CauseBadSecret)
	}
	const size = 1 << 20
	stored := bytes.Repeat([]byte{0x5a}, size)
	diffFirst := bytes.Clone(stored)
	diffFirst[0] ^= 0xff
	diffLast := bytes.Clone(stored)
	diffLast[size-1] ^= 0xff
	measure := func(candidate []byte) time.Duration {
		best := time.Duration(1 << 62)
		for range 15 {
			start := time.Now()
			compareHashes(candidate, stored)
			best = min(best, time.Since(start))
		}
		return best
	}
	a, b := measure(diffFirst), measure(diffLast)
	t.Logf("1 MiB compare: first byte differs %s, last byte differs %s", a, b)
	if a*4 < b {
		t.Fatalf("comparison returns early when the first byte differs: %s vs %s", a, b)
	}
	if compareHashes(diffFirst, stored) || !compareHashes(bytes.Clone(stored), stored) {
		t.Fatal("compareHashes gives wrong answers")
	}
}

// Logins, validity checks and revocations run concurrently in a proxy; run them together
// (under -race in CI) and check the outcome is consistent.
func TestTokensConcurrentUse(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	tokens := openTokens(t, path, TokensOptions{CacheTTL: 50 * time.Millisecond})
	names := []string{"t0", "t1", "t2", "t3"}
	secrets := map[string]string{}
	for _, n := range names {
		s, _, err := tokens.Create(ctx, CreateRequest{Name: n, Kind: Agent})
		if err != nil {
			t.Fatal(err)
		}
		secrets[n] = s
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Go(func() {
			n := names[w%len(names)]
			for range 100 {
				id, err := tokens.Authenticate(ctx, n, secrets[n])
				if err != nil {
					if n == "t0" && Cause(err) == CauseRevoked {
						continue
					}
					errs <- err
					return
				}
				if err := tokens.StillValid(ctx, id); err != nil && !(n == "t0" && Cause(err) == CauseRevoked) {
					errs <- err
					return
				}
			}
		})
	}
	if err := tokens.Revoke(ctx, "t0"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent use: %v", err)
	}
	_, err := tokens.Authenticate(ctx, "t0", secrets["t0"])
	wantCause(t, err, CauseRevoked)
	if _, err := tokens.Authenticate(ctx, "t1", secrets["t1"]); err != nil {
		t.Fatal(err)
	}
}
