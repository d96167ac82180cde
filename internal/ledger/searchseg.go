package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// segCandidate is a segment that may hold matching events, with bounds on their times.
type segCandidate struct {
	seg          int64
	lower, upper int64
}

// segSearch is a Query resolved for the SQLite store: the terms a matching event's segment
// must have, and the exact filter on the event row.
type segSearch struct {
	terms []string // every one must be in the segment
	any   []string // at least one must be (statement texts); nil: no such condition
	conds []string // SQL conditions on e
	args  []any
}

func (p *segSearch) where(cond string, args ...any) {
	p.conds = append(p.conds, cond)
	p.args = append(p.args, args...)
}

func (p *segSearch) facet(prefix, v string) {
	p.terms = append(p.terms, prefix+v)
	p.where("instr(e.facets, ?) > 0", facetToken(prefix, v))
}

// maxTextTerms caps how many matching texts narrow the segments of a text search; beyond
// it the texts filter the events only (a word that most statements share narrows nothing).
const maxTextTerms = 256

// searchSegments answers q from the segment terms: it walks the blocks of segments
// (ledger_term_blocks) newest first, lists the segments of a block that hold every term of
// the query, reads them newest first (by the bound on their matching events' times),
// filters their events exactly, and stops once no segment left, in this block or the
// blocks after it, can hold an event newer than the limit-th match found. Results are
// ordered by time, then seq, as Query says. The terms read are those of the blocks walked,
// so a search for recent events reads a few hundred term rows, not one per segment of the
// ledger.
func (s *SQLiteStore) searchSegments(ctx context.Context, q Query, now time.Time) ([]Event, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	from, to := q.Range(now).bounds()
	p, empty, err := s.planSearch(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("search ledger: %w", err)
	}
	if empty {
		return nil, nil
	}
	blocks, err := s.termBlocks(ctx, from, to, q.Ascending)
	if err != nil {
		return nil, fmt.Errorf("search ledger: %w", err)
	}
	limit := q.limit()
	sqlText := p.eventsSQL(q.Ascending)
	before := func(a, b hit) int { // a sorts before b in the result
		c := cmp.Or(cmp.Compare(b.ns, a.ns), cmp.Compare(b.seq, a.seq))
		if q.Ascending {
			return -c
		}
		return c
	}
	// beyond reports that no event from a segment with these time bounds can enter the
	// result any more.
	beyond := func(hits []hit, lower, upper int64) bool {
		if len(hits) < limit {
			return false
		}
		last := hits[limit-1].ns
		return (!q.Ascending && upper < last) || (q.Ascending && lower > last)
	}
	var hits []hit
	var st *sql.Stmt
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	for _, b := range blocks {
		if beyond(hits, b.restLower, b.restUpper) {
			break // nor can the blocks after it
		}
		cands, err := s.candidates(ctx, p, from, to, b.block<<termBlockShift, (b.block+1)<<termBlockShift)
		if err != nil {
			return nil, fmt.Errorf("search ledger: %w", err)
		}
		if q.Ascending {
			slices.SortFunc(cands, func(a, b segCandidate) int { return cmp.Or(cmp.Compare(a.lower, b.lower), cmp.Compare(a.seg, b.seg)) })
		} else {
			slices.SortFunc(cands, func(a, b segCandidate) int { return cmp.Or(cmp.Compare(b.upper, a.upper), cmp.Compare(b.seg, a.seg)) })
		}
		for _, c := range cands {
			if beyond(hits, c.lower, c.upper) {
				break
			}
			if st == nil {
				if st, err = s.db.PrepareContext(ctx, sqlText); err != nil {
					return nil, fmt.Errorf("search ledger: %w", err)
				}
			}
			if err := readHits(ctx, st, p.eventsArgs(c.seg, from, to, limit), func(h hit) { hits = append(hits, h) }); err != nil {
				return nil, fmt.Errorf("search ledger: %w", err)
			}
			slices.SortStableFunc(hits, before)
			if len(hits) > limit {
				hits = hits[:limit]
			}
		}
	}
	out := make([]Event, 0, len(hits))
	for _, h := range hits {
		ev, err := decodeBody(h.body)
		if err != nil {
			return nil, fmt.Errorf("search ledger: %w", err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// termBlockShift sets the size of a block of segments: 256 segments (65,536 event row ids).
const termBlockShift = 8

// termBlocksMigration is schema version 15 of the SQLite store: the time bounds of the
// events of each block of segments, kept by triggers from the segments' "*" terms (every
// event has it) and filled from them. Bounds only widen (retention leaves a block's bounds
// as they were): they stay bounds of the events a block holds.
const termBlocksMigration = `CREATE TABLE ledger_term_blocks (block INTEGER PRIMARY KEY, min_ns INTEGER NOT NULL, max_ns INTEGER NOT NULL);
CREATE TRIGGER ledger_term_blocks_insert AFTER INSERT ON ledger_terms WHEN NEW.term = '*' BEGIN
INSERT INTO ledger_term_blocks(block, min_ns, max_ns) VALUES (NEW.seg >> 8, NEW.min_ns, NEW.max_ns)
ON CONFLICT (block) DO UPDATE SET min_ns = min(ledger_term_blocks.min_ns, excluded.min_ns), max_ns = max(ledger_term_blocks.max_ns, excluded.max_ns);
END;
CREATE TRIGGER ledger_term_blocks_update AFTER UPDATE ON ledger_terms WHEN NEW.term = '*' BEGIN
INSERT INTO ledger_term_blocks(block, min_ns, max_ns) VALUES (NEW.seg >> 8, NEW.min_ns, NEW.max_ns)
ON CONFLICT (block) DO UPDATE SET min_ns = min(ledger_term_blocks.min_ns, excluded.min_ns), max_ns = max(ledger_term_blocks.max_ns, excluded.max_ns);
END;
INSERT INTO ledger_term_blocks(block, min_ns, max_ns) SELECT seg >> 8, MIN(min_ns), MAX(max_ns) FROM ledger_terms WHERE term = '*' GROUP BY 1;
`

// termBlock is a block of segments a search walks, with the bounds of the times of the
// events in it and in every block walked after it.
type termBlock struct {
	block                int64
	restLower, restUpper int64
}

// termBlocks lists the blocks of segments with events in [from, to) in the order a search
// walks them (newest first, or oldest first when ascending), each with the bounds of the
// times of the events of the blocks from it on.
func (s *SQLiteStore) termBlocks(ctx context.Context, from, to int64, ascending bool) ([]termBlock, error) {
	type bounds struct{ block, lower, upper int64 }
	var bs []bounds
	err := s.queryRows(ctx, `SELECT block, min_ns, max_ns FROM ledger_term_blocks WHERE max_ns >= ? AND min_ns < ?`, []any{from, to}, func(scan func(...any) error) error {
		var b bounds
		if err := scan(&b.block, &b.lower, &b.upper); err != nil {
			return err
		}
		bs = append(bs, b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read segment blocks: %w", err)
	}
	// Row ids, so blocks, follow time but for events stored late: walk by the bound on
	// their events' times.
	if ascending {
		slices.SortFunc(bs, func(a, b bounds) int { return cmp.Or(cmp.Compare(a.lower, b.lower), cmp.Compare(a.block, b.block)) })
	} else {
		slices.SortFunc(bs, func(a, b bounds) int { return cmp.Or(cmp.Compare(b.upper, a.upper), cmp.Compare(b.block, a.block)) })
	}
	out := make([]termBlock, len(bs))
	lower, upper := int64(math.MaxInt64), int64(math.MinInt64)
	for i := len(bs) - 1; i >= 0; i-- {
		lower, upper = min(lower, bs[i].lower), max(upper, bs[i].upper)
		out[i] = termBlock{block: bs[i].block, restLower: lower, restUpper: upper}
	}
	return out, nil
}

// hit is one matching event of a segment.
type hit struct {
	ns, seq int64
	body    []byte
}

// readHits runs the prepared segment query st.
func readHits(ctx context.Context, st *sql.Stmt, args []any, fn func(hit)) error {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var h hit
		if err := rows.Scan(&h.ns, &h.seq, &h.body); err != nil {
			return err
		}
		fn(h)
	}
	return rows.Err()
}

// eventsSQL reads one segment's matching events (arguments: eventsArgs), walking its row
// id range.
func (p *segSearch) eventsSQL(ascending bool) string {
	dir := "DESC"
	if ascending {
		dir = "ASC"
	}
	var sb strings.Builder
	sb.WriteString("SELECT e.time_ns, e.seq, e.body FROM ledger_events e WHERE e.id >= ? AND e.id < ? AND e.time_ns >= ? AND e.time_ns < ?")
	for _, c := range p.conds {
		sb.WriteString(" AND " + c)
	}
	sb.WriteString(" ORDER BY e.time_ns " + dir + ", e.seq " + dir + " LIMIT ?")
	return sb.String()
}

func (p *segSearch) eventsArgs(seg, from, to int64, limit int) []any {
	args := append([]any{seg << segmentShift, (seg + 1) << segmentShift, from, to}, p.args...)
	return append(args, limit)
}

// termsSQL reads the segments of one term with events in [from, to) among segments
// [lo, hi): one range of the primary key.
const termsSQL = `SELECT seg, min_ns, max_ns FROM ledger_terms WHERE term = ? AND seg >= ? AND seg < ? AND max_ns >= ? AND min_ns < ?`

// planSearch resolves q's filters into segment terms and event conditions. empty reports a
// query nothing can match (a text no statement has).
func (s *SQLiteStore) planSearch(ctx context.Context, q Query) (p segSearch, empty bool, err error) {
	if q.Table != "" {
		col, val := tableKey(q.Table)
		if col == "tbl" {
			p.facet(tokQualified, val)
		} else {
			p.facet(tokTable, val)
		}
	}
	if q.Class != "" {
		p.facet(tokClass, strings.ToLower(q.Class))
	}
	switch {
	case q.StatementKind != "" && q.Category != "":
		p.facet(tokKindCat, strings.ToUpper(q.StatementKind)+"|"+strings.ToLower(q.Category))
	case q.StatementKind != "":
		p.facet(tokKind, strings.ToUpper(q.StatementKind))
	case q.Category != "":
		p.facet(tokCategory, strings.ToLower(q.Category))
	}
	if q.Identity != "" {
		if strings.ContainsAny(q.Identity, "*?") {
			p.where("e.subject GLOB ?", q.Identity)
		} else {
			p.terms = append(p.terms, tokSubject+q.Identity)
			p.where("e.subject = ?", q.Identity)
		}
	}
	for _, f := range []struct{ prefix, col, v string }{
		{tokIdentKind, "identity_kind", q.IdentityKind}, {tokTarget, "target", q.Target}, {tokEnv, "environment", q.Environment},
		{tokInstance, "instance", q.Instance}, {tokType, "type", string(q.Type)}, {tokDecision, "decision", q.Decision},
	} {
		if f.v != "" {
			p.terms = append(p.terms, f.prefix+f.v)
			p.where("e."+f.col+" = ?", f.v)
		}
	}
	if q.Via != "" {
		p.where("json_extract(e.body, '$.via') = ?", q.Via)
	}
	if q.Rule != "" {
		p.where("json_extract(e.body, '$.rule') = ?", q.Rule)
	}
	if q.Text != "" {
		var ids []int64
		err := s.queryRows(ctx, `SELECT rowid FROM ledger_text_fts WHERE ledger_text_fts MATCH ?`, []any{ftsMatch(q.Text)}, func(scan func(...any) error) error {
			var id int64
			if err := scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
			return nil
		})
		if err != nil {
			return p, false, fmt.Errorf("match statement texts: %w", err)
		}
		if len(ids) == 0 {
			return p, true, nil
		}
		js, err := json.Marshal(ids)
		if err != nil {
			return p, false, err
		}
		p.where("e.text_id IN (SELECT value FROM json_each(?))", string(js))
		if len(ids) <= maxTextTerms {
			p.any = []string{}
			for _, id := range ids {
				p.any = append(p.any, fmt.Sprintf("%s%d", tokText, id))
			}
		}
	}
	if len(p.terms) == 0 && p.any == nil {
		p.terms = []string{termAll}
	}
	return p, false, nil
}

// candidates lists the segments among [lo, hi) holding every term of p (and one of p.any)
// with events in [from, to), with bounds on the times of the events there that carry them
// all.
func (s *SQLiteStore) candidates(ctx context.Context, p segSearch, from, to, lo, hi int64) ([]segCandidate, error) {
	read := func(term string, fn func(c segCandidate)) error {
		return s.queryRows(ctx, termsSQL, []any{term, lo, hi, from, to}, func(scan func(...any) error) error {
			var c segCandidate
			if err := scan(&c.seg, &c.lower, &c.upper); err != nil {
				return err
			}
			fn(c)
			return nil
		})
	}
	var set map[int64]segCandidate
	intersect := func(next map[int64]segCandidate) {
		if set == nil {
			set = next
			return
		}
		for seg, c := range set {
			n, ok := next[seg]
			if !ok {
				delete(set, seg)
				continue
			}
			c.lower, c.upper = max(c.lower, n.lower), min(c.upper, n.upper)
			if c.lower > c.upper {
				delete(set, seg)
				continue
			}
			set[seg] = c
		}
	}
	for _, t := range p.terms {
		next := map[int64]segCandidate{}
		if err := read(t, func(c segCandidate) { next[c.seg] = c }); err != nil {
			return nil, fmt.Errorf("read search terms: %w", err)
		}
		intersect(next)
		if len(set) == 0 {
			return nil, nil
		}
	}
	if p.any != nil {
		union := map[int64]segCandidate{}
		for _, t := range p.any {
			err := read(t, func(c segCandidate) {
				if u, ok := union[c.seg]; ok {
					c.lower, c.upper = min(c.lower, u.lower), max(c.upper, u.upper)
				}
				union[c.seg] = c
			})
			if err != nil {
				return nil, fmt.Errorf("read search terms: %w", err)
			}
		}
		intersect(union)
	}
	out := make([]segCandidate, 0, len(set))
	for _, c := range set {
		out = append(out, c)
	}
	return out, nil
}
