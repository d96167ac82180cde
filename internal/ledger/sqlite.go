package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/uring"
)

// SQLiteFile is the ledger's database file inside the data directory. The ledger has a file
// of its own (not the shared state database) so that its fsync'd group commits never wait
// behind, or hold up, other components' writes.
const SQLiteFile = "ledger.db"

// sqliteMigrations create the ledger's tables. Events keep their hashed record in body and
// copies of the fields searches filter on in indexed columns; the side tables denormalise
// the tables, sensitive classes and statement kinds of each event (with the event's time,
// subject and identity kind) so auditor questions are answered from one index each.
var sqliteMigrations = []string{`
CREATE TABLE ledger_events (
	id INTEGER PRIMARY KEY,
	instance TEXT NOT NULL,
	seq INTEGER NOT NULL,
	time_ns INTEGER NOT NULL,
	type TEXT NOT NULL,
	subject TEXT,
	identity_kind TEXT,
	target TEXT,
	environment TEXT,
	decision TEXT,
	session TEXT,
	hash TEXT NOT NULL,
	body TEXT NOT NULL,
	UNIQUE (instance, seq)
);
CREATE INDEX ledger_events_time ON ledger_events(time_ns);
CREATE INDEX ledger_events_subject ON ledger_events(subject, time_ns);
CREATE INDEX ledger_events_kind ON ledger_events(identity_kind, time_ns);
CREATE INDEX ledger_events_target ON ledger_events(target, time_ns);
CREATE INDEX ledger_events_decision ON ledger_events(decision, time_ns);
CREATE INDEX ledger_events_type ON ledger_events(type, time_ns);
CREATE INDEX ledger_events_session ON ledger_events(session);
CREATE TABLE ledger_tables (
	instance TEXT NOT NULL, seq INTEGER NOT NULL, time_ns INTEGER NOT NULL,
	subject TEXT, identity_kind TEXT, decision TEXT,
	tbl TEXT NOT NULL, name TEXT NOT NULL, kind TEXT, category TEXT, access TEXT,
	PRIMARY KEY (instance, seq, tbl)
) WITHOUT ROWID;
CREATE INDEX ledger_tables_name ON ledger_tables(name, time_ns);
CREATE INDEX ledger_tables_tbl ON ledger_tables(tbl, time_ns);
CREATE INDEX ledger_tables_agents ON ledger_tables(name, identity_kind, time_ns, subject);
CREATE TABLE ledger_classes (
	instance TEXT NOT NULL, seq INTEGER NOT NULL, time_ns INTEGER NOT NULL,
	subject TEXT, identity_kind TEXT, decision TEXT,
	class TEXT NOT NULL, col TEXT, category TEXT,
	PRIMARY KEY (instance, seq, class)
) WITHOUT ROWID;
CREATE INDEX ledger_classes_class ON ledger_classes(class, time_ns);
CREATE INDEX ledger_classes_readers ON ledger_classes(class, category, decision, time_ns, subject, identity_kind);
CREATE TABLE ledger_statements (
	instance TEXT NOT NULL, seq INTEGER NOT NULL, time_ns INTEGER NOT NULL,
	kind TEXT NOT NULL, category TEXT NOT NULL,
	PRIMARY KEY (instance, seq, kind, category)
) WITHOUT ROWID;
CREATE INDEX ledger_statements_kind ON ledger_statements(kind, time_ns);
CREATE INDEX ledger_statements_category ON ledger_statements(category, time_ns);
CREATE VIRTUAL TABLE ledger_fts USING fts5(text, content='', contentless_delete=1);
CREATE TABLE ledger_checkpoints (
	instance TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, time_ns INTEGER NOT NULL,
	kind TEXT NOT NULL, signature TEXT NOT NULL,
	PRIMARY KEY (instance, seq, kind)
);
`,
	// 2: filters on identity kind and decision narrow the side-table scans.
	`CREATE INDEX ledger_classes_decision ON ledger_classes(class, decision, time_ns);
CREATE INDEX ledger_classes_kind ON ledger_classes(class, identity_kind, time_ns);
CREATE INDEX ledger_tables_decision ON ledger_tables(name, decision, time_ns);
`,
	// 3: "who dropped table X" finds the DROP rows of a table directly.
	`CREATE INDEX ledger_tables_kind ON ledger_tables(name, kind, time_ns);
CREATE INDEX ledger_tables_tbl_kind ON ledger_tables(tbl, kind, time_ns);
CREATE INDEX ledger_classes_readers_by_subject ON ledger_classes(class, category, decision, subject, identity_kind, time_ns);
`,
	// 4: a daily rollup of sensitive-data access per identity, so "who read PII last
	// quarter" reads one row per reader per day instead of one per statement.
	`CREATE TABLE ledger_class_daily (
	class TEXT NOT NULL, category TEXT NOT NULL, decision TEXT NOT NULL, day BIGINT NOT NULL,
	subject TEXT NOT NULL, identity_kind TEXT NOT NULL,
	n BIGINT NOT NULL, first_ns BIGINT NOT NULL, last_ns BIGINT NOT NULL,
	PRIMARY KEY (class, category, decision, day, subject, identity_kind)
);
INSERT INTO ledger_class_daily(class, category, decision, day, subject, identity_kind, n, first_ns, last_ns)
SELECT class, COALESCE(category, ''), COALESCE(decision, ''), (CASE WHEN time_ns >= 0 THEN time_ns / 86400000000000 ELSE (time_ns - 86399999999999) / 86400000000000 END), COALESCE(subject, ''), COALESCE(identity_kind, ''), COUNT(*), MIN(time_ns), MAX(time_ns)
FROM ledger_classes GROUP BY 1, 2, 3, 4, 5, 6;
`,
	// 5: the row the ledger rewrites to find out that a failed store writes again.
	`CREATE TABLE ledger_probe (id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL);
`,
	// 6: the search indexes are built after the commit by an indexer (sqliteindex.go);
	// this is how far each chain is indexed. Everything stored so far was indexed in its
	// own commit.
	`CREATE TABLE ledger_index_state (instance TEXT PRIMARY KEY, seq INTEGER NOT NULL);
INSERT INTO ledger_index_state(instance, seq) SELECT instance, MAX(seq) FROM ledger_events GROUP BY instance;
`,
	// 7: intents get side-table rows too, told apart by type, so the auditor questions
	// can count a statement whose completion was lost (intent.go). The covering indexes of
	// the aggregations carry type last; one small partial index per side table finds the
	// intents; the session index orders a session's events, for pairing intents with their
	// completions. ledger_statements always held intents: mark them. (Intents stored
	// before this version have no table or class rows.)
	`ALTER TABLE ledger_tables ADD COLUMN type TEXT NOT NULL DEFAULT 'statement';
ALTER TABLE ledger_classes ADD COLUMN type TEXT NOT NULL DEFAULT 'statement';
ALTER TABLE ledger_statements ADD COLUMN type TEXT NOT NULL DEFAULT 'statement';
UPDATE ledger_statements SET type = 'statement.intent' WHERE (instance, seq) IN (SELECT instance, seq FROM ledger_events WHERE type = 'statement.intent');
DROP INDEX ledger_tables_agents;
CREATE INDEX ledger_tables_agents ON ledger_tables(name, identity_kind, time_ns, subject, type);
DROP INDEX ledger_classes_readers;
CREATE INDEX ledger_classes_readers ON ledger_classes(class, category, decision, time_ns, subject, identity_kind, type);
DROP INDEX ledger_classes_readers_by_subject;
CREATE INDEX ledger_classes_readers_by_subject ON ledger_classes(class, category, decision, subject, identity_kind, time_ns, type);
CREATE INDEX ledger_tables_intents ON ledger_tables(name, identity_kind, time_ns) WHERE type = 'statement.intent';
CREATE INDEX ledger_classes_intents ON ledger_classes(class, category, time_ns) WHERE type = 'statement.intent';
CREATE INDEX ledger_statements_intents ON ledger_statements(kind, time_ns) WHERE type = 'statement.intent';
DROP INDEX ledger_events_session;
CREATE INDEX ledger_events_session ON ledger_events(session, seq);
`,
	// 8: fewer B-trees per indexed event (each costs about 5 µs of CPU per row on the
	// proxy's hot path): a schema-qualified table is found through the bare-name indexes
	// with a filter on tbl; the DROP index holds DROP rows only; the readers-by-subject
	// index lost its query to the daily rollup (migration 4).
	`DROP INDEX ledger_tables_tbl;
DROP INDEX ledger_tables_tbl_kind;
DROP INDEX ledger_tables_kind;
CREATE INDEX ledger_tables_drops ON ledger_tables(name, kind, time_ns) WHERE kind >= 'DROP ' AND kind < 'DROP~';
DROP INDEX ledger_classes_readers_by_subject;
`,
	// 9: the decision and type indexes hold only the rows searches use them for (refusals,
	// events other than completed statements): the common allowed statement skips four
	// B-trees. Searches add the matching "<> 'allow'" / "<> 'statement'" term (search.go).
	`DROP INDEX ledger_events_type;
CREATE INDEX ledger_events_type ON ledger_events(type, time_ns) WHERE type <> 'statement';
DROP INDEX ledger_events_decision;
CREATE INDEX ledger_events_decision ON ledger_events(decision, time_ns) WHERE decision <> 'allow';
DROP INDEX ledger_tables_decision;
CREATE INDEX ledger_tables_decision ON ledger_tables(name, decision, time_ns) WHERE decision <> 'allow';
DROP INDEX ledger_classes_decision;
CREATE INDEX ledger_classes_decision ON ledger_classes(class, decision, time_ns) WHERE decision <> 'allow';
`,
	// 10: the agents index holds agents' rows only (its queries all say identity_kind =
	// 'agent'): the table row of a human's or a service's statement skips it.
	`DROP INDEX ledger_tables_agents;
CREATE INDEX ledger_tables_agents ON ledger_tables(name, identity_kind, time_ns, subject, type) WHERE identity_kind = 'agent';
`,
	// 11: searches go through segment terms and the events' facets (segindex.go) instead
	// of per-event index rows: the indexes only searches used go, and so does the per-event
	// full-text index (texts are interned and indexed once each). Events stored before get
	// their facets and terms from the indexer (ledger_backfill); their side-table rows stay.
	// aux marks the events with side-table rows, the only ones pairing intents with their
	// completions reads through the session index (intent.go).
	`ALTER TABLE ledger_events ADD COLUMN facets TEXT;
ALTER TABLE ledger_events ADD COLUMN text_id INTEGER;
ALTER TABLE ledger_events ADD COLUMN aux INTEGER NOT NULL DEFAULT 1;
DROP INDEX ledger_events_session;
CREATE INDEX ledger_events_session ON ledger_events(session, seq) WHERE aux = 1;
CREATE TABLE ledger_texts (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE ledger_text_fts USING fts5(text, content='');
CREATE TABLE ledger_terms (
	term TEXT NOT NULL, seg INTEGER NOT NULL, min_ns INTEGER NOT NULL, max_ns INTEGER NOT NULL,
	PRIMARY KEY (term, seg)
) WITHOUT ROWID;
CREATE TABLE ledger_backfill (id INTEGER PRIMARY KEY, next_id INTEGER NOT NULL, end_id INTEGER NOT NULL);
INSERT INTO ledger_backfill(id, next_id, end_id) SELECT 1, 0, COALESCE(MAX(id), 0) FROM ledger_events;
DROP INDEX ledger_events_time;
DROP INDEX ledger_events_subject;
DROP INDEX ledger_events_kind;
DROP INDEX ledger_events_target;
DROP INDEX ledger_events_decision;
DROP INDEX ledger_events_type;
DROP INDEX ledger_tables_name;
DROP INDEX ledger_tables_decision;
DROP INDEX ledger_classes_class;
DROP INDEX ledger_classes_decision;
DROP INDEX ledger_classes_kind;
DROP INDEX ledger_statements_kind;
DROP INDEX ledger_statements_category;
DROP TABLE ledger_fts;
`,
	// 12: completed statements' class rows become per-second counts (index_agg.go).
	classAggMigration,
	// 13: running totals of sensitive-data reads per reader and day (index_agg.go).
	classRunMigration,
	// 14: sensitive columns read per table and hour (tablereads.go).
	tableReadsMigration,
	// 15: the time bounds of blocks of segments, so a search reads the terms of the blocks
	// it needs only (searchseg.go).
	termBlocksMigration}

// SQLiteStore is the embedded store: one SQLite file (WAL) in the data directory, fed by
// a commit log next to it (journal.go). Append makes a batch durable in the log; the
// indexer then stores it in SQLite and derives the search indexes (sqliteindex.go), and
// every read first brings SQLite up to date with the log.
type SQLiteStore struct {
	db      *sql.DB
	ix      *sqliteIndexer
	pending *pendingLog
	log     *slog.Logger

	// wmu serialises appends to the log and guards heads.
	wmu sync.Mutex
	jr  *journal
	// heads is the last event each chain appended through this store, which the log
	// holds even while SQLite lags behind it.
	heads map[string]chainHead

	// The syncer fdatasyncs CommitWritten batches within MaxSyncDelay (syncLoop).
	// inflight (guarded by wmu) is its sync under way, nil when none: SyncWritten waits
	// for it instead of starting a second fdatasync that the kernel would only queue
	// behind it (measured: a transaction's COMMIT barrier then took two syncs' time).
	inflight *syncRun
	syncWake chan struct{}
	syncQuit chan struct{}
	syncDone chan struct{}
	syncStop sync.Once
	// bgSyncs counts the syncer's fdatasyncs (guarded by wmu), to tell when it syncs.
	bgSyncs int
}

// syncGather is how long after the oldest written batch the syncer syncs them all with one
// fdatasync; with the sync's own time it stays well inside MaxSyncDelay.
const syncGather = 3 * time.Millisecond

type chainHead struct {
	seq  int64
	hash string
}

// OpenSQLite opens (creating and migrating) the ledger database in dataDir.
func OpenSQLite(ctx context.Context, dataDir string) (*SQLiteStore, error) {
	return OpenSQLiteFile(ctx, filepath.Join(dataDir, SQLiteFile))
}

// OpenSQLiteFile opens (creating and migrating) the ledger database at path, and stores
// what the commit logs of crashed writers hold.
func OpenSQLiteFile(ctx context.Context, path string) (*SQLiteStore, error) {
	db, err := store.OpenPageSize(ctx, path, ledgerPageSize)
	if err != nil {
		return nil, fmt.Errorf("open ledger store: %w", err)
	}
	if err := store.Migrate(ctx, db, "ledger", sqliteMigrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger store: %w", err)
	}
	log := slog.Default()
	if err := recoverLogs(ctx, db, journalDir(path), log); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger store: %w", err)
	}
	p := &pendingLog{drained: make(chan struct{}, 1)}
	ring, err := uring.Open()
	if err != nil {
		log.Debug("ledger log syncs block a thread: io_uring is unavailable", "err", err)
	}
	s := &SQLiteStore{db: db, ix: newSQLiteIndexer(db, p, log), pending: p, log: log,
		jr:       &journal{dir: journalDir(path), token: randomToken(), pending: p, log: log, maxPending: maxPendingRecords, ring: ring},
		heads:    map[string]chainHead{},
		syncWake: make(chan struct{}, 1), syncQuit: make(chan struct{}), syncDone: make(chan struct{})}
	s.ix.logDir, s.ix.ownToken = s.jr.dir, s.jr.token
	s.ix.start()
	go s.syncLoop()
	return s, nil
}

// ledgerPageSize is the page size of a new ledger database. Event rows are appended in
// large transactions, so every changed page goes to the WAL and back into the database
// once per transaction or checkpoint: larger pages mean fewer write(2) calls (two per WAL
// frame, one per checkpointed page) and less per-page overhead for the same bytes.
const ledgerPageSize = 16384

// syncLoop makes CommitWritten batches durable: woken by such a batch, it syncs them all
// with one fdatasync syncGather after the oldest of them was written, off the callers'
// path, unless a COMMIT barrier's sync (SyncWritten) has covered them by then (see
// journal.syncDue).
func (s *SQLiteStore) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-s.syncWake:
		case <-s.syncQuit:
			return
		}
		for {
			s.wmu.Lock()
			due, ok := s.jr.syncDue()
			s.wmu.Unlock()
			if !ok {
				break
			}
			if d := time.Until(due); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-s.syncQuit:
					return // Close syncs what is left
				}
				continue
			}
			s.syncWritten()
		}
	}
}

// SyncWritten fdatasyncs every frame written to the commit log so far (the ledger's Sync
// barrier): what CommitWritten batches acknowledged becomes durable now, not within
// MaxSyncDelay. The fdatasync runs without the writer mutex (appends go on meanwhile), and
// a sync already under way that covers the frames, or one of its own begun by a concurrent
// caller, is waited for instead of queueing a second fdatasync behind it: concurrent
// transactions' COMMIT barriers share one sync.
func (s *SQLiteStore) SyncWritten(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.syncTo(ctx, s.jr.wgen); err != nil {
		return fmt.Errorf("sync ledger: %w", err)
	}
	return nil
}

// syncTo returns once the log's writes through generation gen are synced, and how many
// fdatasyncs it ran itself. Called with wmu held, which it lets go while it waits or syncs.
func (s *SQLiteStore) syncTo(ctx context.Context, gen uint64) (int, error) {
	led := 0
	for {
		if s.jr.syncErr != nil {
			return led, fmt.Errorf("ledger log not synced since a failed sync: %w", s.jr.syncErr)
		}
		if s.jr.sgen >= gen {
			return led, nil
		}
		if run := s.inflight; run != nil {
			s.wmu.Unlock()
			select {
			case <-run.done:
			case <-ctx.Done():
				s.wmu.Lock()
				return led, ctx.Err()
			}
			s.wmu.Lock()
			continue
		}
		fd, at, err := s.jr.beginSync()
		if fd < 0 && err == nil {
			return led, nil // nothing written since the last sync
		}
		name, off := s.jr.name, s.jr.off
		run := &syncRun{done: make(chan struct{})}
		s.inflight = run
		if fd >= 0 {
			led++
			s.wmu.Unlock()
			err = s.jr.ring.Fdatasync(fd)
			s.wmu.Lock()
		}
		s.jr.endSync(at, err)
		if err == nil {
			s.jr.dropSynced(name, off)
		}
		s.inflight = nil
		close(run.done)
	}
}

// syncRun is one fdatasync under way; done is closed when it has ended.
type syncRun struct {
	done chan struct{}
}

// syncWritten fdatasyncs the log's written frames (the background syncer's turn). When
// nothing was written since the last sync (of any kind) it does nothing: an idle ledger
// costs no fdatasync.
func (s *SQLiteStore) syncWritten() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n, _ := s.syncTo(context.Background(), s.jr.wgen) // a failure is kept in syncErr
	s.bgSyncs += n
}

// recoverLogs stores the records of commit logs no live process writes (their writer
// crashed or was killed) and deletes the logs. Records already stored are skipped.
func recoverLogs(ctx context.Context, db *sql.DB, dir string, log *slog.Logger) error {
	files, err := orphanLogs(dir)
	if err != nil {
		return err
	}
	defer closeAll(files)
	for _, f := range files {
		if err := recoverLogFile(ctx, db, f, log); err != nil {
			return err
		}
	}
	return nil
}

// recoverLogFile stores every record of the log f (locked by the caller) and deletes it.
func recoverLogFile(ctx context.Context, db *sql.DB, f *os.File, log *slog.Logger) error {
	rows, cps, torn, err := readLogFile(f)
	if err != nil {
		return err
	}
	if torn {
		log.Warn("ledger log ends in a torn write (a crash during a commit that was never acknowledged); ignoring the tail", "file", f.Name())
	}
	if len(rows)+len(cps) > 0 {
		tx, err := db.BeginTx(ctx, nil) // synchronous=FULL: durable before the log goes
		if err != nil {
			return fmt.Errorf("recover ledger log %s: %w", f.Name(), err)
		}
		prep := func(q string) (*sql.Stmt, error) { return tx.PrepareContext(ctx, q) }
		if err := storeLogged(ctx, prep, rows, cps); err != nil {
			tx.Rollback()
			return fmt.Errorf("recover ledger log %s: %w", f.Name(), err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("recover ledger log %s: %w", f.Name(), err)
		}
		log.Info("recovered ledger events from the commit log", "file", f.Name(), "events", len(rows), "checkpoints", len(cps))
	}
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		// Gone already: another reader recovered it too (storing is idempotent).
		return fmt.Errorf("remove recovered ledger log: %w", err)
	}
	os.Remove(ackPath(f.Name()))
	return nil
}

// insertEventSQL stores one event. Its hash is in its record (the record's last member), so
// the indexer leaves the hash column of the rows it stores empty and readers take the
// hash from the record (sqliteHashExpr): 66 bytes less per row, and one value less to bind.
const insertEventSQL = `INSERT INTO ledger_events(instance, seq, time_ns, type, subject, identity_kind, target, environment, decision, session, hash, body, facets, text_id, aux)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?) ON CONFLICT (instance, seq) DO NOTHING`

// sqliteHashExpr is an event's hash in the SQLite store: its hash column, or, when that is
// empty (see insertEventSQL), the record's hash member.
const sqliteHashExpr = `(CASE WHEN hash <> '' THEN hash ELSE COALESCE(json_extract(body, '$.hash'), '') END)`

// storeLogged inserts logged events and checkpoints (skipping any already stored) with
// statements from prep, inside the caller's transaction.
func storeLogged(ctx context.Context, prep func(string) (*sql.Stmt, error), rows []eventRow, cps []Checkpoint) error {
	if len(rows) > 0 {
		st, err := prep(insertEventSQL)
		if err != nil {
			return err
		}
		for i := range rows {
			r := &rows[i]
			if _, err := st.ExecContext(ctx, r.instance, r.seq, r.timeNS, r.typ, r.subject, r.identityKind, r.target, r.environment, r.decision, r.session, string(r.body), nil, nil, 1); err != nil {
				return fmt.Errorf("store event %s/%d: %w", r.instance, r.seq, err)
			}
		}
	}
	if len(cps) > 0 {
		st, err := prep(insertCheckpointSQL)
		if err != nil {
			return err
		}
		for _, cp := range cps {
			if _, err := st.ExecContext(ctx, cp.Instance, cp.Seq, cp.Hash, cp.Time.UnixNano(), cp.Kind, cp.Signature); err != nil {
				return fmt.Errorf("store checkpoint at seq %d: %w", cp.Seq, err)
			}
		}
	}
	return nil
}

// setSyncFault makes every commit-log sync fail with err (nil: heal), for tests of what a
// failing disk does.
func (s *SQLiteStore) setSyncFault(err error) {
	s.wmu.Lock()
	s.jr.syncFault = err
	s.wmu.Unlock()
}

// DB exposes the database, for tests and tools that need to look underneath.
func (s *SQLiteStore) DB() *sql.DB { return s.db }

// IndexBacklog is how many acknowledged records wait to be stored and indexed in SQLite (the
// index lag, in records), for metrics.
func (s *SQLiteStore) IndexBacklog() int { return s.pending.waiting() }

func (s *SQLiteStore) dialect() dialect { return sqliteSQL }

func (s *SQLiteStore) queryRows(ctx context.Context, q string, args []any, fn func(scan func(dest ...any) error) error) error {
	return eachRow(ctx, s.db, q, args, fn)
}

// Head implements Store.
func (s *SQLiteStore) Head(ctx context.Context, instance string) (int64, string, error) {
	s.wmu.Lock()
	h, ok := s.heads[instance]
	s.wmu.Unlock()
	if ok {
		return h.seq, h.hash, nil
	}
	if err := s.ix.sync(ctx); err != nil {
		return 0, "", err
	}
	return runHead(ctx, s, instance)
}

// Append implements Store: the batch is in the commit log when it returns (fdatasync'd for
// CommitSynced, written and synced by the syncer within MaxSyncDelay for CommitWritten);
// SQLite follows from the indexer.
func (s *SQLiteStore) Append(ctx context.Context, recs []Record, cps []Checkpoint, c Commit) error {
	s.awaitIndexer(ctx)
	rows := make([]eventRow, len(recs))
	for i, r := range recs {
		rows[i] = rowOf(r.Event, r.Body)
	}
	if len(cps) > 0 {
		// A checkpoint is copied to the external file once stored; it must not name a
		// record that a power loss could take back.
		c = CommitSynced
	}
	s.wmu.Lock()
	err := s.jr.append(rows, cps, c)
	if err == nil {
		// A batch's rows are in chain order: the last of each instance is its head.
		for i := range rows {
			if r := &rows[i]; i == len(rows)-1 || rows[i+1].instance != r.instance {
				s.heads[r.instance] = chainHead{r.seq, r.hash}
			}
		}
	}
	s.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("append to ledger: %w", err)
	}
	if c == CommitWritten {
		select {
		case s.syncWake <- struct{}{}:
		default:
		}
	}
	s.ix.kick()
	return nil
}

// awaitIndexer holds an append back while more than a fifth of maxPending records wait
// for the indexer and it is storing them: the ledger then records at the rate the indexer
// keeps up with (on one core the two share it, and recording alone is the faster), with
// its indexes current within a fraction of a second, instead of running ahead until the
// hard limit refuses records. When the indexer is failing, or ctx ends first, it returns
// at once and the hard limit (journal.append) decides, so a store that cannot be written
// still fails closed without delay.
func (s *SQLiteStore) awaitIndexer(ctx context.Context) {
	soft := s.jr.maxPending / 5
	var poll *time.Timer
	for {
		n, failing := s.pending.backlog()
		if n < soft || failing != nil {
			return
		}
		s.ix.hurry()
		if poll == nil {
			poll = time.NewTimer(indexPoll)
			defer poll.Stop()
		} else {
			poll.Reset(indexPoll)
		}
		select {
		case <-s.pending.drained:
		case <-poll.C: // look at failing again
		case <-ctx.Done():
			return
		}
	}
}

// indexPoll is how often awaitIndexer looks whether the indexer started failing.
const indexPoll = 10 * time.Millisecond

const insertCheckpointSQL = `INSERT INTO ledger_checkpoints(instance, seq, hash, time_ns, kind, signature) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (instance, seq, kind) DO NOTHING`

func insertCheckpointTx(ctx context.Context, tx *sql.Tx, cp Checkpoint) error {
	_, err := tx.ExecContext(ctx, insertCheckpointSQL,
		cp.Instance, cp.Seq, cp.Hash, cp.Time.UnixNano(), cp.Kind, cp.Signature)
	if err != nil {
		return fmt.Errorf("store checkpoint at seq %d: %w", cp.Seq, err)
	}
	return nil
}

// Probe implements Store: a synced write to the commit log, and room in it (see
// maxPendingRecords).
func (s *SQLiteStore) Probe(ctx context.Context) error {
	s.wmu.Lock()
	err := s.jr.pending.full(s.jr.maxPending)
	if err == nil {
		err = s.jr.probe()
	}
	s.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("probe ledger store: %w", err)
	}
	return nil
}

// AddCheckpoint implements Store.
func (s *SQLiteStore) AddCheckpoint(ctx context.Context, cp Checkpoint) error {
	return s.Append(ctx, nil, []Checkpoint{cp}, CommitSynced)
}

// Checkpoints implements Store.
func (s *SQLiteStore) Checkpoints(ctx context.Context, instance string) ([]Checkpoint, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return nil, err
	}
	return runCheckpoints(ctx, s, instance)
}

// Instances implements Store.
func (s *SQLiteStore) Instances(ctx context.Context) ([]string, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return nil, err
	}
	return runInstances(ctx, s)
}

// Scan implements Store.
func (s *SQLiteStore) Scan(ctx context.Context, instance string, after int64, limit int, fn func(StoredEvent) error) error {
	if err := s.ix.syncAll(ctx); err != nil {
		return err
	}
	return runScan(ctx, s, instance, after, limit, fn)
}

// LastBefore implements Store.
func (s *SQLiteStore) LastBefore(ctx context.Context, instance string, t time.Time) (int64, string, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return 0, "", err
	}
	return runLastBefore(ctx, s, instance, t)
}

// DeleteThrough implements Store.
func (s *SQLiteStore) DeleteThrough(ctx context.Context, instance string, seq int64, anchor Checkpoint) (int64, error) {
	// Index first, so the rollup rebuilt below counts exactly what remains.
	if err := s.ix.syncAll(ctx); err != nil {
		return 0, fmt.Errorf("apply retention: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("apply retention: begin: %w", err)
	}
	defer tx.Rollback()
	for _, t := range []string{"ledger_tables", "ledger_classes", "ledger_statements"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE instance = ? AND seq <= ?`, instance, seq); err != nil {
			return 0, fmt.Errorf("apply retention to %s: %w", t, err)
		}
	}
	if err := retireClassAggs(ctx, tx, instance, seq); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM ledger_events WHERE instance = ? AND seq <= ?`, instance, seq)
	if err != nil {
		return 0, fmt.Errorf("apply retention to events: %w", err)
	}
	n, _ := res.RowsAffected()
	// Search terms of segments no event is left in (terms of a segment with some events
	// left may name deleted ones: searches filter those events out anyway).
	if _, err := tx.ExecContext(ctx, `DELETE FROM ledger_terms WHERE seg < (SELECT COALESCE(MIN(id), 0) FROM ledger_events) >> `+fmt.Sprint(segmentShift)); err != nil {
		return 0, fmt.Errorf("apply retention to search terms: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ledger_checkpoints WHERE instance = ? AND seq < ?`, instance, seq); err != nil {
		return 0, fmt.Errorf("apply retention to checkpoints: %w", err)
	}
	if err := insertCheckpointTx(ctx, tx, anchor); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("apply retention: commit: %w", err)
	}
	return n, nil
}

// Search implements Store, through segment terms (searchseg.go).
func (s *SQLiteStore) Search(ctx context.Context, q Query) ([]Event, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return nil, err
	}
	return s.searchSegments(ctx, q, time.Now())
}

// WhoDropped implements Store.
func (s *SQLiteStore) WhoDropped(ctx context.Context, table string, r TimeRange) ([]DropRecord, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return nil, err
	}
	return runWhoDropped(ctx, s, table, r)
}

// PIIReaders implements Store.
func (s *SQLiteStore) PIIReaders(ctx context.Context, class string, r TimeRange) ([]IdentityCount, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return nil, err
	}
	return s.piiReaders(ctx, class, r)
}

// AgentsQueried implements Store.
func (s *SQLiteStore) AgentsQueried(ctx context.Context, table string, r TimeRange) ([]IdentityCount, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return nil, err
	}
	return runAgentsQueried(ctx, s, table, r)
}

// Close implements Store: it stores and indexes what is pending, deletes the commit log
// it no longer needs (a later open would otherwise replay it), then releases the
// connections.
func (s *SQLiteStore) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.syncStop.Do(func() { close(s.syncQuit) })
	<-s.syncDone
	s.wmu.Lock()
	s.jr.close() // syncs what the syncer had not
	s.wmu.Unlock()
	ixErr := s.ix.stop(ctx)
	return errors.Join(ixErr, s.db.Close())
}
