package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// endpoint is one way of reaching the benchmark database.
type endpoint struct {
	host     string
	port     int
	user     string
	password string
	db       string
}

func (e endpoint) dsn() string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable connect_timeout=10", e.host, e.port, e.user, e.password, e.db)
}

// env is the libpq environment for pgbench.
func (e endpoint) env() []string {
	return []string{"PGHOST=" + e.host, "PGPORT=" + strconv.Itoa(e.port), "PGUSER=" + e.user, "PGPASSWORD=" + e.password,
		"PGDATABASE=" + e.db, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10"}
}

// gatehouse is a running `gatehouse serve`, or the reason there is none.
type gatehouse struct {
	*process
	name        string
	ep          endpoint
	unavailable string
	// mcpURL is the MCP door's endpoint ("" when the build has no MCP door).
	mcpURL string
	// httpURL is the HTTP listener (console, API); cfgPath the configuration file, for
	// further CLI calls; env the environment those need.
	httpURL, cfgPath string
	env              []string
}

// gatehouseSpec says how to configure one Gatehouse under test.
type gatehouseSpec struct {
	name string
	// durability is the ledger.durability value to configure ("" leaves the key out: the
	// build's default).
	durability string
	// profile is where `serve --cpuprofile` writes Gatehouse's CPU profile ("" for none).
	profile string
	// ledgerDSN, when set, configures the PostgreSQL ledger store (ledger.store: postgres)
	// at that DSN instead of the embedded one.
	ledgerDSN string
	// prepare, when set, fills the data directory before Gatehouse first starts (the
	// console row loads a large ledger into it).
	prepare func(ctx context.Context, dataDir string) error
}

// startGatehouse configures and starts the binary under test with the built-in default
// policy (masking on) and the embedded ledger, and creates a service token for the clients.
// A binary that cannot serve, or does not know the configured durability, is reported as
// not available instead of failing the whole run.
func startGatehouse(ctx context.Context, bin string, spec gatehouseSpec, work string, pg *cluster, log *slog.Logger) (*gatehouse, error) {
	na := func(why string) *gatehouse {
		log.Warn("Gatehouse not available", "leg", spec.name, "why", why)
		return &gatehouse{name: spec.name, unavailable: why}
	}
	if _, err := os.Stat(bin); err != nil {
		return na(fmt.Sprintf("%s does not exist (make build)", bin)), nil
	}
	dir := filepath.Join(work, spec.name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	pgPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	mcpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	ledger := ""
	if spec.durability != "" {
		ledger += fmt.Sprintf("  durability: %s\n", spec.durability)
	}
	if spec.ledgerDSN != "" {
		ledger += fmt.Sprintf("  store: postgres\n  dsn: %q\n", spec.ledgerDSN)
	}
	if ledger != "" {
		ledger = "ledger:\n" + ledger
	}
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	mcpListen := fmt.Sprintf("  mcp: \"127.0.0.1:%d\"\n", mcpPort)
	cfg := fmt.Sprintf(`listen:
  postgres: "127.0.0.1:%d"
  http: "127.0.0.1:%d"
%sdata_dir: %q
tls:
  mode: auto
%stargets:
  - name: main
    engine: postgres
    environment: dev
    host: 127.0.0.1
    port: %d
    database: app
    user: %s
    password_env: BENCH_UPSTREAM_PASSWORD
    tls:
      mode: disable
`, pgPort, httpPort, "{MCP}", filepath.Join(dir, "data"), ledger, pg.port, pg.user)
	env := append(cleanEnv(), "BENCH_UPSTREAM_PASSWORD="+pg.password)
	if spec.prepare != nil {
		if err := spec.prepare(ctx, filepath.Join(dir, "data")); err != nil {
			return nil, err
		}
	}
	// A build without the MCP door does not know listen.mcp: configure it only when the
	// configuration loads with it.
	withMCP := strings.Replace(cfg, "{MCP}", mcpListen, 1)
	if err := os.WriteFile(cfgPath, []byte(withMCP), 0o600); err != nil {
		return nil, err
	}
	check := exec.CommandContext(ctx, bin, "--config", cfgPath, "targets")
	check.Env = env
	mcpURL := fmt.Sprintf("http://127.0.0.1:%d/mcp", mcpPort)
	if out, err := check.CombinedOutput(); err != nil && strings.Contains(string(out), "mcp") {
		mcpURL = ""
		if err := os.WriteFile(cfgPath, []byte(strings.Replace(cfg, "{MCP}", "", 1)), 0o600); err != nil {
			return nil, err
		}
	}
	tokenCmd := exec.CommandContext(ctx, bin, "--config", cfgPath, "token", "create", "--name", "bench", "--kind", "service", "--ttl", "2h")
	tokenCmd.Env = env
	var stderr bytes.Buffer
	tokenCmd.Stderr = &stderr
	out, err := tokenCmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if spec.durability != "" && strings.Contains(msg, "durability") {
			return na("n/a: this build has no ledger.durability"), nil
		}
		return na(fmt.Sprintf("`gatehouse token create` failed: %v: %s", err, msg)), nil
	}
	secret := firstLine(string(out))
	if secret == "" {
		return na("`gatehouse token create` printed no secret"), nil
	}
	args := []string{"--config", cfgPath, "--log-level", "warn", "serve"}
	if spec.profile != "" {
		args = append(args, "--cpuprofile", spec.profile)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p, err := start(spec.name, cmd, filepath.Join(work, spec.name+".log"))
	if err != nil {
		return na(err.Error()), nil
	}
	g := &gatehouse{process: p, name: spec.name, ep: endpoint{host: "127.0.0.1", port: pgPort, user: "bench", password: secret, db: "main"}, mcpURL: mcpURL,
		httpURL: fmt.Sprintf("http://127.0.0.1:%d", httpPort), cfgPath: cfgPath, env: env}
	if err := waitPG(ctx, p, g.ep.dsn()); err != nil {
		g.stop()
		return na(err.Error()), nil
	}
	log.Info("Gatehouse ready", "leg", spec.name, "port", pgPort, "durability", spec.durability, "profile", spec.profile != "")
	return g, nil
}

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return strings.TrimSpace(sc.Text())
	}
	return ""
}
