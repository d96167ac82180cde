package ledger

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Query selects events for `gatehouse audit search` and the console API. Every filter is
// optional; filters combine with AND.
type Query struct {
	// Identity is a glob over the subject (* any run, ? one character).
	Identity string `json:"identity,omitempty"`
	// IdentityKind is human, service or agent.
	IdentityKind string    `json:"identity_kind,omitempty"`
	Target       string    `json:"target,omitempty"`
	Environment  string    `json:"environment,omitempty"`
	Instance     string    `json:"instance,omitempty"`
	Type         EventType `json:"type,omitempty"`
	// StatementKind ("SELECT", "DROP TABLE", ...) and Category (read, write, ddl, ...)
	// match when any statement of the event has them.
	StatementKind string `json:"statement_kind,omitempty"`
	Category      string `json:"category,omitempty"`
	// Table matches a table the event read or wrote, with ("public.customers") or without
	// ("customers") its schema.
	Table string `json:"table,omitempty"`
	// Class matches the class of a sensitive column the event touched ("email", "ssn", ...);
	// "pii" matches any personal-data class.
	Class    string `json:"class,omitempty"`
	Decision string `json:"decision,omitempty"`
	// Via matches the door and message a statement came through ("mcp" for the MCP door;
	// "query", "parse", "execute", "function" for the PostgreSQL wire protocol). It filters
	// the event body, so it narrows the events the other filters and the time range select.
	Via string `json:"via,omitempty"`
	// Rule matches the name of the policy rule that decided the event, exactly; like Via it
	// filters the event body.
	Rule string `json:"rule,omitempty"`
	// Since is a window ending now; From (inclusive) and To (exclusive) bound it instead.
	Since time.Duration `json:"since,omitempty"`
	From  time.Time     `json:"from,omitzero"`
	To    time.Time     `json:"to,omitzero"`
	// Text is full-text search over the statements' (redacted) text: every word must occur.
	Text string `json:"text,omitempty"`
	// Limit caps the result (default 100, at most 10000); newest first unless Ascending.
	Limit     int  `json:"limit,omitempty"`
	Ascending bool `json:"ascending,omitempty"`
}

// DefaultLimit and MaxLimit bound how many events one search returns.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// Range resolves Since, From and To against now.
func (q Query) Range(now time.Time) TimeRange {
	r := TimeRange{From: q.From, To: q.To}
	if q.Since > 0 {
		from := now.Add(-q.Since)
		if r.From.IsZero() || from.After(r.From) {
			r.From = from
		}
	}
	return r
}

func (q Query) limit() int {
	switch {
	case q.Limit <= 0:
		return DefaultLimit
	case q.Limit > MaxLimit:
		return MaxLimit
	}
	return q.Limit
}

// Validate rejects queries that cannot mean anything.
func (q Query) Validate() error {
	if q.Since < 0 {
		return errors.New("search: since must be positive")
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
		return errors.New("search: to must be after from")
	}
	if q.IdentityKind != "" && q.IdentityKind != "human" && q.IdentityKind != "service" && q.IdentityKind != "agent" {
		return fmt.Errorf("search: identity kind %q is not human, service or agent", q.IdentityKind)
	}
	if strings.ContainsAny(q.Identity, "[]") {
		return errors.New("search: identity glob supports * and ? only")
	}
	if q.Text != "" && len(ftsTerms(q.Text)) == 0 {
		return errors.New("search: text has no words to search for")
	}
	return nil
}

// dialect is the SQL flavour a query is built for.
type dialect int

const (
	sqliteSQL dialect = iota
	postgresSQL
)

// builder collects conditions and arguments with the dialect's placeholders.
type builder struct {
	d     dialect
	args  []any
	conds []string
}

func (b *builder) arg(v any) string {
	b.args = append(b.args, v)
	if b.d == postgresSQL {
		return "$" + strconv.Itoa(len(b.args))
	}
	return "?"
}

func (b *builder) where(format string, args ...any) {
	ph := make([]any, len(args))
	for i, a := range args {
		ph[i] = b.arg(a)
	}
	b.conds = append(b.conds, fmt.Sprintf(format, ph...))
}

// tableCond matches a side-table row against a table name with or without schema. A
// schema-qualified name is matched through the bare-name indexes plus a filter on tbl.
func tableCond(b *builder, alias, table string) {
	cond, args := tableMatch(alias, table)
	b.where(strings.ReplaceAll(cond, "?", "%s"), args...)
}

// buildSearch turns a query into SQL. The most selective side table present (table, then
// sensitive class, then statement kind) drives the query through its (key, time_ns) index,
// so "newest N matching" walks an index backwards instead of sorting all matches; the
// other filters become EXISTS probes on the (instance, seq) keys.
func buildSearch(d dialect, q Query, now time.Time) (string, []any, error) {
	if err := q.Validate(); err != nil {
		return "", nil, err
	}
	b := &builder{d: d}
	from, to := q.Range(now).bounds()
	driver, alias := "ledger_events", "e"
	switch {
	case q.Table != "":
		driver, alias = "ledger_tables", "d"
		tableCond(b, "d", q.Table)
	case q.Class != "":
		driver, alias = "ledger_classes", "d"
		b.where("d.class = %s", strings.ToLower(q.Class))
	case q.StatementKind != "":
		driver, alias = "ledger_statements", "d"
		b.where("d.kind = %s", strings.ToUpper(q.StatementKind))
	}
	if from > -1<<63 {
		b.where(alias+".time_ns >= %s", from)
	}
	if to < 1<<63-1 {
		b.where(alias+".time_ns < %s", to)
	}
	if q.Class != "" && driver != "ledger_classes" {
		b.where("EXISTS (SELECT 1 FROM ledger_classes c WHERE c.instance = e.instance AND c.seq = e.seq AND c.class = %s)", strings.ToLower(q.Class))
	}
	if q.StatementKind != "" && driver != "ledger_statements" {
		b.where("EXISTS (SELECT 1 FROM ledger_statements s WHERE s.instance = e.instance AND s.seq = e.seq AND s.kind = %s)", strings.ToUpper(q.StatementKind))
	}
	if q.Category != "" {
		if driver == "ledger_statements" {
			b.where("d.category = %s", strings.ToLower(q.Category))
		} else {
			b.where("EXISTS (SELECT 1 FROM ledger_statements s2 WHERE s2.instance = e.instance AND s2.seq = e.seq AND s2.category = %s)", strings.ToLower(q.Category))
		}
	}
	if q.Identity != "" {
		if !strings.ContainsAny(q.Identity, "*?") {
			b.where("e.subject = %s", q.Identity)
		} else if d == sqliteSQL {
			b.where("e.subject GLOB %s", q.Identity)
		} else {
			b.where(`e.subject LIKE %s ESCAPE '\'`, globToLike(q.Identity))
		}
	}
	// The tables and classes side tables carry identity kind and decision, so with them as
	// driver these filters narrow the driving index scan instead of probing each event.
	sideAlias := "e"
	if driver == "ledger_tables" || driver == "ledger_classes" {
		sideAlias = "d"
	}
	for _, f := range []struct{ alias, col, v string }{
		{sideAlias, "identity_kind", q.IdentityKind}, {"e", "target", q.Target}, {"e", "environment", q.Environment},
		{"e", "instance", q.Instance}, {"e", "type", string(q.Type)}, {sideAlias, "decision", q.Decision},
	} {
		if f.v != "" {
			b.where(f.alias+"."+f.col+" = %s", f.v)
		}
	}
	// The SQLite decision and type indexes are partial (refusals; events other than
	// completed statements); their condition must appear in the query word for word for
	// SQLite to use them.
	if q.Decision != "" && q.Decision != "allow" {
		b.conds = append(b.conds, sideAlias+".decision <> 'allow'")
	}
	if q.Type != "" && q.Type != EventStatement {
		b.conds = append(b.conds, "e.type <> 'statement'")
	}
	// Likewise the SQLite agents index of ledger_tables holds agents' rows only.
	if q.IdentityKind == "agent" && driver == "ledger_tables" {
		b.conds = append(b.conds, "d.identity_kind = 'agent'")
	}
	if q.Via != "" && d == sqliteSQL {
		b.where("json_extract(e.body, '$.via') = %s", q.Via)
	} else if q.Via != "" {
		b.where("(e.body::jsonb ->> 'via') = %s", q.Via)
	}
	if q.Rule != "" && d == sqliteSQL {
		b.where("json_extract(e.body, '$.rule') = %s", q.Rule)
	} else if q.Rule != "" {
		b.where("(e.body::jsonb ->> 'rule') = %s", q.Rule)
	}
	ftsDriven := false
	if q.Text != "" {
		if d == sqliteSQL && driver == "ledger_events" {
			// Text search is usually the most selective filter: let the full-text index
			// produce the candidates (CROSS JOIN fixes that order in SQLite) rather than
			// walking the time index and probing each event.
			ftsDriven = true
			b.where("ledger_fts MATCH %s", ftsMatch(q.Text))
		} else if d == sqliteSQL {
			b.where("e.id IN (SELECT rowid FROM ledger_fts WHERE ledger_fts MATCH %s)", ftsMatch(q.Text))
		} else {
			b.where("e.fts @@ plainto_tsquery('simple', %s)", strings.Join(ftsTerms(q.Text), " "))
		}
	}
	var sb strings.Builder
	sb.WriteString("SELECT e.body FROM ")
	if ftsDriven {
		sb.WriteString("ledger_fts CROSS JOIN ledger_events e ON e.id = ledger_fts.rowid")
	} else if driver == "ledger_events" {
		sb.WriteString("ledger_events e")
	} else {
		sb.WriteString(driver + " d JOIN ledger_events e ON e.instance = d.instance AND e.seq = d.seq")
	}
	if len(b.conds) > 0 {
		sb.WriteString(" WHERE ")
		sb.WriteString(strings.Join(b.conds, " AND "))
	}
	dir := " DESC"
	if q.Ascending {
		dir = " ASC"
	}
	sb.WriteString(" ORDER BY " + alias + ".time_ns" + dir + ", " + alias + ".seq" + dir)
	sb.WriteString(" LIMIT " + b.arg(q.limit()))
	return sb.String(), b.args, nil
}

// globToLike converts a * ? glob to a LIKE pattern with \ as the escape character.
func globToLike(g string) string {
	var sb strings.Builder
	for _, r := range g {
		switch r {
		case '*':
			sb.WriteByte('%')
		case '?':
			sb.WriteByte('_')
		case '%', '_', '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// ftsTerms splits search text into words the way both full-text indexes tokenise (runs of
// letters and digits), lower case.
func ftsTerms(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// ftsMatch builds an FTS5 query in which every word must occur; each word is quoted, so
// user text can never inject FTS5 operators.
func ftsMatch(s string) string {
	terms := ftsTerms(s)
	for i, t := range terms {
		terms[i] = `"` + t + `"`
	}
	return strings.Join(terms, " AND ")
}

// Aggregation SQL shared by both stores (placeholders rewritten for PostgreSQL).

// whoDroppedSQL finds the allowed DROPs of a table. {NOIX} is "+" for SQLite: it keeps the
// decision and time terms out of index selection, so the (table, kind, time_ns) index seeks
// to the table's few DROP rows; with only sampled statistics SQLite would otherwise walk
// every row of the table through the (name, decision, time_ns) index (0.2-0.4 s cold at ten
// million events instead of milliseconds).
//
// {IX} names the DROP rows' partial index for SQLite (intentSQL): its sampled statistics
// (a synthetic load's ANALYZE) made the planner walk the whole side table in one run of
// TestSQLitePlansUseIndexes out of five.
const whoDroppedSQL = `SELECT e.body, d.tbl, d.kind FROM ledger_tables d {IX} JOIN ledger_events e ON e.instance = d.instance AND e.seq = d.seq
WHERE %s AND d.kind >= 'DROP ' AND d.kind < 'DROP~' AND {NOIX}d.type = 'statement' AND {NOIX}d.decision = 'allow' AND {NOIX}d.time_ns >= ? AND {NOIX}d.time_ns < ? ORDER BY d.time_ns, d.seq`

const piiReadersSQL = `SELECT subject, identity_kind, COUNT(*), MIN(time_ns), MAX(time_ns) FROM ledger_classes
WHERE class = ? AND category = 'read' AND decision = 'allow' AND time_ns >= ? AND time_ns < ? AND type = 'statement'
GROUP BY subject, identity_kind ORDER BY COUNT(*) DESC, subject`

// piiReadersDailySQL reads the daily rollup (whole UTC days dayFrom <= day < dayTo).
const piiReadersDailySQL = `SELECT subject, identity_kind, SUM(n), MIN(first_ns), MAX(last_ns) FROM ledger_class_daily
WHERE class = ? AND category = 'read' AND decision = 'allow' AND day >= ? AND day < ?
GROUP BY subject, identity_kind`

// classDailyUpsert adds n events (the 7th argument) to the daily rollup ({MIN}/{MAX}: the
// dialect's two-argument minimum and maximum).
const classDailyUpsert = `INSERT INTO ledger_class_daily(class, category, decision, day, subject, identity_kind, n, first_ns, last_ns)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (class, category, decision, day, subject, identity_kind) DO UPDATE SET
n = ledger_class_daily.n + excluded.n, first_ns = {MIN}(ledger_class_daily.first_ns, excluded.first_ns), last_ns = {MAX}(ledger_class_daily.last_ns, excluded.last_ns)`

// classDailyRebuildDay recomputes one day of the rollup from the per-event rows (after
// retention deleted part of that day).
const classDailyRebuildDay = `INSERT INTO ledger_class_daily(class, category, decision, day, subject, identity_kind, n, first_ns, last_ns)
SELECT class, COALESCE(category, ''), COALESCE(decision, ''), ?, COALESCE(subject, ''), COALESCE(identity_kind, ''), COUNT(*), MIN(time_ns), MAX(time_ns)
FROM ledger_classes WHERE time_ns >= ? AND time_ns < ? AND type = 'statement'
GROUP BY class, COALESCE(category, ''), COALESCE(decision, ''), COALESCE(subject, ''), COALESCE(identity_kind, '')`

func classDailySQL(d dialect) string {
	if d == postgresSQL {
		return rebind(d, strings.NewReplacer("{MIN}", "LEAST", "{MAX}", "GREATEST").Replace(classDailyUpsert))
	}
	return strings.NewReplacer("{MIN}", "min", "{MAX}", "max").Replace(classDailyUpsert)
}

// agentsQueriedSQL counts the agents that queried a table (%s: tableMatch's condition);
// {IX} names the agents' partial index for SQLite, as in whoDroppedSQL.
const agentsQueriedSQL = `SELECT subject, identity_kind, COUNT(*), MIN(time_ns), MAX(time_ns) FROM ledger_tables {IX}
WHERE %s AND identity_kind = 'agent' AND time_ns >= ? AND time_ns < ? AND type = 'statement'
GROUP BY subject, identity_kind ORDER BY COUNT(*) DESC, subject`

// tableKey returns the side-table column and value a table name matches on.
func tableKey(table string) (string, string) {
	t := strings.ToLower(strings.TrimSpace(table))
	if strings.Contains(t, ".") {
		return "tbl", t
	}
	return "name", t
}

// tableMatch is the side-table condition (with ? placeholders, columns prefixed with
// alias when it is not empty) that matches table, and its arguments: the bare name always
// leads, so every query seeks the (name, ...) indexes; a schema-qualified name adds tbl.
func tableMatch(alias, table string) (string, []any) {
	if alias != "" {
		alias += "."
	}
	col, val := tableKey(table)
	if col == "tbl" {
		return alias + "name = ? AND " + alias + "tbl = ?", []any{bareName(val), val}
	}
	return alias + "name = ?", []any{val}
}

// rebind rewrites ? placeholders to $n for PostgreSQL.
func rebind(d dialect, sql string) string {
	if d != postgresSQL {
		return sql
	}
	var sb strings.Builder
	n := 0
	for i := 0; i < len(sql); i++ {
		if sql[i] == '?' {
			n++
			sb.WriteString("$" + strconv.Itoa(n))
			continue
		}
		sb.WriteByte(sql[i])
	}
	return sb.String()
}

func nsTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }
