package ledger

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
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

// eventIndex is what the indexer derives from one event. Events of one shape (type,
// identity kind and statements) share one eventIndex, which derive memoizes (shapeMemo):
// traffic repeats a few shapes, so deriving, joining the facets and boxing the column
// values happen once per shape, not once per event. It is never modified once derived.
// A nil *eventIndex stands for an event not derived yet (stored without facets, to be
// indexed later).
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
	// facets, text and aux are the event row's column values, as bound.
	facets, text any
	aux          int
}

func (d *eventIndex) facetsArg() any {
	if d == nil {
		return nil
	}
	return d.facets
}

// auxArg marks an event with side-table rows (or not derived yet, to be safe): the
// session index holds those only.
func (d *eventIndex) auxArg() int {
	if d == nil {
		return 1
	}
	return d.aux
}

func (d *eventIndex) textArg() any {
	if d == nil {
		return nil
	}
	return d.text
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

// derive returns the index of ev, interning its statement text: the memoized one of its
// shape, or a new one. Called with mu held, inside the indexer's transaction.
func (x *sqliteIndexer) derive(ctx context.Context, ev *Event) (*eventIndex, error) {
	// Most events have the shape of the one before: comparing costs less than hashing.
	if e := x.shapes.last; e != nil && e.same(ev) {
		return e.d, nil
	}
	h := x.shapes.hash(ev)
	if e, ok := x.shapes.m[h]; ok && e.same(ev) {
		x.shapes.last = e
		return e.d, nil
	}
	d, err := x.deriveNew(ctx, ev)
	if err != nil {
		return nil, err
	}
	x.shapes.put(h, ev, d)
	return d, nil
}

// deriveNew computes the index of ev. Called with mu held, inside the indexer's
// transaction.
func (x *sqliteIndexer) deriveNew(ctx context.Context, ev *Event) (*eventIndex, error) {
	tables, classes, stmts, text := indexRows(ev)
	d := &eventIndex{classes: classes}
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
			return nil, err
		}
		d.textID, d.text = id, id
	}
	d.facets = facetSep + strings.Join(d.tokens, facetSep) + facetSep
	if len(d.tables)+len(d.classes)+len(d.stmts) > 0 {
		d.aux = 1
	}
	return d, nil
}

// shapeMemo maps event shapes (what derive reads of an event: its type, identity kind and
// statements) to their derived index. Entries are keyed by a hash and checked against a
// copy of the shape, so a collision costs a derive, never a wrong index. Interned text ids
// are only valid once their transaction commits: discard clears the memo.
type shapeMemo struct {
	seed maphash.Seed
	m    map[uint64]*shapeEntry
	last *shapeEntry // the entry found or added last
}

type shapeEntry struct {
	typ          EventType
	identityKind string
	stmts        []Statement // a copy
	d            *eventIndex
}

// maxShapes bounds the memo; past it, it starts again empty.
const maxShapes = 4096

func newShapeMemo() shapeMemo {
	return shapeMemo{seed: maphash.MakeSeed(), m: map[uint64]*shapeEntry{}}
}

// hash hashes the shape of ev without allocating. Sensitive columns are summed, their
// map order being random.
func (s *shapeMemo) hash(ev *Event) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	str := func(v string) {
		h.WriteString(v)
		h.WriteByte(0)
	}
	str(string(ev.Type))
	str(ev.IdentityKind)
	for i := range ev.Statements {
		st := &ev.Statements[i]
		str(st.Kind)
		str(st.Category)
		str(st.Redacted)
		for _, t := range st.TablesRead {
			str(t)
		}
		h.WriteByte(1)
		for _, t := range st.TablesWritten {
			str(t)
		}
		h.WriteByte(2)
		var sum uint64
		for c, class := range st.Sensitive {
			sum += maphash.String(s.seed, c)*31 + maphash.String(s.seed, class)
		}
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], sum)
		h.Write(b[:])
	}
	return h.Sum64()
}

func (s *shapeMemo) put(h uint64, ev *Event, d *eventIndex) {
	if len(s.m) >= maxShapes {
		clear(s.m)
	}
	stmts := make([]Statement, len(ev.Statements))
	for i, st := range ev.Statements {
		stmts[i] = Statement{Kind: st.Kind, Category: st.Category, Redacted: st.Redacted,
			TablesRead: slices.Clone(st.TablesRead), TablesWritten: slices.Clone(st.TablesWritten), Sensitive: maps.Clone(st.Sensitive)}
	}
	s.last = &shapeEntry{typ: ev.Type, identityKind: ev.IdentityKind, stmts: stmts, d: d}
	s.m[h] = s.last
}

// reset forgets every shape (their text ids may be rolled back).
func (s *shapeMemo) reset() {
	clear(s.m)
	s.last = nil
}

// same reports whether ev has the shape of e.
func (e *shapeEntry) same(ev *Event) bool {
	if e.typ != ev.Type || e.identityKind != ev.IdentityKind || len(e.stmts) != len(ev.Statements) {
		return false
	}
	for i := range e.stmts {
		a, b := &e.stmts[i], &ev.Statements[i]
		if a.Kind != b.Kind || a.Category != b.Category || a.Redacted != b.Redacted ||
			!slices.Equal(a.TablesRead, b.TablesRead) || !slices.Equal(a.TablesWritten, b.TablesWritten) || !maps.Equal(a.Sensitive, b.Sensitive) {
			return false
		}
	}
	return true
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

// termSet sums the segment terms of one indexer transaction. Consecutive events mostly
// repeat the field values and the shape of one of the few events before them, so add
// sums events into groups (segment, field values, shape), comparing with the last few
// groups only, and flush expands each group into its terms: an event costs a few string
// comparisons instead of a dozen term strings and map updates.
type termSet struct {
	m      map[termKey]termBounds
	groups []termGroup
	// byKey finds a group that is not among the latest few (traffic that rotates over
	// more identities than termGroupScan): without it each such event would start a group
	// of its own, and expand would update a dozen terms per event.
	byKey map[termGroupKey]int
}

// termGroupKey is what tells termGroups apart.
type termGroupKey struct {
	seg    int64
	fields [numFields]string
	d      *eventIndex
}

// termGroup is events of one segment with the same field values and index.
type termGroup struct {
	seg      int64
	fields   [numFields]string
	d        *eventIndex
	min, max int64
}

// termGroupScan is how many of the latest groups add compares an event with.
const termGroupScan = 8

func (s *termSet) putBounds(term string, seg, lo, hi int64) {
	k := termKey{term, seg}
	b, ok := s.m[k]
	if !ok {
		s.m[k] = termBounds{lo, hi}
		return
	}
	s.m[k] = termBounds{min(b.min, lo), max(b.max, hi)}
}

// add records the terms of the event with row id id and index d.
func (s *termSet) add(id, ns int64, ev *Event, d *eventIndex) {
	seg := id >> segmentShift
	f := eventFieldValues(ev)
	for i := len(s.groups) - 1; i >= max(0, len(s.groups)-termGroupScan); i-- {
		g := &s.groups[i]
		if g.seg == seg && g.d == d && g.fields == f {
			g.min, g.max = min(g.min, ns), max(g.max, ns)
			return
		}
	}
	k := termGroupKey{seg: seg, fields: f, d: d}
	if i, ok := s.byKey[k]; ok {
		g := &s.groups[i]
		g.min, g.max = min(g.min, ns), max(g.max, ns)
		return
	}
	if s.byKey == nil {
		s.byKey = map[termGroupKey]int{}
	}
	s.byKey[k] = len(s.groups)
	s.groups = append(s.groups, termGroup{seg: seg, fields: f, d: d, min: ns, max: ns})
}

// expand turns the groups into terms.
func (s *termSet) expand() {
	prefixes := fieldPrefixes()
	for i := range s.groups {
		g := &s.groups[i]
		s.putBounds(termAll, g.seg, g.min, g.max)
		for j, v := range g.fields {
			if v != "" {
				s.putBounds(prefixes[j]+v, g.seg, g.min, g.max)
			}
		}
		if g.d == nil {
			continue
		}
		for _, t := range g.d.tokens {
			s.putBounds(t, g.seg, g.min, g.max)
		}
		if g.d.textID != 0 {
			s.putBounds(tokText+strconv.FormatInt(g.d.textID, 10), g.seg, g.min, g.max)
		}
	}
	s.groups = s.groups[:0]
	clear(s.byKey)
}

// reset forgets everything summed.
func (s *termSet) reset() {
	clear(s.m)
	s.groups = s.groups[:0]
	clear(s.byKey)
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

// numFields is how many single-valued event fields have terms.
const numFields = 7

// eventFieldValues are the values of ev's single-valued fields with terms, in the order of
// fieldPrefixes.
func eventFieldValues(ev *Event) [numFields]string {
	return [numFields]string{ev.Subject, ev.IdentityKind, ev.Target, ev.Environment, ev.Instance, string(ev.Type), ev.Decision}
}

// fieldPrefixes are the term prefixes of eventFieldValues.
func fieldPrefixes() [numFields]string {
	return [numFields]string{tokSubject, tokIdentKind, tokTarget, tokEnv, tokInstance, tokType, tokDecision}
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
		x.terms.add(r.id, ev.Time.UnixNano(), &ev, d)
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
