package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Dialect is the SQL flavour of a state database. Components write their queries once, in
// SQLite's style with ? placeholders, and Rebind them for PostgreSQL; only the migrations
// (column types) differ.
type Dialect int

const (
	// SQLite is the embedded state database in the data directory (one instance).
	SQLite Dialect = iota
	// Postgres is a state database shared by several instances.
	Postgres
)

// DialectOf tells which kind of database db is, from its driver.
func DialectOf(db *sql.DB) Dialect {
	if _, ok := db.Driver().(*stdlib.Driver); ok {
		return Postgres
	}
	return SQLite
}

// Rebind rewrites ? placeholders to PostgreSQL's $1, $2... for d Postgres, leaving question
// marks inside quoted strings and identifiers alone.
func Rebind(d Dialect, q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// IsUniqueViolation reports whether err is a unique-constraint violation in either dialect.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// PostgresSchema holds the shared state tables (tokens, approval requests), apart from the
// ledger's schema and from whatever else lives in the database.
const PostgresSchema = "gatehouse_state"

// NotifyChannel is the LISTEN/NOTIFY channel on which instances sharing a PostgreSQL state
// store tell each other that state changed; the payload names the topic (e.g. "tokens").
const NotifyChannel = "gatehouse_state"

// OpenPostgres opens the shared state database at dsn (through database/sql, so components
// keep one implementation for both dialects) and creates its schema. Like the ledger's
// store, a short connect timeout is set unless the DSN has one, so a database outage fails
// logins fast instead of hanging them.
func OpenPostgres(ctx context.Context, dsn string) (*sql.DB, error) {
	cc, err := postgresConfig(dsn, "gatehouse-state")
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cc)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state store: %w", err)
	}
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+PostgresSchema+`;
		CREATE TABLE IF NOT EXISTS `+PostgresSchema+`.schema_migrations (
			component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			PRIMARY KEY (component, version))`); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state store: create schema %s: %w", PostgresSchema, err)
	}
	return db, nil
}

func postgresConfig(dsn, app string) (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open state store: parse PostgreSQL DSN: %w", err)
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = 3 * time.Second
	}
	cc.RuntimeParams["search_path"] = PostgresSchema
	cc.RuntimeParams["application_name"] = app
	return cc, nil
}

// MigrateDialect applies a component's migrations for db's dialect: sqlite ones to the
// embedded store (as Migrate), postgres ones to a shared store, serialised across instances
// starting together by an advisory lock.
func MigrateDialect(ctx context.Context, db *sql.DB, component string, sqlite, postgres []string) error {
	if DialectOf(db) == SQLite {
		return Migrate(ctx, db, component, sqlite)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: connect: %w", component, err)
	}
	defer conn.Close()
	const lockKey = 0x6761746573 // "gates"
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("migrate %s: lock: %w", component, err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey) //nolint:errcheck // unlocked on disconnect anyway
	var have int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1`, component).Scan(&have); err != nil {
		return fmt.Errorf("read schema version of %s: %w", component, err)
	}
	for i := have; i < len(postgres); i++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
		if _, err := tx.ExecContext(ctx, postgres[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(component, version) VALUES ($1, $2)`, component, i+1); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
	}
	return nil
}

// Execer is what Notify needs: a database, connection or transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Notify tells every instance listening on a shared store that topic changed. Inside a
// transaction the notification goes out at commit, never for a rolled-back change. On the
// embedded store it does nothing: there is nobody else to tell.
func Notify(ctx context.Context, d Dialect, ex Execer, topic string) error {
	if d != Postgres {
		return nil
	}
	if _, err := ex.ExecContext(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, topic); err != nil {
		return fmt.Errorf("notify %s: %w", topic, err)
	}
	return nil
}

// Invalidations delivers changes other instances made to shared state. Components subscribe
// a function per topic, called after a notification for the topic and after every
// (re)connection, when notifications may have been missed. While Listening is false, they
// must poll.
type Invalidations interface {
	Subscribe(topic string, fn func())
	Listening() bool
}

// Listener holds one PostgreSQL connection LISTENing on NotifyChannel and reconnects when it
// drops. Safe for concurrent use.
type Listener struct {
	cc  *pgx.ConnConfig
	log *slog.Logger

	mu   sync.Mutex
	subs map[string][]func()

	listening atomic.Bool
	conn      atomic.Pointer[pgx.Conn]
}

// NewListener prepares a listener on the shared store at dsn; Run starts it.
func NewListener(dsn string, log *slog.Logger) (*Listener, error) {
	cc, err := postgresConfig(dsn, "gatehouse-state-listen")
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Listener{cc: cc, log: log, subs: map[string][]func(){}}, nil
}

// Subscribe implements Invalidations.
func (l *Listener) Subscribe(topic string, fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs[topic] = append(l.subs[topic], fn)
}

// Listening implements Invalidations: true while the LISTEN connection is up.
func (l *Listener) Listening() bool { return l.listening.Load() }

// listenProbeEvery is how long the listener waits for a notification before it checks that
// its connection still answers, so a silently dead connection is noticed and polling resumes.
var listenProbeEvery = 5 * time.Second

// Run listens until ctx ends, reconnecting (after at most a few seconds) whenever the
// connection is lost. Subscribers are told to resynchronise after each connection.
func (l *Listener) Run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx)
		l.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("state store notifications lost; polling until they are back", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (l *Listener) listen(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, l.cc)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	l.conn.Store(conn)
	defer func() {
		l.conn.Store(nil)
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(c)
		cancel()
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+NotifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	l.listening.Store(true)
	l.log.Debug("listening for state store notifications")
	l.fireAll() // anything may have changed while not listening
	for {
		wctx, cancel := context.WithTimeout(ctx, listenProbeEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			l.fire(n.Payload)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			perr := conn.Ping(pctx)
			cancel()
			if perr != nil {
				return fmt.Errorf("probe: %w", perr)
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

func (l *Listener) fire(topic string) {
	l.mu.Lock()
	fns := append([]func(){}, l.subs[topic]...)
	l.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (l *Listener) fireAll() {
	l.mu.Lock()
	var fns []func()
	for _, s := range l.subs {
		fns = append(fns, s...)
	}
	l.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// BackendPID is the server process of the LISTEN connection (0 while disconnected), so
// tests can cut it and watch the fallback.
func (l *Listener) BackendPID() uint32 {
	if c := l.conn.Load(); c != nil {
		return c.PgConn().PID()
	}
	return 0
}
