package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
)

// bouncer is a running PgBouncer with two databases in front of the cluster's app: "app" in
// transaction pooling (the usual baseline for a thing in the middle) and "app_session" in
// session pooling (the baseline for prepared statements, which PgBouncer before 1.21 cannot
// keep across transactions, and for connection set-up, where session pooling is what a
// client that connects per task gets).
type bouncer struct {
	*process
	port             int
	user, password   string
	version          [2]int
	txnDB, sessionDB string
}

func startBouncer(ctx context.Context, work string, pg *cluster, maxClients int, log *slog.Logger) (*bouncer, error) {
	dir := filepath.Join(work, "pgbouncer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &bouncer{port: port, user: "bench", password: "bench-password", version: bouncerVersion(ctx), txnDB: "app", sessionDB: "app_session"}
	upstream := fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=%s password=%s", pg.port, pg.user, pg.password)
	ini := fmt.Sprintf(`[databases]
app = %s pool_mode=transaction
app_session = %s pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
max_client_conn = %d
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
pidfile = %s
`, upstream, upstream, port, filepath.Join(dir, "userlist.txt"), maxClients, filepath.Join(dir, "pgbouncer.pid"))
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(fmt.Sprintf("%q %q\n", b.user, b.password)), 0o600); err != nil {
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
	if b.process, err = start("pgbouncer", cmd, filepath.Join(work, "pgbouncer.log")); err != nil {
		return nil, err
	}
	if err := waitPG(ctx, b.process, b.dsn(b.txnDB)); err != nil {
		b.stop()
		return nil, err
	}
	log.Info("PgBouncer ready", "version", fmt.Sprintf("%d.%d", b.version[0], b.version[1]), "port", port)
	return b, nil
}

func (b *bouncer) dsn(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable", b.port, b.user, b.password, db)
}

func (b *bouncer) endpoint(db string) endpoint {
	return endpoint{host: "127.0.0.1", port: b.port, user: b.user, password: b.password, db: db}
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
	c, _ := strconv.Atoi(m[2])
	return [2]int{a, c}
}
