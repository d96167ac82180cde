// Command bench measures what Gatehouse costs a real workload: pgbench -S (select-only) against
// the same throwaway PostgreSQL directly, through PgBouncer (transaction pooling, the usual
// baseline for "a thing in the middle") and through Gatehouse, in one run, interleaved so the
// machine's drift hits every leg alike, and prints the TPS and the ratios.
//
// Everything it starts listens on loopback only, runs for a bounded time and is removed at the
// end (also on Ctrl-C). `make bench` runs it through scripts/bench.sh.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

// options are the knobs of one benchmark run.
type options struct {
	duration  time.Duration
	scale     int
	clients   int
	jobs      int
	gatehouse string
	tls       bool
	keep      bool
	profile   string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each pgbench run")
	flag.IntVar(&o.scale, "scale", 10, "pgbench scale factor (-s) for initialization")
	flag.IntVar(&o.clients, "clients", 8, "pgbench clients (-c) for the multi-client runs")
	flag.IntVar(&o.jobs, "jobs", 2, "pgbench threads (-j)")
	flag.StringVar(&o.gatehouse, "gatehouse", "bin/gatehouse", "the gatehouse binary to measure")
	flag.BoolVar(&o.tls, "tls", false, "also measure Gatehouse with client TLS (sslmode=require)")
	flag.BoolVar(&o.keep, "keep-logs", false, "print the PgBouncer and Gatehouse logs at the end")
	flag.StringVar(&o.profile, "cpuprofile", "", "write Gatehouse's CPU profile over the whole run to this file")
	flag.Parse()
	if o.duration < time.Second || o.scale < 1 || o.clients < 1 || o.jobs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -duration must be at least 1s and -scale, -clients, -jobs at least 1")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

// leg is one way of reaching the database.
type leg struct {
	name string
	env  []string // PG* variables for pgbench
	// unavailable explains why the leg cannot run at all ("" when it can).
	unavailable string
	// skipModes explains, per query mode, why that mode cannot run on this leg.
	skipModes map[string]string
	// proc is the program in the middle (PgBouncer, Gatehouse), whose CPU time per
	// transaction the report shows; nil for the direct leg.
	proc *process
}

// workload is one pgbench configuration.
type workload struct {
	mode    string
	clients int
}

func (w workload) String() string { return fmt.Sprintf("-M %s -c %d", w.mode, w.clients) }

// cell is the outcome of one pgbench run.
type cell struct {
	tps float64
	// cpuPerTxn is the middle program's CPU time per transaction; zero when unknown.
	cpuPerTxn time.Duration
	note      string // why there is no number
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	for _, tool := range []string{"pgbench", "pgbouncer"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: run `make deps`", tool)
		}
	}
	work, err := os.MkdirTemp("", "gatehouse-bench-")
	if err != nil {
		return fmt.Errorf("make work dir: %w", err)
	}
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o755)

	log.Info("starting a throwaway PostgreSQL cluster")
	pg, err := testkit.NewPostgres(ctx, "")
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	defer pg.Stop()
	if err := pg.ExecContext(ctx, "postgres", "CREATE DATABASE app"); err != nil {
		return err
	}
	direct := leg{name: "direct", env: pgEnv("127.0.0.1", pg.Port, pg.User, pg.Password, "app", "disable")}
	log.Info("initializing pgbench tables", "scale", o.scale)
	if out, err := pgbench(ctx, direct.env, "-i", "-q", "-s", strconv.Itoa(o.scale)); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	for _, q := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if err := pg.ExecContext(ctx, "app", q); err != nil {
			return err
		}
	}

	bouncer, err := startBouncer(ctx, work, pg, log)
	if err != nil {
		return err
	}
	defer bouncer.stop()

	gh, err := startGatehouse(ctx, o, work, pg, log)
	if err != nil {
		return err
	}
	defer gh.stop()

	legs := []leg{direct, bouncer.leg, gh.leg}
	if o.tls {
		legs = append(legs, gh.tlsLeg)
	}
	workloads := []workload{{"simple", o.clients}, {"extended", o.clients}, {"prepared", o.clients}, {"simple", 1}}
	results := map[string]map[workload]cell{}
	for _, l := range legs {
		results[l.name] = map[workload]cell{}
	}
	// Interleave: every workload runs on every leg before the next workload starts.
	for _, w := range workloads {
		for _, l := range legs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if l.unavailable != "" {
				results[l.name][w] = cell{note: "not available"}
				continue
			}
			if why := l.skipModes[w.mode]; why != "" {
				results[l.name][w] = cell{note: "n/a"}
				continue
			}
			jobs := min(o.jobs, w.clients)
			args := []string{"-n", "-S", "-T", strconv.Itoa(int(o.duration.Seconds())), "-c", strconv.Itoa(w.clients), "-j", strconv.Itoa(jobs), "-M", w.mode}
			cpuBefore := l.proc.cpuTime()
			out, err := pgbench(ctx, l.env, args...)
			cpu := l.proc.cpuTime() - cpuBefore
			res, perr := parsePgbench(out)
			switch {
			case err != nil:
				results[l.name][w] = cell{note: "failed"}
				log.Error("pgbench failed", "leg", l.name, "workload", w.String(), "err", err, "output", lastLines(out, 8))
			case perr != nil:
				results[l.name][w] = cell{note: "failed"}
				log.Error("pgbench output unreadable", "leg", l.name, "workload", w.String(), "err", perr, "output", lastLines(out, 8))
			case res.failed > 0:
				results[l.name][w] = cell{note: fmt.Sprintf("%d failed", res.failed)}
				log.Error("pgbench transactions failed", "leg", l.name, "workload", w.String(), "failed", res.failed)
			default:
				c := cell{tps: res.tps}
				if l.proc != nil && cpu > 0 {
					c.cpuPerTxn = cpu / time.Duration(res.processed)
				}
				results[l.name][w] = c
				log.Info("pgbench", "leg", l.name, "workload", w.String(), "tps", fmt.Sprintf("%.0f", res.tps), "cpu_per_txn", c.cpuPerTxn)
			}
		}
	}
	report(os.Stdout, o, legs, workloads, results)
	if o.keep {
		bouncer.dumpLog(os.Stdout)
		gh.dumpLog(os.Stdout)
	}
	return nil
}

// report prints the TPS table and the ratios.
func report(w io.Writer, o options, legs []leg, workloads []workload, results map[string]map[workload]cell) {
	fmt.Fprintf(w, "\npgbench -S (select-only), scale %d, %v per run, -j %d, loopback, same machine and cluster for every leg\n\n", o.scale, o.duration, o.jobs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := "workload\t"
	for _, l := range legs {
		header += l.name + " TPS\t"
	}
	ratioNames := [][2]string{{"gatehouse", "direct"}, {"gatehouse", "pgbouncer"}, {"pgbouncer", "direct"}}
	if o.tls {
		ratioNames = append(ratioNames, [2]string{"gatehouse-tls", "direct"})
	}
	for _, r := range ratioNames {
		header += r[0] + "/" + r[1] + "\t"
	}
	fmt.Fprintln(tw, header)
	for _, wl := range workloads {
		line := wl.String() + "\t"
		for _, l := range legs {
			c := results[l.name][wl]
			if c.note != "" {
				line += c.note + "\t"
			} else {
				line += fmt.Sprintf("%.0f\t", c.tps)
			}
		}
		for _, r := range ratioNames {
			a, b := results[r[0]][wl], results[r[1]][wl]
			if a.note != "" || b.note != "" || b.tps == 0 {
				line += "-\t"
			} else {
				line += fmt.Sprintf("%.2f\t", a.tps/b.tps)
			}
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()

	fmt.Fprintf(w, "\nCPU time of the program in the middle per transaction (all its threads; pgbench and PostgreSQL excluded)\n\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header = "workload\t"
	for _, l := range legs {
		if l.proc != nil {
			header += l.name + "\t"
		}
	}
	fmt.Fprintln(tw, header)
	for _, wl := range workloads {
		line := wl.String() + "\t"
		for _, l := range legs {
			if l.proc == nil {
				continue
			}
			if c := results[l.name][wl]; c.cpuPerTxn > 0 {
				line += fmt.Sprintf("%.1f µs\t", float64(c.cpuPerTxn)/float64(time.Microsecond))
			} else {
				line += "-\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()
	for _, l := range legs {
		if l.unavailable != "" {
			fmt.Fprintf(w, "\n%s not available: %s\n", l.name, l.unavailable)
		}
		for mode, why := range l.skipModes {
			fmt.Fprintf(w, "\n%s -M %s n/a: %s\n", l.name, mode, why)
		}
	}
}

// pgEnv is the libpq environment for one endpoint.
func pgEnv(host string, port int, user, password, db, sslmode string) []string {
	return []string{"PGHOST=" + host, "PGPORT=" + strconv.Itoa(port), "PGUSER=" + user, "PGPASSWORD=" + password,
		"PGDATABASE=" + db, "PGSSLMODE=" + sslmode, "PGCONNECT_TIMEOUT=10"}
}

// pgbench runs pgbench with env and returns its combined output.
func pgbench(ctx context.Context, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = append(cleanEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

// cleanEnv drops PG* variables so nothing points pgbench at another server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// pgbenchResult is the part of pgbench's summary the report needs.
type pgbenchResult struct {
	processed, failed int64
	tps               float64
}

var (
	reProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	reFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	reTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
)

func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	m := reProcessed.FindStringSubmatch(out)
	t := reTPS.FindStringSubmatch(out)
	if m == nil || t == nil {
		return r, errors.New("no transaction count or tps in pgbench output")
	}
	r.processed, _ = strconv.ParseInt(m[1], 10, 64)
	r.tps, _ = strconv.ParseFloat(t[1], 64)
	if f := reFailed.FindStringSubmatch(out); f != nil {
		r.failed, _ = strconv.ParseInt(f[1], 10, 64)
	}
	if r.processed == 0 {
		return r, errors.New("pgbench processed no transactions")
	}
	return r, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// process is a helper program the benchmark started and must stop.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (p *process) stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cpuTime is the user+system CPU time the process has used so far (0 when unknown), from
// /proc/<pid>/stat in USER_HZ ticks (100 per second on Linux).
func (p *process) cpuTime() time.Duration {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after its closing parenthesis are
	// space separated, utime and stime being the 12th and 13th of those.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * (time.Second / 100)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) dumpLog(w io.Writer) {
	if p == nil || p.log == "" {
		return
	}
	b, _ := os.ReadFile(p.log)
	fmt.Fprintf(w, "\n--- %s log ---\n%s", p.name, lastLines(string(b), 40))
}

// start runs cmd with its output in logPath and watches for its exit.
func start(name string, cmd *exec.Cmd, logPath string) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create %s log: %w", name, err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// waitPG waits until a PostgreSQL-protocol endpoint accepts a login.
func waitPG(ctx context.Context, p *process, dsn string) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			b, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s exited during start-up:\n%s", p.name, lastLines(string(b), 20))
		}
		c, err := pgconn.Connect(ctx, dsn)
		if err == nil {
			_ = c.Close(ctx)
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(p.log)
	return fmt.Errorf("%s did not accept a login within 30s (%v):\n%s", p.name, last, lastLines(string(b), 20))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// bouncer is a running PgBouncer.
type bouncer struct {
	*process
	leg leg
}

// startBouncer runs PgBouncer in transaction pooling mode in front of pg, as the postgres
// system user when we are root (PgBouncer refuses to run as root).
func startBouncer(ctx context.Context, work string, pg *testkit.Postgres, log *slog.Logger) (*bouncer, error) {
	dir := filepath.Join(work, "pgbouncer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	const user, password = "bench", "bench-password"
	version := bouncerVersion(ctx)
	prepared := version[0] > 1 || (version[0] == 1 && version[1] >= 21)
	var extra string
	skip := map[string]string{}
	if prepared {
		extra = "max_prepared_statements = 200\n"
	} else {
		skip["prepared"] = fmt.Sprintf("PgBouncer %d.%d in transaction pooling has no protocol-level prepared statements (1.21 added them)", version[0], version[1])
	}
	ini := fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app user=%s password=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
pidfile = %s
%s`, pg.Port, pg.User, pg.Password, port, filepath.Join(dir, "userlist.txt"), filepath.Join(dir, "pgbouncer.pid"), extra)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(fmt.Sprintf("%q %q\n", user, password)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("pgbouncer", filepath.Join(dir, "pgbouncer.ini"))
	cmd.Dir = dir
	if os.Geteuid() == 0 {
		cred, err := postgresUser()
		if err != nil {
			return nil, err
		}
		for _, f := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
			if err := os.Chown(f, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("chown %s: %w", f, err)
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	p, err := start("pgbouncer", cmd, filepath.Join(work, "pgbouncer.log"))
	if err != nil {
		return nil, err
	}
	b := &bouncer{process: p, leg: leg{name: "pgbouncer", env: pgEnv("127.0.0.1", port, user, password, "app", "disable"), skipModes: skip, proc: p}}
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=app sslmode=disable", port, user, password)
	if err := waitPG(ctx, p, dsn); err != nil {
		b.stop()
		return nil, err
	}
	log.Info("PgBouncer ready", "version", fmt.Sprintf("%d.%d", version[0], version[1]), "port", port)
	return b, nil
}

// bouncerVersion is PgBouncer's major and minor version, {0, 0} when unknown.
func bouncerVersion(ctx context.Context) [2]int {
	out, err := exec.CommandContext(ctx, "pgbouncer", "--version").Output()
	if err != nil {
		return [2]int{}
	}
	m := regexp.MustCompile(`PgBouncer (\d+)\.(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		return [2]int{}
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	return [2]int{a, b}
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no postgres user to run PgBouncer as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// gatehouse is a running `gatehouse serve`, or the reason there is none.
type gatehouse struct {
	*process
	leg    leg
	tlsLeg leg
}

// startGatehouse configures and starts the binary under test with the built-in default
// policy and ledger, and creates a service token for pgbench. If the binary cannot serve yet,
// the Gatehouse legs are reported as not available instead of failing the whole run.
func startGatehouse(ctx context.Context, o options, work string, pg *testkit.Postgres, log *slog.Logger) (*gatehouse, error) {
	na := func(why string) *gatehouse {
		log.Warn("Gatehouse not available", "why", why)
		return &gatehouse{leg: leg{name: "gatehouse", unavailable: why}, tlsLeg: leg{name: "gatehouse-tls", unavailable: why}}
	}
	bin, err := filepath.Abs(o.gatehouse)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return na(fmt.Sprintf("%s does not exist (make build)", o.gatehouse)), nil
	}
	if err := exec.CommandContext(ctx, bin, "serve", "--help").Run(); err != nil {
		return na(fmt.Sprintf("%s has no working `serve` command yet", o.gatehouse)), nil
	}
	dir := filepath.Join(work, "gatehouse")
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
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	cfg := fmt.Sprintf(`listen:
  postgres: "127.0.0.1:%d"
  http: "127.0.0.1:%d"
data_dir: %q
tls:
  mode: auto
targets:
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
`, pgPort, httpPort, filepath.Join(dir, "data"), pg.Port, pg.User)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	env := append(cleanEnv(), "BENCH_UPSTREAM_PASSWORD="+pg.Password)
	tokenCmd := exec.CommandContext(ctx, bin, "--config", cfgPath, "token", "create", "--name", "bench", "--kind", "service", "--ttl", "1h")
	tokenCmd.Env = env
	var stderr bytes.Buffer
	tokenCmd.Stderr = &stderr
	out, err := tokenCmd.Output()
	if err != nil {
		return na(fmt.Sprintf("`gatehouse token create` failed: %v: %s", err, strings.TrimSpace(stderr.String()))), nil
	}
	secret := firstLine(string(out))
	if secret == "" {
		return na("`gatehouse token create` printed no secret"), nil
	}
	args := []string{"--config", cfgPath, "--log-level", "warn", "serve"}
	if o.profile != "" {
		prof, err := filepath.Abs(o.profile)
		if err != nil {
			return nil, err
		}
		args = append(args, "--cpuprofile", prof)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p, err := start("gatehouse", cmd, filepath.Join(work, "gatehouse.log"))
	if err != nil {
		return na(err.Error()), nil
	}
	g := &gatehouse{
		process: p,
		leg:     leg{name: "gatehouse", env: pgEnv("127.0.0.1", pgPort, "bench", secret, "main", "disable"), proc: p},
		tlsLeg:  leg{name: "gatehouse-tls", env: pgEnv("127.0.0.1", pgPort, "bench", secret, "main", "require"), proc: p},
	}
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=bench password=%s dbname=main sslmode=disable", pgPort, secret)
	if err := waitPG(ctx, p, dsn); err != nil {
		g.stop()
		return na(err.Error()), nil
	}
	log.Info("Gatehouse ready", "port", pgPort, "policy", "built-in default", "tls_leg", o.tls)
	return g, nil
}

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return strings.TrimSpace(sc.Text())
	}
	return ""
}
