package gate

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// NotNullCatalog is the optional part of a Catalog that knows which columns are NOT NULL.
// The inspector cannot tell whether DELETE FROM t WHERE id IS NOT NULL restricts anything
// (it reports the condition in Statement.WhereTrivialIfNotNull); with this the gate can,
// so "must have a narrowing WHERE" rules see it as the mass delete it is.
type NotNullCatalog interface {
	// NotNull reports whether every one of columns of table (as the parser names it) is
	// NOT NULL in target. Unknown tables or columns are not.
	NotNull(ctx context.Context, target, table string, columns []string) bool
}

// resolveNotNull sets WhereTrivial on statement i of c when one of its
// WhereTrivialIfNotNull conditions holds in the catalog. The statement and the slice
// holding it may be shared through the inspector's cache, so both are copied first.
func (g *Gate) resolveNotNull(ctx context.Context, s *Session, c *Check, i int) *inspect.Statement {
	st := c.Statements[i]
	if st.WhereTrivial || len(st.WhereTrivialIfNotNull) == 0 || s == nil || s.Target == nil {
		return st
	}
	cat, ok := g.Catalog.(NotNullCatalog)
	if !ok {
		return st
	}
	for _, cond := range st.WhereTrivialIfNotNull {
		if cat.NotNull(ctx, s.Target.Name, cond.Table, cond.Columns) {
			cp := *st
			cp.WhereTrivial = true
			cp.Notes = append(slices.Clip(cp.Notes), "the WHERE clause only tests NOT NULL columns of "+cond.Table+" for NULL: it restricts nothing")
			c.Statements = slices.Clone(c.Statements)
			c.Statements[i] = &cp
			return &cp
		}
	}
	return st
}
