package inspect

import (
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// WriteFlow is one place a statement stores values server-side — table columns (INSERT,
// UPDATE, MERGE, ON CONFLICT DO UPDATE, ALTER TABLE ... USING / GENERATED), a table or view
// the statement creates (CREATE TABLE AS, SELECT INTO, CREATE [MATERIALIZED] VIEW), or
// session and server state (set_config, setval, pg_notify) — together with a query whose
// output columns are exactly the stored values. The gate runs the lineage analysis on that
// query to learn which source columns each stored value derives from, so a masked session
// cannot copy a sensitive value into a place the catalog does not hold as sensitive and read
// it back unmasked. Only the written values count: WHERE, JOIN and ON conditions do not.
type WriteFlow struct {
	// Kind says what writes: "INSERT", "UPDATE", "MERGE", "INSERT ON CONFLICT",
	// "CREATE TABLE AS", "SELECT INTO", "CREATE MATERIALIZED VIEW", "CREATE VIEW",
	// "ALTER TABLE", or the function ("set_config", "setval", "pg_notify").
	Kind string
	// Table is the destination relation in the parser's spelling ("" when the destination
	// is not a relation: a setting, a sequence, a notification).
	Table string
	// Columns name the destination columns, one per output column of Source in order; nil
	// means the table's own columns in order (INSERT without a column list, a new table
	// named after its query's columns).
	Columns []string
	// New is true when the statement creates the destination, so no catalog knows it yet;
	// Temp when it is a temporary table or view (never visible to a catalog scan).
	New, Temp bool
	// Target names a destination that is not a relation: the setting of set_config, the
	// sequence of setval, the channel of pg_notify ("" when computed).
	Target string
	// Source is a SELECT whose output columns are the written values, with its literals
	// replaced by $n (it holds no value from the statement). "" means the inspector could
	// not build one: the written values may derive from anything the statement reads.
	Source string
}

// valueFuncs are the functions whose value argument is stored somewhere a later statement
// can read it back without lineage: the index of that argument and of the destination name.
var valueFuncs = map[string][2]int{
	"set_config": {1, 0},
	"setval":     {1, 0},
	"pg_notify":  {1, 0},
}

// mayWriteValues is a cheap test on what the walk found: could the statement store values
// derived from what it reads? Only then is the tree walked again for write flows, so reads,
// transaction control and SET pay nothing (and everything else pays once per cached shape).
func (a *analyzer) mayWriteValues() bool {
	switch a.st.Category {
	case Read, Transaction, SessionCat:
		// set_config of an ordinary setting is a read that stores a value.
		return len(a.w.dml) > 0 || a.w.into || a.st.Setting != ""
	}
	return true
}

// writeFlows returns the write flows of a parsed statement, and whether one depended on a
// literal's value (a destination name).
func writeFlows(n *pg_query.Node) ([]WriteFlow, bool) {
	fw := &flowWalker{}
	fw.node(n)
	return fw.out, fw.literal
}

// flowScope is what expressions at one level of a statement can refer to: the CTEs of its
// WITH and the relations of its FROM (or an UPDATE's target and FROM, ...).
type flowScope struct {
	with *pg_query.WithClause
	from []*pg_query.Node
}

type flowWalker struct {
	scopes  []flowScope
	out     []WriteFlow
	depth   int
	literal bool
}

func (fw *flowWalker) push(with *pg_query.WithClause) int {
	fw.scopes = append(fw.scopes, flowScope{with: with})
	return len(fw.scopes) - 1
}

func (fw *flowWalker) pop(i int) { fw.scopes = fw.scopes[:i] }

// withs visits the CTE bodies of the innermost scope (DML inside them are flows too).
func (fw *flowWalker) withs(wc *pg_query.WithClause) {
	if wc == nil {
		return
	}
	for _, c := range wc.Ctes {
		if cte := c.GetCommonTableExpr(); cte != nil {
			fw.node(cte.Ctequery)
		}
	}
}

func (fw *flowWalker) node(n *pg_query.Node) {
	if n == nil || n.Node == nil {
		return
	}
	fw.depth++
	defer func() { fw.depth-- }()
	if fw.depth > maxDepth {
		return
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		fw.selectStmt(x.SelectStmt)
	case *pg_query.Node_InsertStmt:
		fw.insertStmt(x.InsertStmt)
	case *pg_query.Node_UpdateStmt:
		fw.updateStmt(x.UpdateStmt)
	case *pg_query.Node_DeleteStmt:
		s := x.DeleteStmt
		i := fw.push(s.WithClause)
		fw.withs(s.WithClause)
		fw.scopes[i].from = append([]*pg_query.Node{rangeVarNode(s.Relation)}, s.UsingClause...)
		fw.nodes(s.UsingClause)
		fw.node(s.WhereClause)
		fw.nodes(s.ReturningList)
		fw.pop(i)
	case *pg_query.Node_MergeStmt:
		fw.mergeStmt(x.MergeStmt)
	case *pg_query.Node_CreateTableAsStmt:
		fw.createTableAs(x.CreateTableAsStmt)
	case *pg_query.Node_ViewStmt:
		v := x.ViewStmt
		fw.out = append(fw.out, WriteFlow{Kind: "CREATE VIEW", Table: tableName(v.View), Columns: strList(v.Aliases),
			New: true, Temp: v.View.GetRelpersistence() == "t", Source: deparseQuery(v.Query, nil)})
		fw.node(v.Query)
	case *pg_query.Node_AlterTableStmt:
		fw.alterTable(x.AlterTableStmt)
	case *pg_query.Node_FuncCall:
		fw.funcCall(x.FuncCall)
	default:
		fw.generic(n.ProtoReflect())
	}
}

func (fw *flowWalker) nodes(ns []*pg_query.Node) {
	for _, n := range ns {
		fw.node(n)
	}
}

// generic descends into every message-valued field of m.
func (fw *flowWalker) generic(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				fw.message(l.Get(i).Message().Interface())
			}
			return true
		}
		fw.message(v.Message().Interface())
		return true
	})
}

func (fw *flowWalker) message(m proto.Message) {
	switch x := m.(type) {
	case *pg_query.Node:
		fw.node(x)
	case *pg_query.SelectStmt:
		fw.selectStmt(x)
	case *pg_query.FuncCall:
		fw.funcCall(x)
	default:
		fw.depth++
		if fw.depth <= maxDepth {
			fw.generic(m.ProtoReflect())
		}
		fw.depth--
	}
}

func (fw *flowWalker) selectStmt(s *pg_query.SelectStmt) {
	if s == nil {
		return
	}
	i := fw.push(s.WithClause)
	fw.withs(s.WithClause)
	fw.scopes[i].from = s.FromClause
	if s.IntoClause != nil {
		// SELECT ... INTO new_table: the query without its INTO is the source.
		q := proto.Clone(s).(*pg_query.SelectStmt)
		q.IntoClause = nil
		fw.out = append(fw.out, WriteFlow{Kind: "SELECT INTO", Table: tableName(s.IntoClause.Rel), Columns: strList(s.IntoClause.ColNames),
			New: true, Temp: s.IntoClause.Rel.GetRelpersistence() == "t", Source: fw.source(selectNode(q), nil, false)})
	}
	fw.nodes(s.TargetList)
	fw.nodes(s.FromClause)
	fw.node(s.WhereClause)
	fw.nodes(s.GroupClause)
	fw.node(s.HavingClause)
	fw.nodes(s.ValuesLists)
	fw.nodes(s.SortClause)
	fw.node(s.LimitOffset)
	fw.node(s.LimitCount)
	fw.selectStmt(s.Larg)
	fw.selectStmt(s.Rarg)
	fw.pop(i)
}

func (fw *flowWalker) insertStmt(s *pg_query.InsertStmt) {
	i := fw.push(s.WithClause)
	fw.withs(s.WithClause)
	table := tableName(s.Relation)
	var cols []string
	for _, c := range s.Cols {
		if rt := c.GetResTarget(); rt != nil {
			cols = append(cols, rt.Name)
		}
	}
	if insertReads(s.SelectStmt) {
		fw.out = append(fw.out, WriteFlow{Kind: "INSERT", Table: table, Columns: cols, Source: fw.source(s.SelectStmt, nil, false)})
	}
	fw.node(s.SelectStmt)
	if oc := s.OnConflictClause; oc != nil && len(oc.TargetList) > 0 {
		// EXCLUDED is the row the INSERT proposed: its columns hold what the INSERT writes
		// into the same columns of the table (checked as the INSERT's flow), so they count as
		// the table's own columns.
		excluded := proto.Clone(s.Relation).(*pg_query.RangeVar)
		excluded.Alias = &pg_query.Alias{Aliasname: "excluded"}
		fw.scopes[i].from = []*pg_query.Node{rangeVarNode(s.Relation), rangeVarNode(excluded)}
		fw.assignFlow("INSERT ON CONFLICT", table, oc.TargetList, fw.scopes[i].from)
		fw.nodes(oc.TargetList)
		fw.node(oc.WhereClause)
	}
	fw.scopes[i].from = []*pg_query.Node{rangeVarNode(s.Relation)}
	fw.nodes(s.ReturningList)
	fw.pop(i)
}

func (fw *flowWalker) updateStmt(s *pg_query.UpdateStmt) {
	i := fw.push(s.WithClause)
	fw.withs(s.WithClause)
	from := append([]*pg_query.Node{rangeVarNode(s.Relation)}, s.FromClause...)
	fw.scopes[i].from = from
	fw.assignFlow("UPDATE", tableName(s.Relation), s.TargetList, from)
	fw.nodes(s.TargetList)
	fw.nodes(s.FromClause)
	fw.node(s.WhereClause)
	fw.nodes(s.ReturningList)
	fw.pop(i)
}

func (fw *flowWalker) mergeStmt(s *pg_query.MergeStmt) {
	i := fw.push(s.WithClause)
	fw.withs(s.WithClause)
	from := []*pg_query.Node{rangeVarNode(s.Relation), s.SourceRelation}
	fw.scopes[i].from = from
	table := tableName(s.Relation)
	fw.node(s.SourceRelation)
	fw.node(s.JoinCondition)
	for _, c := range s.MergeWhenClauses {
		mw := c.GetMergeWhenClause()
		if mw == nil {
			continue
		}
		switch mw.CommandType {
		case pg_query.CmdType_CMD_UPDATE:
			fw.assignFlow("MERGE", table, mw.TargetList, from)
		case pg_query.CmdType_CMD_INSERT:
			var cols []string
			for _, t := range mw.TargetList {
				if rt := t.GetResTarget(); rt != nil {
					cols = append(cols, rt.Name)
				}
			}
			if len(mw.Values) > 0 && readsAnything(&pg_query.List{Items: mw.Values}) {
				fw.out = append(fw.out, WriteFlow{Kind: "MERGE", Table: table, Columns: cols, Source: fw.source(nil, targets(mw.Values), true, from...)})
			}
		}
		fw.node(mw.Condition)
		fw.nodes(mw.TargetList)
		fw.nodes(mw.Values)
	}
	fw.nodes(s.ReturningList)
	fw.pop(i)
}

// assignFlow records the flow of a SET list (UPDATE, ON CONFLICT DO UPDATE, MERGE ... UPDATE)
// whose expressions see the relations of from.
func (fw *flowWalker) assignFlow(kind, table string, list []*pg_query.Node, from []*pg_query.Node) {
	var cols []string
	var exprs []*pg_query.Node
	for _, t := range list {
		rt := t.GetResTarget()
		if rt == nil || !readsAnything(rt.Val) {
			continue
		}
		val := rt.Val
		if mar := val.GetMultiAssignRef(); mar != nil {
			val = multiAssignPart(mar)
		}
		cols = append(cols, rt.Name)
		exprs = append(exprs, val)
	}
	if len(exprs) == 0 {
		return
	}
	fw.out = append(fw.out, WriteFlow{Kind: kind, Table: table, Columns: cols, Source: fw.source(nil, targets(exprs), true, from...)})
}

// multiAssignPart is the part of SET (a, b) = source that goes to column colno: the matching
// item of a row constructor or of a sub-select's list, else the whole source.
func multiAssignPart(mar *pg_query.MultiAssignRef) *pg_query.Node {
	k := int(mar.Colno) - 1
	if row := mar.Source.GetRowExpr(); row != nil && k >= 0 && k < len(row.Args) {
		return row.Args[k]
	}
	if sl := mar.Source.GetSubLink(); sl != nil {
		if sel := sl.Subselect.GetSelectStmt(); sel != nil && sel.Op == pg_query.SetOperation_SETOP_NONE && k >= 0 && k < len(sel.TargetList) && len(sel.TargetList) == int(mar.Ncolumns) {
			one := proto.Clone(sel).(*pg_query.SelectStmt)
			one.TargetList = []*pg_query.Node{one.TargetList[k]}
			return &pg_query.Node{Node: &pg_query.Node_SubLink{SubLink: &pg_query.SubLink{SubLinkType: pg_query.SubLinkType_EXPR_SUBLINK, Subselect: selectNode(one)}}}
		}
	}
	return mar.Source
}

func (fw *flowWalker) createTableAs(s *pg_query.CreateTableAsStmt) {
	if s.Into == nil {
		fw.node(s.Query)
		return
	}
	kind := "CREATE TABLE AS"
	if s.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
		kind = "CREATE MATERIALIZED VIEW"
	}
	if !s.Into.SkipData {
		src := ""
		if s.Query.GetSelectStmt() != nil {
			src = fw.source(s.Query, nil, false)
		}
		// CREATE TABLE AS EXECUTE p: which query p runs is session state; Source stays "".
		fw.out = append(fw.out, WriteFlow{Kind: kind, Table: tableName(s.Into.Rel), Columns: strList(s.Into.ColNames),
			New: true, Temp: s.Into.Rel.GetRelpersistence() == "t", Source: src})
	}
	fw.node(s.Query)
}

// alterTable records ALTER TABLE ... ALTER COLUMN c TYPE t USING expr, ADD COLUMN c ...
// GENERATED ALWAYS AS (expr) STORED and ALTER COLUMN c SET EXPRESSION AS (expr): each stores,
// in c, values computed from the table's other columns.
func (fw *flowWalker) alterTable(s *pg_query.AlterTableStmt) {
	table := tableName(s.Relation)
	from := []*pg_query.Node{rangeVarNode(s.Relation)}
	for _, c := range s.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd == nil {
			continue
		}
		col, expr := cmd.Name, (*pg_query.Node)(nil)
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_AlterColumnType:
			expr = cmd.Def.GetColumnDef().GetRawDefault()
		case pg_query.AlterTableType_AT_AddColumn:
			if cd := cmd.Def.GetColumnDef(); cd != nil {
				col = cd.Colname
				for _, k := range cd.Constraints {
					if con := k.GetConstraint(); con != nil && con.Contype == pg_query.ConstrType_CONSTR_GENERATED {
						expr = con.RawExpr
					}
				}
			}
		case pg_query.AlterTableType_AT_SetExpression:
			expr = cmd.Def
		}
		if expr != nil && readsAnything(expr) {
			fw.out = append(fw.out, WriteFlow{Kind: "ALTER TABLE", Table: table, Columns: []string{col},
				Source: fw.source(nil, targets([]*pg_query.Node{expr}), true, from...)})
		}
	}
}

func (fw *flowWalker) funcCall(f *pg_query.FuncCall) {
	if f == nil {
		return
	}
	name, _ := strings.CutPrefix(funcName(f.Funcname), "pg_catalog.")
	if idx, ok := valueFuncs[name]; ok && idx[0] < len(f.Args) && readsAnything(f.Args[idx[0]]) {
		target := ""
		if idx[1] < len(f.Args) {
			if c := f.Args[idx[1]].GetAConst(); c != nil {
				fw.literal = true
				target = c.GetSval().GetSval()
			}
		}
		// The value may refer to the relations of every enclosing level (correlated).
		var from []*pg_query.Node
		for _, sc := range fw.scopes {
			from = append(from, sc.from...)
		}
		fw.out = append(fw.out, WriteFlow{Kind: name, Target: target, Source: fw.source(nil, targets(f.Args[idx[0]:idx[0]+1]), true, from...)})
	}
	fw.nodes(f.Args)
	fw.nodes(f.AggOrder)
	fw.node(f.AggFilter)
}

// source deparses the SELECT whose output columns are the written values: query itself (an
// INSERT's SELECT or VALUES, a CREATE TABLE AS query) or SELECT list FROM from, under the
// CTEs of every enclosing level (the statement's own, then those of the statements it sits
// in). withFrom is true when list's expressions see from.
func (fw *flowWalker) source(query *pg_query.Node, list []*pg_query.Node, withFrom bool, from ...*pg_query.Node) string {
	var ctes []*pg_query.Node
	recursive := false
	for _, sc := range fw.scopes {
		if sc.with != nil {
			ctes = append(ctes, sc.with.Ctes...)
			recursive = recursive || sc.with.Recursive
		}
	}
	var with *pg_query.WithClause
	if len(ctes) > 0 {
		with = &pg_query.WithClause{Ctes: ctes, Recursive: recursive}
	}
	if query != nil {
		return deparseQuery(query, with)
	}
	sel := &pg_query.SelectStmt{TargetList: list, WithClause: with}
	if withFrom {
		sel.FromClause = from
	}
	return deparseSelect(sel)
}

// deparseQuery returns the text of query (a SELECT), wrapped as SELECT * FROM (query) under
// with when there are enclosing CTEs.
func deparseQuery(query *pg_query.Node, with *pg_query.WithClause) string {
	sel := query.GetSelectStmt()
	if sel == nil {
		return ""
	}
	if with != nil {
		sel = &pg_query.SelectStmt{
			WithClause: with,
			TargetList: []*pg_query.Node{{Node: &pg_query.Node_ResTarget{ResTarget: &pg_query.ResTarget{
				Val: &pg_query.Node{Node: &pg_query.Node_ColumnRef{ColumnRef: &pg_query.ColumnRef{Fields: []*pg_query.Node{{Node: &pg_query.Node_AStar{AStar: &pg_query.A_Star{}}}}}}},
			}}}},
			FromClause: []*pg_query.Node{{Node: &pg_query.Node_RangeSubselect{RangeSubselect: &pg_query.RangeSubselect{
				Subquery: query, Alias: &pg_query.Alias{Aliasname: "gatehouse_written"},
			}}}},
		}
	}
	return deparseSelect(sel)
}

// deparseSelect turns sel into text with its literals replaced by $n; "" when it cannot.
func deparseSelect(sel *pg_query.SelectStmt) string {
	text, err := pg_query.Deparse(&pg_query.ParseResult{Version: treeVersion(), Stmts: []*pg_query.RawStmt{{Stmt: selectNode(sel)}}})
	if err != nil {
		return ""
	}
	if n, err := pg_query.Normalize(text); err == nil {
		return n
	}
	return ""
}

// treeVersion is the parse-tree version the deparser expects (that of the linked parser).
var treeVersion = sync.OnceValue(func() int32 {
	r, err := pg_query.Parse("SELECT")
	if err != nil {
		return 0
	}
	return r.Version
})

func selectNode(s *pg_query.SelectStmt) *pg_query.Node {
	return &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: s}}
}

func rangeVarNode(rv *pg_query.RangeVar) *pg_query.Node {
	return &pg_query.Node{Node: &pg_query.Node_RangeVar{RangeVar: rv}}
}

func targets(exprs []*pg_query.Node) []*pg_query.Node {
	out := make([]*pg_query.Node, len(exprs))
	for i, e := range exprs {
		out[i] = &pg_query.Node{Node: &pg_query.Node_ResTarget{ResTarget: &pg_query.ResTarget{Val: e}}}
	}
	return out
}

func strList(ns []*pg_query.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.GetString_().GetSval())
	}
	return out
}

// insertReads reports whether an INSERT's rows can carry data from the database: any query
// can, a VALUES list only when one of its items reads something.
func insertReads(q *pg_query.Node) bool {
	sel := q.GetSelectStmt()
	if sel == nil {
		return q != nil
	}
	if len(sel.ValuesLists) > 0 && sel.WithClause == nil && sel.Op == pg_query.SetOperation_SETOP_NONE {
		return readsAnything(&pg_query.List{Items: sel.ValuesLists})
	}
	return true
}

// readsAnything reports whether a value expression can carry data from the database: it
// refers to a column, holds a sub-query, or reads a relation. Constants, parameters and
// functions of them cannot, so a plain INSERT ... VALUES ($1, 'x') has no flow.
func readsAnything(m proto.Message) bool {
	found := false
	var visit func(m protoreflect.Message, depth int)
	visit = func(m protoreflect.Message, depth int) {
		if found || depth > maxDepth {
			found = found || depth > maxDepth
			return
		}
		switch m.Interface().(type) {
		case *pg_query.ColumnRef, *pg_query.SubLink, *pg_query.RangeVar, *pg_query.SelectStmt, *pg_query.RangeFunction:
			found = true
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
				return true
			}
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len() && !found; i++ {
					visit(l.Get(i).Message(), depth+1)
				}
				return !found
			}
			visit(v.Message(), depth+1)
			return !found
		})
	}
	if m != nil {
		visit(m.ProtoReflect(), 0)
	}
	return found
}
