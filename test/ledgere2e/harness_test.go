// Package ledgere2e proves the ledger's promises end to end, through the real gatehouse binary
// and real PostgreSQL clusters: no event is lost for a statement that reached the database
// across repeated kill -9 under load, the proxy fails closed when its ledger store is down and
// recovers by itself, the auditors' questions are answered on both stores, and an exported
// ledger verifies offline and catches tampering. Unit tests of internal/ledger cannot show
// these, because they depend on how the gate, the door and the store behave together.
package ledgere2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/certs"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// binPath is the gatehouse binary TestMain builds once for the whole package (building it
// per test would cost most of the package's time budget).
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gatehouse-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "make bin dir:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "gatehouse")
	build := exec.Command("go", "build", "-o", binPath, "github.com/gatehouse/gatehouse/cmd/gatehouse")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build gatehouse:", err)
		return 2
	}
	return m.Run()
}

// envOptions shape one Gatehouse installation under test.
type envOptions struct {
	// LedgerDSN selects the PostgreSQL ledger store; empty means SQLite in the data dir.
	LedgerDSN       string
	CheckpointEvery int
	// CheckpointInterval is a duration in the configuration's syntax ("1s").
	CheckpointInterval string
	// Durability is ledger.durability ("" leaves the default, sensitive).
	Durability string
}

// env is one installation: an upstream cluster with database "app", a configuration file,
// a data directory and (when started) a `gatehouse serve` subprocess.
type env struct {
	t        *testing.T
	dir      string
	cfgPath  string
	dataDir  string
	cpFile   string
	pgPort   int
	httpPort int
	// portMu guards pgPort and httpPort, which movePorts changes while clients connect.
	portMu   sync.Mutex
	upstream *testkit.Postgres

	proc    *exec.Cmd
	procErr chan error
	logPath string
	starts  int
}

func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	up := testkit.StartPostgres(t)
	up.Exec(t, "postgres", "CREATE DATABASE app")
	dir := t.TempDir()
	e := &env{
		t: t, dir: dir, upstream: up,
		cfgPath: filepath.Join(dir, "gatehouse.yaml"),
		dataDir: filepath.Join(dir, "data"),
		// Outside the data directory, as an operator would put it (another disk, a WORM
		// bucket), so losing the store does not lose the checkpoints too.
		cpFile:   filepath.Join(dir, "external", "checkpoints.jsonl"),
		pgPort:   testkit.FreePort(t),
		httpPort: testkit.FreePort(t),
	}
	if err := os.MkdirAll(filepath.Dir(e.cpFile), 0o700); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "upstream-password")
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pwFile, []byte(up.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policy, []byte(servertest.PermissivePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if opts.CheckpointEvery == 0 {
		opts.CheckpointEvery = 1000
	}
	if opts.CheckpointInterval == "" {
		opts.CheckpointInterval = "1m"
	}
	ledgerCfg := "  store: sqlite\n"
	if opts.LedgerDSN != "" {
		ledgerCfg = "  store: postgres\n  dsn: " + strconv.Quote(opts.LedgerDSN) + "\n"
	}
	if opts.Durability != "" {
		ledgerCfg += "  durability: " + opts.Durability + "\n"
	}
	cfg := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:%d
  http: 127.0.0.1:%d
data_dir: %s
tls:
  mode: auto
policy_file: %s
targets:
  - name: main
    engine: postgres
    environment: dev
    host: %s
    port: %d
    database: app
    user: %s
    password_file: %s
    tls:
      mode: disable
ledger:
%s  checkpoint_every: %d
  checkpoint_interval: %s
  checkpoint_file: %s
`, e.pgPort, e.httpPort, strconv.Quote(e.dataDir), strconv.Quote(policy), up.Host, up.Port, up.User,
		strconv.Quote(pwFile), ledgerCfg, opts.CheckpointEvery, opts.CheckpointInterval, strconv.Quote(e.cpFile))
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cleanup)
	return e
}

// cli runs a gatehouse command against this installation's configuration.
func (e *env) cli(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append(args, "--config", e.cfgPath)...)
	var o, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &se
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("gatehouse %s: %w\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, o.String(), se.String())
	}
	return o.String(), se.String(), err
}

// mustCLI is cli that fails the test on error.
func (e *env) mustCLI(args ...string) string {
	e.t.Helper()
	out, _, err := e.cli(context.Background(), args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// token creates a token with the CLI, as an operator would, and returns its secret.
func (e *env) token(name, kind string) string {
	e.t.Helper()
	out := e.mustCLI("token", "create", "--name", name, "--kind", kind, "--ttl", "1h")
	secret := strings.TrimSpace(out)
	if secret == "" || strings.ContainsAny(secret, " \n") {
		e.t.Fatalf("token create printed %q, expected only the secret", out)
	}
	return secret
}

// start runs `gatehouse serve` and waits until it serves. Go test runs packages in
// parallel: while Gatehouse is down between kill -9s, another package's cluster or server may
// take its port; a start that fails with "address already in use" moves to new ports (the
// clients read them from e) instead of dialling the thief.
func (e *env) start() {
	e.t.Helper()
	if e.proc != nil {
		e.t.Fatal("start: already running")
	}
	for attempt := 1; ; attempt++ {
		err := e.launch()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "address already in use") || attempt == 3 {
			e.t.Fatalf("%v\n%s", err, e.serveLog())
		}
		e.movePorts()
	}
}

// launch starts `gatehouse serve` once and waits until its HTTP listener (opened after the
// PostgreSQL one) answers, or the process exits.
func (e *env) launch() error {
	e.starts++
	e.logPath = filepath.Join(e.dir, fmt.Sprintf("serve-%d.log", e.starts))
	logf, err := os.Create(e.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(binPath, "serve", "--config", e.cfgPath, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start gatehouse serve: %v", err)
	}
	e.proc = cmd
	e.procErr = make(chan error, 1)
	go func() { e.procErr <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-e.procErr:
			e.proc = nil
			return fmt.Errorf("gatehouse serve exited during start-up: %v: %s", err, e.serveLog())
		default:
		}
		if _, err := e.ready(context.Background()); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("gatehouse serve did not serve on %s within 30s\n%s", e.pgAddr(), e.serveLog())
	return nil
}

// movePorts gives the installation new free ports, in its configuration file too.
func (e *env) movePorts() {
	e.t.Helper()
	b, err := os.ReadFile(e.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	pg, http := testkit.FreePort(e.t), testkit.FreePort(e.t)
	cfg := strings.Replace(string(b), fmt.Sprintf("127.0.0.1:%d", e.pgPort), fmt.Sprintf("127.0.0.1:%d", pg), 1)
	cfg = strings.Replace(cfg, fmt.Sprintf("127.0.0.1:%d", e.httpPort), fmt.Sprintf("127.0.0.1:%d", http), 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.t.Logf("ports taken while Gatehouse was down: moving to %d (postgres) and %d (http)", pg, http)
	e.portMu.Lock()
	e.pgPort, e.httpPort = pg, http
	e.portMu.Unlock()
}

// ports returns the current ports (movePorts may change them while clients connect).
func (e *env) ports() (pg, http int) {
	e.portMu.Lock()
	defer e.portMu.Unlock()
	return e.pgPort, e.httpPort
}

func (e *env) kill() {
	e.t.Helper()
	if e.proc == nil {
		return
	}
	_ = e.proc.Process.Signal(syscall.SIGKILL)
	<-e.procErr
	e.proc = nil
}

// stop shuts the proxy down gracefully (SIGTERM) and fails the test if it does not exit
// cleanly within 20s.
func (e *env) stop() {
	e.t.Helper()
	if e.proc == nil {
		return
	}
	_ = e.proc.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.procErr:
		e.proc = nil
		if err != nil {
			e.t.Errorf("gatehouse serve exited with %v after SIGTERM\n%s", err, e.serveLog())
		}
	case <-time.After(20 * time.Second):
		e.kill()
		e.t.Errorf("gatehouse serve did not exit within 20s of SIGTERM\n%s", e.serveLog())
	}
}

func (e *env) cleanup() {
	if e.proc != nil {
		_ = e.proc.Process.Signal(syscall.SIGKILL)
		<-e.procErr
		e.proc = nil
	}
}

// serveLog is the tail of the current serve log, for failure messages.
func (e *env) serveLog() string {
	b, _ := os.ReadFile(e.logPath)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

func (e *env) pgAddr() string {
	pg, _ := e.ports()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(pg))
}

// ready asks the proxy's readiness endpoint, which reports the ledger's health.
func (e *env) ready(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, httpPort := e.ports()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// connConfig is how a client reaches target "main" through the proxy over verified TLS.
func (e *env) connConfig(user, secret, app string) (*pgx.ConnConfig, error) {
	pg, _ := e.ports()
	dsn := fmt.Sprintf("host=localhost port=%d user=%s password=%s dbname=main sslmode=verify-full sslrootcert=%s connect_timeout=3 application_name=%s",
		pg, user, secret, certs.CAPath(e.dataDir), app)
	return pgx.ParseConfig(dsn)
}

// connect opens a client connection through the proxy.
func (e *env) connect(ctx context.Context, user, secret, app string) (*pgx.Conn, error) {
	cfg, err := e.connConfig(user, secret, app)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// mustConnect is connect that fails the test on error.
func (e *env) mustConnect(user, secret, app string) *pgx.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.connect(ctx, user, secret, app)
	if err != nil {
		e.t.Fatalf("connect as %s through gatehouse: %v\n%s", user, err, e.serveLog())
	}
	e.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// direct opens a connection straight to the upstream (bypassing Gatehouse), to look at the
// database's own truth.
func (e *env) direct(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), e.upstream.DSN("app"))
	if err != nil {
		t.Fatalf("connect to upstream: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// verify runs `gatehouse audit verify` on the configured store (with the external checkpoint
// file) and fails the test with its report when it does not pass.
func (e *env) verify(when string) string {
	e.t.Helper()
	out, _, err := e.cli(context.Background(), "audit", "verify")
	if err != nil {
		e.t.Fatalf("audit verify %s: %v", when, err)
	}
	if !strings.Contains(out, "OK:") {
		e.t.Fatalf("audit verify %s exited 0 without saying OK:\n%s", when, out)
	}
	return out
}

// sqlState returns the SQLSTATE and message of a PostgreSQL error ("", err.Error() otherwise).
func sqlState(err error) (string, string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.Message
	}
	if err == nil {
		return "", ""
	}
	return "", err.Error()
}

// restartablePostgres restarts a cluster that testkit started and that was killed, on the
// same data directory and port: testkit has Kill but no restart, and a store that comes back
// with its data is what recovery means.
type restartablePostgres struct {
	pg   *testkit.Postgres
	cmd  *exec.Cmd
	done chan struct{}
}

// restart starts postgres again on pg's directory and port, waits until it accepts
// connections and stops it when the test ends (before testkit removes the directory).
func restartPostgres(t *testing.T, pg *testkit.Postgres) *restartablePostgres {
	t.Helper()
	bin, err := testkit.PGBinDir()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(pg.Dir, "restart.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", filepath.Join(pg.Dir, "data"), "-p", strconv.Itoa(pg.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+pg.Dir,
		"-c", "max_connections=200", "-c", "shared_buffers=64MB")
	cmd.Dir = pg.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		_ = os.Chown(logPath, uid, gid)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart postgres: %v", err)
	}
	r := &restartablePostgres{pg: pg, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(r.done) }()
	t.Cleanup(r.stop)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("restarted postgres exited:\n%s", b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgconn.Connect(ctx, pg.DSN("postgres"))
		cancel()
		if err == nil {
			_ = c.Close(context.Background())
			return r
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	t.Fatalf("restarted postgres did not accept connections within 30s:\n%s", b)
	return nil
}

func (r *restartablePostgres) stop() {
	if r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	}
}

// openStore opens the installation's ledger store in-process, the way the audit commands do.
func (e *env) openStore(ctx context.Context) ledger.Store {
	e.t.Helper()
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	st, err := server.OpenLedgerStore(ctx, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = st.Close() })
	return st
}

// events reads every event of every chain in the store.
func events(ctx context.Context, t *testing.T, st ledger.Store) []ledger.Event {
	t.Helper()
	insts, err := st.Instances(ctx)
	if err != nil {
		t.Fatalf("list ledger instances: %v", err)
	}
	var out []ledger.Event
	for _, inst := range insts {
		err := st.Scan(ctx, inst, 0, 0, func(se ledger.StoredEvent) error {
			var ev ledger.Event
			if err := json.Unmarshal(se.Body, &ev); err != nil {
				return fmt.Errorf("decode event %d of %s: %w", se.RowSeq, inst, err)
			}
			out = append(out, ev)
			return nil
		})
		if err != nil {
			t.Fatalf("scan ledger chain %s: %v", inst, err)
		}
	}
	return out
}
