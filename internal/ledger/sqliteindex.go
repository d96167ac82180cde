package ledger

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// The SQLite store keeps the commit that Record waits for as small as it can be: the chain
// (ledger_events rows and checkpoints) only. The search indexes (the events' facets and
// interned texts, the segment terms of segindex.go, the side-table rows the auditor
// questions read and the daily rollup) are derived from committed events by an indexer, in
// larger transactions, off the callers' path:
//
//   - ledger_index_state(instance, seq) records, per chain, the highest seq whose index rows
//     are stored; it is updated in the same transaction as the index rows it covers, so the
//     indexes and the high-water mark can never disagree, even across a crash.
//   - A goroutine indexes pending events after every commit; at open it catches up on
//     whatever a crash left unindexed.
//   - Every search and aggregation first indexes what is pending (usually nothing), so a
//     reader always sees every event committed before it asked.
//
// A chain that has no state row yet starts from the highest seq already present in
// ledger_statements: zero for a new chain; ledgers from before schema version 6 had a row
// there for every statement event. (A synthetic load writes its own state row.)

// indexBatch caps the events indexed in one transaction, so the indexer never holds the
// write lock long enough to delay a group commit noticeably.
const indexBatch = 64

// indexGather is how long the indexer lets commits accumulate before it stores them.
const indexGather = 250 * time.Millisecond

// sqliteIndexer builds the search indexes of a SQLite ledger from its committed events.
type sqliteIndexer struct {
	db      *sql.DB
	log     *slog.Logger
	pending *pendingLog // what the commit log holds that SQLite does not yet
	// logDir and ownToken locate other processes' commit logs; others is how far each
	// of those logs is stored (guarded by mu).
	logDir, ownToken string
	others           map[string]int64
	// caughtUp, when set (tests), is called after catchUpOthers stored each of those logs,
	// to interleave a writer's appends and rotations with a reader's pass.
	caughtUp func(path string)

	// mu serialises indexing passes (the goroutine's and the searches' catch-ups) and
	// guards everything below it.
	mu    sync.Mutex
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	// raw holds the statements execRaw prepared on conn's driver connection; nvs is its
	// argument buffer.
	raw map[string]driver.Stmt
	nvs []driver.NamedValue
	// native runs execRaw's statements through SQLite's own interface on conn's driver
	// connection (index_native.go); nil until the first one, or when the driver's
	// connection is not one it knows (noNative: execRaw then goes through the driver).
	native   *nativeConn
	noNative bool
	synced   int64 // MAX(ledger_events.id) when the last complete pass started; -1: none yet
	// backfilled: events stored before schema version 11 have their search terms.
	backfilled bool

	dailySQL string // the rollup upsert, built once
	// daily sums the rollup rows of the transaction being built (flushRollup writes them
	// before it commits): one upsert per reader, class and day instead of one per event.
	daily map[dailyKey]dailySum
	// aggs sums the per-second sensitive-data counts of the completed statements of the
	// transaction being built (index_agg.go); flush writes them and adds them to daily.
	aggs map[classAggKey]classAggSum
	// runsLater: a synthetic load builds the running totals at its end (index_agg.go).
	runsLater bool
	// later: a synthetic load sums the segment terms and the rollups for the whole load
	// and writes them at its end (synthetic_sqlite.go).
	later *syntheticLater
	// tableReads sums the sensitive columns per table of the transaction (tablereads.go).
	tableReads map[tableReadKey]tableReadSum
	// terms sums the segment terms of the transaction being built (flush writes them).
	terms termSet
	// texts caches the ids of interned statement texts (see derive).
	texts map[string]int64
	// shapes memoizes derive.
	shapes shapeMemo
	// tableRows and classRows queue the transaction's side-table rows (flush stores the
	// last ones).
	tableRows, classRows rowBuffer
	// bulkArgs, bulkRows and bulkSQL are storeBatchesBulk's buffers and statements, kept
	// between transactions.
	bulkArgs []nativeArg
	bulkRows []bulkRow
	bulkSQL  map[int]string
	// termKeys, termArgs and termSQL are storeTerms' buffers and statements.
	termKeys []termKey
	termArgs []any
	termSQL  map[int]string
	// busyTimeout, when set (tests), replaces the store's lock wait on this connection.
	busyTimeout time.Duration

	wake     chan struct{}
	hurryCh  chan struct{} // cuts the gathering of commits short (hurry)
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newSQLiteIndexer(db *sql.DB, pending *pendingLog, log *slog.Logger) *sqliteIndexer {
	if log == nil {
		log = slog.Default()
	}
	return &sqliteIndexer{db: db, log: log, pending: pending, others: map[string]int64{}, stmts: map[string]*sql.Stmt{}, raw: map[string]driver.Stmt{}, synced: -1, dailySQL: classDailySQL(sqliteSQL), daily: map[dailyKey]dailySum{}, aggs: map[classAggKey]classAggSum{}, bulkSQL: map[int]string{}, termSQL: map[int]string{}, terms: termSet{m: map[termKey]termBounds{}}, texts: map[string]int64{}, shapes: newShapeMemo(),
		tableRows: newRowBuffer("ledger_tables", "instance, seq, time_ns, subject, identity_kind, decision, tbl, name, kind, category, access, type", 12),
		classRows: newRowBuffer("ledger_classes", "instance, seq, time_ns, subject, identity_kind, decision, class, col, category, type", 10),
		wake:      make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// start starts the indexing goroutine, which first catches up on events a crash (or
// another process) left unindexed.
func (x *sqliteIndexer) start() {
	x.kick()
	go x.loop()
}

// kick wakes the goroutine (after a commit) without waiting.
func (x *sqliteIndexer) kick() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// hurry wakes the goroutine and has it store what is pending without waiting for more
// commits (the backlog is large: see SQLiteStore.awaitIndexer).
func (x *sqliteIndexer) hurry() {
	select {
	case x.hurryCh <- struct{}{}:
	default:
	}
	x.kick()
}

// indexRetry is how soon a failed index pass is tried again on its own.
const indexRetry = time.Second

func (x *sqliteIndexer) loop() {
	defer close(x.done)
	var retry <-chan time.Time // set while the last sync failed (a full disk, a locked file)
	more := false              // the last pass backfilled a batch and has more to do
	for {
		if !more {
			select {
			case <-x.wake:
			case <-retry:
			case <-x.quit:
				return
			}
		}
		retry = nil
		// Let more group commits land so one transaction covers them: SQLite writes each
		// changed page once per transaction, so larger ones cost less per event (indexing
		// 1000 events per transaction takes a fifth less CPU than 200: BenchmarkIndex with
		// GATEHOUSE_INDEX_BATCH=200 and 1000). Readers never wait for this: they store what is pending
		// themselves.
		gather := indexGather
		if more {
			gather = 0 // backfilling after an upgrade: go on at once
		}
		select {
		case <-time.After(gather):
		case <-x.hurryCh:
		case <-x.quit:
			return
		}
		done, err := x.backgroundStep()
		more = err == nil && !done
		if err != nil {
			x.log.Error("index ledger events", "err", err)
			// Try again without waiting for a new commit: while the ledger is refusing
			// statements, none may come.
			retry = time.After(indexRetry)
		}
	}
}

// sync indexes every committed event not yet indexed and returns when it is done. When no
// event was added since the last complete pass it costs one index lookup.
func (x *sqliteIndexer) sync(ctx context.Context) error {
	return x.syncWith(ctx, false)
}

// syncAll is sync for readers: it also stores what other processes' commit logs hold
// acknowledged, so a search in one process sees what another has committed.
func (x *sqliteIndexer) syncAll(ctx context.Context) error {
	return x.syncWith(ctx, true)
}

func (x *sqliteIndexer) syncWith(ctx context.Context, others bool) error {
	for {
		done, err := x.syncStep(ctx, others)
		if err != nil || done {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("index ledger events: %w", err)
		}
	}
}

// syncStep is one pass of syncWith under mu. While events stored before schema version 11
// still lack their search terms it backfills one batch of them and reports not done: the
// lock is released between batches, so the commit log keeps being stored in SQLite (the
// ledger would otherwise refuse records once too many wait) while a large ledger is
// backfilled after an upgrade.
func (x *sqliteIndexer) syncStep(ctx context.Context, others bool) (done bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.stepLocked(ctx, others)
}

// backgroundStep is the background loop's syncStep. Its minute starts once it holds the
// lock: a long holder (a reader storing a large backlog, a synthetic load) used to spend it,
// and the pass then failed at its first query with "context deadline exceeded".
func (x *sqliteIndexer) backgroundStep() (done bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return x.stepLocked(ctx, false)
}

func (x *sqliteIndexer) stepLocked(ctx context.Context, others bool) (done bool, err error) {
	err = x.syncLocked(ctx, others)
	if errors.Is(err, errBackfillPending) {
		return false, nil
	}
	return true, err
}

// errBackfillPending ends a sync step that backfilled a batch and has more to do.
var errBackfillPending = errors.New("backfill pending")

func (x *sqliteIndexer) syncLocked(ctx context.Context, others bool) error {
	if others {
		if err := x.catchUpOthers(ctx); err != nil {
			x.resetConn()
			return err
		}
	}
	if err := x.materialize(ctx); err != nil {
		x.resetConn()
		return err
	}
	if !x.backfilled {
		more, err := x.backfill(ctx)
		if err != nil {
			x.resetConn()
			return fmt.Errorf("index ledger events stored before search terms: %w", err)
		}
		x.backfilled = !more
		if more {
			return errBackfillPending
		}
	}
	var top sql.NullInt64
	if err := x.db.QueryRowContext(ctx, `SELECT MAX(id) FROM ledger_events`).Scan(&top); err != nil {
		return fmt.Errorf("index ledger events: %w", err)
	}
	if top.Int64 == x.synced {
		return nil
	}
	insts, err := x.instances(ctx)
	if err != nil {
		return err
	}
	for _, inst := range insts {
		for {
			n, err := x.indexSome(ctx, inst)
			if err != nil {
				x.resetConn()
				return fmt.Errorf("index ledger chain %s: %w", inst, err)
			}
			if n < indexBatch {
				break
			}
		}
	}
	x.synced = top.Int64
	return nil
}

// instances lists the chains in the store, one index seek per chain.
func (x *sqliteIndexer) instances(ctx context.Context) ([]string, error) {
	var out []string
	last := ""
	for {
		var inst string
		err := x.db.QueryRowContext(ctx, `SELECT instance FROM ledger_events WHERE instance > ? ORDER BY instance LIMIT 1`, last).Scan(&inst)
		if errors.Is(err, sql.ErrNoRows) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list ledger chains to index: %w", err)
		}
		out = append(out, inst)
		last = inst
	}
}

// stop ends the goroutine, indexes what is pending and releases the connection.
func (x *sqliteIndexer) stop(ctx context.Context) error {
	x.stopOnce.Do(func() { close(x.quit) })
	<-x.done
	err := x.sync(ctx)
	x.mu.Lock()
	x.resetConn()
	x.mu.Unlock()
	return err
}

// resetConn drops the indexer's connection and statements (after an error or at stop);
// the next pass opens new ones. Called with mu held.
func (x *sqliteIndexer) resetConn() {
	for _, st := range x.stmts {
		st.Close()
	}
	clear(x.stmts)
	if x.conn != nil && (len(x.raw) > 0 || x.native != nil) {
		x.conn.Raw(func(any) error {
			for _, st := range x.raw {
				st.Close()
			}
			if x.native != nil {
				x.native.close()
			}
			return nil
		})
	}
	clear(x.raw)
	x.native, x.noNative = nil, false
	if x.conn != nil {
		x.conn.Close()
		x.conn = nil
	}
}

// stmt returns the indexer's prepared statement for q. Called with mu held.
func (x *sqliteIndexer) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := x.stmts[q]; ok {
		return st, nil
	}
	st, err := x.conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare index statement: %w", err)
	}
	x.stmts[q] = st
	return st, nil
}

func (x *sqliteIndexer) exec(ctx context.Context, q string, args ...any) error {
	_, err := x.execRaw(ctx, q, args)
	return err
}

// execRaw runs q with args on the indexer's connection through SQLite's own statement
// interface (index_native.go), or, when the driver's connection is not one that code knows,
// through the driver's statement interface, without database/sql in between: its
// per-argument conversion and checks and its locks cost an eighth of what storing an event
// did (BenchmarkIndex profile), and the indexer's arguments are driver values already
// (int, the one exception, is converted here). Called with mu held.
func (x *sqliteIndexer) execRaw(ctx context.Context, q string, args []any) (driver.Result, error) {
	return x.execWith(ctx, q, args, nil)
}

// execArgs is execRaw with unboxed arguments (index_native.go). Called with mu held.
func (x *sqliteIndexer) execArgs(ctx context.Context, q string, args []nativeArg) (driver.Result, error) {
	return x.execWith(ctx, q, nil, args)
}

// execWith runs q with args, or with typed when it is not nil. Called with mu held.
func (x *sqliteIndexer) execWith(ctx context.Context, q string, args []any, typed []nativeArg) (res driver.Result, err error) {
	err = x.conn.Raw(func(dc any) error {
		if x.native == nil && !x.noNative {
			x.native, _ = nativeOf(dc)
			x.noNative = x.native == nil
		}
		if x.native != nil {
			var r nativeResult
			var err error
			if typed != nil {
				r, err = x.native.execTyped(q, typed)
			} else {
				r, err = x.native.exec(q, args)
			}
			res = r
			return err
		}
		if typed != nil {
			args = make([]any, len(typed))
			for i := range typed {
				args[i] = typed[i].value()
			}
		}
		st, ok := x.raw[q]
		if !ok {
			pc, ok := dc.(driver.ConnPrepareContext)
			if !ok {
				return fmt.Errorf("prepare index statement: driver connection %T cannot prepare", dc)
			}
			p, err := pc.PrepareContext(ctx, q)
			if err != nil {
				return fmt.Errorf("prepare index statement: %w", err)
			}
			st = p
			x.raw[q] = st
		}
		ex, ok := st.(driver.StmtExecContext)
		if !ok {
			return fmt.Errorf("run index statement: driver statement %T cannot run with a context", st)
		}
		nv := x.nvs[:0]
		for i, a := range args {
			if n, ok := a.(int); ok {
				a = int64(n)
			}
			nv = append(nv, driver.NamedValue{Ordinal: i + 1, Value: a})
		}
		// Without cancellation: the driver then runs the statement without starting a
		// goroutine to watch the context (a tenth of the indexer's CPU). A pass is
		// bounded by its batch.
		res, err = ex.ExecContext(context.WithoutCancel(ctx), nv)
		clear(nv)
		x.nvs = nv[:0]
		return err
	})
	return res, err
}

// indexSome indexes up to indexBatch pending events of instance in one transaction and
// returns how many it indexed. Called with mu held.
func (x *sqliteIndexer) indexSome(ctx context.Context, instance string) (n int, err error) {
	if err := x.connect(ctx); err != nil {
		return 0, err
	}
	// IMMEDIATE: take the write lock before reading the high-water mark, so a concurrent
	// indexer (another process searching the same file) cannot index the same events.
	if _, err := x.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			x.discard()
			if _, rerr := x.conn.ExecContext(context.Background(), `ROLLBACK`); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	hwm, err := x.highWater(ctx, instance)
	if err != nil {
		return 0, err
	}
	var st *sql.Stmt
	type pending struct {
		id, seq int64
		body    []byte
	}
	var evs []pending
	st, err = x.stmt(ctx, `SELECT id, seq, body FROM ledger_events WHERE instance = ? AND seq > ? ORDER BY seq LIMIT `+fmt.Sprint(indexBatch))
	if err != nil {
		return 0, err
	}
	rows, err := st.QueryContext(ctx, instance, hwm)
	if err != nil {
		return 0, fmt.Errorf("read events to index: %w", err)
	}
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.id, &p.seq, &p.body); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read events to index: %w", err)
		}
		evs = append(evs, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read events to index: %w", err)
	}
	if len(evs) == 0 {
		return 0, nil
	}
	for _, p := range evs {
		ev, err := decodeBody(p.body)
		if err != nil {
			// A record that does not decode (tampered) cannot be indexed; Verify reports
			// it. Skip it rather than stop indexing the rest of the chain.
			x.log.Warn("ledger event not indexed: record does not decode", "instance", instance, "id", p.id)
			continue
		}
		ev.Instance, ev.Seq = instance, p.seq // index under the row's key, as searches join on it
		d, err := x.derive(ctx, &ev)
		if err != nil {
			return 0, err
		}
		if err := x.exec(ctx, `UPDATE ledger_events SET facets = ?, text_id = ?, aux = ? WHERE id = ?`, d.facetsArg(), d.textArg(), d.auxArg(), p.id); err != nil {
			return 0, fmt.Errorf("index event %d: %w", p.seq, err)
		}
		if err := x.indexEvent(ctx, p.id, &ev, d); err != nil {
			return 0, err
		}
	}
	top := evs[len(evs)-1].seq
	if err := x.flush(ctx); err != nil {
		return 0, err
	}
	if err := x.exec(ctx, setHighWaterSQL, instance, top); err != nil {
		return 0, fmt.Errorf("store index high-water mark: %w", err)
	}
	if _, err := x.conn.ExecContext(ctx, `COMMIT`); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	committed = true
	return len(evs), nil
}

// highWater reads how far instance's chain is indexed. Called with mu held, in a
// transaction.
func (x *sqliteIndexer) highWater(ctx context.Context, instance string) (int64, error) {
	var hwm int64
	st, err := x.stmt(ctx, `SELECT seq FROM ledger_index_state WHERE instance = ?`)
	if err != nil {
		return 0, err
	}
	err = st.QueryRowContext(ctx, instance).Scan(&hwm)
	if errors.Is(err, sql.ErrNoRows) {
		var top sql.NullInt64
		if err := x.conn.QueryRowContext(ctx, `SELECT MAX(seq) FROM ledger_statements WHERE instance = ?`, instance).Scan(&top); err != nil {
			return 0, fmt.Errorf("read index high-water mark: %w", err)
		}
		return top.Int64, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read index high-water mark: %w", err)
	}
	return hwm, nil
}

const setHighWaterSQL = `INSERT INTO ledger_index_state(instance, seq) VALUES (?, ?) ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq`

// connect opens the indexer's connection. Called with mu held.
func (x *sqliteIndexer) connect(ctx context.Context) error {
	if x.conn != nil {
		return nil
	}
	c, err := x.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open index connection: %w", err)
	}
	// Everything this connection writes can be derived again after a crash: events and
	// checkpoints from the commit log (deleted only after a synced commit, see retire),
	// index rows from the events (the high-water mark commits with them). So its commits
	// need not wait for fsync; WAL keeps them consistent.
	if _, err := c.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		c.Close()
		return fmt.Errorf("configure index connection: %w", err)
	}
	if _, err := c.ExecContext(ctx, fmt.Sprintf(`PRAGMA cache_size = -%d`, indexCacheKiB)); err != nil {
		c.Close()
		return fmt.Errorf("configure index connection: %w", err)
	}
	// Its statements' journals and temporary b-trees are small and short-lived: in memory
	// they cost no temporary file (an open, unlink and several writes each, about 30 a
	// second under pgbench -S, in /var/tmp).
	if _, err := c.ExecContext(ctx, `PRAGMA temp_store = MEMORY`); err != nil {
		c.Close()
		return fmt.Errorf("configure index connection: %w", err)
	}
	// Checkpoint the WAL every 40 MiB (10,000 pages of 4 KiB, 2,500 of 16 KiB) instead of
	// 1,000 pages: an index page that several indexer transactions change is then copied
	// into the database once, not once per few transactions (BenchmarkIndex: 7-10% less CPU
	// per event).
	if _, err := c.ExecContext(ctx, `PRAGMA wal_autocheckpoint = `+fmt.Sprint(walCheckpointBytes/pageSize(ctx, c))); err != nil {
		c.Close()
		return fmt.Errorf("configure index connection: %w", err)
	}
	if x.busyTimeout > 0 {
		if _, err := c.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, x.busyTimeout.Milliseconds())); err != nil {
			c.Close()
			return fmt.Errorf("configure index connection: %w", err)
		}
	}
	x.conn = c
	return nil
}

// indexCacheKiB is the indexer connection's SQLite page cache, in KiB. A transaction
// changes the events table's last leaf pages (new rows only append), the search terms'
// leaves and a few others: a few hundred pages of 16 KiB for the largest batch
// (materializeBatch), which must stay in the cache until it commits (SQLite spills them
// into the WAL mid-transaction otherwise). The pages it filled are never read again, so a
// larger cache only keeps them resident: with 64 MiB, a new server spent its first
// ~75,000 events growing the cache, each new page a fresh 64 KiB mapping of modernc's
// allocator that the kernel zero-filled as the page was touched (half of Gatehouse's page
// faults in an 8 s pgbench -S run, clear_page_erms 3.8% of its CPU).
const indexCacheKiB = 16 << 10

// walCheckpointBytes is how large the indexer lets the WAL grow before it checkpoints.
const walCheckpointBytes = 40 << 20

// pageSize is the page size of the database c is connected to (4096 when it cannot be read).
func pageSize(ctx context.Context, c *sql.Conn) int {
	n := 4096
	if err := c.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&n); err != nil || n <= 0 {
		return 4096
	}
	return n
}

// materializeBatch caps the logged records stored in one transaction.
const materializeBatch = 4096

// materialize stores in SQLite what the commit log holds and SQLite does not yet, then
// deletes the log files that are fully stored. Called with mu held.
func (x *sqliteIndexer) materialize(ctx context.Context) error {
	if x.pending == nil {
		return nil
	}
	for {
		bs := x.pending.peek(materializeBatch)
		if len(bs) > 0 {
			if err := x.storeBatches(ctx, bs); err != nil {
				err = fmt.Errorf("store logged ledger events: %w", err)
				x.pending.failed(err)
				return err
			}
		}
		if done := x.pending.drop(len(bs)); len(done) > 0 {
			if err := x.retire(ctx, done); err != nil {
				return err
			}
		}
		if len(bs) == 0 {
			return nil
		}
	}
}

// storeBatches inserts logged batches in one transaction: several events per INSERT
// (storeBatchesBulk), or, when some were stored before (a replay after a crash), one by
// one. Called with mu held.
func (x *sqliteIndexer) storeBatches(ctx context.Context, bs []logBatch) error {
	err := x.storeBatchesBulk(ctx, bs)
	if errors.Is(err, errStoredBefore) {
		return x.storeBatchesOneByOne(ctx, bs)
	}
	return err
}

// storeBatchesOneByOne inserts logged batches in one transaction, one event per INSERT,
// and skips the events stored before. Called with mu held.
func (x *sqliteIndexer) storeBatchesOneByOne(ctx context.Context, bs []logBatch) (err error) {
	if err := x.connect(ctx); err != nil {
		return err
	}
	if _, err := x.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			x.discard()
			if _, rerr := x.conn.ExecContext(context.Background(), `ROLLBACK`); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	// Events are indexed in the same transaction when their chain's index is caught up
	// (the usual case), which saves reading them back; otherwise indexSome does it after.
	marks := map[string]*chainMark{}
	ins, err := x.stmt(ctx, insertEventSQL)
	if err != nil {
		return err
	}
	for _, b := range bs {
		for i := range b.rows {
			r := &b.rows[i]
			m, err := x.mark(ctx, marks, r.instance)
			if err != nil {
				return err
			}
			// Derive the index of the event first when its chain's index is caught up, so
			// its row is stored with its facets in one insert.
			ev, d, err := x.indexable(ctx, m, r)
			if err != nil {
				return err
			}
			// The record is bound as text without a copy (the driver copies it for SQLite
			// anyway): a sealed record is never modified.
			body := unsafe.String(unsafe.SliceData(r.body), len(r.body))
			res, err := ins.ExecContext(context.WithoutCancel(ctx), r.instance, r.seq, r.timeNS, r.typ, r.subject, r.identityKind, r.target, r.environment, r.decision, r.session, body, d.facetsArg(), d.textArg(), d.auxArg())
			if err != nil {
				return fmt.Errorf("store event %s/%d: %w", r.instance, r.seq, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				m.last = -1 // stored before (replay after a crash): indexSome checks it
				continue
			}
			if ev == nil {
				m.last = -1 // not contiguous, or undecodable (indexSome skips it with a warning)
				continue
			}
			id, err := res.LastInsertId()
			if err != nil {
				return fmt.Errorf("store event %s/%d: %w", r.instance, r.seq, err)
			}
			if err := x.indexEvent(ctx, id, ev, d); err != nil {
				return err
			}
			m.last, m.indexed = r.seq, r.seq
		}
		if err := storeLogged(ctx, func(q string) (*sql.Stmt, error) { return x.stmt(ctx, q) }, nil, b.cps); err != nil {
			return err
		}
	}
	if err := x.flush(ctx); err != nil {
		return err
	}
	if err := x.storeMarks(ctx, marks); err != nil {
		return err
	}
	if _, err := x.conn.ExecContext(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// retire makes everything stored so far durable in SQLite (one commit with
// synchronous=FULL syncs the WAL, which holds every earlier commit), then deletes the log
// files whose records are all stored. Called with mu held.
func (x *sqliteIndexer) retire(ctx context.Context, files []string) error {
	if err := x.connect(ctx); err != nil {
		return err
	}
	for _, q := range []string{`PRAGMA synchronous = FULL`, `INSERT INTO ledger_probe(id, at_ns) VALUES (2, ` + fmt.Sprint(time.Now().UnixNano()) + `) ON CONFLICT (id) DO UPDATE SET at_ns = excluded.at_ns`, `PRAGMA synchronous = NORMAL`} {
		if _, err := x.conn.ExecContext(ctx, q); err != nil {
			x.resetConn() // never leave the connection in FULL or NORMAL by surprise
			x.pending.reseal(files)
			return fmt.Errorf("sync ledger store before dropping its commit log: %w", err)
		}
	}
	removeLogs(files, x.log)
	return nil
}

// indexEvent writes what the auditor questions read of one event (stored with row id
// id, its index d derived): the side-table rows they need, the daily rollup, and the
// event's segment terms for searches. Called with mu held, inside the indexer's
// transaction.
//
// Searches find events through segment terms and the facets column (searchseg.go), so the
// per-event side-table rows are written only where an aggregation reads them (derive
// chooses them).
func (x *sqliteIndexer) indexEvent(ctx context.Context, id int64, ev *Event, d *eventIndex) error {
	ns := ev.Time.UnixNano()
	for _, t := range d.tables {
		if err := x.addRow(ctx, &x.tableRows, ev.Instance, ev.Seq, ns, ev.Subject, ev.IdentityKind, ev.Decision, t.tbl, t.name, t.kind, t.category, t.access, string(ev.Type)); err != nil {
			return err
		}
	}
	if ev.Type == EventStatement && len(d.classes) > 0 {
		x.addTableReads(ev, ns)
	}
	for i := range d.classes {
		c := &d.classes[i]
		if ev.Type == EventStatement {
			// Completed statements are counted per second (and per day), not stored per
			// event: index_agg.go.
			x.addClassAgg(ev, ns, c)
			continue
		}
		if err := x.addRow(ctx, &x.classRows, ev.Instance, ev.Seq, ns, ev.Subject, ev.IdentityKind, ev.Decision, c.class, c.column, c.category, string(ev.Type)); err != nil {
			return err
		}
	}
	for _, st := range d.stmts {
		if err := x.exec(ctx, `INSERT INTO ledger_statements(instance, seq, time_ns, kind, category, type) VALUES (?, ?, ?, ?, ?, ?)`,
			ev.Instance, ev.Seq, ns, st.kind, st.category, string(ev.Type)); err != nil {
			return fmt.Errorf("index statements of event %d: %w", ev.Seq, err)
		}
	}
	if x.later != nil {
		x.later.add(id, ns, ev, d) // a synthetic load sums them on another goroutine
		return nil
	}
	x.terms.add(id, ns, ev, d)
	return nil
}

// rowChunk is how many side-table rows one INSERT stores. A statement's fixed cost (the
// driver's conversions and binding, starting the VM) is about a quarter of a row's; the
// driver matches each placeholder by a scan of the arguments, so much longer statements
// cost more again (4 rows: 7.1 → 5.2 µs of CPU per class row, measured).
const rowChunk = 4

// rowBuffer collects side-table rows of one indexer transaction and stores them rowChunk
// at a time.
type rowBuffer struct {
	what string               // the table, for errors
	cols int                  // columns per row
	sql  [rowChunk + 1]string // sql[n] inserts n rows
	args []any                // the rows not stored yet, cols values each
}

func newRowBuffer(table, columns string, cols int) rowBuffer {
	b := rowBuffer{what: table, cols: cols}
	tuple := "(?" + strings.Repeat(", ?", cols-1) + ")"
	for n := 1; n <= rowChunk; n++ {
		b.sql[n] = "INSERT INTO " + table + "(" + columns + ") VALUES " + tuple + strings.Repeat(", "+tuple, n-1)
	}
	return b
}

// addRow queues one row of b (its values in column order), storing a chunk when full.
// Called with mu held, inside the indexer's transaction.
func (x *sqliteIndexer) addRow(ctx context.Context, b *rowBuffer, vals ...any) error {
	b.args = append(b.args, vals...)
	if len(b.args) < rowChunk*b.cols {
		return nil
	}
	return x.storeRows(ctx, b)
}

// storeRows stores the rows b holds. Called with mu held, inside the indexer's transaction.
func (x *sqliteIndexer) storeRows(ctx context.Context, b *rowBuffer) error {
	n := len(b.args) / b.cols
	if n == 0 {
		return nil
	}
	err := x.exec(ctx, b.sql[n], b.args...)
	clear(b.args)
	b.args = b.args[:0]
	if err != nil {
		return fmt.Errorf("index %s rows: %w", b.what, err)
	}
	return nil
}

// dailyKey and dailySum are one row of the daily rollup (ledger_class_daily) being summed.
type dailyKey struct {
	class, category, decision string
	day                       int64
	subject, identityKind     string
}

type dailySum struct{ n, first, last int64 }

// flush writes the side-table rows queued, and the rollup rows and segment terms summed,
// in this transaction. Called with
// mu held, inside the indexer's transaction, before COMMIT.
func (x *sqliteIndexer) flush(ctx context.Context) error {
	for _, b := range []*rowBuffer{&x.tableRows, &x.classRows} {
		if err := x.storeRows(ctx, b); err != nil {
			return err
		}
	}
	if err := x.flushClassAggs(ctx); err != nil {
		return err
	}
	for k, d := range x.daily {
		if err := x.exec(ctx, x.dailySQL, k.class, k.category, k.decision, k.day, k.subject, k.identityKind, d.n, d.first, d.last); err != nil {
			return fmt.Errorf("roll up sensitive-data access: %w", err)
		}
	}
	clear(x.daily)
	x.terms.expand()
	if err := x.storeTerms(ctx); err != nil {
		return err
	}
	clear(x.terms.m)
	return nil
}

// discard forgets what a transaction that is rolled back had summed or interned.
func (x *sqliteIndexer) discard() {
	clear(x.daily)
	clear(x.aggs)
	clear(x.tableReads)
	x.terms.reset()
	for _, b := range []*rowBuffer{&x.tableRows, &x.classRows} {
		clear(b.args)
		b.args = b.args[:0]
	}
	clear(x.texts)
	x.shapes.reset()
}
