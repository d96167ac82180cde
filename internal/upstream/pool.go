package upstream

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pool defaults, used for zero fields. A SCRAM login costs milliseconds of CPU on both
// sides; an idle backend costs a few MiB of server memory, so the pool keeps a handful per
// key and lets them go after a few minutes of disuse.
const (
	DefaultMaxIdlePerKey = 8
	DefaultMaxIdle       = 64
	DefaultIdleTimeout   = 5 * time.Minute
	DefaultMaxLifetime   = time.Hour
	DefaultResetTimeout  = 5 * time.Second
)

// Pool keeps upstream connections that sessions have finished with and hands them to later
// sessions of the same key (target, database, and every startup parameter, including the
// upstream role), the way PgBouncer's session mode does. A connection is reset before it is
// kept (DISCARD ALL: prepared statements, portals, temp tables, settings, role, LISTEN
// registrations, advisory locks, sequence state and cached plans). One whose session ended
// inside a transaction block (open or failed) is closed, as PgBouncer closes a server that is
// not idle: ending the backend aborts the transaction, and the next session does not even
// share its PID. A connection in any other state than idle at a message boundary is the
// caller's to close. Startup parameters are part of the key because RESET returns a setting to its
// startup value: a connection opened with another application_name or options would show
// its first session's values after a RESET.
//
// The zero value is ready to use with the defaults; set the fields before the first Get.
type Pool struct {
	// MaxIdlePerKey bounds the idle connections kept for one key (default 8).
	MaxIdlePerKey int
	// MaxIdle bounds the idle connections kept in total (default 64).
	MaxIdle int
	// IdleTimeout closes a connection left idle this long (default 5m).
	IdleTimeout time.Duration
	// MaxLifetime closes a connection this old instead of keeping it (default 1h), so
	// backends do not grow forever and configuration changes upstream reach every session.
	MaxLifetime time.Duration
	// ResetTimeout bounds the reset of a returned connection (default 5s).
	ResetTimeout time.Duration
	// Log receives pool events; nil is slog.Default().
	Log *slog.Logger

	mu     sync.Mutex
	idle   map[string][]*Conn // per key, oldest first
	nidle  int
	closed bool
	stats  PoolStats
}

// PoolStats counts what the pool did, for metrics and tests.
type PoolStats struct {
	Idle     int    // connections idle now
	Opened   uint64 // new upstream logins
	Reused   uint64 // sessions served by a kept connection
	Kept     uint64 // connections reset and kept after a session
	Discards uint64 // connections closed instead of kept or handed out (not reusable, reset failed, dead, too old, over the bounds)
}

// Get returns an idle connection of r's key, checked alive, or logs in anew.
func (p *Pool) Get(ctx context.Context, r Request) (*Conn, error) {
	key, err := Key(r)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for {
		c, stale := p.take(key, now)
		for _, s := range stale {
			s.terminate()
		}
		if c == nil {
			break
		}
		if alive(c) {
			c.Reused = true
			p.count(func(s *PoolStats) { s.Reused++ })
			return c, nil
		}
		p.count(func(s *PoolStats) { s.Discards++ })
		p.log().Debug("idle upstream connection found closed or not idle; discarded", "pid", c.PID)
		_ = c.Conn.Close()
	}
	c, err := Open(ctx, r)
	if err != nil {
		return nil, err
	}
	p.count(func(s *PoolStats) { s.Opened++ })
	return c, nil
}

// take pops the newest idle connection of key and also removes every expired one.
func (p *Pool) take(key string, now time.Time) (*Conn, []*Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	stale := p.expiredLocked(now)
	list := p.idle[key]
	if len(list) == 0 {
		return nil, stale
	}
	c := list[len(list)-1]
	list[len(list)-1] = nil
	p.setLocked(key, list[:len(list)-1])
	return c, stale
}

// Put takes a connection back from a session. txStatus is the status of the last
// ReadyForQuery the session saw; the caller must pass a connection that is at a message
// boundary with nothing outstanding (everything sent answered, no COPY in progress). The
// connection is reset and kept when it was idle ('I'), else closed; the error says why it was
// not kept.
func (p *Pool) Put(ctx context.Context, c *Conn, txStatus byte) error {
	if err := p.keep(ctx, c, txStatus); err != nil {
		p.count(func(s *PoolStats) { s.Discards++ })
		c.terminate()
		return err
	}
	return nil
}

func (p *Pool) keep(ctx context.Context, c *Conn, txStatus byte) error {
	if p.isClosed() {
		return errors.New("pool closed")
	}
	if txStatus != 'I' {
		return fmt.Errorf("session ended inside a transaction block (status %q)", txStatus)
	}
	if time.Since(c.created) > durationOr(p.MaxLifetime, DefaultMaxLifetime) {
		return errors.New("connection reached its maximum lifetime")
	}
	if err := p.reset(ctx, c); err != nil {
		return fmt.Errorf("reset upstream connection: %w", err)
	}
	c.idle = time.Now()
	c.Reused = false
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("pool closed")
	}
	list := append(p.idle[c.key], c)
	var evicted []*Conn
	if max := intOr(p.MaxIdlePerKey, DefaultMaxIdlePerKey); len(list) > max {
		evicted = append(evicted, list[:len(list)-max]...)
		list = append(list[:0:0], list[len(list)-max:]...)
	}
	p.setLocked(c.key, list)
	for max := intOr(p.MaxIdle, DefaultMaxIdle); p.nidle > max; {
		evicted = append(evicted, p.evictOldestLocked())
	}
	p.stats.Kept++
	p.stats.Discards += uint64(len(evicted))
	p.mu.Unlock()
	for _, e := range evicted {
		e.terminate()
	}
	return nil
}

// reset returns an idle backend to the state of a fresh login with DISCARD ALL (CLOSE ALL,
// SET SESSION AUTHORIZATION DEFAULT, RESET ALL — which includes ROLE —, DEALLOCATE ALL,
// UNLISTEN *, pg_advisory_unlock_all(), DISCARD PLANS, TEMP and SEQUENCES). Anything
// unexpected in the answer (an error, rows, COPY, another status than idle at the end) fails
// the reset, and the connection is closed.
func (p *Pool) reset(ctx context.Context, c *Conn) error {
	deadline := time.Now().Add(durationOr(p.ResetTimeout, DefaultResetTimeout))
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.Conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	const query = "DISCARD ALL"
	if _, err := c.Conn.Write(appendQuery(nil, query)); err != nil {
		return fmt.Errorf("send reset: %w", err)
	}
	br := bufio.NewReaderSize(c, 4096)
	var hdr [5]byte
	completed := false
	for ready := false; !ready; {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return fmt.Errorf("read reset answer: %w", err)
		}
		n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
		if n < 0 || n > 1<<20 {
			return fmt.Errorf("reset answer: message %q of invalid length %d", hdr[0], n)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return fmt.Errorf("read reset answer: %w", err)
		}
		switch hdr[0] {
		case 'S': // ParameterStatus: RESET ALL reports the settings it changed back
			name, rest, ok1 := cut0(body)
			value, _, ok2 := cut0(rest)
			if !ok1 || !ok2 {
				return errors.New("reset answer: malformed ParameterStatus")
			}
			c.ParameterStatuses[name] = value
		case 'N', 'A':
			// Notices, and notifications for the previous session's channels that were
			// still on their way: nobody may see them now.
		case 'C':
			if tag, _, _ := cut0(body); tag != query {
				return fmt.Errorf("reset answer: %q completed, expected %q", tag, query)
			}
			completed = true
		case 'Z':
			if len(body) != 1 {
				return errors.New("reset answer: malformed ReadyForQuery")
			}
			ready = true
			c.TxStatus = body[0]
		case 'E':
			return errors.New("reset failed upstream")
		default:
			return fmt.Errorf("reset answer: unexpected message %q", hdr[0])
		}
	}
	if !completed || c.TxStatus != 'I' {
		return fmt.Errorf("reset left the backend in status %q (completed: %v)", c.TxStatus, completed)
	}
	if b, _ := br.Peek(br.Buffered()); len(b) > 0 {
		c.Unread(b)
	}
	if err := c.Conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear deadline: %w", err)
	}
	return nil
}

// Run closes idle connections as they expire until ctx ends, then closes the pool.
func (p *Pool) Run(ctx context.Context) {
	every := durationOr(p.IdleTimeout, DefaultIdleTimeout) / 4
	every = min(max(every, 100*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.Close()
			return
		case now := <-t.C:
			p.mu.Lock()
			stale := p.expiredLocked(now)
			p.mu.Unlock()
			for _, c := range stale {
				c.terminate()
			}
		}
	}
}

// Close closes every idle connection; connections still in use are closed when they are put
// back.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	var all []*Conn
	for _, list := range p.idle {
		all = append(all, list...)
	}
	p.idle, p.nidle = nil, 0
	p.mu.Unlock()
	for _, c := range all {
		c.terminate()
	}
}

// Stats returns the pool's counters and its idle connections now.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Idle = p.nidle
	return s
}

func (p *Pool) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.Default()
}

func (p *Pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *Pool) count(f func(*PoolStats)) {
	p.mu.Lock()
	f(&p.stats)
	p.mu.Unlock()
}

// setLocked stores key's idle list, keeping the total count.
func (p *Pool) setLocked(key string, list []*Conn) {
	if p.idle == nil {
		p.idle = map[string][]*Conn{}
	}
	p.nidle += len(list) - len(p.idle[key])
	if len(list) == 0 {
		delete(p.idle, key)
	} else {
		p.idle[key] = list
	}
}

// expiredLocked removes and returns the idle connections past their idle timeout or
// lifetime.
func (p *Pool) expiredLocked(now time.Time) []*Conn {
	idleFor, lifetime := durationOr(p.IdleTimeout, DefaultIdleTimeout), durationOr(p.MaxLifetime, DefaultMaxLifetime)
	var stale []*Conn
	for key, list := range p.idle {
		keep := list[:0:0]
		for _, c := range list {
			if now.Sub(c.idle) > idleFor || now.Sub(c.created) > lifetime {
				stale = append(stale, c)
			} else {
				keep = append(keep, c)
			}
		}
		if len(keep) != len(list) {
			p.setLocked(key, keep)
		}
	}
	p.stats.Discards += uint64(len(stale))
	return stale
}

// evictOldestLocked removes the connection idle longest, across keys.
func (p *Pool) evictOldestLocked() *Conn {
	var oldKey string
	var old *Conn
	for key, list := range p.idle {
		if c := list[0]; old == nil || c.idle.Before(old.idle) {
			oldKey, old = key, c
		}
	}
	p.setLocked(oldKey, append(p.idle[oldKey][:0:0], p.idle[oldKey][1:]...))
	return old
}

// Key is the pool key of a request: who the connection logs in as, where, and every startup
// parameter (role included), in a canonical order. Connections are only ever shared between
// requests with equal keys.
func Key(r Request) (string, error) {
	t := r.Target
	if t == nil {
		return "", errors.New("upstream: no target")
	}
	database := r.Database
	if database == "" {
		database = t.Database
	}
	var b strings.Builder
	for _, s := range []string{t.Name, t.Host, strconv.Itoa(t.Port), t.User, t.TLS.Mode, t.TLS.CAFile, database} {
		b.WriteString(strconv.Quote(s))
		b.WriteByte(' ')
	}
	names := make([]string, 0, len(r.Params))
	for k := range r.Params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		b.WriteString(strconv.Quote(k))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(r.Params[k]))
		b.WriteByte(' ')
	}
	return b.String(), nil
}

func appendQuery(b []byte, sql string) []byte {
	b = append(b, 'Q', 0, 0, 0, 0)
	start := len(b) - 4
	b = append(b, sql...)
	b = append(b, 0)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func cut0(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func intOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}
