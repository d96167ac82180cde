package inspect

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxDepth bounds the walk. The parser already refuses deeper trees (its stack-depth check),
// so reaching it means something unexpected: the statement becomes Unknown.
const maxDepth = 2000

// dmlFact is one INSERT / UPDATE / DELETE / MERGE found anywhere in a statement (at the top
// or inside a CTE, a rule action, ...).
type dmlFact struct {
	kind         string
	hasWhere     bool
	whereTrivial bool
	// ifNotNull, when whereTrivial is false, is the condition under which the WHERE would be
	// trivial: these columns of the target are NOT NULL (see trivialWhere).
	ifNotNull *NotNullCondition
}

// dmlWhere is the fact of one UPDATE / DELETE / MERGE on target whose condition is where.
func (w *walker) dmlWhere(kind string, target *pg_query.RangeVar, where *pg_query.Node) dmlFact {
	d := dmlFact{kind: kind, hasWhere: where != nil}
	cols := []string(nil)
	d.whereTrivial, cols = trivialWhere(where, target, &w.literal)
	if len(cols) > 0 {
		d.ifNotNull = &NotNullCondition{Table: tableName(target), Columns: cols}
	}
	return d
}

// walker collects facts from a parse tree. It handles the node types whose meaning matters
// (statements, table references, CTE scopes, column references, function calls) and
// descends generically, through protobuf reflection, into every other node, so a table or a
// function call inside a node type this file does not name is still found.
//
// Unlike pg_query's Summary, CTE names are scoped: a CTE hides a table of the same name only
// inside the WITH that defines it, never in a sibling or outer query.
type walker struct {
	read, written, columns, functions orderedSet
	calls                             []*pg_query.FuncCall
	dml                               []dmlFact
	scopes                            [][]string
	depth                             int
	tooDeep                           bool
	into                              bool // SELECT INTO somewhere
	locking                           bool // FOR UPDATE / FOR SHARE somewhere
	literal                           bool // a fact depended on a constant's value
	// skip is the target of a DDL statement, already recorded as written, so the generic
	// walk does not also count it as read.
	skip *pg_query.RangeVar
}

// orderedSet keeps first-seen order and drops duplicates.
type orderedSet struct {
	list []string
	seen map[string]struct{}
}

func (s *orderedSet) add(v string) {
	if v == "" {
		return
	}
	if _, ok := s.seen[v]; ok {
		return
	}
	if s.seen == nil {
		s.seen = make(map[string]struct{}, 4)
	}
	s.seen[v] = struct{}{}
	s.list = append(s.list, v)
}

func (w *walker) enter() bool {
	w.depth++
	if w.depth > maxDepth {
		w.tooDeep = true
		return false
	}
	return true
}

func (w *walker) leave() { w.depth-- }

// node visits a parse-tree node.
func (w *walker) node(n *pg_query.Node) {
	if n == nil || n.Node == nil {
		return
	}
	if !w.enter() {
		return
	}
	defer w.leave()
	switch x := n.Node.(type) {
	case *pg_query.Node_String_, *pg_query.Node_Integer, *pg_query.Node_Float,
		*pg_query.Node_Boolean, *pg_query.Node_BitString, *pg_query.Node_AConst,
		*pg_query.Node_ParamRef, *pg_query.Node_TypeName, *pg_query.Node_AStar,
		*pg_query.Node_RoleSpec, *pg_query.Node_SqlvalueFunction:
		// leaves: nothing to collect
	case *pg_query.Node_SelectStmt:
		w.selectStmt(x.SelectStmt)
	case *pg_query.Node_InsertStmt:
		w.insertStmt(x.InsertStmt)
	case *pg_query.Node_UpdateStmt:
		w.updateStmt(x.UpdateStmt)
	case *pg_query.Node_DeleteStmt:
		w.deleteStmt(x.DeleteStmt)
	case *pg_query.Node_MergeStmt:
		w.mergeStmt(x.MergeStmt)
	case *pg_query.Node_RangeVar:
		w.readTable(x.RangeVar)
	case *pg_query.Node_ColumnRef:
		w.columnRef(x.ColumnRef)
	case *pg_query.Node_FuncCall:
		w.funcCall(x.FuncCall)
	case *pg_query.Node_ResTarget:
		w.node(x.ResTarget.Val)
		w.nodes(x.ResTarget.Indirection)
	case *pg_query.Node_AExpr:
		if len(x.AExpr.Name) > 1 {
			// OPERATOR(schema.op): an operator outside pg_catalog runs a function the
			// inspector cannot vouch for; it counts as a call of that function.
			if op := funcName(x.AExpr.Name); !strings.HasPrefix(op, "pg_catalog.") {
				w.functions.add(op)
				w.calls = append(w.calls, &pg_query.FuncCall{Funcname: x.AExpr.Name})
			}
		}
		w.node(x.AExpr.Lexpr)
		w.node(x.AExpr.Rexpr)
	case *pg_query.Node_BoolExpr:
		w.nodes(x.BoolExpr.Args)
	case *pg_query.Node_TypeCast:
		w.node(x.TypeCast.Arg)
	case *pg_query.Node_JoinExpr:
		w.node(x.JoinExpr.Larg)
		w.node(x.JoinExpr.Rarg)
		w.nodes(x.JoinExpr.UsingClause)
		w.node(x.JoinExpr.Quals)
	case *pg_query.Node_SubLink:
		w.node(x.SubLink.Testexpr)
		w.node(x.SubLink.Subselect)
	case *pg_query.Node_RangeSubselect:
		w.node(x.RangeSubselect.Subquery)
	case *pg_query.Node_List:
		w.nodes(x.List.Items)
	default:
		w.generic(n.ProtoReflect())
	}
}

func (w *walker) nodes(ns []*pg_query.Node) {
	for _, n := range ns {
		w.node(n)
	}
}

// message visits a message that is not wrapped in a Node.
func (w *walker) message(m proto.Message) {
	switch x := m.(type) {
	case *pg_query.Node:
		w.node(x)
	case *pg_query.RangeVar:
		w.readTable(x)
	case *pg_query.SelectStmt:
		w.selectStmt(x)
	case *pg_query.FuncCall:
		w.funcCall(x)
	case *pg_query.WithClause:
		// A WITH outside a statement this walker handles: walk the CTE bodies but let
		// their names hide nothing (a CTE reference then shows as a table, erring on the
		// side of reporting too much).
		n := len(w.scopes)
		w.with(x)
		w.scopes = w.scopes[:n]
	case *pg_query.TypeName, *pg_query.RoleSpec, *pg_query.Alias:
	default:
		if !w.enter() {
			return
		}
		w.generic(m.ProtoReflect())
		w.leave()
	}
}

// generic descends into every message-valued field of m.
func (w *walker) generic(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				w.message(l.Get(i).Message().Interface())
			}
			return true
		}
		w.message(v.Message().Interface())
		return true
	})
}

// with pushes the CTE names of wc as a new scope and visits the CTE bodies. The caller pops
// the scope (w.scopes = w.scopes[:n]) once the statement the WITH belongs to is walked.
func (w *walker) with(wc *pg_query.WithClause) {
	if wc == nil {
		return
	}
	idx := len(w.scopes)
	w.scopes = append(w.scopes, nil)
	if wc.Recursive {
		for _, c := range wc.Ctes {
			if cte := c.GetCommonTableExpr(); cte != nil {
				w.scopes[idx] = append(w.scopes[idx], cte.Ctename)
			}
		}
	}
	for _, c := range wc.Ctes {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			w.node(c)
			continue
		}
		w.node(cte.Ctequery)
		if cte.SearchClause != nil || cte.CycleClause != nil {
			w.message(cte.SearchClause)
			w.message(cte.CycleClause)
		}
		if !wc.Recursive {
			w.scopes[idx] = append(w.scopes[idx], cte.Ctename)
		}
	}
}

// isCTE reports whether an unqualified relation name refers to a CTE in scope.
func (w *walker) isCTE(name string) bool {
	for i := len(w.scopes) - 1; i >= 0; i-- {
		for _, n := range w.scopes[i] {
			if n == name {
				return true
			}
		}
	}
	return false
}

func tableName(rv *pg_query.RangeVar) string {
	if rv == nil {
		return ""
	}
	name := rv.Relname
	if rv.Schemaname != "" {
		name = rv.Schemaname + "." + name
	}
	if rv.Catalogname != "" {
		name = rv.Catalogname + "." + name
	}
	return name
}

func (w *walker) readTable(rv *pg_query.RangeVar) {
	if rv == nil || rv == w.skip {
		return
	}
	if rv.Schemaname == "" && rv.Catalogname == "" && w.isCTE(rv.Relname) {
		return
	}
	w.read.add(tableName(rv))
}

// writeTable records a table the statement changes. Targets of INSERT/UPDATE/DELETE/MERGE
// never resolve to a CTE, so no scope check.
func (w *walker) writeTable(rv *pg_query.RangeVar) {
	w.written.add(tableName(rv))
}

func (w *walker) columnRef(c *pg_query.ColumnRef) {
	if len(c.Fields) == 0 {
		return
	}
	switch f := c.Fields[len(c.Fields)-1].Node.(type) {
	case *pg_query.Node_String_:
		w.columns.add(f.String_.Sval)
	case *pg_query.Node_AStar:
		w.columns.add("*")
	}
}

// funcName joins a function's name parts: "pg_catalog.lower", "public.f".
func funcName(parts []*pg_query.Node) string {
	name := ""
	for _, p := range parts {
		s := p.GetString_()
		if s == nil {
			continue
		}
		if name != "" {
			name += "."
		}
		name += s.Sval
	}
	return name
}

func (w *walker) funcCall(f *pg_query.FuncCall) {
	if f == nil {
		return
	}
	w.functions.add(funcName(f.Funcname))
	w.calls = append(w.calls, f)
	w.nodes(f.Args)
	w.nodes(f.AggOrder)
	w.node(f.AggFilter)
	if f.Over != nil {
		w.nodes(f.Over.PartitionClause)
		w.nodes(f.Over.OrderClause)
	}
}

func (w *walker) selectStmt(s *pg_query.SelectStmt) {
	if s == nil {
		return
	}
	if !w.enter() {
		return
	}
	defer w.leave()
	n := len(w.scopes)
	w.with(s.WithClause)
	if s.IntoClause != nil {
		w.into = true
		w.writeTable(s.IntoClause.Rel)
	}
	if len(s.LockingClause) > 0 {
		// FOR UPDATE OF names range aliases, not tables: nothing more to collect.
		w.locking = true
	}
	w.nodes(s.DistinctClause)
	w.nodes(s.TargetList)
	w.nodes(s.FromClause)
	w.node(s.WhereClause)
	w.nodes(s.GroupClause)
	w.node(s.HavingClause)
	w.nodes(s.WindowClause)
	w.nodes(s.ValuesLists)
	w.nodes(s.SortClause)
	w.node(s.LimitOffset)
	w.node(s.LimitCount)
	w.selectStmt(s.Larg)
	w.selectStmt(s.Rarg)
	w.scopes = w.scopes[:n]
}

func (w *walker) insertStmt(s *pg_query.InsertStmt) {
	n := len(w.scopes)
	w.with(s.WithClause)
	w.writeTable(s.Relation)
	w.dml = append(w.dml, dmlFact{kind: "INSERT", hasWhere: true})
	for _, c := range s.Cols {
		if rt := c.GetResTarget(); rt != nil {
			w.columns.add(rt.Name)
			w.nodes(rt.Indirection)
		}
	}
	w.node(s.SelectStmt)
	if oc := s.OnConflictClause; oc != nil {
		if oc.Infer != nil {
			w.nodes(oc.Infer.IndexElems)
			w.node(oc.Infer.WhereClause)
		}
		w.assignments(oc.TargetList)
		w.node(oc.WhereClause)
	}
	w.nodes(s.ReturningList)
	w.scopes = w.scopes[:n]
}

// assignments visits SET lists: each target's name is a column of the written table.
func (w *walker) assignments(list []*pg_query.Node) {
	for _, t := range list {
		if rt := t.GetResTarget(); rt != nil {
			w.columns.add(rt.Name)
			w.nodes(rt.Indirection)
			w.node(rt.Val)
			continue
		}
		w.node(t)
	}
}

func (w *walker) updateStmt(s *pg_query.UpdateStmt) {
	n := len(w.scopes)
	w.with(s.WithClause)
	w.writeTable(s.Relation)
	w.dml = append(w.dml, w.dmlWhere("UPDATE", s.Relation, s.WhereClause))
	w.assignments(s.TargetList)
	w.nodes(s.FromClause)
	w.node(s.WhereClause)
	w.nodes(s.ReturningList)
	w.scopes = w.scopes[:n]
}

func (w *walker) deleteStmt(s *pg_query.DeleteStmt) {
	n := len(w.scopes)
	w.with(s.WithClause)
	w.writeTable(s.Relation)
	w.dml = append(w.dml, w.dmlWhere("DELETE", s.Relation, s.WhereClause))
	w.nodes(s.UsingClause)
	w.node(s.WhereClause)
	w.nodes(s.ReturningList)
	w.scopes = w.scopes[:n]
}

func (w *walker) mergeStmt(s *pg_query.MergeStmt) {
	n := len(w.scopes)
	w.with(s.WithClause)
	w.writeTable(s.Relation)
	// The join condition plays the role of a WHERE: ON true touches every row.
	w.dml = append(w.dml, w.dmlWhere("MERGE", s.Relation, s.JoinCondition))
	w.dml[len(w.dml)-1].hasWhere = true
	w.node(s.SourceRelation)
	w.node(s.JoinCondition)
	for _, c := range s.MergeWhenClauses {
		mw := c.GetMergeWhenClause()
		if mw == nil {
			w.node(c)
			continue
		}
		w.node(mw.Condition)
		w.assignments(mw.TargetList)
		w.nodes(mw.Values)
	}
	w.nodes(s.ReturningList)
	w.scopes = w.scopes[:n]
}
