package ledger

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// The console's data map shows, for each sensitive table and class of a target, who
// touched it in the last 30 days by identity kind. It used to search the newest 10,000
// statement events of each class and count the sensitive columns each recorded (at ten
// million events: 0.7-1.6 s, and only the newest events counted). Both stores now keep a
// rollup of those columns, ledger_table_reads: per target, table, class, hour, identity
// kind, subject and chain, the number of (statement, sensitive column) pairs of completed
// statements, with the seq bounds of their events (for retention). A period is the rollup's
// rows for its whole hours, one index range per table and class, plus the events of the
// partial hours at its ends, found by a search for the class.

// hourNS is an hour in nanoseconds.
const hourNS = int64(time.Hour)

// TableClass names one class of one table of one target, as the data map lists them: the
// table as its sensitive columns are recorded ("public.customers" for
// "public.customers.email").
type TableClass struct {
	Target, Table, Class string
}

// TableReader is one identity's statements touching a TableClass in a period: each
// completed statement counts once per column of that table and class it recorded (any
// decision, any category).
type TableReader struct {
	TableClass
	Subject, IdentityKind string
	Statements            int64
}

// tableOfColumn is the table part of a recorded sensitive column ("public.customers" of
// "public.customers.email"; the column itself when it has no table part).
func tableOfColumn(col string) string {
	if i := strings.LastIndexByte(col, '.'); i > 0 {
		return col[:i]
	}
	return col
}

// tableReadKey is one row of ledger_table_reads; tableReadSum what it counts.
type tableReadKey struct {
	target, table, class string
	hour                 int64
	identityKind         string
	subject, instance    string
}

type tableReadSum struct{ n, minSeq, maxSeq int64 }

func (s tableReadSum) with(seq int64) tableReadSum {
	if s.n == 0 {
		return tableReadSum{n: 1, minSeq: seq, maxSeq: seq}
	}
	return tableReadSum{n: s.n + 1, minSeq: min(s.minSeq, seq), maxSeq: max(s.maxSeq, seq)}
}

// addTableReads counts the sensitive columns of the completed statement ev (time ns) into
// sums.
func addTableReads(sums map[tableReadKey]tableReadSum, ev *Event, ns int64) {
	hour := floorDiv(ns, hourNS)
	for i := range ev.Statements {
		for col, class := range ev.Statements[i].Sensitive {
			k := tableReadKey{target: ev.Target, table: tableOfColumn(col), class: class, hour: hour, identityKind: ev.IdentityKind, subject: ev.Subject, instance: ev.Instance}
			sums[k] = sums[k].with(ev.Seq)
		}
	}
}

// tableReadsColumns are ledger_table_reads' columns in the order upsertTableReadsSQL binds.
const tableReadsColumns = `target, tbl, class, hour, identity_kind, subject, instance, n, min_seq, max_seq`

// upsertTableReadsSQL adds a sum to one row of ledger_table_reads ({MIN}/{MAX}: the
// dialect's two-argument minimum and maximum).
const upsertTableReadsSQL = `INSERT INTO ledger_table_reads(` + tableReadsColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (target, tbl, class, hour, identity_kind, subject, instance) DO UPDATE SET
n = ledger_table_reads.n + excluded.n, min_seq = {MIN}(ledger_table_reads.min_seq, excluded.min_seq), max_seq = {MAX}(ledger_table_reads.max_seq, excluded.max_seq)`

func upsertTableReads(d dialect) string {
	if d == postgresSQL {
		return rebind(d, strings.NewReplacer("{MIN}", "LEAST", "{MAX}", "GREATEST").Replace(upsertTableReadsSQL))
	}
	return strings.NewReplacer("{MIN}", "min", "{MAX}", "max").Replace(upsertTableReadsSQL)
}

// tableReadsMigration is schema version 14 of the SQLite store: the rollup, built from the
// events stored before (the table of a column is the text before its last dot: rtrim
// strips the characters after it).
const tableReadsMigration = `CREATE TABLE ledger_table_reads (
	target TEXT NOT NULL, tbl TEXT NOT NULL, class TEXT NOT NULL, hour INTEGER NOT NULL,
	identity_kind TEXT NOT NULL, subject TEXT NOT NULL, instance TEXT NOT NULL,
	n INTEGER NOT NULL, min_seq INTEGER NOT NULL, max_seq INTEGER NOT NULL,
	PRIMARY KEY (target, tbl, class, hour, identity_kind, subject, instance)
) WITHOUT ROWID;
CREATE INDEX ledger_table_reads_seq ON ledger_table_reads(instance, min_seq);
` + tableReadsBackfillSQL

// tableReadsBackfillSQL fills ledger_table_reads from the events stored (SQLite).
const tableReadsBackfillSQL = `INSERT INTO ledger_table_reads(` + tableReadsColumns + `)
SELECT COALESCE(e.target, ''), CASE WHEN length(rtrim(s.key, replace(s.key, '.', ''))) > 1 THEN substr(s.key, 1, length(rtrim(s.key, replace(s.key, '.', ''))) - 1) ELSE s.key END,
	s.value, (CASE WHEN e.time_ns >= 0 THEN e.time_ns / 3600000000000 ELSE (e.time_ns - 3599999999999) / 3600000000000 END),
	COALESCE(e.identity_kind, ''), COALESCE(e.subject, ''), e.instance, COUNT(*), MIN(e.seq), MAX(e.seq)
FROM ledger_events e, json_each(e.body, '$.statements') st, json_each(st.value, '$.sensitive') s
WHERE e.type = 'statement' GROUP BY 1, 2, 3, 4, 5, 6, 7;
`

// tableReadsPostgresMigration is the PostgreSQL store's schema version 8: the same rollup.
const tableReadsPostgresMigration = `CREATE TABLE ledger_table_reads (
	target TEXT NOT NULL, tbl TEXT NOT NULL, class TEXT NOT NULL, hour BIGINT NOT NULL,
	identity_kind TEXT NOT NULL, subject TEXT NOT NULL, instance TEXT NOT NULL,
	n BIGINT NOT NULL, min_seq BIGINT NOT NULL, max_seq BIGINT NOT NULL,
	PRIMARY KEY (target, tbl, class, hour, identity_kind, subject, instance)
);
CREATE INDEX ledger_table_reads_seq ON ledger_table_reads(instance, min_seq);
` + tableReadsPostgresBackfillSQL

// tableReadsPostgresBackfillSQL fills ledger_table_reads from the events stored
// (PostgreSQL).
const tableReadsPostgresBackfillSQL = `INSERT INTO ledger_table_reads(` + tableReadsColumns + `)
SELECT COALESCE(e.target, ''), CASE WHEN s.key ~ '.\.' THEN regexp_replace(s.key, '\.[^.]*$', '') ELSE s.key END,
	s.value, floor(e.time_ns / 3600000000000.0)::bigint, COALESCE(e.identity_kind, ''), COALESCE(e.subject, ''), e.instance, COUNT(*), MIN(e.seq), MAX(e.seq)
FROM ledger_events e CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(e.body::jsonb -> 'statements') = 'array' THEN e.body::jsonb -> 'statements' ELSE '[]'::jsonb END) st
	CROSS JOIN LATERAL jsonb_each_text(CASE WHEN jsonb_typeof(st -> 'sensitive') = 'object' THEN st -> 'sensitive' ELSE '{}'::jsonb END) s
WHERE e.type = 'statement' GROUP BY 1, 2, 3, 4, 5, 6, 7;
`

// flushTableReads writes the transaction's sums of sensitive columns per table. Called
// with mu held, inside the indexer's transaction.
func (x *sqliteIndexer) flushTableReads(ctx context.Context) error {
	if len(x.tableReads) == 0 {
		return nil
	}
	if x.later != nil {
		x.later.takeReads(x.tableReads) // a synthetic load writes them at its end
		clear(x.tableReads)
		return nil
	}
	q := upsertTableReads(sqliteSQL)
	for k, s := range x.tableReads {
		if err := x.exec(ctx, q, k.target, k.table, k.class, k.hour, k.identityKind, k.subject, k.instance, s.n, s.minSeq, s.maxSeq); err != nil {
			return fmt.Errorf("count sensitive tables read: %w", err)
		}
	}
	clear(x.tableReads)
	return nil
}

// addTableReads counts the sensitive columns of the completed statement ev (time ns) in
// the transaction's sums. Called with mu held.
func (x *sqliteIndexer) addTableReads(ev *Event, ns int64) {
	if x.tableReads == nil {
		x.tableReads = map[tableReadKey]tableReadSum{}
	}
	addTableReads(x.tableReads, ev, ns)
}

// retireTableReads applies retention (the events of instance through seq are being
// deleted in the same transaction) to ledger_table_reads: rows whose events are all
// deleted go, and a row straddling the cut is counted again from the events it keeps
// (those after seq, up to the last of them). It reads only events after seq, so it may
// run before or after they are deleted.
func retireTableReads(ctx context.Context, d dialect, instance string, seq int64,
	query func(q string, args []any, fn func(scan func(...any) error) error) error, exec func(q string, args ...any) error) error {
	straddle := map[tableReadKey]tableReadSum{}
	top := seq
	err := query(rebind(d, `SELECT target, tbl, class, hour, identity_kind, subject, max_seq FROM ledger_table_reads
		WHERE instance = ? AND min_seq <= ? AND max_seq > ?`), []any{instance, seq, seq}, func(scan func(...any) error) error {
		k := tableReadKey{instance: instance}
		var maxSeq int64
		if err := scan(&k.target, &k.table, &k.class, &k.hour, &k.identityKind, &k.subject, &maxSeq); err != nil {
			return err
		}
		straddle[k] = tableReadSum{}
		top = max(top, maxSeq)
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply retention to the sensitive tables read: %w", err)
	}
	if err := exec(rebind(d, `DELETE FROM ledger_table_reads WHERE instance = ? AND min_seq <= ?`), instance, seq); err != nil {
		return fmt.Errorf("apply retention to the sensitive tables read: %w", err)
	}
	if len(straddle) == 0 {
		return nil
	}
	type kept struct {
		seq  int64
		body []byte
	}
	var bodies []kept
	err = query(rebind(d, `SELECT seq, body FROM ledger_events WHERE instance = ? AND seq > ? AND seq <= ? AND type = 'statement'`), []any{instance, seq, top},
		func(scan func(...any) error) error {
			var k kept
			var body string
			if err := scan(&k.seq, &body); err != nil {
				return err
			}
			k.body = []byte(body)
			bodies = append(bodies, k)
			return nil
		})
	if err != nil {
		return fmt.Errorf("apply retention to the sensitive tables read: %w", err)
	}
	sums := map[tableReadKey]tableReadSum{}
	for _, b := range bodies {
		ev, err := decodeBody(b.body)
		if err != nil {
			continue // not indexed either (Verify reports it)
		}
		ev.Seq, ev.Instance = b.seq, instance
		addTableReads(sums, &ev, ev.Time.UnixNano())
	}
	q := upsertTableReads(d)
	for k, s := range sums {
		if _, ok := straddle[k]; !ok {
			continue // a row that did not straddle the cut counted its events already
		}
		if err := exec(q, k.target, k.table, k.class, k.hour, k.identityKind, k.subject, k.instance, s.n, s.minSeq, s.maxSeq); err != nil {
			return fmt.Errorf("apply retention to the sensitive tables read: %w", err)
		}
	}
	return nil
}

// tableReadsHoursSQL reads the rollup of one table and class of a target over whole hours
// [?4, ?5): one index range.
const tableReadsHoursSQL = `SELECT identity_kind, subject, n FROM ledger_table_reads
WHERE target = ? AND tbl = ? AND class = ? AND hour >= ? AND hour < ?`

// runTableReaders answers TableReaders from the rollup for the whole hours of tr and from
// the events (search: the store's Search, without a catch-up of the indexer) for the
// partial hours at its ends.
func runTableReaders(ctx context.Context, r runner, search func(context.Context, Query) ([]Event, error), keys []TableClass, tr TimeRange) ([]TableReader, error) {
	type readerKey struct {
		TableClass
		subject, kind string
	}
	want := map[TableClass]bool{}
	classes := map[string]bool{}
	for _, k := range keys {
		want[k] = true
		classes[k.Class] = true
	}
	counts := map[readerKey]int64{}
	from, to := tr.bounds()
	hFrom, hTo := ceilDivSafe(from, hourNS), floorDiv(to, hourNS)
	var edges [][2]int64 // [from, to) ranges read from the events
	if hFrom < hTo {
		q := rebind(r.dialect(), tableReadsHoursSQL)
		for k := range want {
			err := r.queryRows(ctx, q, []any{k.Target, k.Table, k.Class, hFrom, hTo}, func(scan func(...any) error) error {
				var kind, subject string
				var n int64
				if err := scan(&kind, &subject, &n); err != nil {
					return err
				}
				counts[readerKey{k, subject, kind}] += n
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("count readers of %s %s: %w", k.Table, k.Class, err)
			}
		}
		if from != math.MinInt64 && from < hFrom*hourNS {
			edges = append(edges, [2]int64{from, hFrom * hourNS})
		}
		if to != math.MaxInt64 && hTo*hourNS < to {
			edges = append(edges, [2]int64{hTo * hourNS, to})
		}
	} else {
		edges = append(edges, [2]int64{from, to})
	}
	for class := range classes {
		for _, e := range edges {
			var q TimeRange
			if e[0] != math.MinInt64 {
				q.From = nsTime(e[0])
			}
			if e[1] != math.MaxInt64 {
				q.To = nsTime(e[1])
			}
			err := searchAll(ctx, search, Query{Type: EventStatement, Class: class, From: q.From, To: q.To}, func(ev *Event) {
				for i := range ev.Statements {
					for col, cl := range ev.Statements[i].Sensitive {
						k := TableClass{ev.Target, tableOfColumn(col), cl}
						if cl == class && want[k] {
							counts[readerKey{k, ev.Subject, ev.IdentityKind}]++
						}
					}
				}
			})
			if err != nil {
				return nil, fmt.Errorf("count readers of %s: %w", class, err)
			}
		}
	}
	out := make([]TableReader, 0, len(counts))
	for k, n := range counts {
		if n > 0 {
			out = append(out, TableReader{TableClass: k.TableClass, Subject: k.subject, IdentityKind: k.kind, Statements: n})
		}
	}
	slices.SortFunc(out, func(a, b TableReader) int {
		return cmp.Or(strings.Compare(a.Target, b.Target), strings.Compare(a.Table, b.Table), strings.Compare(a.Class, b.Class),
			strings.Compare(a.IdentityKind, b.IdentityKind), strings.Compare(a.Subject, b.Subject))
	})
	return out, nil
}

// searchAll calls fn for every event q matches (its Limit and order are ignored), oldest
// first, a page of MaxLimit at a time.
func searchAll(ctx context.Context, search func(context.Context, Query) ([]Event, error), q Query, fn func(*Event)) error {
	q.Ascending, q.Limit = true, MaxLimit
	type id struct {
		instance string
		seq      int64
	}
	seen := map[id]bool{} // the events at the time a page ended, which the next one starts at
	for {
		evs, err := search(ctx, q)
		if err != nil {
			return err
		}
		fresh := 0
		for i := range evs {
			k := id{evs[i].Instance, evs[i].Seq}
			if seen[k] {
				continue
			}
			fresh++
			fn(&evs[i])
		}
		if len(evs) < MaxLimit {
			return nil
		}
		if fresh == 0 {
			return fmt.Errorf("search: more than %d events at %s", MaxLimit, evs[0].Time)
		}
		last := evs[len(evs)-1].Time
		clear(seen)
		for i := len(evs) - 1; i >= 0 && !evs[i].Time.Before(last); i-- {
			seen[id{evs[i].Instance, evs[i].Seq}] = true
		}
		q.From = last
	}
}

// TableReaders implements Store.
func (s *SQLiteStore) TableReaders(ctx context.Context, keys []TableClass, r TimeRange) ([]TableReader, error) {
	if err := s.ix.syncAll(ctx); err != nil {
		return nil, err
	}
	return runTableReaders(ctx, s, func(ctx context.Context, q Query) ([]Event, error) { return s.searchSegments(ctx, q, time.Now()) }, keys, r)
}

// TableReaders implements Store.
func (s *PostgresStore) TableReaders(ctx context.Context, keys []TableClass, r TimeRange) ([]TableReader, error) {
	return runTableReaders(ctx, s, s.Search, keys, r)
}

// hasSensitive reports whether a statement of ev recorded a sensitive column.
func hasSensitive(ev *Event) bool {
	for i := range ev.Statements {
		if len(ev.Statements[i].Sensitive) > 0 {
			return true
		}
	}
	return false
}
