// Package demo runs Gatehouse in front of a throwaway PostgreSQL holding a realistic sample
// shop, with three identities, so a newcomer sees identity binding, guardrails, masking and
// the ledger within a minute of `make demo`.
package demo

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/certs"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/server"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

//go:embed sample.sql
var sampleSQL string

// SampleSQL is the sample shop's schema and data, for tests that want the same rows.
func SampleSQL() string { return sampleSQL }

// Options shape a demo run.
type Options struct {
	// Listen is the PostgreSQL address (default 127.0.0.1:15432); HTTP the health/metrics one.
	Listen string
	HTTP   string
	// MCP is the MCP door's address (default 127.0.0.1:15433).
	MCP string
	Log *slog.Logger
}

// Persona is one demo identity with its ready-to-use secret.
type Persona struct {
	Name, Kind, Role, Secret string
	Groups                   []string
}

// Demo is a running demo.
type Demo struct {
	Instance *server.Instance
	Upstream *testkit.Postgres
	Personas []Persona
	CAFile   string
	// ConfigFile is the demo's configuration, for GATEHOUSE_CONFIG.
	ConfigFile string
	dir        string
}

// Start builds the sample database and starts Gatehouse in front of it. Close removes all.
func Start(ctx context.Context, opts Options) (d *Demo, err error) {
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:15432"
	}
	if opts.HTTP == "" {
		opts.HTTP = "127.0.0.1:8080"
	}
	if opts.MCP == "" {
		opts.MCP = "127.0.0.1:15433"
	}
	dir, err := os.MkdirTemp("", "gatehouse-demo-")
	if err != nil {
		return nil, fmt.Errorf("make demo directory: %w", err)
	}
	d = &Demo{dir: dir}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.Upstream, err = testkit.NewPostgres(ctx, ""); err != nil {
		return nil, fmt.Errorf("start the sample PostgreSQL: %w", err)
	}
	pg := d.Upstream
	// Roles are cluster-wide; each database gets the sample and the grants.
	if err := pg.ExecContext(ctx, "postgres", "CREATE ROLE shop_read NOLOGIN; CREATE ROLE shop_write NOLOGIN"); err != nil {
		return nil, fmt.Errorf("create the sample roles: %w", err)
	}
	for _, db := range []string{"shop", "shop_staging"} {
		if err := pg.ExecContext(ctx, "postgres", "CREATE DATABASE "+db); err != nil {
			return nil, err
		}
		if err := pg.ExecContext(ctx, db, sampleSQL+`
			GRANT SELECT ON ALL TABLES IN SCHEMA public TO shop_read;
			GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO shop_write;
			GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO shop_write;`); err != nil {
			return nil, fmt.Errorf("load the sample shop into %s: %w", db, err)
		}
	}
	pwFile := filepath.Join(dir, "upstream-password")
	if err := os.WriteFile(pwFile, []byte(pg.Password), 0o600); err != nil {
		return nil, err
	}
	// The demo's configuration is a real file, so every other command (targets, catalog
	// show, approvals, policy test, audit ...) reads the same one: GATEHOUSE_CONFIG=<file>.
	d.ConfigFile = filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(d.ConfigFile, []byte(configYAML(opts, filepath.Join(dir, "data"), pg, pwFile)), 0o600); err != nil {
		return nil, fmt.Errorf("write the demo configuration: %w", err)
	}
	loaded, err := config.Load(d.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("read back the demo configuration: %w", err)
	}
	cfg := *loaded
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if d.Instance, err = server.Start(ctx, &cfg, server.Options{Log: log}); err != nil {
		return nil, err
	}
	d.CAFile = certs.CAPath(cfg.DataDir)
	for _, p := range []Persona{
		{Name: "alice@corp.example", Kind: "human", Role: "analyst", Groups: []string{"analysts"}},
		{Name: "dana@corp.example", Kind: "human", Role: "DBA", Groups: []string{"dba"}},
		{Name: "support-bot", Kind: "agent", Role: "AI agent", Groups: []string{"support"}},
		{Name: "sam@corp.example", Kind: "human", Role: "second DBA, approves", Groups: []string{"dba"}},
		{Name: "casey@corp.example", Kind: "human", Role: "compliance, sees raw values", Groups: []string{"compliance"}},
	} {
		secret, _, err := d.Instance.Tokens().Create(ctx, identity.CreateRequest{
			Name: p.Name, Kind: identity.Kind(p.Kind), Groups: p.Groups, TTL: 24 * time.Hour, CreatedBy: "demo",
		})
		if err != nil {
			return nil, fmt.Errorf("create demo identity %s: %w", p.Name, err)
		}
		p.Secret = secret
		d.Personas = append(d.Personas, p)
	}
	return d, nil
}

// configYAML is the demo's configuration file: the two sample targets (prod and staging) on
// the sample cluster, with least-privilege roles for read and write grants.
func configYAML(opts Options, dataDir string, pg *testkit.Postgres, pwFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by gatehouse demo; removed when the demo stops.\n")
	fmt.Fprintf(&b, "listen:\n  postgres: %q\n  http: %q\n  mcp: %q\n", opts.Listen, opts.HTTP, opts.MCP)
	fmt.Fprintf(&b, "data_dir: %q\n", dataDir)
	fmt.Fprintf(&b, "targets:\n")
	for _, t := range []struct{ name, env, db string }{{"shop", "prod", "shop"}, {"shop-staging", "staging", "shop_staging"}} {
		fmt.Fprintf(&b, "  - name: %s\n    engine: postgres\n    environment: %s\n    labels: {team: commerce}\n", t.name, t.env)
		fmt.Fprintf(&b, "    host: %q\n    port: %d\n    database: %s\n    user: %q\n    password_file: %q\n", pg.Host, pg.Port, t.db, pg.User, pwFile)
		fmt.Fprintf(&b, "    roles: {read: shop_read, write: shop_write}\n")
	}
	return b.String()
}

// PsqlCommand is a ready-to-paste psql command for persona p on target.
func (d *Demo) PsqlCommand(p Persona, target string) string {
	host, port, _ := net.SplitHostPort(d.Instance.PostgresAddr())
	if host == "127.0.0.1" {
		host = "localhost"
	}
	return fmt.Sprintf("PGPASSWORD='%s' psql \"host=%s port=%s dbname=%s user=%s sslmode=verify-full sslrootcert=%s\"",
		p.Secret, host, port, target, p.Name, d.CAFile)
}

// PrintWelcome tells the user what is running and how to try it.
func (d *Demo) PrintWelcome(w io.Writer) {
	fmt.Fprintf(w, "\nGatehouse demo is running.\n")
	fmt.Fprintf(w, "  PostgreSQL door  %s (TLS; targets: shop = prod, shop-staging = staging)\n", d.Instance.PostgresAddr())
	fmt.Fprintf(w, "  health/metrics   http://%s/healthz  /metrics\n", d.Instance.HTTPAddr())
	fmt.Fprintf(w, "  console          http://%s/console/ (one-click sign-in per identity below: single-use, valid 1 h, this machine only)\n", d.Instance.HTTPAddr())
	fmt.Fprintf(w, "  sample data      customers (names, emails, phones, cards, SSNs, birth dates, API keys, password hashes), orders, payments\n\n")
	for _, p := range d.Personas {
		fmt.Fprintf(w, "# %s — %s (%s, groups %v)\n%s\n", p.Role, p.Name, p.Kind, p.Groups, d.PsqlCommand(p, "shop"))
		if link, err := d.Instance.Console().SignInLink(p.Secret, time.Hour); err == nil {
			fmt.Fprintf(w, "console: %s\n", link)
		}
		if p.Kind == "agent" && d.Instance.MCPAddr() != "" {
			fmt.Fprintf(w, "MCP:     http://%s/mcp with header \"Authorization: Bearer %s\"  (or: GATEHOUSE_TOKEN='%s' ./bin/gatehouse mcp --server http://%s/mcp)\n",
				d.Instance.MCPAddr(), p.Secret, p.Secret, d.Instance.MCPAddr())
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Things to try:\n")
	fmt.Fprintf(w, "  SELECT full_name, email, ssn, card_number FROM customers LIMIT 5;   -- masked for the analyst and the agent\n")
	fmt.Fprintf(w, "  DELETE FROM orders;                                                -- refused: no WHERE clause\n")
	fmt.Fprintf(w, "  DROP TABLE payments;                                               -- refused in production (try as the DBA)\n")
	fmt.Fprintf(w, "  UPDATE orders SET status = 'paid' WHERE id = 1;                    -- the analyst only has read access to prod\n")
	fmt.Fprintf(w, "  ALTER TABLE orders ADD COLUMN note text;                           -- as the DBA: held for approval in production\n")
	if len(d.Personas) > 3 {
		fmt.Fprintf(w, "      approve it as the second DBA, then run it again as the DBA:\n")
		fmt.Fprintf(w, "      GATEHOUSE_TOKEN='%s' ./bin/gatehouse approvals approve apr_… --server http://%s\n", d.Personas[3].Secret, d.Instance.HTTPAddr())
	}
	fmt.Fprintf(w, "  connect to dbname=shop-staging to see the staging rules\n\n")
	fmt.Fprintf(w, "The other commands read the demo's configuration, in another terminal:\n")
	fmt.Fprintf(w, "  export GATEHOUSE_CONFIG=%s\n", d.ConfigFile)
	fmt.Fprintf(w, "  ./bin/gatehouse targets\n")
	fmt.Fprintf(w, "  ./bin/gatehouse catalog show shop                   # the sensitive columns found, with evidence\n")
	fmt.Fprintf(w, "  ./bin/gatehouse approvals list --status pending\n")
	fmt.Fprintf(w, "  ./bin/gatehouse audit search --since 1h               # everything above, on the ledger\n")
	fmt.Fprintf(w, "  ./bin/gatehouse audit pii-readers --since 1h          # who read personal data\n")
	fmt.Fprintf(w, "  ./bin/gatehouse audit who-dropped payments\n")
	fmt.Fprintf(w, "  ./bin/gatehouse audit verify                          # the hash chain and signed checkpoints\n")
	fmt.Fprintf(w, "  ./bin/gatehouse policy test --as alice@corp.example --target shop \"DELETE FROM orders\"\n\n")
	fmt.Fprintf(w, "Ctrl-C stops everything and removes what the demo created.\n")
}

// Close stops Gatehouse and the sample database and removes every file the demo made.
func (d *Demo) Close() {
	if d.Instance != nil {
		_ = d.Instance.Close()
	}
	if d.Upstream != nil {
		d.Upstream.Stop()
	}
	_ = os.RemoveAll(d.dir)
}
