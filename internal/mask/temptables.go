package mask

import (
	"slices"
	"strconv"
	"sync"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/lineage"
)

// tempTables remembers the temporary tables each session creates with a column list, because
// the catalog is scanned from a connection of its own and never sees another session's
// temporary tables: without their columns, a `*` or a whole-row reference over one could
// only be masked as a whole. Their columns are then classed by name, as any column the
// catalog has not seen. Only names the catalog does not know are resolved this way, so a
// definition a rolled-back transaction left behind never hides a catalogued table.
type tempTables struct {
	mu  sync.Mutex
	max int
	m   map[string]*sessionTables // session ID →
}

type sessionTables struct {
	version int
	tables  map[string][]string // table name → columns in order
}

// observe records a CREATE TEMP TABLE with a column list (after the columns of the tables
// it inherits from, when those are known) or AS a query whose columns are known, and
// forgets tables a DROP TABLE names. snap resolves the tables named in them.
func (t *tempTables) observe(session string, tree *pg.ParseResult, snap *classify.Snapshot) {
	resolve, _ := t.resolver(session, snap)
	for _, raw := range tree.Stmts {
		switch n := raw.Stmt.GetNode().(type) {
		case *pg.Node_CreateStmt:
			cs := n.CreateStmt
			rv := cs.Relation
			if rv == nil || rv.Relpersistence != "t" || cs.OfTypename != nil {
				continue
			}
			var cols []string
			known := true
			for _, in := range cs.InhRelations {
				p := in.GetRangeVar()
				if p == nil {
					known = false
					continue
				}
				_, pcols, ok := resolve(p.Schemaname, p.Relname)
				known = known && ok
				cols = append(cols, pcols...)
			}
			for _, e := range cs.TableElts {
				if d := e.GetColumnDef(); d != nil && !slices.Contains(cols, d.Colname) {
					cols = append(cols, d.Colname)
				}
				known = known && e.GetTableLikeClause() == nil // LIKE: columns not in the text
			}
			if len(cols) > 0 && known {
				t.put(session, rv.Relname, cols)
			}
		case *pg.Node_CreateTableAsStmt:
			ct := n.CreateTableAsStmt
			if ct.Into == nil || ct.Into.Rel == nil || ct.Into.Rel.Relpersistence != "t" || ct.Objtype != pg.ObjectType_OBJECT_TABLE {
				continue
			}
			q, err := pg.Deparse(&pg.ParseResult{Version: tree.Version, Stmts: []*pg.RawStmt{{Stmt: ct.Query}}})
			if err != nil {
				continue
			}
			res, err := lineage.Analyze(q, resolve)
			if err != nil || len(res) != 1 || res[0] == nil || !res[0].Exact {
				continue
			}
			cols := make([]string, len(res[0].Columns))
			for i, c := range res[0].Columns {
				cols[i] = c.Name
			}
			for i, c := range ct.Into.ColNames {
				if i < len(cols) {
					cols[i] = strVal(c)
				}
			}
			t.put(session, ct.Into.Rel.Relname, cols)
		case *pg.Node_DropStmt:
			if n.DropStmt.RemoveType != pg.ObjectType_OBJECT_TABLE {
				continue
			}
			for _, o := range n.DropStmt.Objects {
				if items := o.GetList().GetItems(); len(items) > 0 {
					t.put(session, strVal(items[len(items)-1]), nil)
				}
			}
		}
	}
}

func strVal(n *pg.Node) string {
	if s := n.GetString_(); s != nil {
		return s.Sval
	}
	return ""
}

// put records (cols non-nil) or forgets (nil) a session's temporary table.
func (t *tempTables) put(session, table string, cols []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[session]
	if st == nil {
		if cols == nil {
			return
		}
		if t.m == nil || len(t.m) >= t.max {
			t.m = map[string]*sessionTables{} // bounded: then the catalog's view only
		}
		st = &sessionTables{tables: map[string][]string{}}
		t.m[session] = st
	}
	if cols == nil {
		delete(st.tables, table)
	} else if len(st.tables) < 1000 {
		st.tables[table] = cols
	}
	st.version++
}

func (t *tempTables) forget(session string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, session)
}

// resolver returns a lineage resolver that answers from snap and then from the session's
// temporary tables, and a key naming what it knows of them ("" when nothing).
func (t *tempTables) resolver(session string, snap *classify.Snapshot) (lineage.Resolver, string) {
	t.mu.Lock()
	st := t.m[session]
	var tables map[string][]string
	key := ""
	if st != nil && len(st.tables) > 0 {
		tables = make(map[string][]string, len(st.tables))
		for k, v := range st.tables {
			tables[k] = v
		}
		key = session + ":" + strconv.Itoa(st.version)
	}
	t.mu.Unlock()
	if tables == nil {
		if snap == nil {
			return nil, ""
		}
		return snap.Resolve, ""
	}
	return func(schema, table string) (string, []string, bool) {
		if q, cols, ok := snap.Resolve(schema, table); ok {
			return q, cols, true
		}
		if schema != "" && schema != "pg_temp" {
			return "", nil, false
		}
		cols, ok := tables[table]
		return "pg_temp." + table, cols, ok
	}, key
}
