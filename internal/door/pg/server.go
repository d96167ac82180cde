package pg

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/upstream"
)

// Server is the PostgreSQL door: it accepts client connections, authenticates them and
// relays each session to its target through the gate. Set the fields, then call Serve.
type Server struct {
	// Gate decides, masks and records every statement.
	Gate *gate.Gate
	// Auth turns the password a client sends (a Gatehouse or OIDC token) into an identity.
	Auth identity.Authenticator
	// Target returns the current definition of a target. It is called for every new
	// connection, so a configuration reload applies to new sessions without dropping
	// existing ones.
	Target func(name string) (*config.Target, bool)
	// TLS is the client-facing TLS configuration; nil answers SSLRequest with 'N'.
	TLS *tls.Config
	// AllowInsecurePasswords accepts cleartext tokens over non-TLS connections from
	// non-loopback clients. Off by default: a token is a bearer credential.
	AllowInsecurePasswords bool
	// StartupTimeout bounds the time from accept to an authenticated session (default 30s),
	// so a client that sends nothing cannot hold a connection.
	StartupTimeout time.Duration
	// ConnectTimeout bounds connecting to the upstream (default 10s).
	ConnectTimeout time.Duration
	// MaxMessageSize bounds one protocol message (default DefaultMaxMessageSize); a longer
	// length prefix ends the connection with a clear error.
	MaxMessageSize int
	// MessageReadTimeout bounds how long a client message that has started arriving may
	// take to arrive whole (default DefaultMessageReadTimeout); a client that stalls inside
	// a message loses its connection instead of holding its buffer.
	MessageReadTimeout time.Duration
	// BufferedMessagesTotal bounds the memory all client connections together may hold
	// for large messages (default DefaultBufferedMessagesTotal); a message that does not
	// fit ends its connection with SQLSTATE 53200.
	BufferedMessagesTotal int64
	// RevalidateEvery is how often live sessions re-check their identity (default 2s), so
	// a revoked token ends its sessions within seconds.
	RevalidateEvery time.Duration
	// Log receives connection-level events; never secrets or result values.
	Log *slog.Logger
	// Metrics are updated when non-nil.
	Metrics *Metrics
	// Pool, when set, keeps upstream connections of ended sessions (reset) for later
	// sessions of the same target, database, role and startup parameters; nil opens a new
	// upstream connection for every session.
	Pool *upstream.Pool

	budget *messageBudget // set by Serve
	// outBufs and inBufs hold the client-bound and read buffers of sessions that are idle
	// (see clientOut and frameReader).
	outBufs, inBufs sync.Pool

	mu sync.Mutex
	// sessions are the live relays by the PID in their BackendKeyData, which is the real
	// upstream backend's PID; sessions on different targets may share a PID, so a cancel
	// request is routed by the (PID, secret) pair.
	sessions map[uint32][]*relay
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// Sessions returns the number of live relayed sessions, for readiness and tests.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, rs := range s.sessions {
		n += len(rs)
	}
	return n
}

// Serve accepts connections on l until ctx is done or l is closed. When it returns, every
// connection it accepted has been closed and its goroutines have ended.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if s.Gate == nil || s.Auth == nil || s.Target == nil {
		return errors.New("pg door: Gate, Auth and Target must be set")
	}
	s.mu.Lock()
	if s.budget == nil {
		total := s.BufferedMessagesTotal
		if total <= 0 {
			total = DefaultBufferedMessagesTotal
		}
		s.budget = newMessageBudget(total)
	}
	if s.sessions == nil {
		s.sessions = make(map[uint32][]*relay)
		s.conns = make(map[net.Conn]struct{})
	}
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	var err error
	for {
		var nc net.Conn
		nc, err = l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			break
		}
		s.Metrics.connection()
		s.track(nc, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(nc, false)
			s.handle(ctx, nc)
		}()
	}
	// Closing the client connections ends every session; their goroutines clean up.
	cancel()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("pg door: accept: %w", err)
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Defaults of the limits on what clients may make the door hold.
const (
	DefaultMessageReadTimeout    = 30 * time.Second
	DefaultBufferedMessagesTotal = 256 << 20
)

// Request codes of the untyped messages a client may send first.
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	// maxStartupPacket is PostgreSQL's own limit (MAX_STARTUP_PACKET_LENGTH).
	maxStartupPacket = 10000
)

// conn is a client connection during start-up.
type conn struct {
	net.Conn
	tls  bool
	addr string
}

// readStartupPacket reads one length-prefixed untyped packet directly from the connection
// (unbuffered, so no plaintext byte can be read ahead of a TLS handshake).
func readStartupPacket(c net.Conn) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, fmt.Errorf("read startup packet length: %w", err)
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > maxStartupPacket {
		return nil, &errFrame{msg: fmt.Sprintf("invalid startup packet length %d", n)}
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, &errFrame{msg: "connection closed inside the startup packet"}
	}
	return body, nil
}

// handle runs one client connection from accept to close.
func (s *Server) handle(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	c := &conn{Conn: nc, addr: nc.RemoteAddr().String()}
	startupTimeout := durationOr(s.StartupTimeout, 30*time.Second)
	deadline := time.Now().Add(startupTimeout)
	_ = nc.SetDeadline(deadline)
	var params map[string]string
	var negotiate bool
	for params == nil {
		body, err := readStartupPacket(c.Conn)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log().Info("pg startup ended", "client", c.addr, "err", err)
				var fe *errFrame
				if errors.As(err, &fe) {
					writeFatal(c.Conn, "08P01", "invalid startup packet: "+fe.msg)
				}
			}
			return
		}
		code := binary.BigEndian.Uint32(body)
		switch code {
		case codeSSLRequest:
			if s.TLS == nil || c.tls {
				if _, err := c.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := c.Write([]byte{'S'}); err != nil {
				return
			}
			tc := tls.Server(rawSockConn(c.Conn), s.TLS)
			hctx, cancel := context.WithDeadline(ctx, deadline)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				s.log().Info("pg TLS handshake failed", "client", c.addr, "err", err)
				return
			}
			c.Conn, c.tls = tc, true
		case codeGSSENCRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
		case codeCancelRequest:
			s.cancelRequest(ctx, body)
			return
		default:
			major, minor := code>>16, code&0xffff
			if major != 3 {
				writeFatal(c.Conn, "08P01", fmt.Sprintf("unsupported frontend protocol %d.%d: Gatehouse speaks protocol 3.0", major, minor))
				return
			}
			if minor != 0 {
				negotiate = true
				binary.BigEndian.PutUint32(body, pgproto3.ProtocolVersion30)
			}
			var sm pgproto3.StartupMessage
			if err := sm.Decode(body); err != nil {
				writeFatal(c.Conn, "08P01", "invalid startup packet: "+err.Error())
				return
			}
			params = sm.Parameters
		}
	}
	var unrecognized []string
	for k := range params {
		if strings.HasPrefix(k, "_pq_.") {
			unrecognized = append(unrecognized, k)
			delete(params, k)
		}
	}
	if negotiate || len(unrecognized) > 0 {
		sort.Strings(unrecognized)
		if !writeMsg(c.Conn, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unrecognized}) {
			return
		}
	}
	s.startSession(ctx, c, params, deadline)
}

// writeMsg encodes and writes one message; it reports whether the write succeeded.
func writeMsg(w io.Writer, msgs ...pgproto3.BackendMessage) bool {
	var buf []byte
	for _, m := range msgs {
		var err error
		buf, err = m.Encode(buf)
		if err != nil {
			return false
		}
	}
	_, err := w.Write(buf)
	return err == nil
}

// writeFatal sends an ErrorResponse of severity FATAL; the caller then closes the connection.
func writeFatal(w io.Writer, code, msg string) {
	writeMsg(w, &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
}

// refusedParams are startup parameters a client may not set through Gatehouse: they would
// change privileges (role, session_authorization), load code (preload libraries) or open a
// replication stream without the gate seeing a statement.
var refusedParams = map[string]bool{
	"role": true, "session_authorization": true, "replication": true,
	"local_preload_libraries": true, "session_preload_libraries": true,
}

// isRefusedParam reports whether name may not be set at startup.
func isRefusedParam(name string) bool { return refusedParams[strings.ToLower(name)] }

// splitOptions parses the libpq "options" startup parameter (command-line switches for the
// backend, separated by spaces, with backslash escapes) into name/value settings.
func splitOptions(opts string) ([][2]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(opts); i++ {
		ch := opts[i]
		switch {
		case ch == '\\' && i+1 < len(opts):
			i++
			cur.WriteByte(opts[i])
			inWord = true
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	var out [][2]string
	for i := 0; i < len(words); i++ {
		w := words[i]
		var setting string
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			setting = words[i]
		case strings.HasPrefix(w, "-c"):
			setting = w[2:]
		case strings.HasPrefix(w, "--"):
			setting = w[2:]
		default:
			return nil, fmt.Errorf("unsupported option %q in startup options: only -c name=value settings are accepted", w)
		}
		name, value, ok := strings.Cut(setting, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("startup option %q is not of the form name=value", setting)
		}
		out = append(out, [2]string{strings.ReplaceAll(name, "-", "_"), value})
	}
	return out, nil
}

// joinOptions re-encodes settings as a libpq options string.
func joinOptions(settings [][2]string) string {
	var b strings.Builder
	esc := func(s string) {
		for i := 0; i < len(s); i++ {
			if s[i] == ' ' || s[i] == '\\' || s[i] == '\t' {
				b.WriteByte('\\')
			}
			b.WriteByte(s[i])
		}
	}
	for i, kv := range settings {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-c ")
		esc(kv[0] + "=" + kv[1])
	}
	return b.String()
}

// isLoopback reports whether the client connected from this machine.
func isLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// startSession authenticates the client, opens the gate session and the upstream connection,
// and then relays until either side ends.
func (s *Server) startSession(ctx context.Context, c *conn, params map[string]string, deadline time.Time) {
	user := params["user"]
	log := s.log().With("client", c.addr)
	if user == "" {
		s.Metrics.loginFailed("no_user")
		s.Gate.LoginFailed(ctx, &gate.Session{ClientAddr: c.addr, TLS: c.tls}, "", "startup packet names no user")
		writeFatal(c, "28000", "no PostgreSQL user name specified in startup packet")
		return
	}
	sess := &gate.Session{ID: gate.NewSessionID(), ClientAddr: c.addr, TLS: c.tls, ApplicationName: params["application_name"], Options: map[string]string{}}
	loginFailed := func(cause, metric string) {
		s.Metrics.loginFailed(metric)
		s.Gate.LoginFailed(ctx, sess, user, cause)
		log.Info("pg login failed", "user", user, "cause", cause)
	}
	if !c.tls && !s.AllowInsecurePasswords && !isLoopback(c.RemoteAddr()) {
		loginFailed("cleartext password refused over a connection without TLS", "insecure_transport")
		writeFatal(c, "28P01", "Gatehouse accepts tokens only over TLS from this address: connect with sslmode=require (or verify-full)")
		return
	}
	if !writeMsg(c, &pgproto3.AuthenticationCleartextPassword{}) {
		return
	}
	fr := newFrameReader(c, 1<<20)
	fr.budget = s.budget
	frame, err := fr.next()
	if err != nil || frame[0] != 'p' {
		loginFailed("client did not send a password message", "protocol")
		if err == nil || !errors.Is(err, io.EOF) {
			writeFatal(c, "28P01", fmt.Sprintf("password authentication failed for user %q", user))
		}
		return
	}
	if fr.buffered() > 0 {
		// Nothing may follow the password before the server answers; a client that pipelines
		// past authentication is not speaking the protocol.
		loginFailed("client sent data after the password message", "protocol")
		writeFatal(c, "08P01", "unexpected data after the password message")
		return
	}
	// A password message is exactly one NUL-terminated string; PostgreSQL refuses anything
	// after the terminator, and so does Gatehouse: "<token>\0junk" is not the token.
	password, rest, ok := cstring(frame[5:])
	if !ok || len(rest) > 0 {
		loginFailed("malformed password message", "protocol")
		writeFatal(c, "28P01", fmt.Sprintf("password authentication failed for user %q", user))
		return
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	id, err := s.Auth.Authenticate(actx, user, password)
	cancel()
	if err != nil || id == nil {
		cause := "no identity"
		if err != nil {
			cause = err.Error()
		}
		loginFailed(cause, "bad_credentials")
		writeFatal(c, "28P01", fmt.Sprintf("password authentication failed for user %q", user))
		return
	}
	sess.Identity = id
	log = log.With("session", sess.ID, "subject", id.Subject)

	// Routing: "db@target" picks another database on the target.
	dbParam := params["database"]
	if dbParam == "" {
		dbParam = user
	}
	targetName, database := dbParam, ""
	if i := strings.LastIndexByte(dbParam, '@'); i >= 0 {
		database, targetName = dbParam[:i], dbParam[i+1:]
	}
	target, ok := s.Target(targetName)
	if !ok || target == nil {
		s.Metrics.refused("unknown_target")
		s.Gate.SessionRefused(ctx, sess, "unknown-target", fmt.Sprintf("target %q does not exist", targetName))
		writeFatal(c, "3D000", fmt.Sprintf("target %q does not exist; run \"gatehouse targets\" to list the targets you can use", targetName))
		return
	}
	if database == "" {
		database = target.Database
	}
	sess.Target, sess.Database = target, database

	upParams := map[string]string{}
	for k, v := range params {
		switch {
		case k == "user" || k == "database":
		case k == "options":
			settings, err := splitOptions(v)
			if err != nil {
				s.Metrics.refused("startup_parameter")
				s.Gate.SessionRefused(ctx, sess, "startup-parameter", "malformed options startup parameter")
				writeFatal(c, "08P01", err.Error())
				return
			}
			var keep [][2]string
			for _, kv := range settings {
				if strings.HasPrefix(kv[0], "gatehouse.") {
					sess.Options[kv[0]] = kv[1]
					continue
				}
				if isRefusedParam(kv[0]) {
					s.Metrics.refused("startup_parameter")
					s.Gate.SessionRefused(ctx, sess, "startup-parameter", fmt.Sprintf("startup setting %q refused", kv[0]))
					writeFatal(c, "42501", fmt.Sprintf("startup setting %q is not allowed through Gatehouse; use SQL after connecting, where policy applies", kv[0]))
					return
				}
				keep = append(keep, kv)
			}
			if len(keep) > 0 {
				upParams["options"] = joinOptions(keep)
			}
		case isRefusedParam(k):
			s.Metrics.refused("startup_parameter")
			s.Gate.SessionRefused(ctx, sess, "startup-parameter", fmt.Sprintf("startup parameter %q refused", k))
			writeFatal(c, "42501", fmt.Sprintf("startup parameter %q is not allowed through Gatehouse; use SQL after connecting, where policy applies", k))
			return
		case strings.HasPrefix(k, "gatehouse."):
			sess.Options[k] = v
		default:
			sess.Options[k] = v
			upParams[k] = v
		}
	}

	d, err := s.Gate.OpenSession(ctx, sess)
	if err != nil {
		// The ledger cannot record the session: an outage, not a permission problem, so the
		// client gets the outage's SQLSTATE (as statements do) and a reason to retry.
		s.Metrics.refused("ledger_unavailable")
		log.Warn("pg session refused: ledger unavailable", "err", err)
		writeFatal(c, "58000", "gatehouse: the audit ledger cannot record this session, so it is refused; try again shortly")
		return
	}
	if d.Action != gate.Allow {
		s.Metrics.refused("policy")
		msg := d.Message
		if msg == "" {
			msg = fmt.Sprintf("access to target %q denied", target.Name)
		}
		if d.Rule != "" {
			msg = fmt.Sprintf("gatehouse: denied by rule %q: %s", d.Rule, msg)
		}
		log.Info("pg session refused", "rule", d.Rule)
		writeFatal(c, "42501", msg)
		return
	}
	if sess.UpstreamRole != "" {
		upParams["role"] = sess.UpstreamRole
	}
	up, err := s.connectUpstream(ctx, target, database, upParams)
	if err != nil {
		s.Metrics.refused("upstream_unavailable")
		log.Warn("pg upstream connect failed", "target", target.Name, "err", err)
		writeFatal(c, "08006", fmt.Sprintf("could not connect to target %q: %v", target.Name, err))
		s.Gate.CloseSession(ctx, sess, "upstream connection failed")
		return
	}
	_ = c.SetDeadline(time.Time{})
	// From here on the start-up deadline is gone; each message must still arrive in time.
	fr.conn, fr.bodyTimeout = c.Conn, durationOr(s.MessageReadTimeout, DefaultMessageReadTimeout)
	r := newRelay(s, c, &pgconn.HijackedConn{Conn: up, PID: up.PID, SecretKey: up.SecretKey}, sess, fr)
	s.run(ctx, r, up, log)
}

// release returns the session's upstream connection to the pool when the relay parked it
// (idle at a message boundary after the client's Terminate), or closes it.
func (s *Server) release(ctx context.Context, r *relay, up *upstream.Conn, log *slog.Logger) {
	if s.Pool == nil || r.parkStatus == 0 {
		_ = up.Close()
		return
	}
	up.Unread(r.upLeftover())
	if err := s.Pool.Put(context.WithoutCancel(ctx), up, r.parkStatus); err != nil {
		log.Info("pg upstream connection not kept", "pid", up.PID, "err", err)
	}
}

// run registers the relay for cancel requests, greets the client and relays until the end.
func (s *Server) run(ctx context.Context, r *relay, up *upstream.Conn, log *slog.Logger) {
	s.register(r)
	s.Metrics.sessionDelta(1)
	s.Gate.Attach(r.sess, "postgres", func(by string) {
		r.end(fatalErr("57P01", "terminating connection: session ended by "+by+" in Gatehouse"))
	})
	defer func() {
		s.unregister(r)
		s.Metrics.sessionDelta(-1)
	}()
	var buf []byte
	buf, _ = (&pgproto3.AuthenticationOk{}).Encode(buf)
	ps, txStatus := up.ParameterStatuses, up.TxStatus
	keys := make([]string, 0, len(ps))
	for k := range ps {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		buf, _ = (&pgproto3.ParameterStatus{Name: k, Value: ps[k]}).Encode(buf)
	}
	var secret [4]byte
	binary.BigEndian.PutUint32(secret[:], r.keySecret)
	buf, _ = (&pgproto3.BackendKeyData{ProcessID: r.keyPID, SecretKey: secret[:]}).Encode(buf)
	if txStatus == 0 {
		txStatus = 'I'
	}
	buf, _ = (&pgproto3.ReadyForQuery{TxStatus: txStatus}).Encode(buf)
	if _, err := r.client.Write(buf); err != nil {
		_ = up.Close()
		s.Gate.CloseSession(ctx, r.sess, "client went away during start-up")
		return
	}
	log.Info("pg session started", "target", r.sess.Target.Name, "database", r.sess.Database, "tls", r.sess.TLS, "role", r.sess.UpstreamRole)
	reason := r.relay(ctx)
	// The upstream connection goes back before the session's end is recorded, so a client
	// that reconnects at once finds it in the pool.
	s.release(ctx, r, up, log)
	log.Info("pg session ended", "reason", reason)
	s.Gate.CloseSession(context.WithoutCancel(ctx), r.sess, reason)
}

// register gives the relay its BackendKeyData and makes it reachable by cancel requests. The
// PID is the upstream backend's own, so pg_backend_pid(), the PID in NotificationResponse and
// pg_terminate_backend(PID) agree with what the client was told; the secret is Gatehouse's,
// random per session and unique among the sessions sharing that PID (the upstream's secret
// never leaves Gatehouse, so a client cannot cancel upstream directly).
func (s *Server) register(r *relay) {
	r.keyPID = r.upPID
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		secret := binary.BigEndian.Uint32(b[:])
		taken := false
		for _, o := range s.sessions[r.keyPID] {
			taken = taken || o.keySecret == secret
		}
		if !taken {
			r.keySecret = secret
			break
		}
	}
	s.sessions[r.keyPID] = append(s.sessions[r.keyPID], r)
}

// unregister removes the relay from cancel routing.
func (s *Server) unregister(r *relay) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := slices.DeleteFunc(s.sessions[r.keyPID], func(o *relay) bool { return o == r })
	if len(rs) == 0 {
		delete(s.sessions, r.keyPID)
	} else {
		s.sessions[r.keyPID] = rs
	}
}

// cancelRequest routes a client's CancelRequest to the upstream backend of the session that
// owns the (PID, secret) pair. Unknown keys are ignored silently, as PostgreSQL does.
func (s *Server) cancelRequest(ctx context.Context, body []byte) {
	if len(body) != 12 {
		return
	}
	pid, secret := binary.BigEndian.Uint32(body[4:]), binary.BigEndian.Uint32(body[8:])
	var r *relay
	s.mu.Lock()
	for _, o := range s.sessions[pid] {
		if subtle.ConstantTimeEq(int32(o.keySecret), int32(secret)) == 1 {
			r = o
		}
	}
	s.mu.Unlock()
	if r == nil {
		return
	}
	if err := r.cancelUpstream(ctx); err != nil {
		s.log().Warn("pg cancel request could not reach upstream", "session", r.sess.ID, "err", err)
	}
}

// connectUpstream takes a connection of the same target, database and startup parameters
// (role included) from the pool, or logs in to the target with its own credentials
// (internal/upstream, shared with the other doors).
func (s *Server) connectUpstream(ctx context.Context, t *config.Target, database string, params map[string]string) (*upstream.Conn, error) {
	req := upstream.Request{Target: t, Database: database, Params: params, Timeout: durationOr(s.ConnectTimeout, 10*time.Second)}
	if s.Pool != nil {
		return s.Pool.Get(ctx, req)
	}
	return upstream.Open(ctx, req)
}
