package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The PII-readers question ("who read personal data in a period") used to read one
// ledger_classes row per completed statement per sensitive class, each with two B-trees
// to keep up to date: most of what indexing a sensitive read cost. The SQLite store now
// keeps, for completed statements, one row per (class, category, decision, second,
// subject, identity kind, chain) in ledger_class_agg with the count, the first and last
// times and the seq bounds of its events. Repetitive traffic (an application reading the
// same table as the same identity) adds a row per second and identity, not per statement;
// the most varied traffic adds at most one per statement, as before.
//
//   - A question sums the daily rollup for the whole UTC days of its range, the per-second
//     rows for the whole seconds at its edges, and reads the events of the partial seconds
//     at its ends exactly (through the segment terms of the class), so its answer is exact
//     and never reads more rows than the per-event rows did.
//   - Intents keep their per-event class rows (intent.go pairs them with completions); the
//     completions are found for that through their facets.
//   - Retention deletes the rows of the deleted events by their seq bounds and counts again
//     the events left of a row that straddles the cut (retireClassAggs).

// classAggMigration is schema version 12 of the SQLite store: ledger_class_agg, filled from
// the completed statements' class rows, which it replaces.
const classAggMigration = `CREATE TABLE ledger_class_agg (
	class TEXT NOT NULL, category TEXT NOT NULL, decision TEXT NOT NULL, sec INTEGER NOT NULL,
	subject TEXT NOT NULL, identity_kind TEXT NOT NULL, instance TEXT NOT NULL,
	n INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, min_seq INTEGER NOT NULL, max_seq INTEGER NOT NULL,
	PRIMARY KEY (class, category, decision, sec, subject, identity_kind, instance)
) WITHOUT ROWID;
CREATE INDEX ledger_class_agg_seq ON ledger_class_agg(instance, min_seq);
INSERT INTO ledger_class_agg(class, category, decision, sec, subject, identity_kind, instance, n, first_ns, last_ns, min_seq, max_seq)
SELECT class, COALESCE(category, ''), COALESCE(decision, ''), (CASE WHEN time_ns >= 0 THEN time_ns / 1000000000 ELSE (time_ns - 999999999) / 1000000000 END),
	COALESCE(subject, ''), COALESCE(identity_kind, ''), instance, COUNT(*), MIN(time_ns), MAX(time_ns), MIN(seq), MAX(seq)
FROM ledger_classes WHERE type = 'statement' GROUP BY 1, 2, 3, 4, 5, 6, 7;
DELETE FROM ledger_classes WHERE type = 'statement';
`

// Who read a class over a month sums the daily rollup of ~30 rows per reader (at ten
// million events, 150,000 rows through a temporary B-tree: 1.2 s under load). The SQLite
// store therefore also keeps, per (class, category, decision, subject, identity kind),
// running totals over the days (ledger_class_run: the day's count and the total of every day
// up to it) and the list of those readers with their first and last day
// (ledger_class_readers). The count of whole days [d1, d2) is then the total of the last
// row before d2 less the total before the first row from d1 (its total less its own
// count): two index seeks per reader, whatever the range. The only invariant is that, per
// reader, a row's total less its count is the total of the row before it; the absolute
// level is free, so it survives retention that drops the oldest rows.

// classRunMigration is schema version 13 of the SQLite store: the running totals and the
// readers list, built from the daily rollup.
const classRunMigration = `CREATE TABLE ledger_class_run (
	class TEXT NOT NULL, category TEXT NOT NULL, decision TEXT NOT NULL, subject TEXT NOT NULL, identity_kind TEXT NOT NULL,
	day INTEGER NOT NULL, n INTEGER NOT NULL, total INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
	PRIMARY KEY (class, category, decision, subject, identity_kind, day)
) WITHOUT ROWID;
CREATE TABLE ledger_class_readers (
	class TEXT NOT NULL, category TEXT NOT NULL, decision TEXT NOT NULL, subject TEXT NOT NULL, identity_kind TEXT NOT NULL,
	first_day INTEGER NOT NULL, last_day INTEGER NOT NULL,
	PRIMARY KEY (class, category, decision, subject, identity_kind)
) WITHOUT ROWID;
` + rebuildClassRunsSQL

// rebuildClassRunsSQL builds the running totals and the readers list again from the daily
// rollup (migration, retention, the end of a synthetic load).
const rebuildClassRunsSQL = `DELETE FROM ledger_class_run;
DELETE FROM ledger_class_readers;
INSERT INTO ledger_class_run(class, category, decision, subject, identity_kind, day, n, total, first_ns, last_ns)
SELECT class, category, decision, subject, identity_kind, day, n,
	SUM(n) OVER (PARTITION BY class, category, decision, subject, identity_kind ORDER BY day), first_ns, last_ns
FROM ledger_class_daily;
INSERT INTO ledger_class_readers(class, category, decision, subject, identity_kind, first_day, last_day)
SELECT class, category, decision, subject, identity_kind, MIN(day), MAX(day) FROM ledger_class_daily GROUP BY 1, 2, 3, 4, 5;
`

// Statements that keep the running totals when n events of a reader are added to day: the
// days after it move up by n; the day's row adds n to its count and total, or is created
// with the total of the day before it plus n; the reader's first and last day.
const (
	classRunShiftSQL = `UPDATE ledger_class_run SET total = total + ?
WHERE class = ? AND category = ? AND decision = ? AND subject = ? AND identity_kind = ? AND day > ?`
	classRunUpsertSQL = `INSERT INTO ledger_class_run(class, category, decision, subject, identity_kind, day, n, total, first_ns, last_ns)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7 + COALESCE((SELECT total FROM ledger_class_run
	WHERE class = ?1 AND category = ?2 AND decision = ?3 AND subject = ?4 AND identity_kind = ?5 AND day < ?6 ORDER BY day DESC LIMIT 1), 0), ?8, ?9)
ON CONFLICT (class, category, decision, subject, identity_kind, day) DO UPDATE SET
n = ledger_class_run.n + excluded.n, total = ledger_class_run.total + excluded.n,
first_ns = min(ledger_class_run.first_ns, excluded.first_ns), last_ns = max(ledger_class_run.last_ns, excluded.last_ns)`
	classReadersUpsertSQL = `INSERT INTO ledger_class_readers(class, category, decision, subject, identity_kind, first_day, last_day)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (class, category, decision, subject, identity_kind) DO UPDATE SET
first_day = min(ledger_class_readers.first_day, excluded.first_day), last_day = max(ledger_class_readers.last_day, excluded.last_day)`
)

// piiReadersRunSQL finds, per reader of class ?1 whose days meet the whole days [?2, ?3),
// the first running-total row from ?2 (its day, the total before it and its first time)
// and the last row before ?3 (its total and last time): one index seek each, the values
// packed in one text per row (the reads count total - before when that first day is before
// ?3).
const piiReadersRunSQL = `SELECT r.subject, r.identity_kind,
	(SELECT printf('%d %d %d', x.day, x.total - x.n, x.first_ns) FROM ledger_class_run x WHERE x.class = r.class AND x.category = r.category
		AND x.decision = r.decision AND x.subject = r.subject AND x.identity_kind = r.identity_kind AND x.day >= ?2 ORDER BY x.day LIMIT 1),
	(SELECT printf('%d %d', x.total, x.last_ns) FROM ledger_class_run x WHERE x.class = r.class AND x.category = r.category
		AND x.decision = r.decision AND x.subject = r.subject AND x.identity_kind = r.identity_kind AND x.day < ?3 ORDER BY x.day DESC LIMIT 1)
FROM ledger_class_readers r
WHERE r.class = ?1 AND r.category = 'read' AND r.decision = 'allow' AND r.last_day >= ?2 AND r.first_day < ?3`

// piiReadersRuns counts the allowed reads of class on the whole days [dayFrom, dayTo) from
// the running totals.
func (s *SQLiteStore) piiReadersRuns(ctx context.Context, class string, dayFrom, dayTo int64, add func(IdentityCount)) error {
	return s.queryRows(ctx, piiReadersRunSQL, []any{class, dayFrom, dayTo}, func(scan func(...any) error) error {
		var subject, kind string
		var lo, hi sql.NullString
		if err := scan(&subject, &kind, &lo, &hi); err != nil {
			return err
		}
		if !lo.Valid || !hi.Valid {
			return nil
		}
		l, err := parseInts(lo.String, 3)
		if err != nil {
			return err
		}
		h, err := parseInts(hi.String, 2)
		if err != nil {
			return err
		}
		if l[0] >= dayTo || h[0] <= l[1] {
			return nil // no read on the days of the range
		}
		add(IdentityCount{Subject: subject, IdentityKind: kind, Statements: h[0] - l[1], First: nsTime(l[2]), Last: nsTime(h[1])})
		return nil
	})
}

// parseInts parses n space-separated integers.
func parseInts(s string, n int) ([]int64, error) {
	out := make([]int64, 0, n)
	for f := range strings.FieldsSeq(s) {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("running totals: %q: %w", s, err)
		}
		out = append(out, v)
	}
	if len(out) != n {
		return nil, fmt.Errorf("running totals: %q: want %d numbers", s, n)
	}
	return out, nil
}

// flushClassRuns adds the transaction's daily sums (x.daily, before flush writes them to
// the daily rollup) to the running totals and the readers list. Called with mu held,
// inside the indexer's transaction.
func (x *sqliteIndexer) flushClassRuns(ctx context.Context) error {
	if x.runsLater {
		return nil
	}
	for k, d := range x.daily {
		if err := x.exec(ctx, classRunShiftSQL, d.n, k.class, k.category, k.decision, k.subject, k.identityKind, k.day); err != nil {
			return fmt.Errorf("count sensitive-data access: %w", err)
		}
		if err := x.exec(ctx, classRunUpsertSQL, k.class, k.category, k.decision, k.subject, k.identityKind, k.day, d.n, d.first, d.last); err != nil {
			return fmt.Errorf("count sensitive-data access: %w", err)
		}
		if err := x.exec(ctx, classReadersUpsertSQL, k.class, k.category, k.decision, k.subject, k.identityKind, k.day, k.day); err != nil {
			return fmt.Errorf("count sensitive-data access: %w", err)
		}
	}
	return nil
}

// secNS is a second in nanoseconds; daySec a day in seconds.
const (
	secNS  = int64(1_000_000_000)
	daySec = dayNS / secNS
)

// classAggKey is one row of ledger_class_agg; classAggSum what it counts.
type classAggKey struct {
	class, category, decision string
	sec                       int64
	subject, identityKind     string
	instance                  string
}

type classAggSum struct{ n, first, last, minSeq, maxSeq int64 }

// addDaily adds one second's sum to the daily rollup it belongs to.
func addDaily(daily map[dailyKey]dailySum, k classAggKey, s classAggSum) {
	dk := dailyKey{class: k.class, category: k.category, decision: k.decision, day: floorDiv(k.sec, daySec), subject: k.subject, identityKind: k.identityKind}
	d, ok := daily[dk]
	if !ok {
		d = dailySum{first: s.first, last: s.last}
	}
	d.n += s.n
	d.first, d.last = min(d.first, s.first), max(d.last, s.last)
	daily[dk] = d
}

func (s classAggSum) with(ns, seq int64) classAggSum {
	if s.n == 0 {
		return classAggSum{n: 1, first: ns, last: ns, minSeq: seq, maxSeq: seq}
	}
	return classAggSum{n: s.n + 1, first: min(s.first, ns), last: max(s.last, ns), minSeq: min(s.minSeq, seq), maxSeq: max(s.maxSeq, seq)}
}

// upsertClassAggSQL adds a sum to one row of ledger_class_agg.
const upsertClassAggSQL = `INSERT INTO ledger_class_agg(class, category, decision, sec, subject, identity_kind, instance, n, first_ns, last_ns, min_seq, max_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (class, category, decision, sec, subject, identity_kind, instance) DO UPDATE SET
n = ledger_class_agg.n + excluded.n, first_ns = min(ledger_class_agg.first_ns, excluded.first_ns), last_ns = max(ledger_class_agg.last_ns, excluded.last_ns),
min_seq = min(ledger_class_agg.min_seq, excluded.min_seq), max_seq = max(ledger_class_agg.max_seq, excluded.max_seq)`

// addClassAgg counts class row c of the completed statement ev (time ns) in the
// transaction's sums. Called with mu held.
func (x *sqliteIndexer) addClassAgg(ev *Event, ns int64, c *classRow) {
	k := classAggKey{class: c.class, category: c.category, decision: ev.Decision, sec: floorDiv(ns, secNS), subject: ev.Subject, identityKind: ev.IdentityKind, instance: ev.Instance}
	x.aggs[k] = x.aggs[k].with(ns, ev.Seq)
}

// flushClassAggs writes the transaction's per-second sums and the daily rollup they add
// up to. Called with mu held, inside the indexer's transaction.
func (x *sqliteIndexer) flushClassAggs(ctx context.Context) error {
	if x.later != nil {
		// A synthetic load writes them in its own order, the daily rollup at its end.
		if err := x.flushSyntheticAggs(ctx, x.later, false); err != nil {
			return err
		}
		return x.flushTableReads(ctx)
	}
	for k, s := range x.aggs {
		if err := x.exec(ctx, upsertClassAggSQL, k.class, k.category, k.decision, k.sec, k.subject, k.identityKind, k.instance, s.n, s.first, s.last, s.minSeq, s.maxSeq); err != nil {
			return fmt.Errorf("count sensitive-data access: %w", err)
		}
		addDaily(x.daily, k, s)
	}
	clear(x.aggs)
	if err := x.flushTableReads(ctx); err != nil {
		return err
	}
	return x.flushClassRuns(ctx)
}

// ceilDivSafe is ceilDiv for any a (ceilDiv overflows for the smallest int64) and b > 0.
func ceilDivSafe(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a > 0 {
		q++
	}
	return q
}

// piiReadersAggSQL reads the per-second rows (whole seconds from <= sec < to).
const piiReadersAggSQL = `SELECT subject, identity_kind, SUM(n), MIN(first_ns), MAX(last_ns) FROM ledger_class_agg
WHERE class = ? AND category = 'read' AND decision = 'allow' AND sec >= ? AND sec < ?
GROUP BY subject, identity_kind`

// piiReaders answers PIIReaders for the SQLite store: the daily rollup for the whole UTC
// days of the range, the per-second rows for the whole seconds outside them, and the events
// themselves for the partial seconds at the ends. Reads whose intent is recorded without a
// completion count once each, as for the PostgreSQL store.
func (s *SQLiteStore) piiReaders(ctx context.Context, class string, tr TimeRange) ([]IdentityCount, error) {
	if class == "" {
		class = "pii"
	}
	from, to := tr.bounds()
	merged := map[[2]string]*IdentityCount{}
	add := func(ic IdentityCount) {
		k := [2]string{ic.Subject, ic.IdentityKind}
		m := merged[k]
		if m == nil {
			c := ic
			merged[k] = &c
			return
		}
		m.Statements += ic.Statements
		if ic.First.Before(m.First) {
			m.First = ic.First
		}
		if ic.Last.After(m.Last) {
			m.Last = ic.Last
		}
	}
	query := func(q string, lo, hi int64) error {
		if lo >= hi {
			return nil
		}
		rows, err := runIdentityCounts(ctx, s, q, []any{class, lo, hi})
		for _, ic := range rows {
			add(ic)
		}
		return err
	}
	secFrom, secTo := ceilDivSafe(from, secNS), floorDiv(to, secNS)
	var err error
	if secFrom >= secTo {
		err = s.piiReadersPartial(ctx, class, from, to, add)
	} else {
		dayFrom, dayTo := ceilDivSafe(secFrom, daySec), floorDiv(secTo, daySec)
		if dayFrom < dayTo {
			err = s.piiReadersRuns(ctx, class, dayFrom, dayTo, add)
			if err == nil {
				err = query(piiReadersAggSQL, secFrom, dayFrom*daySec)
			}
			if err == nil {
				err = query(piiReadersAggSQL, dayTo*daySec, secTo)
			}
		} else {
			err = query(piiReadersAggSQL, secFrom, secTo)
		}
		if err == nil && from < secFrom*secNS {
			err = s.piiReadersPartial(ctx, class, from, secFrom*secNS, add)
		}
		if err == nil && secTo*secNS < to {
			err = s.piiReadersPartial(ctx, class, secTo*secNS, to, add)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("find readers of %s data: %w", class, err)
	}
	out := make([]IdentityCount, 0, len(merged))
	for _, ic := range merged {
		out = append(out, *ic)
	}
	slices.SortFunc(out, func(a, b IdentityCount) int {
		if a.Statements != b.Statements {
			return cmp.Compare(b.Statements, a.Statements)
		}
		return cmp.Or(strings.Compare(a.Subject, b.Subject), strings.Compare(a.IdentityKind, b.IdentityKind))
	})
	unknown, err := readersByIntent(ctx, s, class, tr)
	if err != nil {
		return nil, err
	}
	return addIntentCounts(out, unknown), nil
}

// classAggSecondSQL reads the per-second rows of the allowed reads of a class in one second.
const classAggSecondSQL = `SELECT subject, identity_kind, instance, n, first_ns, last_ns, min_seq, max_seq FROM ledger_class_agg
WHERE class = ? AND category = 'read' AND decision = 'allow' AND sec = ?`

// piiReadersPartial counts the allowed completed statements that read class in [from, to),
// a range of less than a whole second at each end, second by second from the per-second
// rows: a row whose reads all fall inside the range counts whole, one with none is
// skipped, and only the events of the rows that straddle an end are read (by their seq
// bounds) and counted one by one.
func (s *SQLiteStore) piiReadersPartial(ctx context.Context, class string, from, to int64, add func(IdentityCount)) error {
	for sec := floorDiv(from, secNS); from < to; sec++ {
		hi := to // the last second of time (sec+1 seconds overflow)
		if sec < math.MaxInt64/secNS {
			hi = min(to, (sec+1)*secNS)
		}
		if err := s.piiReadersInSecond(ctx, class, sec, from, hi, add); err != nil {
			return err
		}
		from = hi
	}
	return nil
}

// piiReadersInSecond is piiReadersPartial for [from, to) inside second sec.
func (s *SQLiteStore) piiReadersInSecond(ctx context.Context, class string, sec, from, to int64, add func(IdentityCount)) error {
	type reader struct{ subject, kind, instance string }
	straddle := map[reader]bool{}
	seqs := map[string][2]int64{} // per chain, the seq bounds of the straddling rows
	err := s.queryRows(ctx, classAggSecondSQL, []any{class, sec}, func(scan func(...any) error) error {
		var r reader
		var n, first, last, minSeq, maxSeq int64
		if err := scan(&r.subject, &r.kind, &r.instance, &n, &first, &last, &minSeq, &maxSeq); err != nil {
			return err
		}
		switch {
		case last < from || first >= to:
		case first >= from && last < to:
			add(IdentityCount{Subject: r.subject, IdentityKind: r.kind, Statements: n, First: nsTime(first), Last: nsTime(last)})
		default:
			straddle[r] = true
			b, ok := seqs[r.instance]
			if ok {
				minSeq, maxSeq = min(minSeq, b[0]), max(maxSeq, b[1])
			}
			seqs[r.instance] = [2]int64{minSeq, maxSeq}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for inst, b := range seqs {
		var bodies [][]byte
		err := s.queryRows(ctx, `SELECT body FROM ledger_events WHERE instance = ? AND seq >= ? AND seq <= ? AND type = 'statement' AND decision = 'allow' AND time_ns >= ? AND time_ns < ?`,
			[]any{inst, b[0], b[1], from, to}, func(scan func(...any) error) error {
				var body []byte
				if err := scan(&body); err != nil {
					return err
				}
				bodies = append(bodies, body)
				return nil
			})
		if err != nil {
			return err
		}
		for _, body := range bodies {
			ev, err := decodeBody(body)
			if err != nil {
				continue // not indexed either (Verify reports it)
			}
			if !straddle[reader{ev.Subject, ev.IdentityKind, inst}] {
				continue // counted whole above, or another class's reader
			}
			_, classes, _, _ := indexRows(&ev)
			for _, cr := range classes {
				if cr.class == class && cr.category == "read" {
					t := ev.Time.UTC()
					add(IdentityCount{Subject: ev.Subject, IdentityKind: ev.IdentityKind, Statements: 1, First: t, Last: t})
				}
			}
		}
	}
	return nil
}

// retireClassAggs applies retention (the events of instance through seq are being deleted
// in tx) to the per-second rows and the daily rollup: rows whose events are all deleted go,
// a row straddling the cut is counted again from the events it keeps, and the days touched
// are summed again from the per-second rows. Called before the events are deleted or after:
// it reads only events after seq.
func retireClassAggs(ctx context.Context, tx *sql.Tx, instance string, seq int64) error {
	query := func(q string, args []any, fn func(scan func(...any) error) error) error {
		return eachRow(ctx, tx, q, args, fn)
	}
	exec := func(q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	}
	if err := retireTableReads(ctx, sqliteSQL, instance, seq, query, exec); err != nil {
		return err
	}
	type row struct {
		k   classAggKey
		sum classAggSum
	}
	var gone []row
	rows, err := tx.QueryContext(ctx, `SELECT class, category, decision, sec, subject, identity_kind, n, first_ns, last_ns, min_seq, max_seq
		FROM ledger_class_agg WHERE instance = ? AND min_seq <= ?`, instance, seq)
	if err != nil {
		return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
	}
	for rows.Next() {
		r := row{k: classAggKey{instance: instance}}
		if err := rows.Scan(&r.k.class, &r.k.category, &r.k.decision, &r.k.sec, &r.k.subject, &r.k.identityKind, &r.sum.n, &r.sum.first, &r.sum.last, &r.sum.minSeq, &r.sum.maxSeq); err != nil {
			rows.Close()
			return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
		}
		gone = append(gone, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
	}
	if len(gone) == 0 {
		return nil
	}
	straddle := map[classAggKey]classAggSum{}
	top := seq
	firstSec, lastSec := gone[0].k.sec, gone[0].k.sec
	for _, r := range gone {
		firstSec, lastSec = min(firstSec, r.k.sec), max(lastSec, r.k.sec)
		if r.sum.maxSeq > seq {
			straddle[r.k] = classAggSum{}
			top = max(top, r.sum.maxSeq)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ledger_class_agg WHERE instance = ? AND min_seq <= ?`, instance, seq); err != nil {
		return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
	}
	if len(straddle) > 0 {
		// The events kept of the straddling rows lie after the cut and up to the last
		// of them; a row that did not straddle counted its events already.
		rows, err := tx.QueryContext(ctx, `SELECT seq, body FROM ledger_events WHERE instance = ? AND seq > ? AND seq <= ? AND type = 'statement'`, instance, seq, top)
		if err != nil {
			return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
		}
		for rows.Next() {
			var evSeq int64
			var body []byte
			if err := rows.Scan(&evSeq, &body); err != nil {
				rows.Close()
				return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
			}
			ev, err := decodeBody(body)
			if err != nil {
				continue // not indexed either (Verify reports it)
			}
			ns := ev.Time.UnixNano()
			_, classes, _, _ := indexRows(&ev)
			for _, c := range classes {
				k := classAggKey{class: c.class, category: c.category, decision: ev.Decision, sec: floorDiv(ns, secNS), subject: ev.Subject, identityKind: ev.IdentityKind, instance: instance}
				if s, ok := straddle[k]; ok {
					straddle[k] = s.with(ns, evSeq)
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
		}
		for k, s := range straddle {
			if s.n == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, upsertClassAggSQL, k.class, k.category, k.decision, k.sec, k.subject, k.identityKind, k.instance, s.n, s.first, s.last, s.minSeq, s.maxSeq); err != nil {
				return fmt.Errorf("apply retention to the sensitive-data counts: %w", err)
			}
		}
	}
	dayFrom, dayTo := floorDiv(firstSec, daySec), floorDiv(lastSec, daySec)+1
	if _, err := tx.ExecContext(ctx, `DELETE FROM ledger_class_daily WHERE day >= ? AND day < ?`, dayFrom, dayTo); err != nil {
		return fmt.Errorf("apply retention to the rollup: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_class_daily(class, category, decision, day, subject, identity_kind, n, first_ns, last_ns)
		SELECT class, category, decision, (CASE WHEN sec >= 0 THEN sec / 86400 ELSE (sec - 86399) / 86400 END), subject, identity_kind, SUM(n), MIN(first_ns), MAX(last_ns)
		FROM ledger_class_agg WHERE sec >= ? AND sec < ? GROUP BY 1, 2, 3, 4, 5, 6`, dayFrom*daySec, dayTo*daySec); err != nil {
		return fmt.Errorf("apply retention to the rollup: %w", err)
	}
	// Retention is rare: the running totals are built again from the daily rollup.
	if _, err := tx.ExecContext(ctx, rebuildClassRunsSQL); err != nil {
		return fmt.Errorf("apply retention to the running totals: %w", err)
	}
	return nil
}
