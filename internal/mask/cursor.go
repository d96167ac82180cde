package mask

import (
	"context"
	"strings"
	"sync"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/gatehouse/gatehouse/internal/gate"
)

// cursors remembers the query of each open cursor per session, because a FETCH's result
// columns carry no table OID for expressions and the FETCH text says nothing about them:
// the lineage must come from the DECLARE.
type cursors struct {
	mu  sync.Mutex
	max int
	m   map[cursorKey]string
}

type cursorKey struct{ session, name string }

// hasPrefixFold reports whether the statement s starts with keyword prefix, after blanks,
// parentheses and comments.
func hasPrefixFold(s, prefix string) bool {
	for {
		s = strings.TrimLeft(s, " \t\r\n\f(")
		switch {
		case strings.HasPrefix(s, "--"):
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return false
			}
			s = s[i+1:]
			continue
		case strings.HasPrefix(s, "/*"):
			i := strings.Index(s, "*/")
			if i < 0 {
				return false
			}
			s = s[i+2:]
			continue
		}
		return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
	}
}

// Observe lets the planner see every allowed statement before it is forwarded, so it can
// remember cursor declarations (DECLARE ... CURSOR FOR) for the FETCHes that follow and the
// session's temporary tables (see tempTables). The gate calls it from Check; it is cheap
// for every other statement.
func (p *Planner) Observe(ctx context.Context, s *gate.Session, c *gate.Check) {
	if s == nil || c == nil {
		return
	}
	for _, st := range c.Statements {
		if st == nil {
			continue
		}
		switch {
		case hasPrefixFold(st.Text, "CREATE") && strings.Contains(st.Kind, "TABLE") || hasPrefixFold(st.Text, "DROP"):
			if tree, err := pg.Parse(st.Text); err == nil {
				p.temps.observe(s.ID, tree, p.snapshot(ctx, s))
			}
		case hasPrefixFold(st.Text, "DECLARE"):
			tree, err := pg.Parse(st.Text)
			if err != nil || len(tree.Stmts) != 1 {
				continue
			}
			if d := tree.Stmts[0].Stmt.GetDeclareCursorStmt(); d != nil {
				p.cursors.put(cursorKey{s.ID, d.Portalname}, st.Text)
			}
		case hasPrefixFold(st.Text, "CLOSE"):
			tree, err := pg.Parse(st.Text)
			if err != nil || len(tree.Stmts) != 1 {
				continue
			}
			if cl := tree.Stmts[0].Stmt.GetClosePortalStmt(); cl != nil {
				if cl.Portalname == "" {
					p.Forget(s.ID)
				} else {
					p.cursors.del(cursorKey{s.ID, cl.Portalname})
				}
			}
		}
	}
}

// Forget drops what the planner remembers of a session; the gate calls it when the session
// ends.
func (p *Planner) Forget(sessionID string) {
	p.temps.forget(sessionID)
	p.cursors.mu.Lock()
	defer p.cursors.mu.Unlock()
	for k := range p.cursors.m {
		if k.session == sessionID {
			delete(p.cursors.m, k)
		}
	}
}

func (c *cursors) put(k cursorKey, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[cursorKey]string)
	}
	if len(c.m) >= c.max {
		clear(c.m) // bounded: a flood of cursors falls back to the value detectors
	}
	c.m[k] = text
}

func (c *cursors) del(k cursorKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// declaration returns the DECLARE text of the cursor a FETCH reads, or "".
func (c *cursors) declaration(session, fetch string) string {
	if !hasPrefixFold(fetch, "FETCH") {
		return ""
	}
	tree, err := pg.Parse(fetch)
	if err != nil || len(tree.Stmts) != 1 {
		return ""
	}
	f := tree.Stmts[0].Stmt.GetFetchStmt()
	if f == nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[cursorKey{session, f.Portalname}]
}
