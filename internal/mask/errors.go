package mask

import (
	"context"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

var _ gate.ErrorClassifier = (*Planner)(nil)

// ErrorValueSensitive implements gate.ErrorClassifier. A value may be sensitive when it
// belongs to a column the catalog classes as sensitive and the session's profile does not
// show that class raw; a column the catalog does not know is classed by its name, and a
// table it does not know at all may hold anything. Without a table, the value may come from
// any table a statement of c reads or writes; a statement over no table quotes only the
// client's own text, and so does COPY ... FROM STDIN.
func (p *Planner) ErrorValueSensitive(ctx context.Context, s *gate.Session, c *gate.Check, table string, columns []string) bool {
	if c == nil {
		return true // before the first statement nothing is known
	}
	prof := p.Profile(c.Decision.MaskProfile)
	if prof.Raw() {
		return false
	}
	snap := p.snapshot(ctx, s)
	if table != "" {
		return tableMayHold(snap, prof, table, columns)
	}
	for _, st := range c.Statements {
		if st == nil || copyFromClient(st) {
			continue
		}
		for _, tables := range [][]string{st.TablesRead, st.TablesWritten} {
			for _, t := range tables {
				if tableMayHold(snap, prof, t, nil) {
					return true
				}
			}
		}
	}
	return false
}

// copyFromClient reports whether st is a COPY ... FROM STDIN: the values its errors quote
// are the rows the client sends.
func copyFromClient(st *inspect.Statement) bool {
	return st.Kind == "COPY" && !st.Export && !st.ServerFile && !st.Program
}

// tableMayHold reports whether a value of table's columns (all of them when columns is
// empty) may be sensitive under prof.
func tableMayHold(snap *classify.Snapshot, prof *Profile, table string, columns []string) bool {
	q := snap.QualifyTable(table)
	_, cols, known := snap.Resolve(schemaOf(q), lastPart(q))
	shown := func(class string) bool { return class == "" || prof.For(class) == Raw }
	if !known {
		if len(columns) == 0 {
			return true // an unknown table may hold anything
		}
		for _, col := range columns {
			if !shown(classify.NameClass(q, col)) {
				return true
			}
		}
		return false
	}
	if len(columns) == 0 {
		columns = cols
	}
	for _, col := range columns {
		e := snap.ByName(q, col)
		if e == nil {
			return true // an expression of an index key, or a column added since the scan
		}
		if e.IsSensitive() && !shown(e.Class) {
			return true
		}
	}
	return false
}

// snapshot is the catalog snapshot of the session's database, nil when there is none.
func (p *Planner) snapshot(ctx context.Context, s *gate.Session) *classify.Snapshot {
	if p.catalog == nil || s == nil || s.Target == nil {
		return nil
	}
	snap, _ := p.catalog.Snapshot(ctx, classify.TargetKey(s.Target, s.Database))
	return snap
}
