// Package servertest starts a complete Gatehouse in front of a throwaway PostgreSQL cluster
// for integration tests, exactly as `gatehouse serve` assembles it, so tests prove what runs.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/certs"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/server"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// PermissivePolicy grants every known identity admin and has no rules, for tests about the
// protocol rather than about policy.
const PermissivePolicy = `version: 1
grants:
  - name: everyone-admin
    kinds: [human, service, agent]
    level: admin
rules: []
masking:
  default: none
`

// Options shape the instance.
type Options struct {
	// PolicyYAML is the policy file's text; empty means PermissivePolicy. Use "default" for
	// the built-in default policy.
	PolicyYAML string
	// Environment of the target (default "dev").
	Environment string
	// Upstream reuses a running cluster instead of starting one.
	Upstream *testkit.Postgres
	// Configure may change the configuration before start.
	Configure func(*config.Config)
	// Log receives the instance's logs (default: discarded unless GATEHOUSE_TEST_LOG is set).
	Log *slog.Logger
	// SharedStoreDSN, if set, keeps the ledger, tokens and approvals in that PostgreSQL
	// database, as several instances sharing one store do.
	SharedStoreDSN string
	// Instance names the ledger chain (default the host name); instances sharing a store in
	// one test need distinct names.
	Instance string
	// KeysFrom copies the approval and masking keys from another instance's data directory,
	// as an operator adding an instance to a shared store does.
	KeysFrom string
}

// Proxy is a running Gatehouse with its upstream.
type Proxy struct {
	Host     string
	Port     int
	CAFile   string
	Target   string
	HTTPAddr string
	DataDir  string
	Upstream *testkit.Postgres
	Instance *server.Instance
	Config   *config.Config
}

// Start starts the upstream (database "app") and Gatehouse with target "main" pointing at it.
// Everything stops when the test ends.
func Start(t testing.TB, opts Options) *Proxy {
	t.Helper()
	pg := opts.Upstream
	if pg == nil {
		pg = testkit.StartPostgres(t)
		pg.Exec(t, "postgres", "CREATE DATABASE app")
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "upstream-password")
	if err := os.WriteFile(pwFile, []byte(pg.Password), 0o600); err != nil {
		t.Fatalf("write upstream password: %v", err)
	}
	cfg := config.Defaults()
	cfg.Path = filepath.Join(dir, "gatehouse.yaml")
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Listen = config.Listen{Postgres: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	env := opts.Environment
	if env == "" {
		env = "dev"
	}
	cfg.Targets = []config.Target{{
		Name: "main", Engine: "postgres", Environment: env, Host: pg.Host, Port: pg.Port,
		Database: "app", User: pg.User, PasswordFile: pwFile, TLS: config.TargetTLS{Mode: "disable"},
	}}
	switch opts.PolicyYAML {
	case "default":
	default:
		text := opts.PolicyYAML
		if text == "" {
			text = PermissivePolicy
		}
		cfg.Policy = filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(cfg.Policy, []byte(text), 0o600); err != nil {
			t.Fatalf("write policy: %v", err)
		}
	}
	if opts.SharedStoreDSN != "" {
		cfg.Ledger.Store, cfg.Ledger.DSN = "postgres", opts.SharedStoreDSN
	}
	if opts.KeysFrom != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			t.Fatalf("create data directory: %v", err)
		}
		for _, name := range []string{approval.KeyFile, "mask.key"} {
			b, err := os.ReadFile(filepath.Join(opts.KeysFrom, name))
			if err != nil {
				t.Fatalf("copy key: %v", err)
			}
			if err := os.WriteFile(filepath.Join(cfg.DataDir, name), b, 0o600); err != nil {
				t.Fatalf("copy key: %v", err)
			}
		}
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	log := opts.Log
	if log == nil {
		if os.Getenv("GATEHOUSE_TEST_LOG") != "" {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			log = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := server.Start(ctx, &cfg, server.Options{Log: log, Instance: opts.Instance})
	if err != nil {
		t.Fatalf("start gatehouse: %v", err)
	}
	t.Cleanup(func() { _ = inst.Close() })
	host, port, _ := net.SplitHostPort(inst.PostgresAddr())
	p, _ := strconv.Atoi(port)
	return &Proxy{
		Host: host, Port: p, CAFile: certs.CAPath(cfg.DataDir), Target: "main", HTTPAddr: inst.HTTPAddr(),
		DataDir: cfg.DataDir, Upstream: pg, Instance: inst, Config: &cfg,
	}
}

// Token creates a Gatehouse token and returns its secret; log in with user=name.
func (p *Proxy) Token(t testing.TB, name, kind string, groups ...string) string {
	t.Helper()
	secret, _, err := p.Instance.Tokens().Create(context.Background(), identity.CreateRequest{
		Name: name, Kind: identity.Kind(kind), Groups: groups, TTL: time.Hour, CreatedBy: "test",
	})
	if err != nil {
		t.Fatalf("create token %s: %v", name, err)
	}
	return secret
}

// DSN is a libpq keyword/value connection string through Gatehouse over verified TLS.
func (p *Proxy) DSN(user, secret, db string) string {
	if db == "" {
		db = p.Target
	}
	return "host=localhost port=" + strconv.Itoa(p.Port) + " user=" + user + " password=" + secret +
		" dbname=" + db + " sslmode=verify-full sslrootcert=" + p.CAFile
}
