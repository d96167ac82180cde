package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The SQLite store finds events for searches through segment terms, not per-event index
// rows. Keeping a dozen B-trees up to date for every event (a row per table, class and
// statement kind, each with its own indexes, plus the event's own secondary indexes and a
// full-text row) cost most of the proxy's CPU per statement. Now:
//
//   - Events are grouped in segments of segmentSize consecutive row ids. For every term
//     (a value of a field searches filter on: "s:alice@corp", "n:customers", "c:email", ...)
//     and segment, ledger_terms holds one row with the time bounds of the segment's events
//     that carry the term. A batch of a thousand similar events adds a few dozen rows, not
//     fifteen thousand index entries.
//   - Each event row carries its multi-valued facts in facets, a string of separated tokens
//     (the same tokens as its terms), and the id of its statement text in text_id. A
//     search reads the segments whose terms match, in time order, and filters their events
//     exactly with the event columns and the facets.
//   - Statement texts are interned (ledger_texts) and full-text indexed once per distinct
//     text (ledger_text_fts): redacted texts repeat, statement after statement.
//
// The auditor questions keep their own per-event rows where they need them (indexEvent).

// segmentShift sets the segment size: 256 consecutive event row ids. Smaller segments make
// a search for a rare value read fewer events around each match; the terms of a segment are
// amortized over fewer events (a few hundredths of a row per event for repetitive traffic).
const segmentShift = 8

// facetSep separates facet tokens; no table, class or kind name contains it.
const facetSep = "\x1f"

// upsertTermSQL adds one term's time bounds to a segment.
const upsertTermSQL = `INSERT INTO ledger_terms(term, seg, min_ns, max_ns) VALUES (?, ?, ?, ?)
ON CONFLICT (term, seg) DO UPDATE SET min_ns = min(ledger_terms.min_ns, excluded.min_ns), max_ns = max(ledger_terms.max_ns, excluded.max_ns)`

// eventIndex is what the indexer derives from one event.
type eventIndex struct {
	// tables, classes and stmts are the side-table rows the auditor questions read: table
	// rows of agents' statements (agents questions) and of DROPs (who dropped), every
	// sensitive class (PII readers), statement rows of DROPs (pairing DROP intents with their
	// completions).
	tables  []tableRow
	classes []classRow
	stmts   []stmtRow
	// tokens are the event's multi-valued facts (tables, classes, statement kinds and
	// categories), stored joined in its facets column and as its segment terms.
	tokens []string
	textID int64 // 0: no statement text
	valid  bool  // derived (false: the row is stored without facets, to be indexed later)
}

func (d *eventIndex) facetsArg() any {
	if !d.valid {
		return nil
	}
	return facetSep + strings.Join(d.tokens, facetSep) + facetSep
}

// auxArg marks an event with side-table rows (or not derived yet, to be safe): the
// session index holds those only.
func (d *eventIndex) auxArg() int {
	if !d.valid || len(d.tables)+len(d.classes)+len(d.stmts) > 0 {
		return 1
	}
	return 0
}

func (d *eventIndex) textArg() any {
	if !d.valid || d.textID == 0 {
		return nil
	}
	return d.textID
}

// Facet token prefixes.
const (
	tokTable     = "n:" // bare table name, lower case
	tokQualified = "T:" // table name as recorded, lower case (schema-qualified when it was)
	tokClass     = "c:" // sensitive class
	tokKind      = "k:" // statement kind
	tokCategory  = "g:" // statement category
	tokKindCat   = "q:" // kind and category of one statement
)

// facetToken is the search form of a token: separators on both sides.
func facetToken(prefix, v string) string { return facetSep + prefix + v + facetSep }

// derive computes the index of ev and interns its statement text. Called with mu held,
// inside the indexer's transaction.
func (x *sqliteIndexer) derive(ctx context.Context, ev *Event) (eventIndex, error) {
	tables, classes, stmts, text := indexRows(ev)
	d := eventIndex{classes: classes, valid: true}
	for _, t := range tables {
		d.tokens = append(d.tokens, tokTable+t.name)
		if t.tbl != t.name {
			d.tokens = append(d.tokens, tokQualified+t.tbl)
		}
		if ev.IdentityKind == "agent" || strings.HasPrefix(t.kind, "DROP") {
			d.tables = append(d.tables, t)
		}
	}
	for _, c := range classes {
		d.tokens = append(d.tokens, tokClass+c.class)
	}
	for _, st := range stmts {
		d.tokens = append(d.tokens, tokKind+st.kind, tokCategory+st.category, tokKindCat+st.kind+"|"+st.category)
		if strings.HasPrefix(st.kind, "DROP") {
			d.stmts = append(d.stmts, st)
		}
	}
	if text != "" {
		id, err := x.internText(ctx, text)
		if err != nil {
			return d, err
		}
		d.textID = id
	}
	return d, nil
}

// internText returns the id of text in ledger_texts, adding it (and its full-text entry)
// when it is new. Called with mu held, inside the indexer's transaction.
func (x *sqliteIndexer) internText(ctx context.Context, text string) (int64, error) {
	if id, ok := x.texts[text]; ok {
		return id, nil
	}
	st, err := x.stmt(ctx, `SELECT id FROM ledger_texts WHERE text = ?`)
	if err != nil {
		return 0, err
	}
	var id int64
	err = st.QueryRowContext(ctx, text).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		ins, err := x.stmt(ctx, `INSERT INTO ledger_texts(text) VALUES (?)`)
		if err != nil {
			return 0, err
		}
		res, err := ins.ExecContext(context.WithoutCancel(ctx), text)
		if err != nil {
			return 0, fmt.Errorf("intern statement text: %w", err)
		}
		if id, err = res.LastInsertId(); err != nil {
			return 0, fmt.Errorf("intern statement text: %w", err)
		}
		if err := x.exec(ctx, `INSERT INTO ledger_text_fts(rowid, text) VALUES (?, ?)`, id, text); err != nil {
			return 0, fmt.Errorf("index statement text: %w", err)
		}
	} else if err != nil {
		return 0, fmt.Errorf("intern statement text: %w", err)
	}
	if len(x.texts) >= maxCachedTexts {
		clear(x.texts)
	}
	x.texts[text] = id
	return id, nil
}

// maxCachedTexts bounds the indexer's cache of interned texts.
const maxCachedTexts = 50_000

// termKey is one term of one segment; termBounds the time bounds of its events there.
type termKey struct {
	term string
	seg  int64
}

type termBounds struct{ min, max int64 }

// termSet sums the segment terms of one indexer transaction.
type termSet struct{ m map[termKey]termBounds }

func (s *termSet) put(term string, seg, ns int64) {
	k := termKey{term, seg}
	b, ok := s.m[k]
	if !ok {
		s.m[k] = termBounds{ns, ns}
		return
	}
	s.m[k] = termBounds{min(b.min, ns), max(b.max, ns)}
}

// add records the terms of the event with row id id.
func (s *termSet) add(id, ns int64, ev *Event, d *eventIndex) {
	seg := id >> segmentShift
	s.put(termAll, seg, ns)
	for _, f := range eventFields(ev) {
		if f.v != "" {
			s.put(f.prefix+f.v, seg, ns)
		}
	}
	for _, t := range d.tokens {
		s.put(t, seg, ns)
	}
	if d.textID != 0 {
		s.put(tokText+strconv.FormatInt(d.textID, 10), seg, ns)
	}
}

// Terms of single-valued event fields, and the term every event has.
const (
	termAll       = "*"
	tokSubject    = "s:"
	tokIdentKind  = "i:"
	tokTarget     = "t:"
	tokEnv        = "v:"
	tokInstance   = "@:"
	tokType       = "y:"
	tokDecision   = "d:"
	tokText       = "x:"
	backfillBatch = 2000
)

type fieldTerm struct{ prefix, v string }

func eventFields(ev *Event) [7]fieldTerm {
	return [7]fieldTerm{
		{tokSubject, ev.Subject}, {tokIdentKind, ev.IdentityKind}, {tokTarget, ev.Target}, {tokEnv, ev.Environment},
		{tokInstance, ev.Instance}, {tokType, string(ev.Type)}, {tokDecision, ev.Decision},
	}
}

// backfill derives the facets, texts and segment terms of events stored before the store
// had them (schema version 11), a batch per transaction, and reports whether any remain.
// Their side-table rows exist already. Called with mu held.
func (x *sqliteIndexer) backfill(ctx context.Context) (bool, error) {
	var next, end int64
	err := x.db.QueryRowContext(ctx, `SELECT next_id, end_id FROM ledger_backfill WHERE id = 1`).Scan(&next, &end)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read search index backfill state: %w", err)
	}
	if next >= end {
		return false, nil
	}
	if err := x.connect(ctx); err != nil {
		return false, err
	}
	if _, err := x.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			x.discard()
			x.conn.ExecContext(context.Background(), `ROLLBACK`)
		}
	}()
	type row struct {
		id, seq  int64
		instance string
		body     []byte
	}
	var rows []row
	rs, err := x.conn.QueryContext(ctx, `SELECT id, seq, instance, body FROM ledger_events WHERE id > ? AND id <= ? ORDER BY id LIMIT `+strconv.Itoa(backfillBatch), next, end)
	if err != nil {
		return false, fmt.Errorf("read events to backfill: %w", err)
	}
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.id, &r.seq, &r.instance, &r.body); err != nil {
			rs.Close()
			return false, fmt.Errorf("read events to backfill: %w", err)
		}
		rows = append(rows, r)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return false, fmt.Errorf("read events to backfill: %w", err)
	}
	top := end
	if len(rows) == backfillBatch {
		top = rows[len(rows)-1].id
	}
	for _, r := range rows {
		ev, err := decodeBody(r.body)
		if err != nil {
			continue // Verify reports it
		}
		ev.Instance, ev.Seq = r.instance, r.seq
		d, err := x.derive(ctx, &ev)
		if err != nil {
			return false, err
		}
		if err := x.exec(ctx, `UPDATE ledger_events SET facets = ?, text_id = ? WHERE id = ?`, d.facetsArg(), d.textArg(), r.id); err != nil { // aux stays 1: its side rows exist
			return false, fmt.Errorf("backfill event %d: %w", r.id, err)
		}
		x.terms.add(r.id, ev.Time.UnixNano(), &ev, &d)
	}
	if err := x.flush(ctx); err != nil {
		return false, err
	}
	if err := x.exec(ctx, `UPDATE ledger_backfill SET next_id = ? WHERE id = 1`, top); err != nil {
		return false, fmt.Errorf("store search index backfill state: %w", err)
	}
	if _, err := x.conn.ExecContext(ctx, `COMMIT`); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	committed = true
	return top < end, nil
}
