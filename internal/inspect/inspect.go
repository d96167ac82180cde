package inspect

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
)

// Inspector parses SQL with the real PostgreSQL parser (pg_query) and reports what each
// statement does. One Inspector serves every session: it is safe for concurrent use.
//
// Facts come from one Parse and one walk of the parse tree per statement, plus pg_query's
// Fingerprint and Normalize. pg_query's cheaper Summary() is not used: it lacks facts the
// policy needs (WHERE/LIMIT, COPY direction, SET targets, EXPLAIN options, columns), and it
// both drops the source table of MERGE and hides a real table whose name matches a CTE
// anywhere in the statement, even outside that CTE's scope — a bypass for table rules
// (TestSummaryMissesTables keeps watching this).
//
// Two caches keep repeats cheap. The first is keyed by the exact text. The second is keyed
// by the normalized text (literals replaced by $n, which pg_query computes for the ledger
// anyway, at a tenth of the cost of a parse): a single statement whose facts did not depend
// on any literal value is shared with every text that differs from it only in literals
// (the same lookup with another id). Statements whose facts read a literal — WHERE 1=1,
// LIMIT ALL, set_config('role', ...), query_to_xml('...'), EXPLAIN options — are never
// shared that way.
type Inspector struct {
	cache  *lru[[]*Statement]
	shapes *lru[[]*Statement]
	// skeletons maps number skeletons to the shape pg_query's Normalize gave a text of that
	// skeleton (skeleton.go), so a known shape with new integers is found without a cgo call.
	skeletons *lru[string]
}

// New returns an Inspector that caches the facts of up to cacheEntries distinct texts and
// as many statement shapes (0 or less disables both caches).
func New(cacheEntries int) *Inspector {
	return &Inspector{cache: newLRU[[]*Statement](cacheEntries), shapes: newLRU[[]*Statement](cacheEntries),
		skeletons: newLRU[string](cacheEntries)}
}

// Inspect returns the facts of every statement in sql, one per statement of a
// multi-statement string, in order. Text that holds no statement (empty, only comments or
// semicolons) yields none: there is nothing to run. Text that does not parse yields one
// statement of Kind "UNKNOWN" and Category Unknown covering the whole text.
//
// The returned slice and statements may be shared with other callers through the cache:
// they must not be modified.
func (in *Inspector) Inspect(sql string) []*Statement {
	if v, ok := in.cache.get(sql); ok {
		return v
	}
	if out := in.inspectPieces(sql); out != nil {
		in.cache.put(sql, out)
		return out
	}
	return in.inspectOne(sql)
}

// inspectOne is Inspect of a text not in the cache, parsed as a whole: a single statement
// (or a text that does not split, or whose pieces did not inspect cleanly) is looked up by
// its shape first.
func (in *Inspector) inspectOne(sql string) []*Statement {
	var shape string
	if in.shapes != nil && len(sql) <= maxCachedText && strings.IndexByte(sql, 0) < 0 {
		if n, ok := in.normalize(sql); ok {
			shape = n
			if v, ok := in.shapes.get(shape); ok {
				// Not put in the exact-text cache: a text found by its shape is found
				// again as cheaply (a scan and two look-ups), and remembering every
				// literal variant would push out texts whose inspection costs a parse.
				one := &soleStatement{st: *v[0]}
				one.st.Text = soleStatementText(sql)
				one.list[0] = &one.st
				if shape == sql {
					// A text without literals (a prepared statement's, with $n parameters)
					// is its own shape: it has no variants to push anything out, and
					// finding it by its shape again would normalize it again.
					in.cache.put(sql, one.list[:])
				}
				return one.list[:]
			}
		}
	}
	out, literal := inspectTextShape(sql, 0, shape)
	in.cache.put(sql, out)
	if shape != "" && !literal && len(out) == 1 && out[0].ParseError == "" && out[0].Text == soleStatementText(sql) {
		in.shapes.put(shape, out)
	}
	return out
}

// soleStatement is a statement and the one-element list that holds it, allocated together.
type soleStatement struct {
	st   Statement
	list [1]*Statement
}

// inspectPieces inspects a multi-statement string statement by statement, each piece
// through the caches as if it had been sent alone, so a string of N statements costs one
// split plus N cached look-ups, and a piece repeated in the string is inspected once. It
// returns nil when the text is not a string of several statements that all inspect cleanly;
// the caller then inspects it as a whole, as before.
//
// The split is pg_query's split with the parser: the same raw parse (PostgreSQL's grammar,
// same mode) that Parse runs, reporting only where each statement starts and ends, without
// building and decoding the protobuf tree of the whole string (for 10,000 statements that
// decoding is 10× the cost of the split). A statement parsed alone has the same tree as in
// the string (the grammar carries no state from one statement to the next; locations, which
// the analysis does not read, differ), and its text is cut exactly as stmtText cuts it, so
// its facts are the ones the whole parse would give. A piece that does not parse or
// inspect cleanly alone (which the whole parse would not have let through either) sends
// the text back to the whole-text path, whose answer for such text is one unknown
// statement.
func (in *Inspector) inspectPieces(sql string) []*Statement {
	body := strings.TrimRight(sql, " \t\n\r\f\v;")
	if strings.IndexByte(body, ';') < 0 || strings.IndexByte(sql, 0) >= 0 {
		return nil // at most one statement, or a NUL the C parser would stop at
	}
	pieces, err := pg_query.SplitWithParser(sql, true)
	if err != nil || len(pieces) < 2 {
		return nil
	}
	out := make([]*Statement, 0, len(pieces))
	var seen map[string]*Statement // pieces repeated within this string
	for _, piece := range pieces {
		if st, ok := seen[piece]; ok {
			out = append(out, st)
			continue
		}
		var sts []*Statement
		if v, ok := in.cache.get(piece); ok {
			sts = v
		} else {
			sts = in.inspectOne(piece)
		}
		if len(sts) != 1 || sts[0].ParseError != "" || sts[0].Text != piece {
			return nil
		}
		if seen == nil {
			seen = make(map[string]*Statement)
		}
		seen[piece] = sts[0]
		out = append(out, sts[0])
	}
	return out
}

// CacheLen reports how many texts the cache holds, for metrics and tests.
func (in *Inspector) CacheLen() int { return in.cache.len() }

// inspectText parses sql and analyses each statement. A panic anywhere below (which the
// fuzz test hunts for) becomes an Unknown statement: never a crash, never a free pass.
func inspectText(sql string, nesting int) []*Statement {
	out, _ := inspectTextShape(sql, nesting, "")
	return out
}

// inspectTextShape is inspectText that also reports whether any fact depended on the value
// of a literal (see Inspector). normalized, when not empty, is pg_query's Normalize of sql,
// already computed by the caller.
func inspectTextShape(sql string, nesting int, normalized string) (out []*Statement, literal bool) {
	defer func() {
		if r := recover(); r != nil {
			st := unparseable(sql, errors.New("internal inspector error"))
			st.Notes = append(st.Notes, internalErrorNote)
			out, literal = []*Statement{st}, true
		}
	}()
	if strings.IndexByte(sql, 0) >= 0 {
		// The C parser would stop at the NUL and never see what follows it.
		return []*Statement{unparseable(sql, errors.New("text contains a NUL byte"))}, true
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		st := unparseable(sql, err)
		var pe *parser.Error
		if errors.As(err, &pe) {
			st.SyntaxError, st.SyntaxPosition = pe.Message, pe.Cursorpos
		}
		return []*Statement{st}, true
	}
	out = make([]*Statement, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		if raw.Stmt == nil {
			continue
		}
		text, norm := stmtText(sql, raw), ""
		if text == sql {
			norm = normalized
		}
		st, lit := analyze(text, raw.Stmt, nesting, norm)
		out = append(out, st)
		literal = literal || lit
	}
	return out, literal
}

// normalize is pg_query's Normalize of sql, found through its number skeleton when a text
// of the same skeleton was normalized before (skeleton.go).
func (in *Inspector) normalize(sql string) (string, bool) {
	var buf [256]byte // the skeleton of most texts fits: looked up without an allocation
	sk, ok := appendSkeleton(buf[:0], sql)
	if ok {
		if n, hit := in.skeletons.getBytes(sk); hit {
			return n, true
		}
	}
	n, err := pg_query.Normalize(sql)
	if err != nil {
		return "", false
	}
	if ok && asNormalized(sql, n) {
		in.skeletons.put(string(sk), n)
	}
	return n, true
}

// soleStatementText is the Text of a text holding a single statement: trimmed, without the
// terminating semicolon (which the parser's statement length excludes).
func soleStatementText(sql string) string {
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(sql), ";"))
}

const internalErrorNote = "the inspector failed on this text; treated as unknown"

// stmtText cuts one statement's own text out of a multi-statement string.
func stmtText(sql string, raw *pg_query.RawStmt) string {
	start, end := int(raw.StmtLocation), len(sql)
	if raw.StmtLen > 0 {
		end = start + int(raw.StmtLen)
	}
	if start < 0 || start > end || end > len(sql) {
		return strings.TrimSpace(sql)
	}
	return strings.TrimSpace(sql[start:end])
}

// unparseable is the statement for text the parser refuses.
func unparseable(sql string, err error) *Statement {
	return &Statement{
		Text:       sql,
		Kind:       "UNKNOWN",
		Category:   Unknown,
		ParseError: safeParseError(err),
		Redacted:   placeholder(sql),
		Notes:      []string{"the text does not parse as PostgreSQL SQL"},
	}
}

func placeholder(sql string) string {
	return fmt.Sprintf("/* unparseable statement, %d bytes, not recorded */", len(sql))
}

// safeParseError keeps the parser's message and position but never the quoted text it
// points at, which may be a secret (an unterminated password literal, say).
func safeParseError(err error) string {
	msg, pos := err.Error(), 0
	var pe *parser.Error
	if errors.As(err, &pe) {
		msg, pos = pe.Message, pe.Cursorpos
	}
	if i := strings.Index(msg, " at or near "); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.IndexAny(msg, "\"'$"); i >= 0 {
		msg = msg[:i]
	}
	msg = strings.TrimSpace(msg)
	if msg == "" {
		msg = "syntax error"
	}
	if pos > 0 {
		msg = fmt.Sprintf("%s at position %d", msg, pos)
	}
	return msg
}

// analyze produces the facts of one parsed statement whose own text is text, and whether
// any of them depended on the value of a literal.
func analyze(text string, n *pg_query.Node, nesting int, normalized string) (*Statement, bool) {
	st := &Statement{Text: text}
	a := &analyzer{st: st, w: &walker{}, nesting: nesting}
	a.classify(n)
	a.finish()
	flowLiteral := false
	if a.mayWriteValues() {
		st.Writes, flowLiteral = writeFlows(n)
	}
	if fp, err := pg_query.Fingerprint(text); err == nil {
		st.Fingerprint = fp
	}
	numbers := false
	switch n.Node.(type) {
	case *pg_query.Node_PrepareStmt, *pg_query.Node_CreateTableAsStmt, *pg_query.Node_ViewStmt, *pg_query.Node_RuleStmt:
		numbers = true
	}
	if normalized == "" {
		if n, err := pg_query.Normalize(text); err == nil {
			normalized = n
		}
	}
	st.Shape = normalized
	st.Redacted = redact(text, normalized, numbers)
	// Only plain SELECT/INSERT/UPDATE/DELETE/MERGE are shared by shape: pg_query's
	// fingerprint of a utility statement includes some of its literals (a role's password,
	// say), so two utility statements of the same normalized text can differ in fingerprint.
	shareable := false
	switch n.Node.(type) {
	case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt,
		*pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
		shareable = true
	}
	return st, a.w.literal || flowLiteral || numbers || !shareable
}

// finish applies the worst-effect rules to what the walk found.
func (a *analyzer) finish() {
	st, w := a.st, a.w
	base := st.Category
	for _, f := range w.calls {
		a.callEffect(f, base)
	}
	st.kindCat = base
	if w.tooDeep {
		st.Category = Unknown
		a.note("statement nests too deeply to inspect")
	}
	_, dmlTop := dmlRank[st.Kind]
	anyCond, allWhere, trivial := false, true, false
	var conds []NotNullCondition
	for _, d := range w.dml {
		st.Category = worse(st.Category, Write)
		if dmlTop && dmlRank[d.kind] > dmlRank[st.Kind] {
			st.Kind = d.kind
		}
		if d.kind == "UPDATE" || d.kind == "DELETE" || d.kind == "MERGE" {
			anyCond = true
			allWhere = allWhere && d.hasWhere
			trivial = trivial || d.whereTrivial
			if d.ifNotNull != nil {
				conds = append(conds, *d.ifNotNull)
			}
		}
	}
	if anyCond {
		// Every UPDATE/DELETE in the statement, at the top or inside a CTE, must have a
		// WHERE for the statement to count as having one.
		st.HasWhere = allWhere
		st.WhereTrivial = allWhere && trivial
		if allWhere && !trivial {
			st.WhereTrivialIfNotNull = conds
		}
	}
	if w.into && st.Kind != "SELECT INTO" {
		st.Export = true
		st.Category = worse(st.Category, DDL)
	}
	if w.locking {
		st.Locking = true
		a.note("FOR UPDATE/SHARE takes row locks that block writers")
	}
	st.TablesRead = w.read.list
	st.TablesWritten = w.written.list
	st.Columns = w.columns.list
	st.Functions = w.functions.list
	// The functions a target's catalog may re-decide count last, so callsBase is the
	// category of everything else.
	st.callsBase = st.Category
	st.Category = st.applyCalls(func(string) (Category, bool) { return "", false })
	for _, name := range st.calls {
		if eff := classifyFunc(name); eff.cat == Unknown {
			a.note(eff.note)
		}
	}
}

// callEffect applies what calling f does. base is the statement's category before any
// function counted: an unknown function makes reads and writes Unknown, while DDL and
// admin statements (which only define code, or are held anyway) keep their category
// unless the function is a known-dangerous one.
func (a *analyzer) callEffect(f *pg_query.FuncCall, base Category) {
	st := a.st
	name := funcName(f.Funcname)
	fnBase, qualified := strings.CutPrefix(name, "pg_catalog.")
	if !qualified && strings.Contains(name, ".") {
		fnBase = ""
	}
	escalate := func(c Category) {
		if c == Admin {
			st.Privileged = true
		}
		if c == Unknown && (base == DDL || base == Admin) {
			return
		}
		st.Category = worse(st.Category, c)
	}
	switch {
	case sqlFuncs[fnBase]:
		a.sqlFunc(name, f, escalate)
		return
	case fnBase == "set_config":
		setting, ok := a.constString(f, 0)
		if !ok && a.settingRow != "" && len(f.Args) > 0 && isColumn(f.Args[0], "name") {
			setting, ok = a.settingRow, true
		}
		if !ok {
			escalate(Unknown)
			st.Privileged = true
			a.note("set_config with a computed setting name")
			return
		}
		st.Setting = strings.ToLower(setting)
		a.note("set_config changes " + st.Setting)
		if st.Setting == "standard_conforming_strings" {
			if v, ok := a.constString(f, 1); !ok || !isOn(v) {
				st.NonStandardStrings = true
			}
		}
		switch st.Setting {
		case "role":
			st.Kind = "SET ROLE"
		case "session_authorization":
			st.Kind = "SET SESSION AUTHORIZATION"
		default:
			if !adminSetting(st.Setting) {
				// The same as SET of that setting (pg_dump's search_path, say); a
				// value that copies masked data is the gate's Writes check.
				st.Category = worse(st.Category, SessionCat)
				return
			}
		}
		st.Privileged = true
		st.Category = worse(st.Category, Admin)
		return
	case fnBase == "lo_export":
		st.Export = true
	}
	eff := classifyFunc(name)
	if eff.cat == Read || eff.cat == Unknown {
		// Vouched for, or not, by the built-in list only: a target's own catalog knows better
		// (WithFunctionEffects), so these count at the end of finish.
		if !slices.Contains(st.calls, name) {
			st.calls = append(st.calls, name)
		}
		return
	}
	escalate(eff.cat)
	if eff.note != "" {
		a.note(eff.note)
	}
}

// sqlFunc handles query_to_xml and friends, which run the SQL text they are given: a
// constant text is inspected like any statement and its effects merged; a computed one is
// Unknown.
func (a *analyzer) sqlFunc(name string, f *pg_query.FuncCall, escalate func(Category)) {
	st := a.st
	sql, ok := a.constString(f, 0)
	if !ok || a.nesting >= maxNesting {
		escalate(Unknown)
		a.note(name + " runs SQL the inspector cannot see")
		return
	}
	a.note(name + " runs the SQL it is given; that SQL is inspected as part of this statement")
	for _, in := range inspectText(sql, a.nesting+1) {
		st.Category = worse(st.Category, in.Category)
		for _, t := range in.TablesRead {
			a.w.read.add(t)
		}
		for _, t := range in.TablesWritten {
			a.w.written.add(t)
		}
		for _, fn := range in.Functions {
			a.w.functions.add(fn)
		}
		for _, c := range in.Columns {
			a.w.columns.add(c)
		}
		if k := in.Kind; k == "INSERT" || k == "UPDATE" || k == "DELETE" || k == "MERGE" {
			d := dmlFact{kind: in.Kind, hasWhere: in.HasWhere, whereTrivial: in.WhereTrivial}
			a.w.dml = append(a.w.dml, d)
			for i := range in.WhereTrivialIfNotNull {
				// Carried as facts of the same kind, one per condition (any one holding
				// makes the statement's WHERE trivial).
				d.ifNotNull = &in.WhereTrivialIfNotNull[i]
				a.w.dml = append(a.w.dml, d)
			}
		} else if in.Category != Read {
			if in.Kind == "UNKNOWN" {
				escalate(Unknown)
			}
			a.note(name + " runs " + in.Kind)
		}
		if in.Export {
			st.Export = true
		}
		if in.Privileged {
			st.Privileged = true
		}
	}
}

// constString returns argument i of f when it is a string constant (possibly cast).
func (a *analyzer) constString(f *pg_query.FuncCall, i int) (string, bool) {
	a.w.literal = true
	if i >= len(f.Args) {
		return "", false
	}
	arg := f.Args[i]
	if tc := arg.GetTypeCast(); tc != nil {
		arg = tc.Arg
	}
	c := arg.GetAConst()
	if c == nil {
		return "", false
	}
	s, ok := c.Val.(*pg_query.A_Const_Sval)
	if !ok {
		return "", false
	}
	return s.Sval.Sval, true
}

// isOn reports whether a setting's text value means on.
func isOn(v string) bool {
	on, ok := boolWord(v)
	return ok && on
}
