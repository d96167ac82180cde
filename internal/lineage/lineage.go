// Package lineage computes, from the real PostgreSQL parse tree, which source table columns
// each output column of a statement derives from — through expressions, casts, aggregates,
// whole-row references, subqueries, CTEs, set operations, joins and RETURNING — so masking
// still applies when a query hides a sensitive column inside an expression, where the wire
// protocol no longer says which table the value came from.
package lineage

import (
	"fmt"
	"strings"
	"sync"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ColumnSource is one source table column: Table is "schema.table", Column a column name, or
// "*" for every column of the table (a whole-row reference to a table whose columns the
// resolver does not know).
type ColumnSource struct {
	Table  string
	Column string
}

func (s ColumnSource) String() string { return s.Table + "." + s.Column }

// Column is one output column and the source columns its value derives from.
type Column struct {
	Name    string
	Sources []ColumnSource
	// Preserved is true when every source value reaches the output as it is or through a
	// transformation that keeps the value: casts, case and blank changes (lower, upper,
	// initcap, trim), coalesce/nullif/greatest/least/CASE branches, value-picking aggregates
	// and window functions (min, max, lag, first_value, ...), and containers that hold the
	// values whole (ARRAY, ROW, array_agg, to_json, json_build_object, whole-row references).
	// A shape-keeping partial mask may then show part of it. It is false for any other
	// expression over a source (reverse, substring, ||, overlay, translate, md5, string_agg,
	// ...), whose output may still look like the class while a partial mask of it would show
	// a different part of the value; only a strategy revealing nothing is safe there.
	// A column without sources is Preserved.
	Preserved bool
	// Literal is true when the value is made of constants and parameters only (`'(Joe,Blow)'
	// ::fullname`, `ROW('Joe', 'Blow')`, `$1 + 1`): no column and no function call, which
	// could read one, contributes to it, so it holds nothing but what the client wrote.
	Literal bool
	// Star is true for the entry that stands for what `*` (or `(x).*`) expands into when the
	// columns of what it expands are unknown (a table the resolver does not know, a function
	// in FROM without a column definition list, a composite value of unknown type): zero or
	// more output columns at this position, each derived from Sources. A result holding one
	// is not Exact. Names are the column names a column alias list gave these positions,
	// which cannot be placed one by one.
	Star  bool
	Names []string
}

// Result is the lineage of one statement's result. Exact is false when a `*` had to expand
// a relation whose column list is unknown, so positions after it may not line up with the
// result's columns.
type Result struct {
	Columns []Column
	Exact   bool
}

// Resolver names a table's columns in order. schema is "" for an unqualified name, which the
// resolver resolves as the server would (search_path); qualified is "schema.table". ok is
// false when the table is unknown.
type Resolver func(schema, table string) (qualified string, columns []string, ok bool)

// Analyze parses sql and returns the lineage of each statement in it, in order; the entry is
// nil for a statement that returns no rows (DDL, INSERT without RETURNING, ...).
func Analyze(sql string, r Resolver) ([]*Result, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, fmt.Errorf("parse statement for lineage: %w", err)
	}
	a := &analyzer{resolve: r}
	out := make([]*Result, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		a.exact = true
		cols := a.statement(raw.Stmt, nil)
		if cols == nil {
			out = append(out, nil)
			continue
		}
		out = append(out, &Result{Columns: cols, Exact: a.exact})
	}
	return out, nil
}

// Cache keeps the lineage of recent statement texts, because the same statements run over
// and over and parsing is the expensive part. It is bounded: when full it starts afresh.
type Cache struct {
	mu  sync.Mutex
	max int
	m   map[string]cacheEntry
}

type cacheEntry struct {
	res []*Result
	err error
}

// NewCache returns a cache holding up to max statement texts (1024 when max ≤ 0).
func NewCache(max int) *Cache {
	if max <= 0 {
		max = 1024
	}
	return &Cache{max: max, m: make(map[string]cacheEntry)}
}

// Analyze is Analyze with caching. key must change whenever the resolver's answers may
// change (e.g. a catalog generation), and identify sql together with it.
func (c *Cache) Analyze(key, sql string, r Resolver) ([]*Result, error) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return e.res, e.err
	}
	res, err := Analyze(sql, r)
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[key] = cacheEntry{res, err}
	c.mu.Unlock()
	return res, err
}

// Len reports how many entries the cache holds, for tests and diagnostics.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// relation is one item of a FROM clause as seen by column references.
type relation struct {
	name   string // alias, or the relation's own name
	table  string // schema.table for a base table
	cols   []Column
	known  bool           // cols is the full column list
	opaque []ColumnSource // every column derives from these (function calls in FROM)
}

type scope struct {
	rels   []*relation
	ctes   map[string][]Column
	parent *scope
}

func (s *scope) cte(name string) ([]Column, bool) {
	for sc := s; sc != nil; sc = sc.parent {
		if c, ok := sc.ctes[name]; ok {
			return c, true
		}
	}
	return nil, false
}

type analyzer struct {
	resolve Resolver
	exact   bool
	depth   int
}

const maxDepth = 200

func (a *analyzer) statement(n *pg.Node, parent *scope) []Column {
	switch s := n.GetNode().(type) {
	case *pg.Node_SelectStmt:
		return a.selectStmt(s.SelectStmt, parent)
	case *pg.Node_InsertStmt:
		st := s.InsertStmt
		if len(st.ReturningList) == 0 {
			return nil
		}
		sc := a.withScope(st.WithClause, parent)
		sc.rels = append(sc.rels, a.rangeVar(st.Relation, sc))
		return a.targets(st.ReturningList, sc)
	case *pg.Node_UpdateStmt:
		st := s.UpdateStmt
		if len(st.ReturningList) == 0 {
			return nil
		}
		sc := a.withScope(st.WithClause, parent)
		sc.rels = append(sc.rels, a.rangeVar(st.Relation, sc))
		a.fromItems(st.FromClause, sc)
		return a.targets(st.ReturningList, sc)
	case *pg.Node_DeleteStmt:
		st := s.DeleteStmt
		if len(st.ReturningList) == 0 {
			return nil
		}
		sc := a.withScope(st.WithClause, parent)
		sc.rels = append(sc.rels, a.rangeVar(st.Relation, sc))
		a.fromItems(st.UsingClause, sc)
		return a.targets(st.ReturningList, sc)
	case *pg.Node_DeclareCursorStmt:
		return a.statement(s.DeclareCursorStmt.Query, parent)
	case *pg.Node_PrepareStmt:
		return a.statement(s.PrepareStmt.Query, parent)
	case *pg.Node_CopyStmt:
		st := s.CopyStmt
		if st.IsFrom {
			return nil
		}
		if st.Query != nil {
			return a.statement(st.Query, parent)
		}
		rel := a.rangeVar(st.Relation, &scope{})
		if len(st.Attlist) == 0 {
			if !rel.known {
				a.exact = false
				return []Column{{Name: "*", Sources: []ColumnSource{{rel.table, "*"}}, Preserved: true, Star: true}}
			}
			return rel.cols
		}
		var cols []Column
		for _, at := range st.Attlist {
			name := strVal(at)
			cols = append(cols, Column{Name: name, Sources: []ColumnSource{{rel.table, name}}, Preserved: true})
		}
		return cols
	}
	return nil
}

func (a *analyzer) withScope(w *pg.WithClause, parent *scope) *scope {
	sc := &scope{parent: parent}
	if w == nil {
		return sc
	}
	sc.ctes = make(map[string][]Column)
	for _, n := range w.Ctes {
		cte := n.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		var cols []Column
		if sel := cte.Ctequery.GetSelectStmt(); sel != nil && w.Recursive && sel.Op != pg.SetOperation_SETOP_NONE && sel.Larg != nil {
			// A recursive CTE refers to itself: seed it with the non-recursive branch, then
			// let the whole query (which now sees that seed) add the recursive part.
			sc.ctes[cte.Ctename] = renameCols(a.selectStmt(sel.Larg, sc), cte.Aliascolnames)
		}
		cols = a.statement(cte.Ctequery, sc)
		if cols == nil {
			// INSERT/UPDATE/DELETE without RETURNING in WITH: no columns.
			cols = []Column{}
		}
		sc.ctes[cte.Ctename] = searchCycleCols(renameCols(cols, cte.Aliascolnames), cte)
	}
	return sc
}

// searchCycleCols appends the columns a CTE's SEARCH and CYCLE clauses add: the sequence
// and the path hold the values of the columns they name (as a record or an array of
// records), the cycle mark holds a constant.
func searchCycleCols(cols []Column, cte *pg.CommonTableExpr) []Column {
	named := func(list []*pg.Node) Column {
		c := Column{Preserved: true}
		for _, n := range list {
			name := strVal(n)
			for _, src := range namedCol(cols, name) {
				if t, ok := unknownTable(src); ok {
					// A column of a table the resolver does not know, by its name.
					c.Sources = append(c.Sources, ColumnSource{t, name})
					continue
				}
				c.Sources = append(c.Sources, src.Sources...)
				c.Preserved = c.Preserved && src.Preserved
			}
		}
		c.Sources = dedupe(c.Sources)
		return c
	}
	if sc := cte.SearchClause; sc != nil && sc.SearchSeqColumn != "" {
		c := named(sc.SearchColList)
		c.Name = sc.SearchSeqColumn
		cols = append(cols, c)
	}
	if cc := cte.CycleClause; cc != nil {
		if cc.CycleMarkColumn != "" {
			cols = append(cols, Column{Name: cc.CycleMarkColumn, Preserved: true, Literal: true})
		}
		if cc.CyclePathColumn != "" {
			c := named(cc.CycleColList)
			c.Name = cc.CyclePathColumn
			cols = append(cols, c)
		}
	}
	return cols
}

// unknownTable reports whether every source of a Star entry is a column of the one table
// the resolver does not know (its whole row "t.*" among them), and names it.
func unknownTable(c Column) (string, bool) {
	if !c.Star || len(c.Sources) == 0 {
		return "", false
	}
	t, whole := c.Sources[0].Table, false
	for _, s := range c.Sources {
		if s.Table != t {
			return "", false
		}
		whole = whole || s.Column == "*"
	}
	return t, whole
}

// UnknownTable reports whether c is a Star entry over one table the resolver does not know
// (see Column.Star), and names it: its columns can only be told by the names the result
// gives them.
func (c Column) UnknownTable() (string, bool) { return unknownTable(c) }

// namedCol returns the column called name, or the Star entries that may hold it.
func namedCol(cols []Column, name string) []Column {
	var stars []Column
	for _, c := range cols {
		if c.Name == name && !c.Star {
			return []Column{c}
		}
		if c.Star {
			stars = append(stars, c)
		}
	}
	return stars
}

// renameCols applies a column alias list by position. Positions are certain only up to the
// first Star entry: from there on, the remaining names may belong to any column the star or
// a column after it stands for, so those columns become one Star entry from all of their
// sources, carrying the names.
func renameCols(cols []Column, names []*pg.Node) []Column {
	if len(names) == 0 {
		return cols
	}
	out := make([]Column, 0, len(cols))
	for i, c := range cols {
		if c.Star {
			rest := Column{Name: "*", Star: true, Preserved: true}
			for _, r := range cols[i:] {
				rest.Sources = append(rest.Sources, r.Sources...)
				rest.Preserved = rest.Preserved && r.Preserved
			}
			rest.Sources = dedupe(rest.Sources)
			for _, n := range names[min(i, len(names)):] {
				rest.Names = append(rest.Names, strVal(n))
			}
			return append(out, rest)
		}
		if i < len(names) {
			c.Name = strVal(names[i])
		}
		out = append(out, c)
	}
	return out
}

func (a *analyzer) selectStmt(s *pg.SelectStmt, parent *scope) []Column {
	if s == nil {
		return nil
	}
	a.depth++
	defer func() { a.depth-- }()
	if a.depth > maxDepth {
		a.exact = false
		return nil
	}
	sc := a.withScope(s.WithClause, parent)
	if s.Op != pg.SetOperation_SETOP_NONE {
		return setOp(a.selectStmt(s.Larg, sc), a.selectStmt(s.Rarg, sc))
	}
	if len(s.ValuesLists) > 0 {
		var out []Column
		for _, row := range s.ValuesLists {
			items := row.GetList().GetItems()
			for i, e := range items {
				if i >= len(out) {
					out = append(out, Column{Name: fmt.Sprintf("column%d", i+1), Preserved: true})
				}
				out[i].Sources = append(out[i].Sources, a.refs(e, sc)...)
				out[i].Preserved = out[i].Preserved && a.preserves(e, sc)
			}
		}
		return out
	}
	a.fromItems(s.FromClause, sc)
	return a.targets(s.TargetList, sc)
}

// setOp combines the columns of the two sides of UNION, INTERSECT or EXCEPT: a column holds
// the values of both sides' columns at its position. Positions are certain up to the first
// Star entry of either side; from there on they stay certain only when both sides have
// their star at the same place and as many columns after it, else everything from there is
// one Star entry from all remaining sources.
func setOp(l, r []Column) []Column {
	ls, rs := starAt(l), starAt(r)
	if ls != rs || len(l) != len(r) && (ls >= 0 || rs >= 0) {
		cut := min(len(l), len(r))
		if ls >= 0 {
			cut = min(cut, ls)
		}
		if rs >= 0 {
			cut = min(cut, rs)
		}
		rest := Column{Name: "*", Star: true, Preserved: true}
		for _, side := range [][]Column{l[cut:], r[min(cut, len(r)):]} {
			for _, c := range side {
				rest.Sources = append(rest.Sources, c.Sources...)
				rest.Preserved = rest.Preserved && c.Preserved
			}
		}
		rest.Sources = dedupe(rest.Sources)
		return append(setOp(l[:cut], r[:min(cut, len(r))]), rest)
	}
	out := make([]Column, len(l))
	copy(out, l)
	for i := range out {
		if i >= len(r) {
			continue
		}
		out[i].Sources = dedupe(append(append([]ColumnSource(nil), l[i].Sources...), r[i].Sources...))
		out[i].Preserved = l[i].Preserved && r[i].Preserved
		out[i].Literal = l[i].Literal && r[i].Literal
	}
	return out
}

// starAt is the index of the first Star entry of cols, -1 when there is none.
func starAt(cols []Column) int {
	for i, c := range cols {
		if c.Star {
			return i
		}
	}
	return -1
}

func (a *analyzer) fromItems(items []*pg.Node, sc *scope) {
	for _, it := range items {
		sc.rels = append(sc.rels, a.fromItem(it, sc)...)
	}
}

// fromItem returns the relations a FROM item makes visible (a join makes both sides visible).
func (a *analyzer) fromItem(n *pg.Node, sc *scope) []*relation {
	switch f := n.GetNode().(type) {
	case *pg.Node_RangeVar:
		return []*relation{a.rangeVar(f.RangeVar, sc)}
	case *pg.Node_RangeSubselect:
		var cols []Column
		if sel := f.RangeSubselect.Subquery.GetSelectStmt(); sel != nil {
			cols = a.selectStmt(sel, sc) // with the outer scope, for LATERAL references
		} else {
			cols = a.statement(f.RangeSubselect.Subquery, sc)
		}
		rel := &relation{known: true}
		if al := f.RangeSubselect.Alias; al != nil {
			rel.name = al.Aliasname
			cols = renameCols(cols, al.Colnames)
		}
		rel.cols = cols
		return []*relation{rel}
	case *pg.Node_JoinExpr:
		j := f.JoinExpr
		inner := &scope{parent: sc.parent, ctes: sc.ctes, rels: append([]*relation(nil), sc.rels...)}
		l := a.fromItem(j.Larg, inner)
		inner.rels = append(inner.rels, l...)
		r := a.fromItem(j.Rarg, inner)
		rels := append(l, r...)
		if j.Alias != nil {
			// (a JOIN b) AS j: j.col is any column of either side.
			var cols []Column
			known := true
			var opaque []ColumnSource
			for _, rel := range rels {
				cols = append(cols, rel.cols...)
				known = known && rel.known
				if !rel.known && rel.table != "" {
					opaque = append(opaque, ColumnSource{rel.table, "*"})
				}
				opaque = append(opaque, rel.opaque...)
			}
			rels = append(rels, &relation{name: j.Alias.Aliasname, cols: renameCols(cols, j.Alias.Colnames), known: known, opaque: opaque})
		}
		return rels
	case *pg.Node_RangeFunction:
		rf := f.RangeFunction
		var srcs []ColumnSource
		name := ""
		for _, fn := range rf.Functions {
			for _, item := range fn.GetList().GetItems() {
				srcs = append(srcs, a.refs(item, sc)...)
				if fc := item.GetFuncCall(); fc != nil && name == "" && len(fc.Funcname) > 0 {
					name = strVal(fc.Funcname[len(fc.Funcname)-1])
				}
			}
		}
		// What a function in FROM returns is not its arguments' values as they are.
		pres := len(srcs) == 0
		rel := &relation{name: name, opaque: srcs}
		if rf.Alias != nil {
			rel.name = rf.Alias.Aliasname
			for _, c := range rf.Alias.Colnames {
				rel.cols = append(rel.cols, Column{Name: strVal(c), Sources: srcs, Preserved: pres})
			}
		}
		// Only a column definition list (`AS x(a int, b text)`) says how many columns the
		// functions return; otherwise each may return a scalar or a composite of any width
		// (json_populate_record, unnest of an array of rows), and the alias names, if any,
		// only the first of them.
		known := false
		for _, fn := range rf.Functions {
			items := fn.GetList().GetItems()
			if len(items) > 1 && len(items[1].GetList().GetItems()) > 0 {
				known = true // ROWS FROM (f() AS (a int, ...)): a per-function definition list
			}
		}
		for _, cd := range rf.Coldeflist {
			if d := cd.GetColumnDef(); d != nil {
				rel.cols = append(rel.cols, Column{Name: d.Colname, Sources: srcs, Preserved: pres})
				known = true
			}
		}
		if len(rel.cols) == 0 {
			rel.cols = []Column{{Name: name, Sources: srcs, Preserved: pres}}
		}
		rel.known = known && len(rf.Functions) == 1
		return []*relation{rel}
	case *pg.Node_RangeTableSample:
		return a.fromItem(f.RangeTableSample.Relation, sc)
	}
	// XMLTABLE, JSON_TABLE and the like: every column from everything they read.
	srcs := a.refs(n, sc)
	return []*relation{{opaque: srcs, known: false}}
}

func (a *analyzer) rangeVar(rv *pg.RangeVar, sc *scope) *relation {
	if rv == nil {
		return &relation{}
	}
	rel := &relation{name: rv.Relname}
	if rv.Alias != nil {
		rel.name = rv.Alias.Aliasname
	}
	if rv.Schemaname == "" {
		if cols, ok := sc.cte(rv.Relname); ok {
			rel.cols = renameCols(cols, aliasCols(rv.Alias))
			rel.known = true
			return rel
		}
	}
	var names []string
	ok := false
	if a.resolve != nil {
		rel.table, names, ok = a.resolve(rv.Schemaname, rv.Relname)
	}
	if !ok {
		schema := rv.Schemaname
		if schema == "" {
			schema = "public"
		}
		rel.table = schema + "." + rv.Relname
		return rel
	}
	rel.known = true
	for _, c := range names {
		rel.cols = append(rel.cols, Column{Name: c, Sources: []ColumnSource{{rel.table, c}}, Preserved: true})
	}
	rel.cols = renameCols(rel.cols, aliasCols(rv.Alias))
	return rel
}

func aliasCols(al *pg.Alias) []*pg.Node {
	if al == nil {
		return nil
	}
	return al.Colnames
}

// targets computes the output columns of a target list (SELECT list or RETURNING).
func (a *analyzer) targets(list []*pg.Node, sc *scope) []Column {
	var out []Column
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && isStar(cr) {
			out = append(out, a.star(cr, sc)...)
			continue
		}
		if ind := rt.Val.GetAIndirection(); ind != nil && len(ind.Indirection) > 0 && ind.Indirection[len(ind.Indirection)-1].GetAStar() != nil {
			out = append(out, a.fieldStar(ind, sc)...)
			continue
		}
		name := rt.Name
		if name == "" {
			name = figureName(rt.Val)
		}
		out = append(out, Column{Name: name, Sources: a.refs(rt.Val, sc), Preserved: a.preserves(rt.Val, sc), Literal: literal(rt.Val)})
	}
	return out
}

// literal reports whether expression n is made of constants and parameters only (see
// Column.Literal).
func literal(n *pg.Node) bool {
	if n == nil {
		return true
	}
	all := func(ns []*pg.Node) bool {
		for _, x := range ns {
			if !literal(x) {
				return false
			}
		}
		return true
	}
	switch x := n.GetNode().(type) {
	case *pg.Node_AConst, *pg.Node_ParamRef:
		return true
	case *pg.Node_TypeCast:
		return literal(x.TypeCast.Arg)
	case *pg.Node_CollateClause:
		return literal(x.CollateClause.Arg)
	case *pg.Node_RowExpr:
		return all(x.RowExpr.Args)
	case *pg.Node_AArrayExpr:
		return all(x.AArrayExpr.Elements)
	case *pg.Node_CoalesceExpr:
		return all(x.CoalesceExpr.Args)
	case *pg.Node_MinMaxExpr:
		return all(x.MinMaxExpr.Args)
	case *pg.Node_NullTest:
		return literal(x.NullTest.Arg)
	case *pg.Node_BoolExpr:
		return all(x.BoolExpr.Args)
	case *pg.Node_AExpr:
		return literal(x.AExpr.Lexpr) && literal(x.AExpr.Rexpr)
	case *pg.Node_CaseExpr:
		for _, w := range x.CaseExpr.Args {
			if cw := w.GetCaseWhen(); cw == nil || !literal(cw.Expr) || !literal(cw.Result) {
				return false
			}
		}
		return literal(x.CaseExpr.Arg) && literal(x.CaseExpr.Defresult)
	case *pg.Node_List:
		return all(x.List.Items)
	}
	return false
}

func isStar(cr *pg.ColumnRef) bool {
	return len(cr.Fields) > 0 && cr.Fields[len(cr.Fields)-1].GetAStar() != nil
}

// star expands `*` or `alias.*` in a target list.
func (a *analyzer) star(cr *pg.ColumnRef, sc *scope) []Column {
	rels := sc.rels
	if len(cr.Fields) > 1 {
		qual := strVal(cr.Fields[len(cr.Fields)-2])
		rels = nil
		if r := findRel(sc, qual); r != nil {
			rels = []*relation{r}
		}
	}
	var out []Column
	for _, r := range rels {
		if r.known {
			out = append(out, r.cols...)
			continue
		}
		a.exact = false
		out = append(out, Column{Name: "*", Sources: r.wholeRow(), Preserved: r.wholePreserved(), Star: true})
	}
	return out
}

// fieldStar expands `(x).*`: the columns of relation x when x is a whole-row reference to a
// relation whose columns are known, else a Star entry over whatever x reads.
func (a *analyzer) fieldStar(ind *pg.A_Indirection, sc *scope) []Column {
	if cr := ind.Arg.GetColumnRef(); cr != nil && len(cr.Fields) == 1 && len(ind.Indirection) == 1 {
		name := strVal(cr.Fields[0])
		if r := findRel(sc, name); r != nil && r.known && !hasColumn(sc, name) {
			return append([]Column(nil), r.cols...)
		}
	}
	a.exact = false
	return []Column{{Name: "*", Sources: a.refs(ind.Arg, sc), Preserved: a.preserves(ind.Arg, sc), Star: true}}
}

// hasColumn reports whether some relation in the nearest scope that has one has a column
// called name (which a bare name means before a whole-row reference).
func hasColumn(sc *scope, name string) bool {
	for s := sc; s != nil; s = s.parent {
		for _, r := range s.rels {
			for _, c := range r.cols {
				if c.Name == name {
					return true
				}
			}
		}
	}
	return false
}

func (r *relation) wholeRow() []ColumnSource {
	var s []ColumnSource
	if r.known {
		for _, c := range r.cols {
			s = append(s, c.Sources...)
		}
	} else if r.table != "" {
		s = append(s, ColumnSource{r.table, "*"})
	}
	return append(s, r.opaque...)
}

// wholePreserved reports whether a whole-row reference to r holds its columns' values as
// they are.
func (r *relation) wholePreserved() bool {
	if r.known {
		for _, c := range r.cols {
			if !c.Preserved {
				return false
			}
		}
	}
	return len(r.opaque) == 0
}

func findRel(sc *scope, name string) *relation {
	for s := sc; s != nil; s = s.parent {
		for i := len(s.rels) - 1; i >= 0; i-- {
			if s.rels[i].name == name {
				return s.rels[i]
			}
		}
	}
	return nil
}

// column resolves an unqualified column name (or a whole-row reference) in the scope chain,
// and tells whether the value is its sources' values as they are (see Column.Preserved).
func (a *analyzer) column(name string, sc *scope) ([]ColumnSource, bool) {
	for s := sc; s != nil; s = s.parent {
		var found []ColumnSource
		hit, pres := false, true
		for _, r := range s.rels {
			for _, c := range r.cols {
				if c.Name == name {
					found = append(found, c.Sources...)
					hit = true
					pres = pres && c.Preserved
				}
			}
		}
		if hit {
			return found, pres
		}
		// Relations whose columns are unknown might hold it; one of them called so may also
		// be a whole-row reference to it.
		for _, r := range s.rels {
			if !r.known && r.table != "" {
				found = append(found, ColumnSource{r.table, name})
				if r.name == name {
					found = append(found, ColumnSource{r.table, "*"})
				}
			}
			if !r.known {
				found = append(found, r.opaque...)
				pres = pres && len(r.opaque) == 0
			}
		}
		if len(found) > 0 {
			return found, pres
		}
		// `SELECT c FROM customers c`: a whole-row reference.
		for _, r := range s.rels {
			if r.name == name {
				return r.wholeRow(), r.wholePreserved()
			}
		}
	}
	return nil, true
}

func (a *analyzer) qualified(qual, name string, sc *scope) ([]ColumnSource, bool) {
	r := findRel(sc, qual)
	if r == nil {
		return nil, true
	}
	for _, c := range r.cols {
		if c.Name == name {
			return c.Sources, c.Preserved
		}
	}
	if !r.known && r.table != "" {
		return append([]ColumnSource{{r.table, name}}, r.opaque...), len(r.opaque) == 0
	}
	return r.opaque, len(r.opaque) == 0
}

// refs returns every source column an expression's value derives from.
func (a *analyzer) refs(n proto.Message, sc *scope) []ColumnSource {
	var out []ColumnSource
	a.walk(n, sc, &out)
	return dedupe(out)
}

func (a *analyzer) walk(m proto.Message, sc *scope, out *[]ColumnSource) {
	if m == nil {
		return
	}
	a.depth++
	defer func() { a.depth-- }()
	if a.depth > maxDepth {
		a.exact = false
		return
	}
	if n, ok := m.(*pg.Node); ok {
		switch x := n.GetNode().(type) {
		case nil:
			return
		case *pg.Node_ColumnRef:
			srcs, _ := a.columnRef(x.ColumnRef, sc)
			*out = append(*out, srcs...)
			return
		case *pg.Node_SubLink:
			sl := x.SubLink
			if sl.SubLinkType == pg.SubLinkType_EXISTS_SUBLINK {
				return
			}
			a.walk(sl.Testexpr, sc, out)
			if sel := sl.Subselect.GetSelectStmt(); sel != nil {
				for _, c := range a.selectStmt(sel, sc) {
					*out = append(*out, c.Sources...)
				}
			}
			return
		case *pg.Node_FuncCall:
			fc := x.FuncCall
			if fname := lastName(fc.Funcname); fname == "count" || fname == "exists" {
				return // a count reveals no value
			}
			for _, arg := range fc.Args {
				a.walk(arg, sc, out)
			}
			if fc.AggWithinGroup {
				// mode() WITHIN GROUP (ORDER BY x), percentile_disc(...): the value is x.
				for _, o := range fc.AggOrder {
					a.walk(o, sc, out)
				}
			}
			return // ORDER BY, FILTER and OVER of any other aggregate do not reach its value
		case *pg.Node_NullTest:
			return
		case *pg.Node_SelectStmt:
			for _, c := range a.selectStmt(x.SelectStmt, sc) {
				*out = append(*out, c.Sources...)
			}
			return
		}
		m = protoMessageOf(n)
		if m == nil {
			return
		}
	}
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				a.walk(l.Get(i).Message().Interface(), sc, out)
			}
		} else if !fd.IsMap() {
			a.walk(v.Message().Interface(), sc, out)
		}
		return true
	})
}

// protoMessageOf returns the concrete message inside a Node's oneof.
func protoMessageOf(n *pg.Node) proto.Message {
	var inner proto.Message
	n.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() == protoreflect.MessageKind {
			inner = v.Message().Interface()
			return false
		}
		return true
	})
	return inner
}

func (a *analyzer) columnRef(cr *pg.ColumnRef, sc *scope) ([]ColumnSource, bool) {
	f := cr.Fields
	if isStar(cr) {
		var s []ColumnSource
		pres := true
		for _, c := range a.star(cr, sc) {
			s = append(s, c.Sources...)
			pres = pres && c.Preserved
		}
		return s, pres
	}
	switch len(f) {
	case 1:
		return a.column(strVal(f[0]), sc)
	case 2:
		return a.qualified(strVal(f[0]), strVal(f[1]), sc)
	default:
		// schema.table.column or db.schema.table.column: match on the table part.
		return a.qualified(strVal(f[len(f)-2]), strVal(f[len(f)-1]), sc)
	}
}

func strVal(n *pg.Node) string {
	if s := n.GetString_(); s != nil {
		return s.Sval
	}
	return ""
}

func lastName(ns []*pg.Node) string {
	if len(ns) == 0 {
		return ""
	}
	return strings.ToLower(strVal(ns[len(ns)-1]))
}

// figureName names an output column the way PostgreSQL does for the common cases.
func figureName(n *pg.Node) string {
	switch x := n.GetNode().(type) {
	case *pg.Node_ColumnRef:
		for i := len(x.ColumnRef.Fields) - 1; i >= 0; i-- {
			if s := strVal(x.ColumnRef.Fields[i]); s != "" {
				return s
			}
		}
	case *pg.Node_FuncCall:
		return lastName(x.FuncCall.Funcname)
	case *pg.Node_TypeCast:
		if name := figureName(x.TypeCast.Arg); name != "?column?" {
			return name
		}
		if tn := x.TypeCast.TypeName; tn != nil {
			return lastName(tn.Names)
		}
	case *pg.Node_CaseExpr:
		return "case"
	case *pg.Node_CoalesceExpr:
		return "coalesce"
	case *pg.Node_AArrayExpr:
		return "array"
	case *pg.Node_RowExpr:
		return "row"
	case *pg.Node_SubLink:
		if x.SubLink.SubLinkType == pg.SubLinkType_EXISTS_SUBLINK {
			return "exists"
		}
		if x.SubLink.SubLinkType == pg.SubLinkType_ARRAY_SUBLINK {
			return "array"
		}
		if sel := x.SubLink.Subselect.GetSelectStmt(); sel != nil && len(sel.TargetList) > 0 {
			if rt := sel.TargetList[0].GetResTarget(); rt != nil {
				if rt.Name != "" {
					return rt.Name
				}
				return figureName(rt.Val)
			}
		}
	case *pg.Node_MinMaxExpr:
		if x.MinMaxExpr.Op == pg.MinMaxOp_IS_GREATEST {
			return "greatest"
		}
		return "least"
	}
	return "?column?"
}

func dedupe(s []ColumnSource) []ColumnSource {
	if len(s) < 2 {
		return s
	}
	out := s[:0]
	seen := make(map[ColumnSource]struct{}, len(s))
	for _, c := range s {
		if _, ok := seen[c]; ok {
			continue
		}
		seen[c] = struct{}{}
		out = append(out, c)
	}
	return out
}

// keepValue are the functions whose result holds their arguments' values as they are, up to
// case and blanks (lower, btrim), or picks one of them (min, lag), or wraps them whole in a
// container a masker walks value by value (array_agg, to_json, json_build_object). Any other
// function over a source column derives a new value (see Column.Preserved).
var keepValue = map[string]bool{
	"lower": true, "upper": true, "initcap": true, "btrim": true, "ltrim": true, "rtrim": true, "trim": true,
	"text": true, "varchar": true, "bpchar": true, "name": true, "date": true, "timestamp": true, "timestamptz": true,
	"min": true, "max": true, "any_value": true, "mode": true, "percentile_disc": true,
	"first_value": true, "last_value": true, "nth_value": true, "lag": true, "lead": true,
	"array_agg": true, "json_agg": true, "jsonb_agg": true, "json_agg_strict": true, "jsonb_agg_strict": true,
	"to_json": true, "to_jsonb": true, "row_to_json": true, "array_to_json": true,
	"json_build_array": true, "jsonb_build_array": true, "json_build_object": true, "jsonb_build_object": true,
	"coalesce": true, "nullif": true, "greatest": true, "least": true,
}

// preserves reports whether the value of expression n is its source columns' values as they
// are, or through a value-keeping transformation (see Column.Preserved). An expression
// without sources preserves trivially.
func (a *analyzer) preserves(n *pg.Node, sc *scope) bool {
	if n == nil {
		return true
	}
	a.depth++
	defer func() { a.depth-- }()
	if a.depth > maxDepth {
		a.exact = false
		return false
	}
	all := func(ns []*pg.Node) bool {
		for _, x := range ns {
			if !a.preserves(x, sc) {
				return false
			}
		}
		return true
	}
	switch x := n.GetNode().(type) {
	case *pg.Node_ColumnRef:
		_, pres := a.columnRef(x.ColumnRef, sc)
		return pres
	case *pg.Node_AConst, *pg.Node_ParamRef, *pg.Node_NullTest, *pg.Node_SqlvalueFunction:
		return true
	case *pg.Node_TypeCast:
		return a.preserves(x.TypeCast.Arg, sc)
	case *pg.Node_CollateClause:
		return a.preserves(x.CollateClause.Arg, sc)
	case *pg.Node_AIndirection:
		// (c).email, arr[1]: a part of a preserved container is preserved.
		return a.preserves(x.AIndirection.Arg, sc)
	case *pg.Node_CoalesceExpr:
		return all(x.CoalesceExpr.Args)
	case *pg.Node_MinMaxExpr:
		return all(x.MinMaxExpr.Args)
	case *pg.Node_AArrayExpr:
		return all(x.AArrayExpr.Elements)
	case *pg.Node_RowExpr:
		return all(x.RowExpr.Args)
	case *pg.Node_CaseExpr:
		// The conditions decide which branch; the value is one of the results.
		for _, w := range x.CaseExpr.Args {
			if cw := w.GetCaseWhen(); cw != nil && !a.preserves(cw.Result, sc) {
				return false
			}
		}
		return a.preserves(x.CaseExpr.Defresult, sc)
	case *pg.Node_AExpr:
		if x.AExpr.Kind == pg.A_Expr_Kind_AEXPR_NULLIF {
			return a.preserves(x.AExpr.Lexpr, sc) && a.preserves(x.AExpr.Rexpr, sc)
		}
	case *pg.Node_FuncCall:
		fc := x.FuncCall
		name := lastName(fc.Funcname)
		if name == "count" || name == "exists" {
			return true // no value of a source
		}
		if keepValue[name] {
			if fc.AggWithinGroup {
				for _, o := range fc.AggOrder {
					if sb := o.GetSortBy(); sb != nil && !a.preserves(sb.Node, sc) {
						return false
					}
				}
			}
			return all(fc.Args)
		}
	case *pg.Node_SubLink:
		sl := x.SubLink
		switch sl.SubLinkType {
		case pg.SubLinkType_EXISTS_SUBLINK:
			return true
		case pg.SubLinkType_EXPR_SUBLINK, pg.SubLinkType_ARRAY_SUBLINK:
			if sel := sl.Subselect.GetSelectStmt(); sel != nil {
				for _, c := range a.selectStmt(sel, sc) {
					if !c.Preserved {
						return false
					}
				}
				return true
			}
		}
	case *pg.Node_SelectStmt:
		for _, c := range a.selectStmt(x.SelectStmt, sc) {
			if !c.Preserved {
				return false
			}
		}
		return true
	}
	// Anything else (operators such as ||, other functions, XML and SQL/JSON constructors)
	// derives a new value from whatever sources it reads.
	return len(a.refs(n, sc)) == 0
}
