package identity

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// sharedState is one PostgreSQL cluster for the tests of this file; each test takes a
// fresh database in it.
type sharedState struct {
	pg *testkit.Postgres
	n  int
}

func (s *sharedState) fresh(t *testing.T) (dsn string, db *sql.DB) {
	t.Helper()
	s.n++
	name := fmt.Sprintf("state%d", s.n)
	s.pg.Exec(t, "postgres", "CREATE DATABASE "+name)
	dsn = s.pg.DSN(name)
	db, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dsn, db
}

func newTokensOn(t *testing.T, db *sql.DB, opts TokensOptions) *Tokens {
	t.Helper()
	tok, err := NewTokens(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// startListener runs a listener on dsn until the test ends and waits until it listens.
func startListener(t *testing.T, dsn string) *store.Listener {
	t.Helper()
	l, err := store.NewListener(dsn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 10*time.Second, "listener to listen", l.Listening)
	return l
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func TestTokensOnPostgres(t *testing.T) {
	st := &sharedState{pg: testkit.StartPostgres(t)}

	t.Run("lifecycle", func(t *testing.T) {
		ctx := context.Background()
		_, db := st.fresh(t)
		rec := &memRecorder{}
		tok := newTokensOn(t, db, TokensOptions{Recorder: rec})
		secret, info, err := tok.Create(ctx, CreateRequest{Name: "svc", Kind: Service, Groups: []string{"etl"}, CreatedBy: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := tok.Create(ctx, CreateRequest{Name: "SVC", Kind: Service}); !errors.Is(err, ErrTokenNameTaken) {
			t.Fatalf("duplicate name: %v", err)
		}
		id, err := tok.Authenticate(ctx, "svc", secret)
		if err != nil || id.Subject != "svc" || id.TokenID != info.ID || len(id.Groups) != 1 {
			t.Fatalf("authenticate: %+v %v", id, err)
		}
		// Change the last character (to one it is not: a secret ending in "A" made this
		// "wrong" secret the right one, 1 run in 64).
		last := "A"
		if strings.HasSuffix(secret, "A") {
			last = "B"
		}
		if _, err := tok.Authenticate(ctx, "svc", secret[:len(secret)-1]+last); Cause(err) != CauseBadSecret && Cause(err) != CauseMalformed {
			t.Fatalf("wrong secret: %v", err)
		}
		var raw []byte
		if err := db.QueryRowContext(ctx, `SELECT secret_hash FROM identity_tokens WHERE id = $1`, info.ID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if len(raw) != 32 || bytes.Contains([]byte(secret), raw) {
			t.Fatalf("stored secret form: %d bytes", len(raw))
		}
		list, err := tok.List(ctx)
		if err != nil || len(list) != 1 || list[0].State(time.Now()) != "active" || list[0].LastUsedAt.IsZero() {
			t.Fatalf("list: %+v %v", list, err)
		}
		if err := tok.Revoke(ctx, "svc"); err != nil {
			t.Fatal(err)
		}
		wantCause(t, func() error { _, err := tok.Authenticate(ctx, "svc", secret); return err }(), CauseRevoked)
		wantCause(t, tok.StillValid(ctx, id), CauseRevoked)
		if err := tok.Revoke(ctx, "svc"); !errors.Is(err, ErrTokenNotFound) {
			t.Fatalf("second revoke: %v", err)
		}
		if _, _, err := tok.Create(ctx, CreateRequest{Name: "svc", Kind: Service}); err != nil {
			t.Fatalf("name of a revoked token: %v", err)
		}
		var gen int64
		if err := db.QueryRowContext(ctx, `SELECT value FROM identity_meta WHERE key = 'revocation_generation'`).Scan(&gen); err != nil || gen != 1 {
			t.Fatalf("revocation generation %d %v", gen, err)
		}
		if len(rec.events) != 3 {
			t.Fatalf("%d ledger events, want 3", len(rec.events))
		}
	})

	// With its clock frozen, instance B re-reads the store only when told to: a revocation
	// through A must reach it by notification, and again after the LISTEN connection was cut
	// and came back.
	t.Run("notification", func(t *testing.T) {
		ctx := context.Background()
		dsn, db := st.fresh(t)
		a := newTokensOn(t, db, TokensOptions{})
		l := startListener(t, dsn)
		frozen := time.Now()
		b := newTokensOn(t, db, TokensOptions{Invalidations: l, Now: func() time.Time { return frozen }})
		ids := map[string]*Identity{}
		for _, n := range []string{"one", "two", "keep"} {
			s, _, err := a.Create(ctx, CreateRequest{Name: n, Kind: Agent, TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if ids[n], err = b.Authenticate(ctx, n, s); err != nil {
				t.Fatal(err)
			}
			if err := b.StillValid(ctx, ids[n]); err != nil {
				t.Fatal(err)
			}
		}
		revokeAndSee := func(name string) time.Duration {
			t.Helper()
			if err := a.Revoke(ctx, name); err != nil {
				t.Fatal(err)
			}
			return waitFor(t, 3*time.Second, "B to see the revocation of "+name, func() bool { return b.StillValid(ctx, ids[name]) != nil })
		}
		t.Logf("revocation seen through NOTIFY after %s", revokeAndSee("one"))

		pid := l.BackendPID()
		if _, err := db.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, int(pid)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the listener to reconnect", func() bool { return l.Listening() && l.BackendPID() != pid })
		t.Logf("after reconnecting, revocation seen after %s", revokeAndSee("two"))
		if err := b.StillValid(ctx, ids["keep"]); err != nil {
			t.Fatalf("unrelated token: %v", err)
		}
	})

	// Without notifications (the listener cannot connect), B polls every cache TTL.
	t.Run("poll fallback", func(t *testing.T) {
		ctx := context.Background()
		_, db := st.fresh(t)
		l, err := store.NewListener("host=127.0.0.1 port=1 user=nobody connect_timeout=1", slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go l.Run(lctx)
		a := newTokensOn(t, db, TokensOptions{})
		clk := newClock()
		b := newTokensOn(t, db, TokensOptions{Invalidations: l, Now: clk.Now})
		s, _, err := a.Create(ctx, CreateRequest{Name: "gone", Kind: Agent})
		if err != nil {
			t.Fatal(err)
		}
		id, err := b.Authenticate(ctx, "gone", s)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.StillValid(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := a.Revoke(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		if l.Listening() {
			t.Fatal("listener to a closed port listens")
		}
		if err := b.StillValid(ctx, id); err != nil {
			t.Fatalf("seen before the cache TTL passed (nothing should have told B): %v", err)
		}
		clk.Advance(MaxCacheTTL)
		wantCause(t, b.StillValid(ctx, id), CauseRevoked)
	})
}
