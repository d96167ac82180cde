package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
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

// searchSegments answers q from the segment terms: it lists the segments that hold every
// term of the query, reads them newest first (by the bound on their matching events'
// times), filters their events exactly, and stops once no segment left can hold an event
// newer than the limit-th match found. Results are ordered by time, then seq, as Query says.
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
	cands, err := s.candidates(ctx, p, from, to)
	if err != nil {
		return nil, fmt.Errorf("search ledger: %w", err)
	}
	if q.Ascending {
		slices.SortFunc(cands, func(a, b segCandidate) int { return cmp.Or(cmp.Compare(a.lower, b.lower), cmp.Compare(a.seg, b.seg)) })
	} else {
		slices.SortFunc(cands, func(a, b segCandidate) int { return cmp.Or(cmp.Compare(b.upper, a.upper), cmp.Compare(b.seg, a.seg)) })
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
	var hits []hit
	st, err := s.db.PrepareContext(ctx, sqlText)
	if err != nil {
		return nil, fmt.Errorf("search ledger: %w", err)
	}
	defer st.Close()
	for _, c := range cands {
		if len(hits) >= limit {
			last := hits[limit-1].ns
			if (!q.Ascending && c.upper < last) || (q.Ascending && c.lower > last) {
				break
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

// termsSQL reads the segments of one term with events in [from, to).
const termsSQL = `SELECT seg, min_ns, max_ns FROM ledger_terms WHERE term = ? AND max_ns >= ? AND min_ns < ?`

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

// candidates lists the segments holding every term of p (and one of p.any) with events in
// [from, to), with bounds on the times of the events there that carry them all.
func (s *SQLiteStore) candidates(ctx context.Context, p segSearch, from, to int64) ([]segCandidate, error) {
	read := func(term string, fn func(c segCandidate)) error {
		return s.queryRows(ctx, termsSQL, []any{term, from, to}, func(scan func(...any) error) error {
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
