package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unsafe"
)

// The indexer stores the events of the commit log eventChunk rows per INSERT, with the row
// ids SQLite gives them (it holds the write lock: the next id is MAX(id)+1), so it knows
// each event's id without asking for it row by row. A statement's fixed cost (the driver's
// conversions, starting and halting SQLite's program) is then paid once per chunk.
//
// An event stored before (the commit log replayed after a crash, or another process that
// stored it) makes the chunk insert fewer rows than it holds: the transaction is rolled back
// and storeBatchesOneByOne stores the batches instead, which checks every row.

// eventChunk is how many events one INSERT stores. Arguments are bound in order
// (index_native.go), so a statement's binding grows with its placeholders, not their
// square as through the driver (where 8 rows was the best): 32 rows took 5-10% less CPU per
// event than 8 (BenchmarkIndex, four alternated runs; 128 no better than 32).
const eventChunk = 32

// yieldChunks is how many chunks the indexer stores between yields of its P (64 events,
// well under a millisecond of work): see storeBatchesBulk.
const yieldChunks = max(1, 64/eventChunk)

// errStoredBefore ends a bulk store that met an event stored before.
var errStoredBefore = errors.New("ledger event stored before")

// insertEventsSQL returns the INSERT of n events, 14 values each. The row id is not bound:
// SQLite gives a new row MAX(id)+1, the id storeBatchesBulk expects (it checks the last),
// so 16 columns' binding cost 14's (binding is quadratic in a statement's placeholders).
// Nor is the hash (insertEventSQL says why). OR IGNORE instead of ON CONFLICT DO NOTHING:
// a statement that cannot abort needs no statement journal, which copied the B-tree pages
// each INSERT changed (9% of indexing a sensitive read: BenchmarkIndex profile); a row it
// ignores, stored before or not, makes the store fall back to one by one as before, where
// any error is reported.
func insertEventsSQL(n int) string {
	tuple := "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?)"
	return `INSERT OR IGNORE INTO ledger_events(instance, seq, time_ns, type, subject, identity_kind, target, environment, decision, session, hash, body, facets, text_id, aux) VALUES ` +
		tuple + strings.Repeat(", "+tuple, n-1)
}

// bulkRow is one event of the chunk being built: its id, and its event and index when it is
// indexed in this transaction (nil when its chain's index lags: indexSome does it later).
type bulkRow struct {
	id int64
	ev *Event
	d  *eventIndex
}

// storeBatchesBulk inserts logged batches in one transaction, eventChunk events per INSERT,
// and indexes the events of chains whose index is caught up. It returns errStoredBefore,
// having rolled back, when any event was stored before. Called with mu held.
func (x *sqliteIndexer) storeBatchesBulk(ctx context.Context, bs []logBatch) (err error) {
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
	var next int64
	if err := x.conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) + 1 FROM ledger_events`).Scan(&next); err != nil {
		return fmt.Errorf("read next event id: %w", err)
	}
	marks := map[string]*chainMark{}
	args := x.bulkArgs[:0]
	rows := x.bulkRows[:0]
	defer func() {
		clear(args)
		x.bulkArgs, x.bulkRows = args[:0], rows[:0]
	}()
	chunks := 0
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		q, ok := x.bulkSQL[len(rows)]
		if !ok {
			q = insertEventsSQL(len(rows))
			x.bulkSQL[len(rows)] = q
		}
		res, err := x.execArgs(ctx, q, args)
		if err != nil {
			return fmt.Errorf("store events: %w", err)
		}
		if n, _ := res.RowsAffected(); n != int64(len(rows)) {
			return errStoredBefore
		}
		if id, err := res.LastInsertId(); err != nil || id != rows[len(rows)-1].id {
			return fmt.Errorf("store events: row ids %d..%d expected, last is %d (%v)", rows[0].id, rows[len(rows)-1].id, id, err)
		}
		for i := range rows {
			if rows[i].ev != nil {
				if err := x.indexEvent(ctx, rows[i].id, rows[i].ev, rows[i].d); err != nil {
					return err
				}
			}
		}
		clear(args)
		args, rows = args[:0], rows[:0]
		if chunks++; chunks%yieldChunks == 0 {
			// A pass can hold its P for tens of milliseconds (a quarter second of commits
			// under load), and Go preempts a running goroutine only after 10 ms: the
			// sessions whose reads became ready on this P would wait behind it.
			runtime.Gosched()
		}
		return nil
	}
	for _, b := range bs {
		for i := range b.rows {
			r := &b.rows[i]
			m, err := x.mark(ctx, marks, r.instance)
			if err != nil {
				return err
			}
			ev, d, err := x.indexable(ctx, m, r)
			if err != nil {
				return err
			}
			if ev == nil {
				m.last = -1 // not contiguous, or undecodable (indexSome skips it with a warning)
			} else {
				m.last, m.indexed = r.seq, r.seq
			}
			// The record is bound as text without a copy (it is copied for SQLite anyway):
			// a sealed record is never modified.
			body := unsafe.String(unsafe.SliceData(r.body), len(r.body))
			facets, err := anyArg(d.facetsArg())
			if err != nil {
				return fmt.Errorf("store event %s/%d: facets: %w", r.instance, r.seq, err)
			}
			text, err := anyArg(d.textArg())
			if err != nil {
				return fmt.Errorf("store event %s/%d: text: %w", r.instance, r.seq, err)
			}
			args = append(args, textArg(r.instance), intArg(r.seq), intArg(r.timeNS), textArg(r.typ), textArg(r.subject), textArg(r.identityKind), textArg(r.target), textArg(r.environment),
				textArg(r.decision), textArg(r.session), textArg(body), facets, text, intArg(int64(d.auxArg())))
			rows = append(rows, bulkRow{id: next, ev: ev, d: d})
			next++
			if len(rows) == eventChunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := flush(); err != nil {
			return err
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

// chainMark is how far a store of logged batches has indexed one chain.
type chainMark struct {
	last    int64 // the seq after which the next event is indexed here; -1 once not contiguous
	indexed int64 // the last seq indexed here; 0: none
}

// mark returns instance's mark in marks, starting it at the chain's high-water mark.
// Called with mu held, in a transaction.
func (x *sqliteIndexer) mark(ctx context.Context, marks map[string]*chainMark, instance string) (*chainMark, error) {
	if m, ok := marks[instance]; ok {
		return m, nil
	}
	hwm, err := x.highWater(ctx, instance)
	if err != nil {
		return nil, err
	}
	m := &chainMark{last: hwm}
	marks[instance] = m
	return m, nil
}

// storeMarks stores the high-water mark of every chain indexed in this transaction: the
// last event indexed, also when the chain stopped being contiguous after it (the events
// after are indexed by indexSome). Called with mu held, in the transaction.
func (x *sqliteIndexer) storeMarks(ctx context.Context, marks map[string]*chainMark) error {
	for inst, m := range marks {
		if m.indexed > 0 {
			if err := x.exec(ctx, setHighWaterSQL, inst, m.indexed); err != nil {
				return fmt.Errorf("store index high-water mark: %w", err)
			}
		}
	}
	return nil
}

// termChunk is how many segment terms one upsert stores (4 columns each).
const termChunk = 32

// upsertTermsSQL returns the upsert of n segment terms.
func upsertTermsSQL(n int) string {
	return `INSERT INTO ledger_terms(term, seg, min_ns, max_ns) VALUES (?, ?, ?, ?)` + strings.Repeat(`, (?, ?, ?, ?)`, n-1) + `
ON CONFLICT (term, seg) DO UPDATE SET min_ns = min(ledger_terms.min_ns, excluded.min_ns), max_ns = max(ledger_terms.max_ns, excluded.max_ns)`
}

// storeTerms upserts the transaction's segment terms termChunk per statement, in key
// order (each statement's rows then land on neighbouring B-tree pages). Called with mu
// held, inside the indexer's transaction.
func (x *sqliteIndexer) storeTerms(ctx context.Context) error {
	if x.later != nil {
		x.later.handOff() // a synthetic load writes them at its end
		return nil
	}
	keys := x.termKeys[:0]
	for k := range x.terms.m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b termKey) int { return cmp.Or(strings.Compare(a.term, b.term), cmp.Compare(a.seg, b.seg)) })
	args := x.termArgs[:0]
	defer func() {
		clear(args)
		clear(keys)
		x.termArgs, x.termKeys = args[:0], keys[:0]
	}()
	for len(keys) > 0 {
		n := min(len(keys), termChunk)
		for _, k := range keys[:n] {
			b := x.terms.m[k]
			args = append(args, k.term, k.seg, b.min, b.max)
		}
		q, ok := x.termSQL[n]
		if !ok {
			q = upsertTermsSQL(n)
			x.termSQL[n] = q
		}
		if err := x.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("store search terms: %w", err)
		}
		clear(args)
		args = args[:0]
		keys = keys[n:]
	}
	return nil
}

// indexable returns logged row r's event and its index when r's chain is indexed up to the
// row before it (m), so r is indexed in this transaction; nil when the chain is not
// contiguous here or the body does not decode (indexSome deals with those later).
func (x *sqliteIndexer) indexable(ctx context.Context, m *chainMark, r *eventRow) (*Event, *eventIndex, error) {
	if m.last < 0 || m.last != r.seq-1 {
		return nil, nil, nil
	}
	ev := r.ev
	if ev == nil {
		dec, err := decodeBody(r.body)
		if err != nil {
			return nil, nil, nil
		}
		dec.Instance, dec.Seq = r.instance, r.seq
		ev = &dec
	}
	d, err := x.derive(ctx, ev)
	if err != nil {
		return nil, nil, err
	}
	return ev, d, nil
}
