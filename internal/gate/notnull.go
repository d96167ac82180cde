package gate

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// resolveNotNull sets WhereTrivial on statement i of c when one of its
// WhereTrivialIfNotNull conditions holds in the catalog. The statement and the slice
// holding it may be shared through the inspector's cache, so both are copied first.
func (g *Gate) resolveNotNull(ctx context.Context, s *Session, c *Check, i int) *inspect.Statement {
	st := c.Statements[i]
	if st.WhereTrivial || len(st.WhereTrivialIfNotNull) == 0 || s == nil || s.Target == nil {
		return st
	}
	cat := g.Catalog
	if cat == nil {
		return st
	}
	for _, cond := range st.WhereTrivialIfNotNull {
		if cat.NotNull(ctx, catalogKey(s), cond.Table, cond.Columns) {
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
