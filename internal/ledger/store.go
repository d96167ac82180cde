package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Store keeps events and checkpoints durably. Two implementations exist: SQLite in the data
// directory (the default) and PostgreSQL (shared by several instances, each with its own
// chain). The Ledger owns the chain logic; a Store only has to make a batch durable
// atomically: after a crash every event is either fully committed with its chain link or
// absent.
type Store interface {
	// Head returns the seq and hash of the last event of instance's chain; when it has no
	// events, the seq and hash of its last retention anchor, else (0, "").
	Head(ctx context.Context, instance string) (seq int64, hash string, err error)
	// Append writes events (already sealed) and checkpoints in one transaction and returns
	// once it is as durable as c asks (CommitSynced: fsync'd / committed).
	Append(ctx context.Context, recs []Record, cps []Checkpoint, c Commit) error
	// SyncWritten makes every CommitWritten batch appended so far as durable as a
	// CommitSynced one (the ledger's Sync barrier); nothing to do for a store whose every
	// commit is synchronous.
	SyncWritten(ctx context.Context) error
	// Probe makes one small durable write, to tell when a failed store can write again.
	Probe(ctx context.Context) error
	// AddCheckpoint stores one checkpoint durably.
	AddCheckpoint(ctx context.Context, cp Checkpoint) error
	// Checkpoints returns instance's checkpoints ordered by seq ("" for all instances).
	Checkpoints(ctx context.Context, instance string) ([]Checkpoint, error)
	// Instances lists the instances that have events or checkpoints.
	Instances(ctx context.Context) ([]string, error)
	// Scan calls fn for the events of instance with seq > after, in stored seq order, at
	// most limit of them (0: all).
	Scan(ctx context.Context, instance string, after int64, limit int, fn func(StoredEvent) error) error
	// DeleteThrough deletes instance's events with seq <= seq and stores anchor, in one
	// transaction.
	DeleteThrough(ctx context.Context, instance string, seq int64, anchor Checkpoint) (int64, error)
	// LastBefore returns the seq and hash of the end of the longest prefix of instance's
	// chain whose events are all older than t (0, "" when none), what retention deletes.
	LastBefore(ctx context.Context, instance string, t time.Time) (int64, string, error)
	// Search finds events; see Query.
	Search(ctx context.Context, q Query) ([]Event, error)
	// WhoDropped, PIIReaders and AgentsQueried answer the auditors' standing questions.
	WhoDropped(ctx context.Context, table string, r TimeRange) ([]DropRecord, error)
	PIIReaders(ctx context.Context, class string, r TimeRange) ([]IdentityCount, error)
	AgentsQueried(ctx context.Context, table string, r TimeRange) ([]IdentityCount, error)
	// TableReaders counts, per identity, the completed statements that touched a column of
	// each table and class in keys during r (the console's data map).
	TableReaders(ctx context.Context, keys []TableClass, r TimeRange) ([]TableReader, error)
	// LoadSynthetic inserts n synthetic events for instance directly in the database (not
	// chained, not through Record), for benchmarks of search at millions of events.
	LoadSynthetic(ctx context.Context, instance string, n int64, start time.Time) error
	// Close releases the store.
	Close() error
}

// Commit says how durable an Append must be when it returns: what the ledger.durability
// contract asks of the batch.
type Commit uint8

const (
	// CommitSynced: on stable storage (fdatasync'd, or a committed transaction); a power
	// loss cannot lose it.
	CommitSynced Commit = iota
	// CommitWritten: handed to the operating system (write(2) done), so a crash or kill -9
	// of Gatehouse cannot lose it, and synced by the store within MaxSyncDelay. A store
	// that cannot tell the two apart (PostgreSQL: every commit is synchronous) treats it
	// as CommitSynced.
	CommitWritten
)

// MaxSyncDelay bounds how long a CommitWritten batch of the embedded store waits for its
// fdatasync: only a power loss or kernel crash within it can lose the batch.
const MaxSyncDelay = 10 * time.Millisecond

// Record is a sealed event together with its stored form.
type Record struct {
	Event *Event
	Body  []byte
}

// StoredEvent is one event as a store holds it: the hashed record plus the values of the
// columns the store indexes it by, so a verifier can tell when someone edited the index
// columns (what searches see) without touching the hashed record.
type StoredEvent struct {
	// RowSeq is the seq column, which orders the chain in the store.
	RowSeq int64
	// Body is the hashed JSON record.
	Body []byte
	// Index column values as stored.
	Type, Subject, Decision string
	TimeNS                  int64
}

// indexMismatch reports the first index column whose value differs from the record.
func (s StoredEvent) indexMismatch(ev *Event) string {
	switch {
	case s.RowSeq != ev.Seq:
		return fmt.Sprintf("seq column is %d, record says %d", s.RowSeq, ev.Seq)
	case s.Type != string(ev.Type):
		return "type column differs from the record"
	case s.Subject != ev.Subject:
		return "subject column differs from the record"
	case s.Decision != ev.Decision:
		return "decision column differs from the record"
	case s.TimeNS != ev.Time.UnixNano():
		return "time column differs from the record"
	}
	return ""
}

// TimeRange bounds a search or an aggregation: From inclusive, To exclusive; zero values are
// open ends.
type TimeRange struct {
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
}

func (r TimeRange) bounds() (int64, int64) {
	from, to := int64(-1<<63), int64(1<<63-1)
	if !r.From.IsZero() {
		from = r.From.UnixNano()
	}
	if !r.To.IsZero() {
		to = r.To.UnixNano()
	}
	return from, to
}

// DropRecord answers "who dropped table X": one statement that dropped it.
type DropRecord struct {
	Time            time.Time `json:"time"`
	Instance        string    `json:"instance"`
	Seq             int64     `json:"seq"`
	Subject         string    `json:"subject"`
	IdentityKind    string    `json:"identity_kind"`
	ClientAddr      string    `json:"client_addr,omitempty"`
	ApplicationName string    `json:"application_name,omitempty"`
	Target          string    `json:"target,omitempty"`
	Environment     string    `json:"environment,omitempty"`
	Decision        string    `json:"decision"`
	SQLState        string    `json:"sqlstate,omitempty"`
	Table           string    `json:"table"`
	Kind            string    `json:"kind"`
	Text            string    `json:"text"`
	// Outcome is OutcomeCompleted, or OutcomeUnknown for a drop whose intent is recorded
	// but whose completion is not (Gatehouse died while it ran): it may have happened.
	Outcome string `json:"outcome"`
}

// IdentityCount is one identity and how many matching statements it ran.
type IdentityCount struct {
	Subject      string    `json:"subject"`
	IdentityKind string    `json:"identity_kind"`
	Statements   int64     `json:"statements"`
	First        time.Time `json:"first"`
	Last         time.Time `json:"last"`
}

// nonPIIClasses are sensitive classes that are secrets rather than personal data; the "pii"
// class filter matches every other class the classifier records.
var nonPIIClasses = map[string]bool{"secret": true, "credential": true, "password": true, "api_key": true, "token": true, "key": true}

// categoryRank orders statement categories by consequence, so the per-table index row of an
// event carries its most consequential use (a DROP beats a SELECT of the same table).
func categoryRank(c string) int {
	switch c {
	case "ddl":
		return 5
	case "admin":
		return 4
	case "write":
		return 3
	case "read":
		return 2
	}
	return 1
}

// tableRow, classRow and stmtRow are the denormalised index rows of one event.
type tableRow struct{ tbl, name, kind, category, access string }
type classRow struct{ class, column, category string }
type stmtRow struct{ kind, category string }

// indexRows derives the side-table rows and the full-text of an event.
func indexRows(ev *Event) (tables []tableRow, classes []classRow, stmts []stmtRow, text string) {
	tix := map[string]int{}
	cix := map[string]bool{}
	six := map[string]bool{}
	var texts []string
	addTable := func(tbl, access string, st *Statement) {
		key := strings.ToLower(tbl)
		if i, ok := tix[key]; ok {
			if categoryRank(st.Category) > categoryRank(tables[i].category) {
				tables[i].kind, tables[i].category, tables[i].access = st.Kind, st.Category, access
			}
			return
		}
		tix[key] = len(tables)
		tables = append(tables, tableRow{tbl: key, name: bareName(key), kind: st.Kind, category: st.Category, access: access})
	}
	pii := ""
	// Completed statements and their intents (recorded before they ran) get per-table and
	// per-class rows; the rows carry the event type, so the auditor questions count
	// completions, and intents only when no completion answers them (intent.go).
	aggregate := ev.Type == EventStatement || ev.Type == EventStatementIntent
	for i := range ev.Statements {
		st := &ev.Statements[i]
		if aggregate {
			indexTablesAndClasses(st, addTable, func(col, class string) {
				if !cix[class] {
					cix[class] = true
					classes = append(classes, classRow{class: class, column: col, category: st.Category})
				}
				if !nonPIIClasses[class] && pii == "" {
					pii = col
				}
			})
		}
		k := st.Kind + "\x00" + st.Category
		if !six[k] {
			six[k] = true
			stmts = append(stmts, stmtRow{kind: st.Kind, category: st.Category})
		}
		if st.Redacted != "" {
			texts = append(texts, st.Redacted)
		}
	}
	if pii != "" && !cix["pii"] {
		cat := ""
		if len(ev.Statements) > 0 {
			cat = ev.Statements[0].Category
		}
		classes = append(classes, classRow{class: "pii", column: pii, category: cat})
	}
	return tables, classes, stmts, strings.Join(texts, "\n")
}

// indexTablesAndClasses feeds one statement's tables and sensitive columns (sorted, for a
// deterministic choice of the column recorded per class) to the index builders.
func indexTablesAndClasses(st *Statement, addTable func(tbl, access string, st *Statement), addClass func(col, class string)) {
	for _, t := range st.TablesWritten {
		addTable(t, "w", st)
	}
	for _, t := range st.TablesRead {
		addTable(t, "r", st)
	}
	cols := make([]string, 0, len(st.Sensitive))
	for c := range st.Sensitive {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	for _, col := range cols {
		addClass(col, strings.ToLower(st.Sensitive[col]))
	}
}

// bareName is a table name without its schema, lower case.
func bareName(t string) string {
	t = strings.ToLower(t)
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		return t[i+1:]
	}
	return t
}

// decodeBody turns a stored record back into an Event.
func decodeBody(b []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return ev, fmt.Errorf("decode stored event: %w", err)
	}
	return ev, nil
}
