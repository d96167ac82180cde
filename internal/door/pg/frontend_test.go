package pg

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

func TestLoginFailuresAndRouting(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	// Wrong password and unknown user: same SQLSTATE and message shape whatever the cause.
	_, err := pgconn.Connect(ctx, strings.Replace(e.dsn("alice", "main"), "secret-alice", "wrong", 1))
	if pgCode(err) != "28P01" || pgMessage(err) != `password authentication failed for user "alice"` {
		t.Fatalf("wrong password: %v", err)
	}
	fails := e.rec.ofType(ledger.EventLoginFailed)
	if len(fails) != 1 || fails[0].Subject != "alice" || !strings.Contains(fails[0].Message, "wrong token") {
		t.Fatalf("login failure recorded as %+v", fails)
	}
	// Unknown target: 3D000 and how to list targets.
	_, err = pgconn.Connect(ctx, e.dsn("alice", "nosuch"))
	if pgCode(err) != "3D000" || !strings.Contains(pgMessage(err), "gatehouse targets") {
		t.Fatalf("unknown target: %v", err)
	}
	// db@target picks another database on the target.
	shared.Exec(t, "postgres", "select 1") // cluster is up
	if err := shared.ExecContext(ctx, "postgres", "create database otherdb"); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	c, err := pgconn.Connect(ctx, e.dsn("alice", "otherdb@main"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Exec(ctx, "select current_database()").ReadAll()
	_ = c.Close(ctx)
	if err != nil || string(res[0].Rows[0][0]) != "otherdb" {
		t.Fatalf("db@target: %v %v", err, res)
	}
	// Policy refuses the session.
	_, err = pgconn.Connect(ctx, e.dsn("mallory", "main"))
	if pgCode(err) != "42501" || !strings.Contains(pgMessage(err), "mallory may not connect") {
		t.Fatalf("access denied: %v", err)
	}
	// Startup settings that would change privileges are refused; gatehouse.* are kept.
	_, err = pgconn.Connect(ctx, e.dsn("alice", "main", "options='-c role=pg_monitor'"))
	if pgCode(err) != "42501" {
		t.Fatalf("role option: %v", err)
	}
	c, err = pgconn.Connect(ctx, e.dsn("alice", "main", "options='-c gatehouse.purpose=ticket-42 -c search_path=pg_catalog'"))
	if err != nil {
		t.Fatal(err)
	}
	res, err = c.Exec(ctx, "show search_path").ReadAll()
	_ = c.Close(ctx)
	if err != nil || string(res[0].Rows[0][0]) != "pg_catalog" {
		t.Fatalf("forwarded option: %v %v", err, res)
	}
	found := false
	for _, ev := range e.rec.ofType(ledger.EventSessionStart) {
		found = found || ev.Purpose == "ticket-42"
	}
	if !found {
		t.Fatal("purpose from startup options not recorded")
	}
}

// TestRefusedConnectionsRecorded: connections refused after authentication (an unknown
// target, a startup parameter Gatehouse does not pass) are on the ledger with the identity
// and counted by cause; a login while the ledger cannot record gets the outage's SQLSTATE,
// not a permission error.
func TestRefusedConnectionsRecorded(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	if _, err := pgconn.Connect(ctx, e.dsn("alice", "nosuch")); pgCode(err) != "3D000" {
		t.Fatalf("unknown target: %v", err)
	}
	if _, err := pgconn.Connect(ctx, e.dsn("alice", "main", "options='-c role=pg_monitor'")); pgCode(err) != "42501" {
		t.Fatalf("refused startup setting: %v", err)
	}
	rules := map[string]*ledger.Event{}
	for _, ev := range e.rec.ofType(ledger.EventSessionStart) {
		if ev.Decision == string(gate.Deny) {
			rules[ev.Rule] = ev
		}
	}
	for _, rule := range []string{"unknown-target", "startup-parameter"} {
		ev := rules[rule]
		if ev == nil || ev.Subject != "alice" || ev.Message == "" {
			t.Fatalf("refused connection (%s) recorded as %+v", rule, ev)
		}
	}
	if got := testutil.ToFloat64(e.srv.Metrics.RefusedConnections.WithLabelValues("unknown_target")); got != 1 {
		t.Errorf("refused connections (unknown_target) = %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.srv.Metrics.RefusedConnections.WithLabelValues("startup_parameter")); got != 1 {
		t.Errorf("refused connections (startup_parameter) = %v, want 1", got)
	}

	e.rec.failSessions.Store(true)
	_, err := pgconn.Connect(ctx, e.dsn("alice", "main"))
	e.rec.failSessions.Store(false)
	if pgCode(err) != "58000" || !strings.Contains(pgMessage(err), "ledger") {
		t.Fatalf("login during a ledger outage: want 58000 naming the ledger, got %v", err)
	}
	if got := testutil.ToFloat64(e.srv.Metrics.RefusedConnections.WithLabelValues("ledger_unavailable")); got != 1 {
		t.Errorf("refused connections (ledger_unavailable) = %v, want 1", got)
	}
}

func TestUpstreamRoleAndUnreachable(t *testing.T) {
	shared.Exec(t, "postgres", "do $$ begin if not exists (select from pg_roles where rolname = 'gh_reader') then create role gh_reader; end if; end $$")
	e := startEnv(t, func(e *env) {
		e.targets["main"].Roles = map[string]string{"admin": "gh_reader"}
		dead := targetFor("dead", shared)
		dead.Port = testkit.FreePort(t)
		e.targets["dead"] = dead
	})
	ctx := ctxT(t, 30*time.Second)
	c, err := pgconn.Connect(ctx, e.dsn("alice", "main"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Exec(ctx, "select current_user; reset role; select current_user").ReadAll()
	_ = c.Close(ctx)
	if err != nil || string(res[0].Rows[0][0]) != "gh_reader" || string(res[2].Rows[0][0]) != "gh_reader" {
		t.Fatalf("upstream role: %v %v", err, res)
	}
	start := time.Now()
	_, err = pgconn.Connect(ctx, e.dsn("alice", "dead"))
	if pgCode(err) != "08006" || time.Since(start) > 10*time.Second {
		t.Fatalf("unreachable upstream: %v", err)
	}
}

func TestUpstreamDeathAffectsOnlyItsSessions(t *testing.T) {
	other := testkit.StartPostgres(t)
	e := startEnv(t, withTarget("other", other))
	ctx := ctxT(t, 30*time.Second)
	a := connect(t, e.dsn("alice", "main"))
	b := connect(t, e.dsn("alice", "other"))
	if _, err := b.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	other.Kill()
	// Kill waits for the postmaster; its backend may take a moment longer to die.
	var err error
	for start := time.Now(); err == nil && time.Since(start) < 5*time.Second; time.Sleep(20 * time.Millisecond) {
		_, err = b.Exec(ctx, "select 1")
	}
	if err == nil {
		t.Fatal("query on a dead upstream succeeded")
	}
	if code := pgCode(err); code != "08006" && code != "57P01" && !b.IsClosed() {
		t.Fatalf("dead upstream: %v", err)
	}
	if _, err := a.Exec(ctx, "select 1"); err != nil {
		t.Fatalf("session on the live upstream broke: %v", err)
	}
	// pg_terminate_backend: the client is told, the proxy goes on.
	victim := connect(t, e.dsn("bob", "main"))
	var pid int
	if err := victim.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "select pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if _, err := victim.Exec(ctx, "select 1"); err == nil {
		t.Fatal("terminated backend still answers")
	}
	eventually(t, 5*time.Second, "sessions to end", func() bool { return e.srv.Sessions() == 1 })
}

// selfSigned returns a throwaway server certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gatehouse-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

func TestTLS(t *testing.T) {
	e := startEnv(t, func(e *env) { e.srv.TLS = selfSigned(t) })
	ctx := ctxT(t, 30*time.Second)
	dsn := strings.Replace(e.dsn("alice", "main"), "sslmode=disable", "sslmode=require", 1)
	c, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Conn().(*tls.Conn); !ok {
		t.Fatal("sslmode=require connection is not TLS")
	}
	if _, err := c.Exec(ctx, "select 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx)
	var sawTLS bool
	for _, ev := range e.rec.ofType(ledger.EventSessionStart) {
		sawTLS = sawTLS || ev.TLS
	}
	if !sawTLS {
		t.Fatal("session not recorded as TLS")
	}
	// Without TLS configured, SSLRequest gets 'N' and sslmode=prefer falls back.
	plain := startEnv(t)
	c, err = pgconn.Connect(ctx, strings.Replace(plain.dsn("alice", "main"), "sslmode=disable", "sslmode=prefer", 1))
	if err != nil {
		t.Fatalf("sslmode=prefer against a door without TLS: %v", err)
	}
	_ = c.Close(ctx)
}

// rawStartup writes an untyped startup packet with the given parameters.
func rawStartup(t *testing.T, c net.Conn, params map[string]string) {
	buf, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf); err != nil {
		t.Fatal(err)
	}
}

// rawLogin opens an authenticated raw protocol connection.
func rawLogin(t *testing.T, e *env, user string) (net.Conn, *pgproto3.Frontend) {
	t.Helper()
	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	rawStartup(t, c, map[string]string{"user": user, "database": "main"})
	if m, err := fe.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*pgproto3.AuthenticationCleartextPassword); !ok {
		t.Fatalf("want cleartext password request, got %T", m)
	}
	fe.Send(&pgproto3.PasswordMessage{Password: "secret-" + user})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			return c, fe
		}
		if er, ok := m.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("login: %s", er.Message)
		}
	}
}

// readError reads until an ErrorResponse or the end of the connection.
func readError(c net.Conn) (code, msg string) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	for {
		m, err := fe.Receive()
		if err != nil {
			return "", "closed: " + err.Error()
		}
		if er, ok := m.(*pgproto3.ErrorResponse); ok {
			return er.Code, er.Message
		}
	}
}

// TestPasswordTrailingBytes: a password message with bytes after its NUL terminator is not
// the token it starts with; it is refused with 28P01 and recorded, as PostgreSQL refuses it.
func TestPasswordTrailingBytes(t *testing.T) {
	e := startEnv(t)
	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	rawStartup(t, c, map[string]string{"user": "alice", "database": "main"})
	fe := pgproto3.NewFrontend(c, c)
	if m, err := fe.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*pgproto3.AuthenticationCleartextPassword); !ok {
		t.Fatalf("want cleartext password request, got %T", m)
	}
	body := append([]byte("secret-alice\x00junk"), 0)
	msg := append([]byte{'p', 0, 0, 0, 0}, body...)
	binary.BigEndian.PutUint32(msg[1:], uint32(4+len(body)))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	code, text := readError(c)
	if code != "28P01" || text != `password authentication failed for user "alice"` {
		t.Fatalf("password with trailing bytes: got %s %q, want 28P01", code, text)
	}
	fails := e.rec.ofType(ledger.EventLoginFailed)
	if len(fails) != 1 || fails[0].Subject != "alice" || !strings.Contains(fails[0].Message, "malformed password") {
		t.Fatalf("login failure recorded as %+v", fails)
	}
}

func TestFunctionCall(t *testing.T) {
	e := startEnv(t)
	var oid uint32
	c := connect(t, e.dsn("alice", "main"))
	if err := c.QueryRow(ctxT(t, 5*time.Second), "select 'int4abs'::regproc::oid").Scan(&oid); err != nil {
		t.Fatal(err)
	}
	denyFastpath := false
	e.policy.extra = func(in gate.Input) (gate.Decision, bool) {
		if in.Via == gate.ViaFunction && denyFastpath {
			return gate.Decision{Action: gate.Deny, Rule: "no-fastpath", Message: "fast-path calls are off"}, true
		}
		return gate.Decision{}, false
	}
	raw, fe := rawLogin(t, e, "alice")
	_ = raw
	call := func() pgproto3.BackendMessage {
		fe.Send(&pgproto3.FunctionCall{Function: oid, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("-7")}, ResultFormatCode: 0})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var first pgproto3.BackendMessage
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := m.(type) {
			case *pgproto3.FunctionCallResponse:
				first = &pgproto3.FunctionCallResponse{Result: append([]byte(nil), m.Result...)}
			case *pgproto3.ErrorResponse:
				first = &pgproto3.ErrorResponse{Code: m.Code, Message: m.Message}
			case *pgproto3.ReadyForQuery:
				return first
			}
		}
	}
	if r, ok := call().(*pgproto3.FunctionCallResponse); !ok || string(r.Result) != "7" {
		t.Fatalf("function call: %#v", r)
	}
	denyFastpath = true
	if r, ok := call().(*pgproto3.ErrorResponse); !ok || r.Code != "42501" {
		t.Fatalf("denied function call: %#v", r)
	}
	ev := e.rec.statements("gatehouse_fastpath_function")
	if len(ev) != 2 || ev[0].Via != "function" || ev[1].Decision != "deny" {
		t.Fatalf("function calls recorded as %+v", ev)
	}
}

// TestBadInput sends each kind of broken input and checks that it ends only that
// connection, with an error where the protocol allows one, and that good clients still work.
func TestBadInput(t *testing.T) {
	e := startEnv(t, func(e *env) { e.srv.StartupTimeout = 500 * time.Millisecond; e.srv.MaxMessageSize = 1 << 20 })
	ctx := ctxT(t, 60*time.Second)
	good := connect(t, e.dsn("alice", "main"))
	dial := func() net.Conn {
		c, err := net.Dial("tcp", e.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	cases := []struct {
		name  string
		send  func(c net.Conn)
		code  string
		after bool // authenticate first
	}{
		{"garbage", func(c net.Conn) { _, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) }, "08P01", false},
		{"giant startup length", func(c net.Conn) { _, _ = c.Write(u32(1 << 30)) }, "08P01", false},
		{"truncated startup", func(c net.Conn) { _, _ = c.Write(append(u32(100), 0, 3, 0, 0)); _ = c.(*net.TCPConn).CloseWrite() }, "08P01", false},
		{"bad protocol version", func(c net.Conn) { _, _ = c.Write(append(u32(8), u32(2<<16)...)) }, "08P01", false},
		{"no user", func(c net.Conn) { rawStartup(t, c, map[string]string{"database": "main"}) }, "28000", false},
		{"silence", func(c net.Conn) {}, "", false},
		{"1 GiB message after login", func(c net.Conn) { _, _ = c.Write(append([]byte{'Q'}, u32(1<<30)...)) }, "08P01", true},
		{"negative length after login", func(c net.Conn) { _, _ = c.Write(append([]byte{'Q'}, u32(2)...)) }, "08P01", true},
		{"unknown type after login", func(c net.Conn) { _, _ = c.Write(append([]byte{'@'}, u32(4)...)) }, "08P01", true},
		{"malformed bind after login", func(c net.Conn) { _, _ = c.Write(append([]byte{'B'}, append(u32(7), 'x', 0, 0)...)) }, "08P01", true},
		{"truncated message then close", func(c net.Conn) {
			_, _ = c.Write(append([]byte{'Q'}, append(u32(100), "select"...)...))
			_ = c.(*net.TCPConn).CloseWrite()
		}, "08P01", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c net.Conn
			if tc.after {
				c, _ = rawLogin(t, e, "alice")
			} else {
				c = dial()
			}
			start := time.Now()
			tc.send(c)
			code, msg := readError(c)
			if code != tc.code {
				t.Fatalf("got %q %q, want SQLSTATE %q", code, msg, tc.code)
			}
			if tc.code == "" && time.Since(start) > 3*time.Second {
				t.Fatalf("silent client held for %v", time.Since(start))
			}
			// The connection is closed afterwards.
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			// A reset is fine (unread garbage makes the kernel send one); a timeout is not.
			if _, err := io.ReadAll(c); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("connection left open after bad input: %v", err)
				}
			}
			var one int
			if err := good.QueryRow(ctx, "select 1").Scan(&one); err != nil {
				t.Fatalf("good session broken by bad input: %v", err)
			}
			nc, err := pgconn.Connect(ctx, e.dsn("bob", "main"))
			if err != nil {
				t.Fatalf("new good client refused after bad input: %v", err)
			}
			_ = nc.Close(context.Background())
		})
	}
}

// TestClientVanishesMidQuery checks that the upstream query of a client that disappears is
// cancelled and its backend released.
func TestClientVanishesMidQuery(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c, fe := rawLogin(t, e, "dave")
	fe.Send(&pgproto3.Query{String: "select pg_sleep(30) /* vanish-marker */"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	watcher := connect(t, shared.DSN("postgres"))
	count := func() int {
		var n int
		if err := watcher.QueryRow(ctx, "select count(*) from pg_stat_activity where query like '%vanish-marker%' and pid <> pg_backend_pid()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, 5*time.Second, "query to start", func() bool { return count() == 1 })
	_ = c.Close()
	eventually(t, 5*time.Second, "upstream backend to be released", func() bool { return count() == 0 })
	eventually(t, 5*time.Second, "session to end", func() bool { return e.srv.Sessions() == 0 })
}

// TestMessageMemoryBounded: clients that each declare a large message and stall half-way
// cannot together hold more than the door's budget for large messages (the one over it is
// refused at once with 53200), and a stalled message ends its connection after the read
// timeout (08P01), giving its memory back for the next client.
func TestMessageMemoryBounded(t *testing.T) {
	e := startEnv(t, func(e *env) {
		e.srv.MessageReadTimeout = 2 * time.Second
		e.srv.BufferedMessagesTotal = 5 << 20
	})
	const body = 2 << 20
	stall := func(c net.Conn) error {
		hdr := []byte{'Q', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[1:], uint32(4+body))
		_, err := c.Write(append(hdr, make([]byte, body/2)...))
		return err
	}
	var stalled []net.Conn
	for i := 0; i < 2; i++ {
		c, _ := rawLogin(t, e, "alice")
		if err := stall(c); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	time.Sleep(300 * time.Millisecond) // both readers have taken their share
	over, _ := rawLogin(t, e, "alice")
	// The door refuses this message from its header, and may close the connection before
	// the rest of what the client writes is taken: a reset write is part of the answer.
	_ = stall(over)
	if code, msg := readError(over); code != "53200" {
		t.Fatalf("a third large message over the budget: got %s %q, want 53200 at once", code, msg)
	}
	for _, c := range stalled {
		if code, msg := readError(c); code != "08P01" || !strings.Contains(msg, "did not arrive whole") {
			t.Fatalf("stalled message: got %s %q, want 08P01 after the read timeout", code, msg)
		}
	}
	// The stalled messages gave their memory back: a large message that arrives whole runs.
	ctx := ctxT(t, 30*time.Second)
	c, err := pgconn.Connect(ctx, e.dsn("alice", "main"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	big := strings.Repeat("x", body)
	res, err := c.Exec(ctx, "SELECT length('"+big+"')").ReadAll()
	if err != nil || string(res[0].Rows[0][0]) != strconv.Itoa(body) {
		t.Fatalf("a large message after the stalled ones: %v", err)
	}
}
