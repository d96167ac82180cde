package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// The SQLite store's synthetic load stores what the indexer stores for the same events,
// through the indexer's own code (storeBatches: the event rows, derive, indexEvent, the
// side-table rows), with these differences, which make ten million events load in a few
// minutes instead of most of an hour on a 2-core machine:
//
//   - The segment terms and the rollups keyed otherwise than by time (ledger_terms by term
//     then segment, ledger_class_daily by class then day, ledger_table_reads by table then
//     hour) are not upserted transaction by transaction, which touched (and wrote to the
//     WAL again) the tail pages of every term and table in every transaction: about four
//     terms per synthetic event, 40 million rows at 10 million events, were most of the
//     old load's CPU. The load sums them in memory (the terms with the indexer's termSet,
//     on a goroutine of their own, delta-encoded) and writes each table once at the end,
//     in primary-key order, so every B-tree page is filled once. The per-second sums
//     (ledger_class_agg) are written by each transaction in key order, those of the
//     seconds no later transaction adds to.
//   - The events are generated, and their records encoded, on another goroutine while the
//     indexer's connection stores the chunk before, so the two cores share the work.
//
// The rows are those the indexer stores for the same events appended through the commit
// log (TestSQLiteSyntheticLoadMatchesIndexer compares every index table): the same row
// ids, texts interned in the same order, the same terms, term blocks, rollups, running
// totals and high-water mark.

// sqliteSyntheticChunk is how many synthetic events the generating goroutine hands over at
// a time.
const sqliteSyntheticChunk = 65536

// sqliteSyntheticTx is how many chunks one transaction stores.
const sqliteSyntheticTx = 4

// syntheticMmap has the load's connections read the database through a memory map: the
// pages their caches miss (index builds, ANALYZE) then cost no read system call.
const syntheticMmap = `PRAGMA mmap_size = 68719476736`

// syntheticIndexedTables are the tables whose secondary indexes a synthetic load drops and
// rebuilds: building an index once from sorted data is much cheaper than keeping it up to
// date row by row once it no longer fits in the page cache.
var syntheticIndexedTables = []string{"ledger_events", "ledger_tables", "ledger_classes", "ledger_statements", "ledger_class_agg"}

// sqliteSyntheticIndexedTables are those of the SQLite store: also the data map's rollup.
var sqliteSyntheticIndexedTables = append(slices.Clip(syntheticIndexedTables), "ledger_table_reads")

// sqliteSyntheticKeptIndexes are the secondary indexes a synthetic load keeps up to date
// instead: their rows arrive in nearly their order (the agents' tables and the per-second
// sums by time, the sessions in runs of 20), where building them again reads every row of
// their tables (16 s of the 10-million-event load for the sessions' alone).
var sqliteSyntheticKeptIndexes = []string{"ledger_events_session", "ledger_tables_agents", "ledger_class_agg_seq"}

// syntheticChunk is one chunk of generated events and their encoded records.
type syntheticChunk struct {
	rows []eventRow
	err  error
}

// syntheticTermPiece is how many events' terms the summing goroutine expands at a time:
// a few segments' worth keeps its map small.
const syntheticTermPiece = 4096

// syntheticSizes are a synthetic load's batch sizes (tests make them small, to cross every
// boundary with few events).
type syntheticSizes struct {
	chunk int64 // events the generating goroutine hands over at a time
	perTx int   // chunks per transaction
	piece int   // events whose terms are expanded at a time
}

// defaultSyntheticSizes are LoadSynthetic's.
func defaultSyntheticSizes() syntheticSizes {
	return syntheticSizes{chunk: sqliteSyntheticChunk, perTx: sqliteSyntheticTx, piece: syntheticTermPiece}
}

// syntheticLater sums what a synthetic load writes at its end (see above).
type syntheticLater struct {
	piece   int
	pending []termEvent      // events whose terms are not handed off yet
	work    chan []termEvent // to the summing goroutine
	done    chan struct{}    // closed when it has summed everything sent
	// index, terms, enc and last are the summed terms (owned by the summing goroutine
	// until done): per term, its segments' bounds in segment order, delta-encoded (a
	// segment's terms of 10 million events take 8-9 bytes instead of 24), a segment that
	// two pieces shared twice in a row; last is the segment and start last encoded.
	index    map[string]int32
	terms    []string
	enc      [][]byte
	last     []termSeg
	pieceBuf []pieceTerm
	// aggs are the per-second sums of sensitive reads not written yet (the seconds a later
	// transaction can add to), daily the daily rollup they add up to, reads the data
	// map's rollup.
	aggs  map[classAggKey]classAggSum
	daily map[dailyKey]dailySum
	reads map[tableReadKey]tableReadSum
}

type termEvent struct {
	id, ns int64
	ev     *Event
	d      *eventIndex
}

type termSeg struct{ seg, min, max int64 }

// pieceTerm is one term of one segment of a piece, by the term's number.
type pieceTerm struct {
	term int32
	termSeg
}

func newSyntheticLater(piece int) *syntheticLater {
	l := &syntheticLater{piece: piece, work: make(chan []termEvent, 16), done: make(chan struct{}), index: map[string]int32{},
		aggs: map[classAggKey]classAggSum{}, daily: map[dailyKey]dailySum{}, reads: map[tableReadKey]tableReadSum{}}
	go l.sum()
	return l
}

// sum sums the terms of the events handed off through the indexer's termSet.
func (l *syntheticLater) sum() {
	defer close(l.done)
	ts := termSet{m: map[termKey]termBounds{}}
	for evs := range l.work {
		for _, e := range evs {
			ts.add(e.id, e.ns, e.ev, e.d)
		}
		ts.expand()
		l.pieceBuf = l.pieceBuf[:0]
		for k, b := range ts.m {
			i, ok := l.index[k.term]
			if !ok {
				i = int32(len(l.terms))
				l.index[k.term] = i
				l.terms = append(l.terms, k.term)
				l.enc = append(l.enc, nil)
				l.last = append(l.last, termSeg{})
			}
			l.pieceBuf = append(l.pieceBuf, pieceTerm{i, termSeg{k.seg, b.min, b.max}})
		}
		clear(ts.m)
		// Pieces come in row id order, so each term's segments are in order once a
		// piece's are sorted.
		slices.SortFunc(l.pieceBuf, func(a, b pieceTerm) int { return cmp.Or(cmp.Compare(a.term, b.term), cmp.Compare(a.seg, b.seg)) })
		for _, p := range l.pieceBuf {
			e, last := l.enc[p.term], &l.last[p.term]
			e = binary.AppendUvarint(e, uint64(p.seg-last.seg))
			e = binary.AppendVarint(e, p.min-last.min)
			e = binary.AppendUvarint(e, uint64(p.max-p.min))
			l.enc[p.term] = e
			last.seg, last.min = p.seg, p.min
		}
	}
}

// segments calls fn for term i's segments in order, with the bounds of a segment listed
// twice merged.
func (l *syntheticLater) segments(i int32, fn func(termSeg) error) error {
	e := l.enc[i]
	var cur, prev termSeg
	have := false
	for len(e) > 0 {
		d, n1 := binary.Uvarint(e)
		m, n2 := binary.Varint(e[n1:])
		w, n3 := binary.Uvarint(e[n1+n2:])
		if n1 <= 0 || n2 <= 0 || n3 <= 0 {
			return fmt.Errorf("search terms of %q: bad encoding", l.terms[i])
		}
		e = e[n1+n2+n3:]
		prev.seg += int64(d)
		prev.min += m
		s := termSeg{prev.seg, prev.min, prev.min + int64(w)}
		if have && s.seg == cur.seg {
			cur.min, cur.max = min(cur.min, s.min), max(cur.max, s.max)
			continue
		}
		if have {
			if err := fn(cur); err != nil {
				return err
			}
		}
		cur, have = s, true
	}
	if have {
		return fn(cur)
	}
	return nil
}

// add queues one event's terms (indexEvent).
func (l *syntheticLater) add(id, ns int64, ev *Event, d *eventIndex) {
	l.pending = append(l.pending, termEvent{id, ns, ev, d})
	if len(l.pending) >= l.piece {
		l.handOff()
	}
}

// handOff sends the events queued to the summing goroutine (storeTerms, add).
func (l *syntheticLater) handOff() {
	if len(l.pending) > 0 {
		l.work <- l.pending
		l.pending = make([]termEvent, 0, l.piece)
	}
}

// takeReads adds one transaction's sums of the data map's rollup (flushTableReads).
func (l *syntheticLater) takeReads(m map[tableReadKey]tableReadSum) {
	for k, s := range m {
		if t, ok := l.reads[k]; ok {
			s = tableReadSum{n: t.n + s.n, minSeq: min(t.minSeq, s.minSeq), maxSeq: max(t.maxSeq, s.maxSeq)}
		}
		l.reads[k] = s
	}
}

// finish waits for the summing goroutine (the events queued are summed too).
func (l *syntheticLater) finish() {
	l.handOff()
	close(l.work)
	<-l.done
}

// flushSyntheticAggs adds the transaction's per-second sums of sensitive reads (x.aggs,
// flushClassAggs) to those not written yet and writes, in primary-key order, those of the
// seconds before the transaction's last (synthetic events come in time order, so no later
// transaction adds to them): the rows land at the ends of a few ranges of
// ledger_class_agg, as the indexer's do. It sums what it writes into the daily rollup.
// Called with mu held, inside the indexer's transaction.
func (x *sqliteIndexer) flushSyntheticAggs(ctx context.Context, l *syntheticLater, all bool) error {
	top := int64(math.MinInt64)
	for k, s := range x.aggs {
		if t, ok := l.aggs[k]; ok {
			s = classAggSum{n: t.n + s.n, first: min(t.first, s.first), last: max(t.last, s.last), minSeq: min(t.minSeq, s.minSeq), maxSeq: max(t.maxSeq, s.maxSeq)}
		}
		l.aggs[k] = s
		top = max(top, k.sec)
	}
	clear(x.aggs)
	var keys []classAggKey
	for k := range l.aggs {
		if all || k.sec < top {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareClassAggKeys)
	w := x.newRowWriter("sensitive-data access", "ledger_class_agg", "class, category, decision, sec, subject, identity_kind, instance, n, first_ns, last_ns, min_seq, max_seq", 12)
	w.perTx = math.MaxInt // inside the indexer's transaction
	for _, k := range keys {
		s := l.aggs[k]
		delete(l.aggs, k)
		if err := w.add(ctx, textArg(k.class), textArg(k.category), textArg(k.decision), intArg(k.sec), textArg(k.subject), textArg(k.identityKind), textArg(k.instance),
			intArg(s.n), intArg(s.first), intArg(s.last), intArg(s.minSeq), intArg(s.maxSeq)); err != nil {
			return err
		}
		addDaily(l.daily, k, s) // as flushClassAggs sums them
	}
	return w.flush(ctx)
}

// compareClassAggKeys orders keys as ledger_class_agg's primary key, comparing field by
// field only as far as needed (cmp.Or would compare them all).
func compareClassAggKeys(a, b classAggKey) int {
	if c := strings.Compare(a.class, b.class); c != 0 {
		return c
	}
	if c := strings.Compare(a.category, b.category); c != 0 {
		return c
	}
	if c := strings.Compare(a.decision, b.decision); c != 0 {
		return c
	}
	if c := cmp.Compare(a.sec, b.sec); c != 0 {
		return c
	}
	if c := strings.Compare(a.subject, b.subject); c != 0 {
		return c
	}
	if c := strings.Compare(a.identityKind, b.identityKind); c != 0 {
		return c
	}
	return strings.Compare(a.instance, b.instance)
}

// rowWriter inserts rows of one table several per statement (INSERT OR IGNORE: a
// statement that cannot abort needs no statement journal), committing every so many
// rows. Every row must be new: a row ignored (a key stored before) fails the load.
type rowWriter struct {
	x     *sqliteIndexer
	head  string // INSERT OR IGNORE INTO t(columns) VALUES
	cols  int
	args  []nativeArg
	sql   map[int]string
	rows  int64
	inTx  int
	what  string
	perTx int
}

// rowWriterRows is how many rows one statement of a rowWriter inserts.
const rowWriterRows = 64

func (x *sqliteIndexer) newRowWriter(what, table, columns string, cols int) *rowWriter {
	return &rowWriter{x: x, head: `INSERT OR IGNORE INTO ` + table + `(` + columns + `) VALUES `, cols: cols, sql: map[int]string{}, what: what, perTx: 2_000_000}
}

func (w *rowWriter) add(ctx context.Context, vals ...nativeArg) error {
	w.args = append(w.args, vals...)
	if len(w.args) < rowWriterRows*w.cols {
		return nil
	}
	return w.flush(ctx)
}

func (w *rowWriter) flush(ctx context.Context) error {
	n := len(w.args) / w.cols
	if n == 0 {
		return nil
	}
	q, ok := w.sql[n]
	if !ok {
		tuple := "(?" + strings.Repeat(", ?", w.cols-1) + ")"
		q = w.head + tuple + strings.Repeat(", "+tuple, n-1)
		w.sql[n] = q
	}
	res, err := w.x.execArgs(ctx, q, w.args)
	if err != nil {
		return fmt.Errorf("store %s: %w", w.what, err)
	}
	if c, _ := res.RowsAffected(); c != int64(n) {
		return fmt.Errorf("store %s: %d of %d rows stored before", w.what, int64(n)-c, n)
	}
	clear(w.args)
	w.args = w.args[:0]
	w.rows += int64(n)
	if w.inTx += n; w.inTx >= w.perTx {
		w.inTx = 0
		if _, err := w.x.conn.ExecContext(ctx, `COMMIT`); err != nil {
			return fmt.Errorf("store %s: commit: %w", w.what, err)
		}
		if _, err := w.x.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
			return fmt.Errorf("store %s: begin: %w", w.what, err)
		}
	}
	return nil
}

// inTransaction runs fn in a transaction of the indexer's connection (which fn may commit
// and begin again). Called with mu held.
func (x *sqliteIndexer) inTransaction(ctx context.Context, fn func() error) (err error) {
	if _, err := x.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(); err != nil {
		if _, rerr := x.conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
			err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if _, err := x.conn.ExecContext(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// writeTerms stores the summed terms in (term, seg) order, merging the bounds of a segment
// that two pieces shared. Segments up to lastSeg (the segment of the last event stored
// before the load, which can have terms already) go through the indexer's upsert; the
// others are new. The '*' rows' blocks (ledger_term_blocks) are what the triggers on
// ledger_terms would have made of them: the triggers are dropped for the write, which then
// runs no trigger program per row, and created again. Called with mu held.
func (x *sqliteIndexer) writeTerms(ctx context.Context, l *syntheticLater, lastSeg int64) (rows int64, err error) {
	triggers, err := listSchema(ctx, x.conn, `trigger`, `ledger_terms`)
	if err != nil {
		return 0, fmt.Errorf("store search terms: %w", err)
	}
	for _, t := range triggers {
		if _, err := x.conn.ExecContext(ctx, `DROP TRIGGER "`+t.name+`"`); err != nil {
			return 0, fmt.Errorf("store search terms: drop trigger %s: %w", t.name, err)
		}
	}
	defer func() {
		for _, t := range triggers {
			if _, terr := x.conn.ExecContext(context.WithoutCancel(ctx), t.sql); terr != nil {
				err = errors.Join(err, fmt.Errorf("store search terms: create trigger %s again: %w", t.name, terr))
			}
		}
	}()
	order := make([]int32, len(l.terms))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int { return strings.Compare(l.terms[i], l.terms[j]) })
	w := x.newRowWriter("search terms", "ledger_terms", "term, seg, min_ns, max_ns", 4)
	w.perTx = 4_000_000
	err = x.inTransaction(ctx, func() error {
		for _, i := range order {
			term := l.terms[i]
			err := l.segments(i, func(s termSeg) error {
				if s.seg <= lastSeg {
					if err := x.exec(ctx, upsertTermsSQL(1), term, s.seg, s.min, s.max); err != nil {
						return fmt.Errorf("store search terms: %w", err)
					}
					return nil
				}
				return w.add(ctx, textArg(term), intArg(s.seg), intArg(s.min), intArg(s.max))
			})
			if err != nil {
				return err
			}
			l.enc[i] = nil
		}
		if err := w.flush(ctx); err != nil {
			return err
		}
		// What the triggers do for each '*' row inserted or updated.
		first := max(lastSeg, 0)
		if _, err := x.conn.ExecContext(ctx, `INSERT INTO ledger_term_blocks(block, min_ns, max_ns)
SELECT seg >> `+fmt.Sprint(termBlockShift)+`, MIN(min_ns), MAX(max_ns) FROM ledger_terms WHERE term = '*' AND seg >= ? GROUP BY 1
ON CONFLICT (block) DO UPDATE SET min_ns = min(ledger_term_blocks.min_ns, excluded.min_ns), max_ns = max(ledger_term_blocks.max_ns, excluded.max_ns)`, first); err != nil {
			return fmt.Errorf("store search term blocks: %w", err)
		}
		return nil
	})
	return w.rows, err
}

// writeRollups stores the per-second sums of sensitive reads not written yet, the daily
// rollup (upserted: it is not keyed by chain) and the data map's rollup (new rows: it is
// keyed by the load's chain), each in primary-key order. Called with mu held.
func (x *sqliteIndexer) writeRollups(ctx context.Context, l *syntheticLater) error {
	err := x.inTransaction(ctx, func() error { return x.flushSyntheticAggs(ctx, l, true) })
	if err != nil {
		return err
	}
	daily := l.daily
	days := slices.Collect(maps.Keys(daily))
	slices.SortFunc(days, func(a, b dailyKey) int {
		if c := strings.Compare(a.class, b.class); c != 0 {
			return c
		}
		if c := strings.Compare(a.category, b.category); c != 0 {
			return c
		}
		if c := strings.Compare(a.decision, b.decision); c != 0 {
			return c
		}
		if c := cmp.Compare(a.day, b.day); c != 0 {
			return c
		}
		if c := strings.Compare(a.subject, b.subject); c != 0 {
			return c
		}
		return strings.Compare(a.identityKind, b.identityKind)
	})
	err = x.inTransaction(ctx, func() error {
		args := make([]nativeArg, 0, 9)
		for _, k := range days {
			d := daily[k]
			args = append(args[:0], textArg(k.class), textArg(k.category), textArg(k.decision), intArg(k.day), textArg(k.subject), textArg(k.identityKind),
				intArg(d.n), intArg(d.first), intArg(d.last))
			if _, err := x.execArgs(ctx, x.dailySQL, args); err != nil {
				return fmt.Errorf("roll up sensitive-data access: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	reads := slices.Collect(maps.Keys(l.reads))
	slices.SortFunc(reads, func(a, b tableReadKey) int {
		if c := strings.Compare(a.target, b.target); c != 0 {
			return c
		}
		if c := strings.Compare(a.table, b.table); c != 0 {
			return c
		}
		if c := strings.Compare(a.class, b.class); c != 0 {
			return c
		}
		if c := cmp.Compare(a.hour, b.hour); c != 0 {
			return c
		}
		if c := strings.Compare(a.identityKind, b.identityKind); c != 0 {
			return c
		}
		if c := strings.Compare(a.subject, b.subject); c != 0 {
			return c
		}
		return strings.Compare(a.instance, b.instance)
	})
	return x.inTransaction(ctx, func() error {
		w := x.newRowWriter("sensitive tables read", "ledger_table_reads", tableReadsColumns, 10)
		for _, k := range reads {
			s := l.reads[k]
			if err := w.add(ctx, textArg(k.target), textArg(k.table), textArg(k.class), intArg(k.hour), textArg(k.identityKind), textArg(k.subject), textArg(k.instance),
				intArg(s.n), intArg(s.minSeq), intArg(s.maxSeq)); err != nil {
				return err
			}
		}
		return w.flush(ctx)
	})
}

// schemaObject is one index or trigger, with the statement that creates it.
type schemaObject struct{ name, sql string }

// listSchema lists the explicitly created objects of type typ on the tables.
func listSchema(ctx context.Context, q *sql.Conn, typ string, tables ...string) ([]schemaObject, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = '`+typ+`' AND sql IS NOT NULL AND tbl_name IN ('`+
		strings.Join(tables, "', '")+`') ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", typ, err)
	}
	defer rows.Close()
	var out []schemaObject
	for rows.Next() {
		var o schemaObject
		if err := rows.Scan(&o.name, &o.sql); err != nil {
			return nil, fmt.Errorf("list %ss: %w", typ, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %ss: %w", typ, err)
	}
	return out, nil
}

// LoadSynthetic implements Store: n synthetic events for instance, which must have none
// yet, stored and indexed as described above. For speed it drops the secondary indexes of
// the event and side tables for the load, building them again at the end, also when the
// load fails. A process killed during the load leaves the database without them: synthetic
// databases are for benchmarks, throw such one away. A load that fails part way leaves
// the events it stored, found by searches, and rollups that can count some it did not.
func (s *SQLiteStore) LoadSynthetic(ctx context.Context, instance string, n int64, start time.Time) error {
	return s.loadSynthetic(ctx, instance, n, start, defaultSyntheticSizes())
}

func (s *SQLiteStore) loadSynthetic(ctx context.Context, instance string, n int64, start time.Time, sz syntheticSizes) (err error) {
	base, step := syntheticSpan(n, start)
	// The indexer must not store the commit log meanwhile: the load holds its lock.
	x := s.ix
	x.mu.Lock()
	defer x.mu.Unlock()
	began := time.Now()
	var have, lastID int64
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM ledger_events WHERE instance = ? LIMIT 1)), COALESCE((SELECT MAX(id) FROM ledger_events), -1)`,
		instance).Scan(&have, &lastID); err != nil {
		return fmt.Errorf("load synthetic events: %w", err)
	}
	if have > 0 {
		return fmt.Errorf("load synthetic events: chain %s has events already", instance)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("load synthetic events: %w", err)
	}
	defer conn.Close()
	indexes, err := dropSecondaryIndexes(ctx, conn)
	if err != nil {
		return err
	}
	defer func() {
		// Rebuild even when the load failed: the store must keep its indexes.
		t := time.Now()
		for _, q := range []string{`PRAGMA cache_size = -1048576`, `PRAGMA temp_store = MEMORY`, `PRAGMA threads = 4`, syntheticMmap} {
			if _, perr := conn.ExecContext(context.WithoutCancel(ctx), q); perr != nil {
				err = errors.Join(err, fmt.Errorf("load synthetic events: %s: %w", q, perr))
			}
		}
		for _, ix := range indexes {
			t := time.Now()
			if _, ierr := conn.ExecContext(context.WithoutCancel(ctx), ix); ierr != nil {
				err = errors.Join(err, fmt.Errorf("load synthetic events: rebuild index: %w", ierr))
			}
			slog.Debug("synthetic load rebuilt index", "index", ix, "took", time.Since(t))
		}
		slog.Debug("synthetic load rebuilt indexes", "indexes", len(indexes), "took", time.Since(t))
		if err == nil {
			// Statistics for the planner, from a sample of each index (a full ANALYZE of
			// ten million rows takes minutes).
			t := time.Now()
			if _, err = conn.ExecContext(ctx, `PRAGMA analysis_limit = 10000`); err == nil {
				_, err = conn.ExecContext(ctx, `ANALYZE`)
			}
			if err != nil {
				err = fmt.Errorf("load synthetic events: analyze: %w", err)
			}
			slog.Debug("synthetic load analyzed", "took", time.Since(t))
		}
		for _, q := range []string{`PRAGMA cache_size = -2000`, `PRAGMA temp_store = DEFAULT`, `PRAGMA threads = 0`, `PRAGMA analysis_limit = 0`, `PRAGMA mmap_size = 0`} {
			if _, perr := conn.ExecContext(context.WithoutCancel(ctx), q); perr != nil {
				err = errors.Join(err, fmt.Errorf("load synthetic events: %s: %w", q, perr))
			}
		}
		slog.Debug("synthetic load done", "events", n, "took", time.Since(began))
	}()
	// The indexer's connection, for the load: a page cache of 256 MiB (it appends, mostly)
	// and no fsync at checkpoints (a crash loses the load, never what was committed before it).
	if err := x.connect(ctx); err != nil {
		return fmt.Errorf("load synthetic events: %w", err)
	}
	for _, q := range []string{`PRAGMA cache_size = -262144`, `PRAGMA synchronous = OFF`, syntheticMmap} {
		if _, err := x.conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("load synthetic events: %s: %w", q, err)
		}
	}
	// Back to the indexer's settings: a new connection makes them.
	defer x.resetConn()
	// The running totals of sensitive-data reads are built once at the end, from the daily
	// rollup, rather than kept day by day (also when the load fails: they must agree with it).
	x.runsLater = true
	defer func() {
		x.runsLater = false
		t := time.Now()
		if _, rerr := x.conn.ExecContext(context.WithoutCancel(ctx), rebuildClassRunsSQL); rerr != nil {
			err = errors.Join(err, fmt.Errorf("load synthetic events: running totals: %w", rerr))
		}
		slog.Debug("synthetic load built running totals", "took", time.Since(t))
	}()
	// The terms and rollups are written at the end (also when the load fails: the events
	// stored must be found).
	later := newSyntheticLater(sz.piece)
	x.later = later
	defer func() {
		x.later = nil
		later.finish()
		t := time.Now()
		rows, werr := x.writeTerms(context.WithoutCancel(ctx), later, lastID>>segmentShift)
		if werr != nil {
			err = errors.Join(err, fmt.Errorf("load synthetic events: %w", werr))
		}
		slog.Debug("synthetic load stored terms", "terms", rows, "took", time.Since(t))
		t = time.Now()
		if werr = x.writeRollups(context.WithoutCancel(ctx), later); werr != nil {
			err = errors.Join(err, fmt.Errorf("load synthetic events: %w", werr))
		}
		slog.Debug("synthetic load stored rollups", "per_second", len(later.aggs), "table_reads", len(later.reads), "took", time.Since(t))
	}()
	// Events are generated a chunk ahead, on another goroutine.
	gen, stop := make(chan syntheticChunk, 1), make(chan struct{})
	defer close(stop)
	go func() {
		defer close(gen)
		nm := newSyntheticNames()
		for lo := int64(1); lo <= n; lo += sz.chunk {
			hi := min(lo+sz.chunk-1, n)
			c := syntheticChunk{rows: make([]eventRow, 0, hi-lo+1)}
			var buf []byte
			for i := lo; i <= hi; i++ {
				ev := syntheticEvent(nm, instance, i, base, step)
				start := len(buf)
				var ok bool
				if buf, ok = appendCanonicalEvent(buf, ev); !ok {
					c.err = fmt.Errorf("encode event %d", i)
					break
				}
				// A full slice expression: a later append that moves buf leaves this
				// record where it is.
				c.rows = append(c.rows, rowOf(ev, buf[start:len(buf):len(buf)]))
			}
			select {
			case gen <- c:
			case <-stop:
				return
			}
			if c.err != nil {
				return
			}
		}
	}()
	var batches []logBatch
	store := func() error {
		if len(batches) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("load synthetic events: %w", err)
		}
		first, last := batches[0].rows[0].seq, batches[len(batches)-1].rows
		if err := x.storeBatches(ctx, batches); err != nil {
			return fmt.Errorf("load synthetic events %d..%d: %w", first, last[len(last)-1].seq, err)
		}
		batches = batches[:0]
		return nil
	}
	for c := range gen {
		if c.err != nil {
			return fmt.Errorf("load synthetic events: %w", c.err)
		}
		if batches = append(batches, logBatch{rows: c.rows}); len(batches) == sz.perTx {
			if err := store(); err != nil {
				return err
			}
		}
	}
	return store()
}
