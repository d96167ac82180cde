package gate

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/lineage"
)

// RuleNoMaskedCopy names the refusal of a statement that would store, server-side, values
// derived from a column the session sees masked in a place not classified with the same
// class (another column, a new table or view, a setting, a sequence, a notification) — from
// where they could be read back unmasked. Sessions with raw access are not concerned.
const RuleNoMaskedCopy = "no-copy-of-masked-values"

// ClassMasker is the part of MaskPlanner that tells which classes a masking profile hides.
type ClassMasker interface {
	// MasksClass reports whether sessions with the named profile see values of class
	// masked.
	MasksClass(profile, class string) bool
}

// launderState caches the lineage of write flows per catalog generation, so a statement
// shape is analysed once.
type launderState struct {
	once  sync.Once
	cache *lineage.Cache
}

func (l *launderState) lineage() *lineage.Cache {
	l.once.Do(func() { l.cache = lineage.NewCache(2048) })
	return l.cache
}

// launders decides whether statement st, allowed by policy with masking profile profile,
// would copy masked values out of the catalog's sight; refused is false when it may run.
// classes are the sensitive classes of the tables st touches (Input.SensitiveClasses). Its
// cost for a statement that stores no values read from the database, for a session that sees
// raw values, or for a statement whose tables hold nothing sensitive, is a few comparisons.
func (g *Gate) launders(ctx context.Context, s *Session, st *inspect.Statement, profile string, classes []string) (d Decision, refused bool) {
	if len(st.Writes) == 0 || g.Masker == nil || profile == "none" || s == nil || s.Target == nil {
		return Decision{}, false
	}
	cat := g.Catalog
	if cat == nil {
		return Decision{}, false
	}
	key := classify.TargetKey(s.Target, s.Database)
	if len(classes) == 0 && key == s.Target.Name {
		// Nothing the statement reads or writes is sensitive (the classes come from the
		// same catalog, for the target's own database).
		return Decision{}, false
	}
	snap, _ := cat.Snapshot(ctx, key)
	if snap == nil {
		// No catalog for the target: nothing is known to be sensitive, and masking itself
		// runs on its value detectors only.
		return Decision{}, false
	}
	masks := func(class string) bool { return g.Masker.MasksClass(profile, class) }
	for i := range st.Writes {
		if why := g.flowCopiesMasked(snap, st, &st.Writes[i], masks); why != "" {
			return Decision{Action: Deny, Rule: RuleNoMaskedCopy, Message: why, MaskProfile: profile}, true
		}
	}
	return Decision{}, false
}

// flowCopiesMasked returns why flow w copies a masked value where it would no longer be
// masked, or "" when it does not.
func (g *Gate) flowCopiesMasked(snap *classify.Snapshot, st *inspect.Statement, w *inspect.WriteFlow, masks func(string) bool) string {
	var res []*lineage.Result
	if w.Source != "" {
		key := strconv.FormatUint(snap.Generation, 10) + "\x00" + snap.Target + "\x00" + w.Source
		res, _ = g.launder.lineage().Analyze(key, w.Source, snap.Resolve)
	}
	if len(res) != 1 || res[0] == nil {
		// What is written cannot be traced: it may be anything the statement reads.
		for _, t := range st.TablesRead {
			q := snap.QualifyTable(t)
			if e := firstMasked(snap, lineage.ColumnSource{Table: q, Column: "*"}, masks); e != nil {
				return fmt.Sprintf("%s stores values Gatehouse cannot trace, and the statement reads %s (class %s), which this session sees masked; %s",
					w.Kind, e.Key(), e.Class, advice(e.Class))
			}
		}
		return ""
	}
	cols := res[0].Columns
	dests := w.Columns
	if dests == nil && w.Table != "" && !w.New {
		schema, table := splitTable(snap.QualifyTable(w.Table))
		_, dests, _ = snap.Resolve(schema, table)
	}
	// Each written value goes to its own column when the shapes line up; otherwise any value
	// may land in any column, and none of them counts as classified.
	aligned := res[0].Exact && len(dests) >= len(cols)
	for i, c := range cols {
		for _, src := range c.Sources {
			e := firstMasked(snap, src, masks)
			if e == nil {
				continue
			}
			var dest *classify.Entry
			if aligned && w.Table != "" && !w.New {
				dest = snap.ByName(snap.QualifyTable(w.Table), dests[i])
			}
			if dest != nil && dest.IsSensitive() && dest.Class == e.Class {
				continue
			}
			// Another masked column of the same source may still be a problem; the first
			// one found explains the refusal.
			return fmt.Sprintf("%s would store values derived from %s (class %s), which this session sees masked, in %s; %s",
				w.Kind, e.Key(), e.Class, describeDest(snap, w, dest, dests, i, aligned), advice(e.Class))
		}
	}
	return ""
}

// firstMasked returns the catalog entry of src (every column of its table for "*") that is
// sensitive with a class the session sees masked, or nil.
func firstMasked(snap *classify.Snapshot, src lineage.ColumnSource, masks func(string) bool) *classify.Entry {
	check := func(table, col string) *classify.Entry {
		if e := snap.ByName(table, col); e != nil && e.IsSensitive() && masks(e.Class) {
			return e
		}
		return nil
	}
	if src.Column != "*" {
		return check(src.Table, src.Column)
	}
	schema, table := splitTable(src.Table)
	q, cols, ok := snap.Resolve(schema, table)
	if !ok {
		return nil
	}
	for _, c := range cols {
		if e := check(q, c); e != nil {
			return e
		}
	}
	return nil
}

func describeDest(snap *classify.Snapshot, w *inspect.WriteFlow, dest *classify.Entry, dests []string, i int, aligned bool) string {
	switch {
	case w.Kind == "set_config":
		return fmt.Sprintf("the setting %q, which is read back unmasked", w.Target)
	case w.Kind == "setval":
		return fmt.Sprintf("the sequence %q", w.Target)
	case w.Kind == "pg_notify":
		return fmt.Sprintf("the payload of notifications on channel %q", w.Target)
	case w.Kind == "CREATE VIEW" || w.Kind == "CREATE MATERIALIZED VIEW":
		return fmt.Sprintf("the new view %s, whose columns the catalog classifies only once it is committed and rescanned (never a temporary one)", w.Table)
	case w.New:
		return fmt.Sprintf("the new table %s, which the catalog does not hold as sensitive", w.Table)
	case dest != nil && dest.IsSensitive():
		return fmt.Sprintf("%s, which is classified as %s", dest.Key(), dest.Class)
	case dest != nil:
		return fmt.Sprintf("%s, which is not classified as sensitive", dest.Key())
	case aligned && i < len(dests):
		return fmt.Sprintf("%s.%s, which the catalog does not know", snap.QualifyTable(w.Table), dests[i])
	default:
		return fmt.Sprintf("a column of %s the catalog cannot tell", w.Table)
	}
}

func advice(class string) string {
	return fmt.Sprintf("use an identity with raw access to %s values, or write them only into a column the catalog classifies as %s", class, class)
}

// splitTable splits "schema.table" (the catalog's spelling) at its last dot.
func splitTable(q string) (schema, table string) {
	if i := strings.LastIndexByte(q, '.'); i >= 0 {
		return q[:i], q[i+1:]
	}
	return "", q
}
