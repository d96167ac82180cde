package live

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/internal/store"
)

// Fleet is the live sessions of every instance sharing a PostgreSQL state store, so the
// console and the API of any instance list everyone's sessions and can end any of them.
//
// Each instance publishes a snapshot of its own registry to the store (one row per
// instance, rewritten when a session starts, ends or counts a statement, and at least every
// Timing.HeartbeatEvery as a heartbeat; a session starting or ending is notified at once, changed
// counts are read at the next poll); a row whose heartbeat is older than Timing.StaleAfter belongs to
// an instance that is gone, and its sessions are not listed. Ending another instance's
// session files a kill request in the store and notifies (LISTEN/NOTIFY, as approvals and
// revocations travel); the owning instance takes the request and ends the session in its
// door's words. Notifications only wake instances up: every instance also polls, so a missed
// notification delays a kill by at most Timing.PollEvery.
//
// With the embedded store (one instance) a Fleet is just the local registry.
type Fleet struct {
	reg      *Registry
	instance string
	db       *sql.DB // nil: nothing shared
	log      *slog.Logger

	// wake is signalled by notifications: reread the others' sessions and kill requests.
	wake chan struct{}

	mu        sync.Mutex
	remote    []Session // other instances' live sessions, as last read
	remoteRaw []byte    // their serialized form, to tell a change from a heartbeat
	// remoteGen changes whenever remote changes, so Version covers both.
	remoteGen atomic.Uint64
	// remoteAct is the other live instances' activity, as last read, by instance name.
	remoteAct []Activity

	// meter measures this instance's statements per second.
	meter rateMeter

	// Timing is the pace of the shared view (DefaultFleetTiming()); set it before Run.
	Timing FleetTiming
}

// FleetTiming is the pace of the shared view.
type FleetTiming struct {
	// PublishEvery is how often an instance checks whether its sessions changed.
	PublishEvery time.Duration
	// HeartbeatEvery is how often an instance republishes even without a change.
	HeartbeatEvery time.Duration
	// StaleAfter is how old a heartbeat may be before its instance counts as gone.
	StaleAfter time.Duration
	// PollEvery is how often the others' sessions and kill requests are read without a
	// notification (the safety net for missed ones).
	PollEvery time.Duration
}

// DefaultFleetTiming is the pace NewFleet sets: a change is seen within a second or two, a
// silent instance is dropped after 20 s.
func DefaultFleetTiming() FleetTiming {
	return FleetTiming{PublishEvery: 500 * time.Millisecond, HeartbeatEvery: 5 * time.Second, StaleAfter: 20 * time.Second, PollEvery: 2 * time.Second}
}

// The notification topics of the shared view.
const (
	topicSessions = "live.sessions"
	topicKill     = "live.kill"
)

// fleetMigrations create the shared tables (PostgreSQL only; never edit a released one).
var fleetMigrations = []string{
	`CREATE TABLE live_instances (
		instance  TEXT PRIMARY KEY,
		sessions  JSONB NOT NULL,
		heartbeat TIMESTAMPTZ NOT NULL DEFAULT now());
	CREATE TABLE live_kills (
		id           BIGSERIAL PRIMARY KEY,
		instance     TEXT NOT NULL,
		session_id   TEXT NOT NULL,
		ended_by     TEXT NOT NULL,
		requested_at TIMESTAMPTZ NOT NULL DEFAULT now());
	CREATE INDEX live_kills_instance ON live_kills (instance);`,
	// Each instance's statement counts travel with its heartbeat, so any instance's overview
	// shows the fleet's statements per second, refusals and held statements.
	`ALTER TABLE live_instances
		ADD COLUMN statements BIGINT NOT NULL DEFAULT 0,
		ADD COLUMN refused    BIGINT NOT NULL DEFAULT 0,
		ADD COLUMN held       BIGINT NOT NULL DEFAULT 0,
		ADD COLUMN rate       DOUBLE PRECISION NOT NULL DEFAULT -1;`,
}

// NewFleet returns the fleet view over reg, the registry of this instance (named instance,
// its ledger chain's name). db is the state store: on a shared PostgreSQL store the view
// spans every instance (its tables are created here) and inval, when not nil, delivers the
// other instances' notifications; on the embedded store (or nil db) it is reg alone.
func NewFleet(ctx context.Context, reg *Registry, instance string, db *sql.DB, inval store.Invalidations, log *slog.Logger) (*Fleet, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &Fleet{reg: reg, instance: instance, log: log, wake: make(chan struct{}, 1), Timing: DefaultFleetTiming()}
	if db == nil || store.DialectOf(db) != store.Postgres {
		return f, nil
	}
	if instance == "" {
		return nil, errors.New("live sessions: instances sharing a store need a name")
	}
	if err := store.MigrateDialect(ctx, db, "live", nil, fleetMigrations); err != nil {
		return nil, fmt.Errorf("prepare shared live sessions: %w", err)
	}
	f.db = db
	if inval != nil {
		poke := func() {
			select {
			case f.wake <- struct{}{}:
			default:
			}
		}
		inval.Subscribe(topicSessions, poke)
		inval.Subscribe(topicKill, poke)
	}
	return f, nil
}

// Shared reports whether the view spans several instances (a shared PostgreSQL store).
func (f *Fleet) Shared() bool { return f.db != nil }

// Instance is the name of this instance.
func (f *Fleet) Instance() string { return f.instance }

// Local is this instance's own registry.
func (f *Fleet) Local() *Registry { return f.reg }

// Version changes whenever anything listed changes, here or on another instance.
func (f *Fleet) Version() uint64 { return f.reg.Version() + f.remoteGen.Load() }

// List returns the live sessions of every instance, longest-running first. On a shared
// store each names its instance.
func (f *Fleet) List() []Session {
	out := f.reg.List()
	if f.db == nil {
		return out
	}
	for i := range out {
		out[i].Instance = f.instance
	}
	f.mu.Lock()
	out = append(out, f.remote...)
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b Session) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Get returns one live session, on whichever instance it is.
func (f *Fleet) Get(id string) (Session, bool) {
	if s, ok := f.reg.Get(id); ok {
		if f.db != nil {
			s.Instance = f.instance
		}
		return s, true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.remote {
		if s.ID == id {
			return s, true
		}
	}
	return Session{}, false
}

// End ends session id on behalf of by, on whichever instance it is: a local one directly, a
// remote one by a kill request its instance takes within moments. It returns what the
// session was; ErrNotFound if no instance lists it.
func (f *Fleet) End(ctx context.Context, id, by string) (Session, error) {
	if _, ok := f.reg.Get(id); ok || f.db == nil {
		s, err := f.reg.End(id, by)
		if f.db != nil && err == nil {
			s.Instance = f.instance
		}
		return s, err
	}
	s, ok := f.Get(id)
	if !ok {
		return Session{}, ErrNotFound
	}
	if !s.Endable {
		return s, ErrNotEndable
	}
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		return s, fmt.Errorf("end session %s on instance %s: %w", id, s.Instance, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after commit
	if _, err := tx.ExecContext(ctx, `INSERT INTO live_kills (instance, session_id, ended_by) VALUES ($1, $2, $3)`, s.Instance, id, by); err != nil {
		return s, fmt.Errorf("end session %s on instance %s: file the request: %w", id, s.Instance, err)
	}
	if err := store.Notify(ctx, store.Postgres, tx, topicKill); err != nil {
		return s, fmt.Errorf("end session %s on instance %s: %w", id, s.Instance, err)
	}
	if err := tx.Commit(); err != nil {
		return s, fmt.Errorf("end session %s on instance %s: file the request: %w", id, s.Instance, err)
	}
	return s, nil
}

// Run publishes this instance's sessions and activity, follows the others' and carries out kill requests
// for this instance until ctx ends; then it withdraws this instance's sessions. With the
// embedded store it returns at once.
func (f *Fleet) Run(ctx context.Context) {
	if f.db == nil {
		return
	}
	tick := time.NewTicker(f.Timing.PublishEvery)
	defer tick.Stop()
	var (
		published     = ^uint64(0)
		publishedAt   time.Time
		publishedRate float64
		lastIDs       = []string{"(none yet)"}
		polledAt      time.Time
	)
	for {
		woken := false
		select {
		case <-ctx.Done():
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if _, err := f.db.ExecContext(c, `DELETE FROM live_instances WHERE instance = $1`, f.instance); err == nil {
				_ = store.Notify(c, store.Postgres, f.db, topicSessions)
			}
			cancel()
			return
		case <-f.wake:
			woken = true
		case <-tick.C:
		}
		// The rate is sampled here on every turn, so it is current when published and falls
		// to zero (published once more) when the instance goes quiet.
		ver, act := f.reg.Version(), f.localActivity(time.Now(), 0)
		if ver != published || act.Rate != publishedRate || time.Since(publishedAt) >= f.Timing.HeartbeatEvery {
			ids, err := f.publish(ctx, lastIDs, act)
			if err != nil {
				f.log.Warn("live sessions: publish to the shared store", "err", err)
			} else {
				published, publishedAt, publishedRate, lastIDs = ver, time.Now(), act.Rate, ids
			}
		}
		if woken || time.Since(polledAt) >= f.Timing.PollEvery {
			polledAt = time.Now()
			if err := f.takeKills(ctx); err != nil {
				f.log.Warn("live sessions: read kill requests", "err", err)
			}
			if err := f.refresh(ctx); err != nil {
				f.log.Warn("live sessions: read other instances' sessions", "err", err)
			}
		}
	}
}

// publish writes this instance's sessions and activity with a fresh heartbeat and, when
// sessions started or ended since the last publish (prev lists the ids then), tells the other
// instances at once; changed counts alone reach them at their next poll. It returns the ids
// written.
func (f *Fleet) publish(ctx context.Context, prev []string, act Activity) ([]string, error) {
	list := f.reg.List()
	ids := make([]string, len(list))
	for i := range list {
		list[i].Instance = f.instance
		ids[i] = list[i].ID
	}
	snap, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("encode sessions: %w", err)
	}
	if _, err := f.db.ExecContext(ctx, `INSERT INTO live_instances (instance, sessions, heartbeat, statements, refused, held, rate)
		VALUES ($1, $2, now(), $3, $4, $5, $6)
		ON CONFLICT (instance) DO UPDATE SET sessions = EXCLUDED.sessions, heartbeat = now(),
			statements = EXCLUDED.statements, refused = EXCLUDED.refused, held = EXCLUDED.held, rate = EXCLUDED.rate`,
		f.instance, string(snap), act.Statements, act.Refused, act.Held, act.Rate); err != nil {
		return nil, fmt.Errorf("write sessions: %w", err)
	}
	if !slices.Equal(ids, prev) {
		if err := store.Notify(ctx, store.Postgres, f.db, topicSessions); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// refresh rereads the other instances' sessions and activity (those with a recent heartbeat).
func (f *Fleet) refresh(ctx context.Context) error {
	rows, err := f.db.QueryContext(ctx, `SELECT instance, sessions, statements, refused, held, rate, heartbeat FROM live_instances
		WHERE instance <> $1 AND heartbeat > now() - make_interval(secs => $2) ORDER BY instance`, f.instance, f.Timing.StaleAfter.Seconds())
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		all  []Session
		raw  []byte
		acts []Activity
	)
	for rows.Next() {
		var (
			b []byte
			a Activity
		)
		if err := rows.Scan(&a.Instance, &b, &a.Statements, &a.Refused, &a.Held, &a.Rate, &a.At); err != nil {
			return err
		}
		var list []Session
		if err := json.Unmarshal(b, &list); err != nil {
			return fmt.Errorf("decode sessions of instance %s: %w", a.Instance, err)
		}
		a.Sessions = len(list)
		all = append(all, list...)
		raw = append(raw, b...)
		acts = append(acts, a)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	changed := !bytes.Equal(raw, f.remoteRaw)
	f.remote, f.remoteRaw, f.remoteAct = all, raw, acts
	f.mu.Unlock()
	if changed {
		f.remoteGen.Add(1)
	}
	return nil
}

// takeKills carries out (and removes) the kill requests filed for this instance's sessions.
// A request for a session that has ended meanwhile is simply dropped.
func (f *Fleet) takeKills(ctx context.Context) error {
	// Requests for an instance that went away before taking them would stay forever.
	if _, err := f.db.ExecContext(ctx, `DELETE FROM live_kills WHERE requested_at < now() - interval '1 hour'`); err != nil {
		return err
	}
	rows, err := f.db.QueryContext(ctx, `DELETE FROM live_kills WHERE instance = $1 RETURNING session_id, ended_by`, f.instance)
	if err != nil {
		return err
	}
	defer rows.Close()
	type kill struct{ id, by string }
	var kills []kill
	for rows.Next() {
		var k kill
		if err := rows.Scan(&k.id, &k.by); err != nil {
			return err
		}
		kills = append(kills, k)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, k := range kills {
		if _, err := f.reg.End(k.id, k.by); err != nil && !errors.Is(err, ErrNotFound) {
			f.log.Warn("live sessions: end a session on another instance's request", "session", k.id, "err", err)
		}
	}
	return nil
}
