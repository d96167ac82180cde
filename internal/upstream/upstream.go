// Package upstream connects Gatehouse to a target database with the target's own credentials,
// shared by every door: the PostgreSQL door takes over the raw connection and relays bytes,
// other doors (MCP, later MySQL) run statements on it. The credentials never leave this
// package's callers' process and are never shown to a client.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/config"
)

// DefaultConnectTimeout bounds connecting to a target when the caller sets none.
const DefaultConnectTimeout = 10 * time.Second

// Request says which connection a session needs: the target, the database on it, and the
// startup parameters (including "role", the least-privileged upstream role of the session).
type Request struct {
	Target   *config.Target
	Database string
	// Params are startup parameters sent upstream (application_name, options, role, ...).
	Params map[string]string
	// Timeout bounds the connect (default DefaultConnectTimeout).
	Timeout time.Duration
}

// Config builds the pgconn configuration for r: host, port, database, the target's user and
// secret, TLS per the target's mode. Nothing comes from PG* environment variables.
func Config(r Request) (*pgconn.Config, error) {
	t := r.Target
	if t == nil {
		return nil, errors.New("upstream: no target")
	}
	secret, err := t.Secret()
	if err != nil {
		return nil, err
	}
	// ParseConfig is the only way to get a config pgconn.Connect accepts; every field it may
	// have taken from PG* environment variables is overwritten below.
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, fmt.Errorf("build upstream config: %w", err)
	}
	database := r.Database
	if database == "" {
		database = t.Database
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.Database = t.Host, uint16(t.Port), t.User, secret, database
	cfg.Fallbacks = nil
	cfg.RuntimeParams = map[string]string{}
	for k, v := range r.Params {
		cfg.RuntimeParams[k] = v
	}
	cfg.ConnectTimeout = r.Timeout
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	cfg.ValidateConnect = nil
	cfg.AfterConnect = nil
	cfg.TLSConfig, err = tlsConfig(t)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func tlsConfig(t *config.Target) (*tls.Config, error) {
	switch t.TLS.Mode {
	case "", "disable":
		return nil, nil
	case "require":
		return &tls.Config{InsecureSkipVerify: true}, nil //nolint:gosec // sslmode=require semantics: encrypt, do not verify
	case "verify-full":
		tc := &tls.Config{ServerName: t.Host, MinVersion: tls.VersionTLS12}
		if t.TLS.CAFile != "" {
			pem, err := os.ReadFile(t.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read upstream CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("upstream CA file %s holds no PEM certificate", t.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		return tc, nil
	default:
		return nil, fmt.Errorf("unknown upstream TLS mode %q", t.TLS.Mode)
	}
}

// Connect logs in to the target through pgconn (which implements SCRAM, MD5 and TLS) and
// returns the open connection, ready for statements.
func Connect(ctx context.Context, r Request) (*pgconn.PgConn, error) {
	cfg, err := Config(r)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	pc, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, cleanConnectError(err)
	}
	return pc, nil
}

// Hijack connects as Connect does, then takes over the raw connection for a door that relays
// protocol messages itself.
func Hijack(ctx context.Context, r Request) (*pgconn.HijackedConn, error) {
	pc, err := Connect(ctx, r)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	defer cancel()
	if err := pc.SyncConn(cctx); err != nil {
		_ = pc.Close(ctx)
		return nil, fmt.Errorf("sync upstream connection: %w", err)
	}
	h, err := pc.Hijack()
	if err != nil {
		_ = pc.Close(ctx)
		return nil, fmt.Errorf("take over upstream connection: %w", err)
	}
	return h, nil
}

// cleanConnectError keeps the useful part of a pgconn connect error (the server's message
// or the network failure) without repeating the connection parameters.
func cleanConnectError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Errorf("upstream refused the connection: %s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("upstream did not answer in time")
	}
	return err
}
