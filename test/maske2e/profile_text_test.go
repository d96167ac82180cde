package maske2e

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// TestProfileFreeText checks that notices and error messages relayed to a masked session
// are masked with that session's masking profile, as its rows are: a profile that shows
// e-mail addresses raw sees them raw in a notice, a stricter one sees every value redacted,
// and the default profile keeps its partial masks.
func TestProfileFreeText(t *testing.T) {
	e := startEnv(t)
	p := servertest.Start(t, servertest.Options{Upstream: e.pg, PolicyYAML: `version: 1
grants:
  - name: everyone-admin
    kinds: [service]
    level: admin
masking:
  default: default
  profiles:
    support:
      raw: [email]
      strategies:
        ssn: hash
        card: redact
    lockdown:
      strategies:
        "*": redact
  raw_access:
    - name: support-desk
      groups: [support]
      profile: support
    - name: contractors
      groups: [contractor]
      profile: lockdown
`})
	tp := startTap(t, p)
	ctx := ctxT(t, time.Minute)
	first := e.fx.customers[0] // ssn 123-45-6789, card 4242424242424242

	type seen struct {
		notice, errMsg, errDetail string
		captured                  []byte
	}
	run := func(t *testing.T, user string, groups ...string) seen {
		t.Helper()
		cfg, err := pgx.ParseConfig(tp.dsn(user, p.Token(t, user, "service", groups...)))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var notices []string
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
			mu.Lock()
			notices = append(notices, n.Message)
			mu.Unlock()
		}
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		c, err := pgx.ConnectConfig(cctx, cfg)
		if err != nil {
			t.Fatalf("connect %s: %v", user, err)
		}
		defer c.Close(context.Background())
		tp.take()
		var out seen
		if _, err := c.Exec(ctx, "SELECT notice_first_email()"); err != nil {
			t.Fatalf("%s: notice_first_email: %v", user, err)
		}
		_, err = c.Exec(ctx, "SELECT fail_with_ssn()")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "P0001" {
			t.Fatalf("%s: fail_with_ssn: want P0001, got %v", user, err)
		}
		out.errMsg, out.errDetail = pe.Message, pe.Detail
		out.captured = tp.take()
		mu.Lock()
		defer mu.Unlock()
		if len(notices) != 1 {
			t.Fatalf("%s: notices %q", user, notices)
		}
		out.notice = notices[0]
		return out
	}

	t.Run("support shows e-mail raw, hashes SSNs, redacts cards", func(t *testing.T) {
		s := run(t, "helpdesk", "support")
		if s.notice != "first customer: "+first.email {
			t.Errorf("notice %q, want the e-mail raw", s.notice)
		}
		if !strings.HasPrefix(s.errMsg, "bad record tok_") {
			t.Errorf("error message %q, want the SSN as a keyed token", s.errMsg)
		}
		if s.errDetail != "card [redacted]" {
			t.Errorf("error detail %q, want the card redacted", s.errDetail)
		}
		for _, l := range e.fx.leaks(s.captured) {
			if !strings.HasPrefix(l, "email: ") {
				t.Errorf("LEAK under the support profile: %s", l)
			}
		}
	})
	t.Run("lockdown redacts everything", func(t *testing.T) {
		s := run(t, "temp", "contractor")
		if s.notice != "first customer: [redacted]" || s.errMsg != "bad record [redacted]" || s.errDetail != "card [redacted]" {
			t.Errorf("notice %q, error %q / %q: want every value redacted", s.notice, s.errMsg, s.errDetail)
		}
		if l := e.fx.leaks(s.captured); len(l) > 0 {
			t.Errorf("LEAK under the lockdown profile: %v", l)
		}
	})
	t.Run("default keeps partial masks", func(t *testing.T) {
		s := run(t, "someone")
		email, ok := strings.CutPrefix(s.notice, "first customer: ")
		if !ok || email == first.email || !strings.HasSuffix(email, "@example.com") {
			t.Errorf("notice %q, want a partial e-mail mask", s.notice)
		}
		if s.errMsg != "bad record ***-**-6789" || s.errDetail == "card "+first.card || !strings.HasSuffix(s.errDetail, "4242") {
			t.Errorf("error %q / %q, want partial masks", s.errMsg, s.errDetail)
		}
		if l := e.fx.leaks(s.captured); len(l) > 0 {
			t.Errorf("LEAK under the default profile: %v", l)
		}
	})
}
