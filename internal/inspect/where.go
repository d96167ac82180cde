package inspect

import (
	"strconv"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// trivialWhere reports whether a WHERE clause does not narrow by the rows' data: constant
// true (WHERE true, WHERE 1=1, WHERE 'a'='a', WHERE true OR x > 0), a column compared with
// itself (WHERE id = id), or a condition that mentions no column at all (WHERE $1,
// WHERE (SELECT true), WHERE EXISTS (SELECT 1)), whose value is the same for every row and
// so either changes all of them or none. It is a guard against the obvious ways to satisfy
// a "must have a WHERE" rule, not a proof: a WHERE such as id > 0 that happens to match
// every row is not detected.
//
// literal is set when the answer depended on the value of a constant, so the facts of this
// statement must not be shared with a statement that differs only in its constants.
func trivialWhere(n *pg_query.Node, literal *bool) bool {
	if n == nil {
		return false
	}
	if hasConst(n) {
		*literal = true
	}
	if v, ok := constBool(n, 0); ok {
		return v // constant false changes no row: not trivial
	}
	return !mentionsColumn(n.ProtoReflect(), 0)
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

// hasConst reports whether constBool's answer for n can depend on the value of a constant.
func hasConst(n *pg_query.Node) bool {
	if n == nil {
		return false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		return true
	case *pg_query.Node_TypeCast:
		return hasConst(x.TypeCast.Arg)
	case *pg_query.Node_BoolExpr:
		for _, a := range x.BoolExpr.Args {
			if hasConst(a) {
				return true
			}
		}
	case *pg_query.Node_AExpr:
		// compare decides only when both sides are constants (col = 42 is never decided)
		return x.AExpr.Lexpr.GetAConst() != nil && x.AExpr.Rexpr.GetAConst() != nil
	case *pg_query.Node_NullTest:
		return hasConst(x.NullTest.Arg)
	case *pg_query.Node_BooleanTest:
		return hasConst(x.BooleanTest.Arg)
	}
	return false
}

// constBool evaluates n when its truth does not depend on the row.
func constBool(n *pg_query.Node, depth int) (val, known bool) {
	if n == nil || depth > 64 {
		return false, false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		if x.AConst.Isnull {
			return false, true
		}
		if b, ok := x.AConst.Val.(*pg_query.A_Const_Boolval); ok {
			return b.Boolval.Boolval, true
		}
	case *pg_query.Node_TypeCast:
		if isBoolType(x.TypeCast.TypeName) {
			if v, ok := constBool(x.TypeCast.Arg, depth+1); ok {
				return v, true
			}
			if c := x.TypeCast.Arg.GetAConst(); c != nil {
				return boolLiteral(x.TypeCast.Arg)
			}
		}
	case *pg_query.Node_BoolExpr:
		return boolExpr(x.BoolExpr, depth)
	case *pg_query.Node_AExpr:
		return compare(x.AExpr)
	case *pg_query.Node_NullTest:
		if c := x.NullTest.Arg.GetAConst(); c != nil {
			isNull := c.Isnull
			if x.NullTest.Nulltesttype == pg_query.NullTestType_IS_NULL {
				return isNull, true
			}
			return !isNull, true
		}
	case *pg_query.Node_BooleanTest:
		v, ok := constBool(x.BooleanTest.Arg, depth+1)
		if !ok {
			return false, false
		}
		switch x.BooleanTest.Booltesttype {
		case pg_query.BoolTestType_IS_TRUE, pg_query.BoolTestType_IS_NOT_FALSE:
			return v, true
		case pg_query.BoolTestType_IS_FALSE, pg_query.BoolTestType_IS_NOT_TRUE:
			return !v, true
		}
	}
	return false, false
}

func boolExpr(b *pg_query.BoolExpr, depth int) (val, known bool) {
	switch b.Boolop {
	case pg_query.BoolExprType_NOT_EXPR:
		if len(b.Args) == 1 {
			if v, ok := constBool(b.Args[0], depth+1); ok {
				return !v, true
			}
		}
	case pg_query.BoolExprType_AND_EXPR:
		all := true
		for _, a := range b.Args {
			v, ok := constBool(a, depth+1)
			if ok && !v {
				return false, true
			}
			all = all && ok
		}
		return true, all
	case pg_query.BoolExprType_OR_EXPR:
		all := true
		for _, a := range b.Args {
			v, ok := constBool(a, depth+1)
			if ok && v {
				return true, true
			}
			all = all && ok
		}
		return false, all
	}
	return false, false
}

func isBoolType(t *pg_query.TypeName) bool {
	if t == nil || len(t.Names) == 0 {
		return false
	}
	s := t.Names[len(t.Names)-1].GetString_()
	return s != nil && (s.Sval == "bool" || s.Sval == "boolean")
}

// compare evaluates a comparison of two constants, or of a column with itself.
func compare(e *pg_query.A_Expr) (val, known bool) {
	if e.Kind != pg_query.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 {
		return false, false
	}
	op := e.Name[0].GetString_().GetSval()
	if l, r := e.Lexpr.GetColumnRef(), e.Rexpr.GetColumnRef(); l != nil && r != nil {
		if sameColumn(l, r) && (op == "=" || op == "<=" || op == ">=") {
			return true, true
		}
		return false, false
	}
	lc, rc := e.Lexpr.GetAConst(), e.Rexpr.GetAConst()
	if lc == nil || rc == nil || lc.Isnull || rc.Isnull {
		return false, false
	}
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
	// Only equality: ordering of strings depends on the collation.
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
