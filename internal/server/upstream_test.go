package server_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// TestUpstreamTLSAndMD5 connects Gatehouse to an upstream that requires MD5 password
// authentication and speaks TLS, in each upstream TLS mode, and proves the session really is
// encrypted upstream — and that verify-full refuses a server its CA did not sign.
func TestUpstreamTLSAndMD5(t *testing.T) {
	ctx := context.Background()
	pg := testkit.StartPostgresWith(t, testkit.PostgresOptions{Auth: "md5", TLS: true})
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "postgres", "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN SUPERUSER PASSWORD 'md5-secret'")
	var stored string
	if c, err := pgx.Connect(ctx, pg.DSN("postgres")); err != nil {
		t.Fatal(err)
	} else {
		if err := c.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'").Scan(&stored); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	if !strings.HasPrefix(stored, "md5") {
		t.Fatalf("fixture: md5user's password is stored as %q, not md5", stored[:8])
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("md5-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongCA := filepath.Join(t.TempDir(), "wrong-ca.pem")
	other := testkit.StartPostgresWith(t, testkit.PostgresOptions{TLS: true})
	b, _ := os.ReadFile(other.CAFile)
	os.WriteFile(wrongCA, b, 0o600)

	for _, tc := range []struct {
		mode, ca string
		wantSSL  bool
		wantErr  string
	}{
		{mode: "disable", wantSSL: false},
		{mode: "require", wantSSL: true},
		{mode: "verify-full", ca: pg.CAFile, wantSSL: true},
		{mode: "verify-full", ca: wrongCA, wantErr: "08006"},
	} {
		t.Run(tc.mode+"-"+filepath.Base(tc.ca), func(t *testing.T) {
			p := servertest.Start(t, servertest.Options{Upstream: pg, Configure: func(c *config.Config) {
				c.Targets[0].User = "md5user"
				c.Targets[0].PasswordFile = pwFile
				c.Targets[0].TLS = config.TargetTLS{Mode: tc.mode, CAFile: tc.ca}
			}})
			secret := p.Token(t, "svc", "service")
			conn, err := pgx.Connect(ctx, p.DSN("svc", secret, ""))
			if tc.wantErr != "" {
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != tc.wantErr {
					t.Fatalf("want %s, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var ssl bool
			var user string
			if err := conn.QueryRow(ctx, "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &user); err != nil {
				t.Fatal(err)
			}
			if ssl != tc.wantSSL || user != "md5user" {
				t.Fatalf("upstream ssl=%v user=%s, want ssl=%v md5user", ssl, user, tc.wantSSL)
			}
		})
	}
}
