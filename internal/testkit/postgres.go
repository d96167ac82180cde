// Package testkit starts the real things Gatehouse tests talk to: throwaway PostgreSQL
// clusters on random loopback ports, owned by the test and removed when it ends, so no test
// depends on a server that happens to be running on the machine.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/certs"
)

// Postgres is one running throwaway cluster with SCRAM authentication.
type Postgres struct {
	Host     string
	Port     int
	User     string
	Password string
	Dir      string
	// CAFile is the PEM of the CA that signed the server certificate (TLS clusters only).
	CAFile string

	extra []string
	bin   string
	cred  *syscall.Credential
	cmd   *exec.Cmd
	done  chan struct{}
	log   string
}

// TB is the part of testing.TB the kit needs; commands (the demo) pass their own.
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
}

var _ TB = (testing.TB)(nil)

// PGBinDir finds the PostgreSQL server binaries (initdb, postgres, pg_ctl).
func PGBinDir() (string, error) {
	if d := os.Getenv("GATEHOUSE_PG_BIN"); d != "" {
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", errors.New("PostgreSQL server binaries not found: install postgresql (make deps does) or set GATEHOUSE_PG_BIN")
}

// StartPostgres starts a cluster for one test and stops it when the test ends, pass or fail.
func StartPostgres(t TB) *Postgres {
	t.Helper()
	pg, err := NewPostgres(context.Background(), "")
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(pg.Stop)
	return pg
}

// PostgresOptions vary a cluster for tests of upstream authentication and transport.
type PostgresOptions struct {
	// Auth is the pg_hba method for TCP connections: scram-sha-256 (default) or md5.
	Auth string
	// TLS turns on server TLS with a certificate issued for 127.0.0.1 and localhost by a
	// throwaway CA, whose PEM is then in Postgres.CAFile.
	TLS bool
}

// StartPostgresWith is StartPostgres with options.
func StartPostgresWith(t TB, opts PostgresOptions) *Postgres {
	t.Helper()
	pg, err := NewPostgresWith(context.Background(), "", opts)
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(pg.Stop)
	return pg
}

// NewPostgres starts a cluster in dir (a new temporary directory when empty). The caller
// must call Stop.
func NewPostgres(ctx context.Context, dir string) (*Postgres, error) {
	return NewPostgresWith(ctx, dir, PostgresOptions{})
}

// NewPostgresWith starts a cluster with options; the caller must call Stop.
func NewPostgresWith(ctx context.Context, dir string, opts PostgresOptions) (*Postgres, error) {
	bin, err := PGBinDir()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir, err = os.MkdirTemp("", "gatehouse-pg-")
		if err != nil {
			return nil, fmt.Errorf("make cluster dir: %w", err)
		}
	}
	pg := &Postgres{Host: "127.0.0.1", User: "postgres", Password: "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36), Dir: dir, bin: bin, done: make(chan struct{})}
	// PostgreSQL refuses to run as root; tests often do (CI, containers), so drop to the
	// postgres system user the Debian package creates.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root and no postgres user to run the cluster as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, fmt.Errorf("chown cluster dir: %w", err)
		}
		_ = os.Chmod(dir, 0o700)
	}
	data := filepath.Join(dir, "data")
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if pg.cred != nil {
		_ = os.Chown(pwfile, int(pg.cred.Uid), int(pg.cred.Gid))
	}
	auth := opts.Auth
	if auth == "" {
		auth = "scram-sha-256"
	}
	initdb := pg.command(ctx, "initdb", "-D", data, "-U", pg.User, "--pwfile", pwfile, "-A", auth, "-E", "UTF8", "--locale", "C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if opts.TLS {
		if err := pg.enableTLS(data); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		pg.Port = port
		err = pg.start(ctx, data)
		if err == nil {
			return pg, nil
		}
		if attempt == 3 {
			return nil, err
		}
	}
}

func (pg *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, name), args...)
	cmd.Dir = pg.Dir
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

func (pg *Postgres) start(ctx context.Context, data string) error {
	pg.log = filepath.Join(pg.Dir, "postgres.log")
	logf, err := os.Create(pg.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	if pg.cred != nil {
		_ = os.Chown(pg.log, int(pg.cred.Uid), int(pg.cred.Gid))
	}
	// Not CommandContext: the cluster must outlive the context that started it.
	cmd := pg.command(context.Background(), "postgres", "-D", data, "-p", strconv.Itoa(pg.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+pg.Dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=64MB")
	cmd.Args = append(cmd.Args, pg.extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	pg.cmd = cmd
	pg.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(pg.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-pg.done:
			b, _ := os.ReadFile(pg.log)
			return fmt.Errorf("postgres exited during start-up:\n%s", b)
		case <-ctx.Done():
			pg.Stop()
			return ctx.Err()
		default:
		}
		c, err := pgconn.Connect(ctx, pg.DSN("postgres"))
		if err == nil {
			_ = c.Close(ctx)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	pg.Stop()
	return errors.New("postgres did not accept connections within 30s")
}

// DSN is a connection string for database db as the superuser.
func (pg *Postgres) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable", pg.Host, pg.Port, pg.User, pg.Password, db)
}

// URL is the same as DSN in URL form, for clients that only take URLs.
func (pg *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", pg.User, pg.Password, net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)), db)
}

// Exec runs SQL as the superuser, failing the test on error.
func (pg *Postgres) Exec(t TB, db, sql string) {
	t.Helper()
	if err := pg.ExecContext(context.Background(), db, sql); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// ExecContext runs SQL (one or more statements) as the superuser.
func (pg *Postgres) ExecContext(ctx context.Context, db, sql string) error {
	c, err := pgconn.Connect(ctx, pg.DSN(db))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", db, err)
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql).ReadAll()
	return err
}

// Kill stops the server abruptly (SIGKILL), to test what happens when an upstream dies.
func (pg *Postgres) Kill() {
	if pg.cmd != nil && pg.cmd.Process != nil {
		_ = syscall.Kill(-pg.cmd.Process.Pid, syscall.SIGKILL)
		<-pg.done
	}
}

// Stop shuts the server down fast and removes its files.
func (pg *Postgres) Stop() {
	if pg.cmd != nil && pg.cmd.Process != nil {
		_ = pg.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-pg.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pg.cmd.Process.Pid, syscall.SIGKILL)
			<-pg.done
		}
		pg.cmd = nil
	}
	_ = os.RemoveAll(pg.Dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

// enableTLS issues a server certificate into the data directory and turns ssl on.
func (pg *Postgres) enableTLS(data string) error {
	caDir := filepath.Join(pg.Dir, "tls")
	if _, err := certs.Auto(caDir, []string{"127.0.0.1", "localhost"}); err != nil {
		return fmt.Errorf("issue test server certificate: %w", err)
	}
	pg.CAFile = certs.CAPath(caDir)
	for _, f := range []struct{ from, to string }{{certs.ServerFile, "server.crt"}, {"server-key.pem", "server.key"}} {
		b, err := os.ReadFile(filepath.Join(caDir, f.from))
		if err != nil {
			return err
		}
		dst := filepath.Join(data, f.to)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return err
		}
		if pg.cred != nil {
			if err := os.Chown(dst, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
				return err
			}
		}
	}
	if pg.cred != nil {
		_ = os.Chmod(caDir, 0o755)
		_ = os.Chmod(pg.CAFile, 0o644)
	}
	pg.extra = append(pg.extra, "-c", "ssl=on")
	return nil
}
