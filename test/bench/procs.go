package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// process is a helper program the benchmark started and must stop.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
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

// stop asks the process to end (SIGTERM) and kills it when it has not after 20 s.
func (p *process) stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// cpuTime is the user+system CPU time the process has used so far (0 when unknown), from
// /proc/<pid>/stat in USER_HZ ticks (100 per second on Linux).
func (p *process) cpuTime() time.Duration {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return pidCPU(p.cmd.Process.Pid)
}

func pidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
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

// rss is the process's resident set size in bytes (VmRSS), 0 when unknown.
func (p *process) rss() int64 {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// settle waits until the process has gone quiet (at most one 10 ms CPU tick in half a
// second), so work it does after a load — Gatehouse builds its search indexes off the
// statement's path — is counted with that load. Bounded by 30 s.
func (p *process) settle(ctx context.Context) {
	if p == nil {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	prev := p.cpuTime()
	for time.Now().Before(deadline) {
		if sleep(ctx, 500*time.Millisecond) != nil {
			return
		}
		now := p.cpuTime()
		if now-prev <= 10*time.Millisecond {
			return
		}
		prev = now
	}
}

func (p *process) dumpLog(w io.Writer) {
	if p == nil || p.log == "" {
		return
	}
	b, _ := os.ReadFile(p.log)
	fmt.Fprintf(w, "\n--- %s log ---\n%s", p.name, lastLines(string(b), 40))
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
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
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

// postgresUser is the system user PostgreSQL and PgBouncer run as when the benchmark runs
// as root (both refuse to run as root).
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no postgres user to run servers as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanEnv drops PG* variables so nothing points a client at another server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
