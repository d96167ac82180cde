package pg

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestBackendKeyIsRealPID: the PID a client is given is its upstream backend's, so
// pg_backend_pid(), notification PIDs and pg_terminate_backend agree with it; the secret is
// Gatehouse's own, and a cancel request needs both halves of the pair.
func TestBackendKeyIsRealPID(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	pid := c.PgConn().PID()
	var backend uint32
	if err := c.QueryRow(ctx, "select pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	if backend != pid {
		t.Fatalf("BackendKeyData PID %d, pg_backend_pid() %d", pid, backend)
	}
	// The upstream's own secret never reaches the client.
	e.srv.mu.Lock()
	rs := e.srv.sessions[pid]
	e.srv.mu.Unlock()
	if len(rs) != 1 || string(rs[0].upSecret) == string(c.PgConn().SecretKey()) {
		t.Fatalf("sessions under PID %d: %d, or the client got the upstream's secret", pid, len(rs))
	}

	// A notification the session sends itself carries the PID it was told.
	if _, err := c.Exec(ctx, "listen pid_chan"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "notify pid_chan, 'self'"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	n, err := c.WaitForNotification(wctx)
	cancel()
	if err != nil || n.PID != pid {
		t.Fatalf("notification %+v (%v): want PID %d", n, err, pid)
	}

	// A cancel request with the right PID and a wrong secret cancels nothing.
	done := make(chan error, 1)
	go func() {
		_, err := c.PgConn().Exec(context.Background(), "select pg_sleep(2) /* pid-marker */").ReadAll()
		done <- err
	}()
	watcher := connect(t, shared.DSN("postgres"))
	eventually(t, 10*time.Second, "pg_sleep to run upstream", func() bool {
		var k int
		if err := watcher.QueryRow(ctx, "select count(*) from pg_stat_activity where state = 'active' and query like '%pid-marker%' and pid <> pg_backend_pid()").Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k == 1
	})
	forged := append([]byte(nil), c.PgConn().SecretKey()...)
	forged[0] ^= 0xff
	sendCancel(t, e, pid, forged)
	if err := <-done; err != nil {
		t.Fatalf("a cancel with a wrong secret cancelled the query: %v", err)
	}

	// pg_terminate_backend(PID) from another session ends this one.
	other := connect(t, e.dsn("bob", "main"))
	var ok bool
	if err := other.QueryRow(ctx, "select pg_terminate_backend($1)", int(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
	}
	eventually(t, 10*time.Second, "the terminated session to end", func() bool {
		_, err := c.Exec(ctx, "select 1")
		return err != nil
	})
}

// sendCancel sends a raw CancelRequest with the given key to the door.
func sendCancel(t *testing.T, e *env, pid uint32, secret []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Read(buf) // the door closes the connection once the request is handled
}
