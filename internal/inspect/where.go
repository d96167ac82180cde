package inspect

import (
	"strconv"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// trivialWhere reports whether a WHERE clause (or MERGE's ON condition) does not narrow by
// the rows' data, so a "must have a WHERE" rule should treat it like no WHERE at all:
//
//   - it is TRUE for every row whatever the columns hold: WHERE true, WHERE 1=1,
//     WHERE id = 1 OR true, WHERE coalesce(true, id = 1), WHERE greatest(true, id = 1),
//     WHERE CASE WHEN id = 1 THEN true ELSE true END, WHERE (id = 1) IS NOT NULL OR true,
//     and a column compared with itself (WHERE id = id);
//   - it mentions no column at all (WHERE $1, WHERE (SELECT true), WHERE EXISTS (SELECT 1)),
//     so its value is the same for every row and it changes all of them or none — unless it
//     folds to a constant FALSE or NULL, which changes no row;
//   - it is TRUE for every row for some value of its row-invariant parts (parameters,
//     sub-queries and calls that mention no column): WHERE $1 OR id = 7 deletes everything
//     when $1 is bound to true, and the gate decides on the text, before any value is bound.
//
// It is a guard against the ways to satisfy a "must have a WHERE" rule without narrowing,
// not a proof: a WHERE such as id > 0 that happens to match every row is not detected.
//
// When target is not nil and the clause is not trivial, ifNotNull lists the target's
// columns (unqualified names) whose being NOT NULL would make it trivial (WHERE id IS NOT
// NULL on a primary key): the inspector does not know the catalog, the gate does.
//
// literal is set when the answer depended on the value of a constant, so the facts of this
// statement must not be shared with a statement that differs only in its constants.
func trivialWhere(n *pg_query.Node, target *pg_query.RangeVar, literal *bool) (trivial bool, ifNotNull []string) {
	if n == nil {
		return false, nil
	}
	f := &folder{target: target}
	defer func() { *literal = *literal || f.literal }()
	if !mentionsColumn(n.ProtoReflect(), 0) {
		// The same value for every row: all or nothing. Only a value that cannot be TRUE
		// (WHERE false, WHERE NULL, WHERE 1 = 2) changes nothing.
		return f.eval(n, 0)&(vT|vX) != 0, nil
	}
	if f.alwaysTrue(n) {
		return true, nil
	}
	if target == nil {
		return false, nil
	}
	g := &folder{target: target, assume: true}
	ok := g.alwaysTrue(n)
	f.literal = f.literal || g.literal
	if ok && len(g.assumed) > 0 {
		return false, g.assumed
	}
	return false, nil
}

// tv is the set of values an expression can take over the rows of a table (and, for its
// row-invariant parts, over the values those can have): PostgreSQL's three truth values
// plus vX, any value that is not NULL and not known to be a boolean. Every rule below
// over-approximates: the real value is always in the set.
type tv uint8

const (
	vT tv = 1 << iota
	vF
	vN
	vX
	vAll = vT | vF | vN | vX
)

// one is the set holding just the boolean b.
func one(b bool) tv {
	if b {
		return vT
	}
	return vF
}

// maxVars bounds the row-invariant unknowns whose every combination of values is tried
// (4^maxVars evaluations); a WHERE with more is called trivial (fail closed).
const maxVars = 5

// maxSteps bounds the nodes visited while trying combinations; past it the WHERE is called
// trivial (fail closed).
const maxSteps = 200_000

// folder is a small constant folder for boolean expressions over sets of values (tv).
type folder struct {
	target  *pg_query.RangeVar
	assume  bool                  // the target's columns are assumed NOT NULL
	assumed []string              // the target columns the assumption was used for
	vars    []*pg_query.Node      // row-invariant sub-expressions of unknown value
	env     map[*pg_query.Node]tv // one value per var, while trying combinations
	seen    map[*pg_query.Node]bool
	steps   int
	literal bool // a constant's value was read
}

// alwaysTrue reports whether n is TRUE for every row for some value of its row-invariant
// parts.
func (f *folder) alwaysTrue(n *pg_query.Node) bool {
	if boolCtx(f.eval(n, 0)) == vT {
		return true
	}
	if len(f.vars) == 0 {
		return false
	}
	if len(f.vars) > maxVars {
		return true
	}
	vals := [4]tv{vT, vF, vN, vX}
	f.env = make(map[*pg_query.Node]tv, len(f.vars))
	combos := 1
	for range f.vars {
		combos *= len(vals)
	}
	for c := range combos {
		k := c
		for _, v := range f.vars {
			f.env[v] = vals[k%len(vals)]
			k /= len(vals)
		}
		if boolCtx(f.eval(n, 0)) == vT {
			return true
		}
		if f.steps > maxSteps {
			return true
		}
	}
	return false
}

// boolCtx is v where PostgreSQL needs a boolean (WHERE, AND, OR, NOT, IS TRUE, CASE WHEN):
// a value there is a boolean or the statement fails, so vX (an untyped string literal read
// both ways, or a spurious combination of unknowns) drops out.
func boolCtx(v tv) tv {
	if b := v &^ vX; b != 0 {
		return b
	}
	return vT | vF
}

// variable is a row-invariant sub-expression whose value the folder cannot compute.
func (f *folder) variable(n *pg_query.Node) tv {
	if f.env != nil {
		if v, ok := f.env[n]; ok {
			return v
		}
		return vAll
	}
	if f.seen == nil {
		f.seen = map[*pg_query.Node]bool{}
	}
	if !f.seen[n] {
		f.seen[n] = true
		f.vars = append(f.vars, n)
	}
	return vAll
}

// opaque is the value of an expression the folder does not evaluate: anything when it
// depends on the row, else one unknown value shared by every row.
func (f *folder) opaque(n *pg_query.Node) tv {
	if mentionsColumn(n.ProtoReflect(), 0) {
		return vAll
	}
	return f.variable(n)
}

func (f *folder) eval(n *pg_query.Node, depth int) tv {
	if n == nil {
		return vAll
	}
	f.steps++
	if depth > 64 {
		return f.opaque(n)
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		f.literal = true
		if x.AConst.Isnull {
			return vN
		}
		switch v := x.AConst.Val.(type) {
		case *pg_query.A_Const_Boolval:
			return one(v.Boolval.Boolval)
		case *pg_query.A_Const_Sval:
			// An untyped literal: a boolean where one is expected, else a string.
			if b, ok := boolWord(v.Sval.Sval); ok {
				return one(b) | vX
			}
		}
		return vX
	case *pg_query.Node_TypeCast:
		return f.cast(x.TypeCast, depth)
	case *pg_query.Node_ColumnRef:
		if f.assume {
			if c := f.targetColumn(x.ColumnRef); c != "" {
				f.assumed = appendNew(f.assumed, c)
				return vT | vF | vX
			}
		}
		return vAll
	case *pg_query.Node_ParamRef:
		return f.variable(n)
	case *pg_query.Node_BoolExpr:
		return f.boolExpr(x.BoolExpr, depth)
	case *pg_query.Node_BooleanTest:
		return booleanTest(boolCtx(f.eval(x.BooleanTest.Arg, depth+1)), x.BooleanTest.Booltesttype)
	case *pg_query.Node_NullTest:
		v := f.eval(x.NullTest.Arg, depth+1)
		isNull, notNull := v&vN != 0, v&^vN != 0
		if x.NullTest.Nulltesttype == pg_query.NullTestType_IS_NOT_NULL {
			isNull, notNull = notNull, isNull
		}
		var out tv
		if isNull {
			out |= vT
		}
		if notNull {
			out |= vF
		}
		return out
	case *pg_query.Node_CoalesceExpr:
		// The first argument that is not NULL.
		var out tv
		for _, a := range x.CoalesceExpr.Args {
			v := f.eval(a, depth+1)
			out |= v &^ vN
			if v&vN == 0 {
				return out
			}
		}
		return out | vN
	case *pg_query.Node_MinMaxExpr:
		return f.minMax(x.MinMaxExpr, depth)
	case *pg_query.Node_CaseExpr:
		return f.caseExpr(x.CaseExpr, depth)
	case *pg_query.Node_AExpr:
		return f.aExpr(n, x.AExpr, depth)
	}
	return f.opaque(n)
}

func (f *folder) cast(c *pg_query.TypeCast, depth int) tv {
	if !isBoolType(c.TypeName) {
		// A cast keeps NULL NULL and makes anything else some non-boolean value.
		v := f.eval(c.Arg, depth+1)
		out := v & vN
		if v&^vN != 0 {
			out |= vX
		}
		return out
	}
	if k := c.Arg.GetAConst(); k != nil {
		f.literal = true
		if k.Isnull {
			return vN
		}
		if b, ok := boolLiteral(c.Arg); ok {
			return one(b)
		}
		return vT | vF
	}
	v := f.eval(c.Arg, depth+1)
	if v&vX != 0 {
		v = v&^vX | vT | vF
	}
	return v
}

func (f *folder) boolExpr(b *pg_query.BoolExpr, depth int) tv {
	switch b.Boolop {
	case pg_query.BoolExprType_NOT_EXPR:
		if len(b.Args) != 1 {
			return vT | vF | vN
		}
		return mapTV(boolCtx(f.eval(b.Args[0], depth+1)), func(x tv) tv {
			switch x {
			case vT:
				return vF
			case vF:
				return vT
			}
			return vN
		})
	case pg_query.BoolExprType_AND_EXPR, pg_query.BoolExprType_OR_EXPR:
		and := b.Boolop == pg_query.BoolExprType_AND_EXPR
		var out tv
		for i, a := range b.Args {
			v := boolCtx(f.eval(a, depth+1))
			if i == 0 {
				out = v
				continue
			}
			out = combine(out, v, and)
		}
		return out
	}
	return vT | vF | vN
}

// combine is AND (and = true) or OR of every pair of values from a and b, in SQL's
// three-valued logic.
func combine(a, b tv, and bool) tv {
	var out tv
	for _, x := range []tv{vT, vF, vN} {
		if a&x == 0 {
			continue
		}
		for _, y := range []tv{vT, vF, vN} {
			if b&y == 0 {
				continue
			}
			switch {
			case and && (x == vF || y == vF):
				out |= vF
			case !and && (x == vT || y == vT):
				out |= vT
			case x == vN || y == vN:
				out |= vN
			default:
				out |= one(and)
			}
		}
	}
	return out
}

// mapTV applies g to each of the values T, F, N in v.
func mapTV(v tv, g func(tv) tv) tv {
	var out tv
	for _, x := range []tv{vT, vF, vN} {
		if v&x != 0 {
			out |= g(x)
		}
	}
	return out
}

func booleanTest(v tv, t pg_query.BoolTestType) tv {
	var yes tv // the values for which the test is true
	switch t {
	case pg_query.BoolTestType_IS_TRUE:
		yes = vT
	case pg_query.BoolTestType_IS_NOT_TRUE:
		yes = vF | vN
	case pg_query.BoolTestType_IS_FALSE:
		yes = vF
	case pg_query.BoolTestType_IS_NOT_FALSE:
		yes = vT | vN
	case pg_query.BoolTestType_IS_UNKNOWN:
		yes = vN
	case pg_query.BoolTestType_IS_NOT_UNKNOWN:
		yes = vT | vF
	default:
		return vT | vF
	}
	var out tv
	if v&yes != 0 {
		out |= vT
	}
	if v&^yes != 0 {
		out |= vF
	}
	return out
}

// minMax is GREATEST / LEAST, which skip NULL arguments (NULL only when all are NULL). For
// booleans false < true, so GREATEST(true, x) is true and LEAST(false, x) false whatever x.
func (f *folder) minMax(m *pg_query.MinMaxExpr, depth int) tv {
	decisive := vT
	if m.Op == pg_query.MinMaxOp_IS_LEAST {
		decisive = vF
	} else if m.Op != pg_query.MinMaxOp_IS_GREATEST {
		return f.opaque(&pg_query.Node{Node: &pg_query.Node_MinMaxExpr{MinMaxExpr: m}})
	}
	var out tv
	allMayBeNull := true
	for _, a := range m.Args {
		v := f.eval(a, depth+1)
		if v == decisive {
			return decisive
		}
		out |= v &^ vN
		allMayBeNull = allMayBeNull && v&vN != 0
	}
	if allMayBeNull {
		out |= vN
	}
	return out
}

func (f *folder) caseExpr(c *pg_query.CaseExpr, depth int) tv {
	var out tv
	for _, w := range c.Args {
		cw := w.GetCaseWhen()
		if cw == nil {
			return f.opaque(&pg_query.Node{Node: &pg_query.Node_CaseExpr{CaseExpr: c}})
		}
		cond := vT | vF
		if c.Arg == nil {
			cond = boolCtx(f.eval(cw.Expr, depth+1))
		}
		if cond&vT != 0 {
			out |= f.eval(cw.Result, depth+1)
		}
		if cond == vT {
			return out // later branches and ELSE are never reached
		}
	}
	if c.Defresult == nil {
		return out | vN
	}
	return out | f.eval(c.Defresult, depth+1)
}

func (f *folder) aExpr(n *pg_query.Node, e *pg_query.A_Expr, depth int) tv {
	if e.Kind == pg_query.A_Expr_Kind_AEXPR_NULLIF {
		// NULLIF(a, b): NULL when a = b, else a.
		a := f.eval(e.Lexpr, depth+1)
		b := f.eval(e.Rexpr, depth+1)
		if (a == vT || a == vF) && (b == vN || ((b == vT || b == vF) && a != b)) {
			return a
		}
		return a | vN
	}
	if e.Kind != pg_query.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 {
		return f.opaque(n)
	}
	op := e.Name[0].GetString_().GetSval()
	if !comparison[op] {
		return f.opaque(n)
	}
	if l, r := e.Lexpr.GetColumnRef(), e.Rexpr.GetColumnRef(); l != nil && r != nil && sameColumn(l, r) && (op == "=" || op == "<=" || op == ">=") {
		// A column compared with itself: every row but those where it is NULL. Treated as
		// trivial whatever the column's nullability (no legitimate statement writes it).
		return vT
	}
	if mentionsColumn(n.ProtoReflect(), 0) {
		return vT | vF | vN
	}
	if lc, rc := e.Lexpr.GetAConst(), e.Rexpr.GetAConst(); lc != nil && rc != nil {
		f.literal = true
		if lc.Isnull || rc.Isnull {
			return vN
		}
		if v, ok := compareConsts(op, lc, rc); ok {
			return one(v)
		}
		return f.variable(n)
	}
	if op == "=" || op == "<>" || op == "!=" {
		// Booleans compared: fold when both sides are known.
		a, b := f.eval(e.Lexpr, depth+1), f.eval(e.Rexpr, depth+1)
		single := func(v tv) bool { return v == vT || v == vF || v == vN }
		if single(a) && single(b) {
			if a == vN || b == vN {
				return vN
			}
			return one((a == b) == (op == "="))
		}
	}
	return f.variable(n)
}

// comparison are the operators whose result is a boolean or NULL for any operand types.
var comparison = map[string]bool{"=": true, "<>": true, "!=": true, "<": true, ">": true, "<=": true, ">=": true}

// targetColumn is the column name of c when c names a column of the statement's target
// table: unqualified, or qualified by the target's name or alias. An unqualified name may
// belong to another table of USING / FROM; the gate checks the target has the column (if
// both have it, PostgreSQL refuses the reference as ambiguous).
func (f *folder) targetColumn(c *pg_query.ColumnRef) string {
	if f.target == nil {
		return ""
	}
	switch len(c.Fields) {
	case 1:
		if s := c.Fields[0].GetString_(); s != nil {
			return s.Sval
		}
	case 2:
		q, s := c.Fields[0].GetString_(), c.Fields[1].GetString_()
		if q == nil || s == nil {
			return ""
		}
		name := f.target.Relname
		if f.target.Alias != nil && f.target.Alias.Aliasname != "" {
			name = f.target.Alias.Aliasname
		}
		if q.Sval == name {
			return s.Sval
		}
	}
	return ""
}

func appendNew(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// mentionsColumn reports whether a parse tree refers to any column, anywhere inside it
// (subqueries included). Very deep trees are assumed to, so nothing is called trivial by
// giving up.
func mentionsColumn(m protoreflect.Message, depth int) bool {
	if depth > 100 {
		return true
	}
	if m.Descriptor().Name() == "ColumnRef" {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if mentionsColumn(l.Get(i).Message(), depth+1) {
					found = true
					return false
				}
			}
			return true
		}
		if fd.IsMap() {
			return true
		}
		if mentionsColumn(v.Message(), depth+1) {
			found = true
			return false
		}
		return true
	})
	return found
}

func isBoolType(t *pg_query.TypeName) bool {
	if t == nil || len(t.Names) == 0 {
		return false
	}
	s := t.Names[len(t.Names)-1].GetString_()
	return s != nil && (s.Sval == "bool" || s.Sval == "boolean")
}

// compareConsts evaluates a comparison of two non-NULL constants when their types make the
// answer certain: numbers with numbers, and equality of strings (ordering of strings
// depends on the collation).
func compareConsts(op string, lc, rc *pg_query.A_Const) (val, known bool) {
	if lf, ok := numeric(lc); ok {
		rf, ok := numeric(rc)
		if !ok {
			return false, false
		}
		switch op {
		case "=":
			return lf == rf, true
		case "<>", "!=":
			return lf != rf, true
		case "<":
			return lf < rf, true
		case ">":
			return lf > rf, true
		case "<=":
			return lf <= rf, true
		case ">=":
			return lf >= rf, true
		}
		return false, false
	}
	ls, lok := lc.Val.(*pg_query.A_Const_Sval)
	rs, rok := rc.Val.(*pg_query.A_Const_Sval)
	if !lok || !rok {
		return false, false
	}
	switch op {
	case "=":
		return ls.Sval.Sval == rs.Sval.Sval, true
	case "<>", "!=":
		return ls.Sval.Sval != rs.Sval.Sval, true
	}
	return false, false
}

func numeric(c *pg_query.A_Const) (float64, bool) {
	switch v := c.Val.(type) {
	case *pg_query.A_Const_Ival:
		return float64(v.Ival.Ival), true
	case *pg_query.A_Const_Fval:
		f, err := strconv.ParseFloat(v.Fval.Fval, 64)
		return f, err == nil
	}
	return 0, false
}

func sameColumn(a, b *pg_query.ColumnRef) bool {
	if len(a.Fields) != len(b.Fields) {
		return false
	}
	for i := range a.Fields {
		as, bs := a.Fields[i].GetString_(), b.Fields[i].GetString_()
		if as == nil || bs == nil || as.Sval != bs.Sval {
			return false
		}
	}
	return true
}
