package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

// cluster is the throwaway PostgreSQL every leg reaches. The benchmark starts its own
// instead of testkit's because it needs more connections than tests do: a thousand idle
// sessions through Gatehouse hold a thousand backends (twice, for the second durability
// mode, while pooled connections age out).
type cluster struct {
	*process
	port     int
	user     string
	password string
	dir      string
}

// startCluster runs initdb and postgres with maxConns connections on a loopback port. Like
// the test clusters it runs without fsync: the benchmark measures what sits in front of
// PostgreSQL, not the disk.
func startCluster(ctx context.Context, maxConns int) (*cluster, error) {
	bin, err := testkit.PGBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gatehouse-bench-pg-")
	if err != nil {
		return nil, fmt.Errorf("make cluster dir: %w", err)
	}
	c := &cluster{user: "postgres", password: "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36), dir: dir}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = postgresUser(); err != nil {
			return nil, err
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("chown cluster dir: %w", err)
		}
	}
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = append(cleanEnv(), "LC_ALL=C")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if cred != nil {
			cmd.SysProcAttr.Credential = cred
		}
		return cmd
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		_ = os.Chown(pwfile, int(cred.Uid), int(cred.Gid))
	}
	data := filepath.Join(dir, "data")
	if out, err := command("initdb", "-D", data, "-U", c.user, "--pwfile", pwfile, "-A", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if c.port, err = freePort(); err != nil {
		return nil, err
	}
	cmd := command("postgres", "-D", data, "-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections="+strconv.Itoa(maxConns), "-c", "shared_buffers=128MB")
	logPath := filepath.Join(dir, "postgres.log")
	if c.process, err = start("postgres", cmd, logPath); err != nil {
		return nil, err
	}
	if err := waitPG(ctx, c.process, c.dsn("postgres")); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// stop shuts the cluster down fast (SIGINT) and removes its files.
func (c *cluster) stop() {
	if c == nil {
		return
	}
	if c.process != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	}
	_ = os.RemoveAll(c.dir)
}

func (c *cluster) dsn(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable", c.port, c.user, c.password, db)
}

// exec runs SQL (one or more statements) as the superuser.
func (c *cluster) exec(ctx context.Context, db, sql string) error {
	conn, err := pgconn.Connect(ctx, c.dsn(db))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err = conn.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("%.60s: %w", sql, err)
	}
	return nil
}
