// Package live keeps the registry of sessions that are open right now, whatever door they
// came through, so the console and the API can show who is connected to what and end a
// session. The ledger says what happened; this says what is happening. Doors register a
// session (through the gate) with a function that ends it in their own protocol's words.
package live

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Session describes one live session, as the console lists it.
type Session struct {
	ID          string    `json:"id"`
	Door        string    `json:"door"`
	Subject     string    `json:"subject"`
	Kind        string    `json:"kind"`
	Groups      []string  `json:"groups,omitempty"`
	Target      string    `json:"target"`
	Environment string    `json:"environment,omitempty"`
	Database    string    `json:"database,omitempty"`
	ClientAddr  string    `json:"client_addr"`
	Application string    `json:"application,omitempty"`
	Since       time.Time `json:"since"`
	// Statements and Rows count what the session has run so far (refusals included in
	// Statements; Rows are rows returned or changed).
	Statements int64 `json:"statements"`
	Rows       int64 `json:"rows"`
	// Endable says whether the door can end the session on request.
	Endable bool `json:"endable"`
	// Instance names the Gatehouse instance the session is on (its ledger chain), set by
	// the Fleet view when several instances share a store.
	Instance string `json:"instance,omitempty"`
}

// ErrNotFound means no live session has that id (it ended, or never existed here).
var ErrNotFound = errors.New("no live session with this id")

// ErrNotEndable means the session's door cannot end it on request.
var ErrNotEndable = errors.New("this session's door cannot end it on request")

// Registry holds the live sessions of one instance. The zero value is not usable; use New.
type Registry struct {
	mu       sync.Mutex
	sessions map[string]*Entry
	// version changes whenever a session is added, removed or counts a statement, so a
	// live view can tell cheaply whether there is anything new to show.
	version atomic.Uint64
	// statements, refused and held count every statement of every session since start.
	statements, refused, held atomic.Int64
}

// Totals are the instance's statement counts since it started.
type Totals struct {
	Statements, Refused, Held int64
}

// Totals returns the statement counts since start, for rates on the overview.
func (r *Registry) Totals() Totals {
	return Totals{Statements: r.statements.Load(), Refused: r.refused.Load(), Held: r.held.Load()}
}

// New returns an empty registry.
func New() *Registry { return &Registry{sessions: make(map[string]*Entry)} }

// Entry is one registered session; the door's gate session holds it until the end.
type Entry struct {
	reg        *Registry
	info       Session
	end        func(by string)
	statements atomic.Int64
	rows       atomic.Int64
	ending     atomic.Bool
	removed    atomic.Bool

	// recent grows by append up to RecentStatements and is a ring from then on (next is
	// where the next one goes): an idle session that ran one statement holds one, not
	// RecentStatements (5 KiB, a tenth of an idle session's memory).
	recentMu sync.Mutex
	recent   []Statement
	next     int
}

// Add registers a session; end is called (at most once, from any goroutine) when someone
// ends it, with the name of who did, and must make the door close the session promptly.
func (r *Registry) Add(s Session, end func(by string)) *Entry {
	e := &Entry{reg: r, info: s, end: end}
	e.info.Endable = end != nil
	e.info.Groups = slices.Clone(s.Groups)
	r.mu.Lock()
	r.sessions[s.ID] = e
	r.mu.Unlock()
	r.version.Add(1)
	return e
}

// Statement is one finished statement of a live session, as its live view shows it: the
// redacted text (literals replaced), never values.
type Statement struct {
	Time     time.Time     `json:"time"`
	Text     string        `json:"text"`
	Decision string        `json:"decision"`
	Rule     string        `json:"rule,omitempty"`
	Rows     int64         `json:"rows"`
	Duration time.Duration `json:"duration_ns"`
	SQLState string        `json:"sqlstate,omitempty"`
}

// Refused reports whether policy refused the statement (held ones included).
func (s Statement) Refused() bool { return s.Decision != "" && s.Decision != "allow" }

// RecentStatements is how many statements a live session keeps for its live view.
const RecentStatements = 50

// Count adds one finished statement to the session's totals and recent statements.
func (e *Entry) Count(st Statement) {
	if e == nil {
		return
	}
	e.statements.Add(1)
	if st.Rows > 0 {
		e.rows.Add(st.Rows)
	}
	e.reg.statements.Add(1)
	switch st.Decision {
	case "require_approval":
		e.reg.held.Add(1)
	case "", "allow":
	default:
		e.reg.refused.Add(1)
	}
	e.recentMu.Lock()
	if len(e.recent) < RecentStatements {
		e.recent = append(e.recent, st)
	} else {
		e.recent[e.next%RecentStatements] = st
	}
	e.next++
	e.recentMu.Unlock()
	e.reg.version.Add(1)
}

// Recent returns session id's last statements, newest first.
func (r *Registry) Recent(id string) ([]Statement, bool) {
	e, ok := r.Entry(id)
	if !ok {
		return nil, false
	}
	return e.Recent(), true
}

// Entry returns the live session id's entry, which stays readable after the session ends
// (a live view shows what it ran to the end).
func (r *Registry) Entry(id string) (*Entry, bool) {
	r.mu.Lock()
	e := r.sessions[id]
	r.mu.Unlock()
	return e, e != nil
}

// Session describes the entry's session now.
func (e *Entry) Session() Session { return e.snapshot() }

// Ended reports whether the session has left the registry.
func (e *Entry) Ended() bool { return e.removed.Load() }

// Recent returns the session's last statements, newest first.
func (e *Entry) Recent() []Statement {
	e.recentMu.Lock()
	defer e.recentMu.Unlock()
	n := min(e.next, RecentStatements)
	out := make([]Statement, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, e.recent[(e.next-i)%RecentStatements])
	}
	return out
}

// Remove takes the session off the registry (it ended). Removing twice is harmless.
func (e *Entry) Remove() {
	if e == nil {
		return
	}
	e.removed.Store(true)
	e.reg.mu.Lock()
	if e.reg.sessions[e.info.ID] == e {
		delete(e.reg.sessions, e.info.ID)
	}
	e.reg.mu.Unlock()
	e.reg.version.Add(1)
}

func (e *Entry) snapshot() Session {
	s := e.info
	s.Statements, s.Rows = e.statements.Load(), e.rows.Load()
	return s
}

// Version changes whenever anything listed changes.
func (r *Registry) Version() uint64 { return r.version.Load() }

// List returns the live sessions, longest-running first.
func (r *Registry) List() []Session {
	r.mu.Lock()
	out := make([]Session, 0, len(r.sessions))
	for _, e := range r.sessions {
		out = append(out, e.snapshot())
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Session) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Len is how many sessions are live.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Get returns one live session.
func (r *Registry) Get(id string) (Session, bool) {
	r.mu.Lock()
	e := r.sessions[id]
	r.mu.Unlock()
	if e == nil {
		return Session{}, false
	}
	return e.snapshot(), true
}

// End asks the door to end session id on behalf of by, and returns what the session was.
// The session leaves the registry when the door has closed it.
func (r *Registry) End(id, by string) (Session, error) {
	r.mu.Lock()
	e := r.sessions[id]
	r.mu.Unlock()
	if e == nil {
		return Session{}, ErrNotFound
	}
	if e.end == nil {
		return e.snapshot(), ErrNotEndable
	}
	if e.ending.CompareAndSwap(false, true) {
		e.end(by)
	}
	return e.snapshot(), nil
}
