package mask

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/lineage"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// Planner implements gate.MaskPlanner: for each result shape it maps every column to a class
// — through the catalog for plain table columns (table OID + attribute number), through the
// statement's lineage for expressions, and through the column name as a last hint — and
// returns a RowMasker for the session's masking profile.
type Planner struct {
	catalog  *classify.Catalog
	masker   *Masker
	profiles map[string]*Profile
	lineage  *lineage.Cache
	log      *slog.Logger
	cursors  cursors
	temps    tempTables
	// policy looks up the profiles a policy file names (nil: built-in profiles only);
	// converted holds their masking form per loaded profile.
	policy     func(name string) (*policy.Profile, bool)
	converted  sync.Map // *policy.Profile → *Profile
	nconverted atomic.Int64
	// describer tells COPY's columns as PostgreSQL would (nil: from the statement's text).
	describer *Describer
}

// UsePolicy makes the profiles a policy file defines (masking.profiles) drive masking: a
// decision naming one gets its per-class strategies and raw classes (see FromPolicy), ahead
// of the built-in profiles of the same name. lookup is called per result (the policy can be
// reloaded); each loaded profile is converted once.
func (p *Planner) UsePolicy(lookup func(name string) (*policy.Profile, bool)) {
	p.policy = lookup
}

var _ gate.MaskPlanner = (*Planner)(nil)

// NewPlanner returns a planner. catalog may be nil (then only lineage-free name hints and the
// value detectors apply). profiles add to or replace the built-in profiles.
func NewPlanner(catalog *classify.Catalog, masker *Masker, profiles map[string]*Profile, log *slog.Logger) *Planner {
	all := BuiltinProfiles()
	for n, p := range profiles {
		all[n] = p
	}
	if log == nil {
		log = slog.Default()
	}
	return &Planner{catalog: catalog, masker: masker, profiles: all, lineage: lineage.NewCache(4096), log: log, cursors: cursors{max: 10000}, temps: tempTables{max: 10000}}
}

// Profile returns the profile named name ("" is default). An unknown name gets the strict
// profile: a typo in a policy must not show raw values.
func (p *Planner) Profile(name string) *Profile {
	if name == "" {
		name = ProfileDefault
	}
	if p.policy != nil && name != ProfileDefault && name != ProfileNone {
		if pp, ok := p.policy(name); ok && pp != nil {
			if pr, ok := p.converted.Load(pp); ok {
				return pr.(*Profile)
			}
			pr := FromPolicy(pp)
			if p.nconverted.Add(1) > 256 {
				// Many policy reloads: forget the profiles of the old ones.
				p.converted.Clear()
				p.nconverted.Store(1)
			}
			p.converted.Store(pp, pr)
			return pr
		}
	}
	if pr, ok := p.profiles[name]; ok {
		return pr
	}
	p.log.Warn("mask: unknown masking profile; using strict", "profile", name)
	return p.profiles[ProfileStrict]
}

// ShowsRaw reports whether the profile named name shows every value raw, so a door can tell
// whether a result it cannot place (a fast-path function call) may pass.
func (p *Planner) ShowsRaw(name string) bool { return p.Profile(name).Raw() }

// The planner's MaskText is the gate's TextMasker (part of the required gate.MaskPlanner),
// so a signature drift would silently turn free-text masking off.
var _ gate.TextMasker = (*Planner)(nil)

// MaskText scrubs the sensitive values the value detectors find in free text (notices,
// error messages and details, notification payloads, COPY rows no plan covers) with the
// strategies of the profile named profile ("" is default): a session whose profile shows
// e-mail addresses raw sees them raw in a notice too, and a strict one sees them redacted.
// It implements the gate's TextMasker.
func (p *Planner) MaskText(profile, text string) (string, int) {
	prof := p.Profile(profile)
	if prof.Raw() {
		return text, 0
	}
	out, n := p.masker.FreeText(nil, []byte(text), prof.For)
	if n == 0 {
		return text, 0
	}
	return string(out), n
}

// ResultMasker masks the rows of one result. It is used by one session at a time.
type ResultMasker struct {
	m      *Masker
	rules  []Rule
	active []int
	// counts are the values masked per rule since MaskedByClass last drained them
	// (allocated at the first masked value).
	counts []int64
	// val holds the value MaskDataRow is masking, reused from row to row.
	val []byte
	// MaskDataRow's view of the rules, made at its first row (see prepare): isActive[i]
	// reports whether i is in active, and fast[i] is the fast path of rules[i].
	prepared bool
	fast     []fastPath
	isActive []bool
}

// prepare makes MaskDataRow's view of the rules (once: the rules of a result do not change
// once its rows flow).
func (r *ResultMasker) prepare() {
	r.prepared = true
	r.fast = make([]fastPath, len(r.rules))
	r.isActive = make([]bool, len(r.rules))
	for _, i := range r.active {
		if i < 0 || i >= len(r.rules) {
			continue
		}
		r.fast[i] = fastOf(&r.rules[i])
		r.isActive[i] = true
	}
}

// NewResultMasker returns a masker for the rows of a result with one rule per column, for
// rules made outside a Planner (PlanResult plans a result's rules from its columns). It
// returns nil when no rule masks anything.
func NewResultMasker(m *Masker, rules []Rule) *ResultMasker {
	var active []int
	for i := range rules {
		if r := &rules[i]; r.sensitive() || r.FreeText || len(r.Keys) > 0 {
			active = append(active, i)
		}
	}
	if len(active) == 0 {
		return nil
	}
	return &ResultMasker{m: m, rules: append([]Rule(nil), rules...), active: active}
}

// MaskRow implements gate.RowMasker.
func (r *ResultMasker) MaskRow(values [][]byte) int {
	n := 0
	for _, i := range r.active {
		if i >= len(values) {
			break
		}
		out, masked := r.m.Apply(&r.rules[i], values[i])
		if masked {
			values[i] = out
			n++
			if r.counts == nil {
				r.counts = make([]int64, len(r.rules))
			}
			r.counts[i]++
		}
	}
	return n
}

// MaskDataRow masks one DataRow message given its body (the message without its type byte
// and length) and appends the whole masked message, header included, to dst. The columns
// it leaves alone are copied as they came, and nothing is decoded or allocated: it is the
// door's streaming path (MaskRow, which returns values of their own, serves callers that
// keep them). It returns how many values it masked; with none, dst is returned unchanged
// and the original message is the one to send. A malformed message is an error (the values
// masked before it was found still count in MaskedByClass).
func (r *ResultMasker) MaskDataRow(dst, body []byte) ([]byte, int, error) {
	if len(body) < 2 {
		return dst, 0, errDataRow
	}
	if !r.prepared {
		r.prepare()
	}
	count := int(binary.BigEndian.Uint16(body))
	base := len(dst)
	isActive, fast, val := r.isActive, r.fast, r.val
	p, copied, n := 2, 0, 0
	for i := 0; i < count; i++ {
		if p+4 > len(body) {
			r.val = val
			return dst[:base], 0, errDataRow
		}
		start := p
		l := int(int32(binary.BigEndian.Uint32(body[p:])))
		p += 4
		if l == -1 {
			continue
		}
		if l < 0 || l > len(body)-p {
			r.val = val
			return dst[:base], 0, errDataRow
		}
		v := body[p : p+l : p+l]
		p += l
		if i >= len(isActive) || !isActive[i] {
			continue
		}
		if f := fast[i]; f == fastEmail || f == fastPartial {
			// Always replaced (an e-mail or other single-class column as it is stored):
			// the mask is written into dst in place, after its length, saving the copy
			// from val (a value of every row of a streamed result).
			if n == 0 {
				dst = append(dst, 'D', 0, 0, 0, 0)
			}
			dst = append(dst, body[copied:start]...)
			at := len(dst)
			dst = append(dst, 0, 0, 0, 0)
			if f == fastEmail {
				dst = partialEmail(dst, v)
			} else {
				dst = partial(dst, r.rules[i].Class, v)
			}
			binary.BigEndian.PutUint32(dst[at:], uint32(len(dst)-at-4))
			copied = p
			n++
			if r.counts == nil {
				r.counts = make([]int64, len(r.rules))
			}
			r.counts[i]++
			continue
		}
		var res Outcome
		val, res = r.m.appendFast(val[:0], fast[i], &r.rules[i], v)
		if res == Unchanged {
			continue
		}
		if n == 0 {
			dst = append(dst, 'D', 0, 0, 0, 0)
		}
		dst = append(dst, body[copied:start]...)
		if res == Nulled {
			dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
		} else {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(val)))
			dst = append(dst, val...)
		}
		copied = p
		n++
		if r.counts == nil {
			r.counts = make([]int64, len(r.rules))
		}
		r.counts[i]++
	}
	r.val = val
	if p != len(body) {
		return dst[:base], 0, errDataRow
	}
	if n == 0 {
		return dst[:base], 0, nil
	}
	dst = append(dst, body[copied:]...)
	binary.BigEndian.PutUint32(dst[base+1:], uint32(len(dst)-base-1))
	return dst, n, nil
}

var errDataRow = errors.New("mask DataRow: malformed message")

// MaskedByClass implements gate.RowMasker: it reports the values masked per class since
// the last call, and starts counting again. A value of a column without a class (free text
// masked by the detectors) counts as "free_text", a mix of classes as "composite".
func (r *ResultMasker) MaskedByClass(fn func(class string, n int64)) {
	for i, n := range r.counts {
		if n == 0 {
			continue
		}
		class := r.rules[i].Class
		switch {
		case r.rules[i].Composite:
			class = "composite"
		case class == "":
			class = "free_text"
		}
		fn(class, n)
		r.counts[i] = 0
	}
}

// Rules returns the per-column rules, for tests and diagnostics.
func (r *ResultMasker) Rules() []Rule { return r.rules }

// Touched returns the sensitive columns this result exposes in masked form, as
// "schema.table.column" → class, for the ledger.
func (r *ResultMasker) Touched() map[string]string {
	out := map[string]string{}
	for _, rule := range r.rules {
		for _, o := range rule.Origin {
			cls := rule.Class
			if c, ok := rule.Keys[lastPart(o)]; ok {
				cls = c
			}
			if cls != "" {
				out[o] = cls
			}
		}
	}
	return out
}

func lastPart(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[i+1:]
		}
	}
	return s
}

// Plan implements gate.MaskPlanner.
func (p *Planner) Plan(ctx context.Context, s *gate.Session, c *gate.Check, cols []gate.Column) gate.RowMasker {
	rm := p.PlanResult(ctx, s, c, cols)
	if rm == nil {
		return nil
	}
	return rm
}

// PlanResult is Plan returning the concrete type (nil when nothing needs masking).
func (p *Planner) PlanResult(ctx context.Context, s *gate.Session, c *gate.Check, cols []gate.Column) *ResultMasker {
	profName := ""
	if c != nil {
		profName = c.Decision.MaskProfile
	}
	prof := p.Profile(profName)
	if prof.Raw() {
		return nil
	}
	var snap *classify.Snapshot
	if p.catalog != nil && s != nil && s.Target != nil {
		var err error
		key := classify.TargetKey(s.Target, s.Database)
		snap, err = p.catalog.Snapshot(ctx, key)
		if err != nil && snap == nil {
			p.log.Warn("mask: no catalog for target; value detectors only", "target", key, "err", err)
		}
	}
	var lin []lineage.Column
	var linNames map[string]lineage.Column
	needLineage := false
	for _, col := range cols {
		if _, ok := snap.SampleColumn(col.TableOID, col.AttNum); !ok && (col.TableOID == 0 || snap.ByAttr(col.TableOID, col.AttNum) == nil) {
			needLineage = true
			break
		}
	}
	if needLineage && c != nil {
		sid := ""
		if s != nil {
			sid = s.ID
		}
		names := make([]string, len(cols))
		for i, col := range cols {
			names[i] = col.Name
		}
		lin, linNames = p.lineageFor(sid, c, snap, names)
	}
	// Most results mask nothing (no column is sensitive): their rules are planned on the
	// stack and dropped, and only a result that masks allocates its masker.
	var small [4]Rule
	var rules []Rule
	if len(cols) <= len(small) {
		rules = small[:len(cols)]
	} else {
		rules = make([]Rule, len(cols))
	}
	var active []int
	var entries uint64 // bit i: column i is the catalog's (ByAttr); from bit 63 on, maybe
	for i, col := range cols {
		r := &rules[i]
		r.Kind, r.Format = KindOf(col.TypeOID), col.Format
		decided := false
		var entry *classify.Entry // the catalog's column, named in Origin once a rule is active
		if name, ok := snap.SampleColumn(col.TableOID, col.AttNum); ok {
			decided = true
			r.Origin, r.Class, r.samples = []string{name}, classify.Secret, true
		} else if e := snap.ByAttr(col.TableOID, col.AttNum); e != nil {
			decided = true
			entry = e
			if e.IsSensitive() {
				r.Class = e.Class
			}
		}
		if !decided {
			var lc lineage.Column
			found := false
			if lin != nil {
				lc, found = lin[i], lin[i].Sources != nil
			} else if linNames != nil {
				lc, found = linNames[col.Name]
				found = found && lc.Sources != nil
			}
			if lin != nil && lin[i].Literal {
				// Constants the client wrote: no column's value, whatever the name says.
				decided = true
			} else if found {
				decided = true
				r.Derived, r.Transformed = true, !lc.Preserved
				p.fromSources(r, snap, lc.Sources, classify.TypeNameOfOID(col.TypeOID))
			}
		}
		if !decided {
			// No catalog entry and no lineage: the column's name is the last hint, and what
			// made the value is unknown, so nothing of it may show.
			if nc := classify.NameClassOfType("", col.Name, classify.TypeNameOfOID(col.TypeOID)); nc != "" {
				r.Class, r.Derived, r.Transformed = nc, true, true
			}
		}
		r.settle(prof)
		if entry != nil {
			entries |= 1 << min(i, 63)
		}
		if r.sensitive() || r.FreeText || len(r.Keys) > 0 {
			active = append(active, i)
		}
	}
	if len(active) == 0 {
		return nil
	}
	rm := &ResultMasker{m: p.masker, rules: append([]Rule(nil), rules...), active: active}
	for i := range rm.rules {
		if r := &rm.rules[i]; r.Strat == nil {
			r.Strat = r.strategies(prof)
		}
	}
	for i, col := range cols {
		if i < 63 && entries&(1<<i) == 0 {
			continue
		}
		if _, sample := snap.SampleColumn(col.TableOID, col.AttNum); !sample {
			if e := snap.ByAttr(col.TableOID, col.AttNum); e != nil {
				rm.rules[i].Origin = []string{e.Key()}
			}
		}
	}
	var consts map[string]bool
	for _, i := range rm.active {
		if r := &rm.rules[i]; r.Kind == KindJSON || r.Kind == KindJSONArr {
			if consts == nil && c != nil {
				consts = stringLiterals(c.Statements)
			}
			r.ConstKeys = consts
		}
	}
	return rm
}

// stringLiterals are the plain quoted string literals ('...') of the statements, for the
// JSON keys the client wrote itself (see Rule.ConstKeys). Other spellings (E'...', dollar
// quotes) are left out: a key spelled so is masked like data, which is safe.
func stringLiterals(sts []*inspect.Statement) map[string]bool {
	out := map[string]bool{}
	for _, st := range sts {
		if st == nil {
			continue
		}
		res, err := pg.Scan(st.Text)
		if err != nil {
			continue
		}
		for _, tok := range res.Tokens {
			if tok.Token != pg.Token_SCONST || tok.Start < 0 || int(tok.End) > len(st.Text) || tok.Start >= tok.End {
				continue
			}
			lit := st.Text[tok.Start:tok.End]
			if len(lit) >= 2 && lit[0] == '\'' && lit[len(lit)-1] == '\'' {
				out[strings.ReplaceAll(lit[1:len(lit)-1], "''", "'")] = true
			}
		}
	}
	return out
}

func textLike(k Kind) bool {
	switch k {
	case KindText, KindJSON, KindArray, KindJSONArr, KindRecord, KindOther:
		return true
	}
	return false
}

// plan sets the rule's strategies from the profile once its class, keys and kind are known.
// A transformed value (an expression other than a value-keeping one over its sources, see
// lineage.Column.Preserved) never gets a partial mask, which would show some part of
// something else than the value (the domain of reverse(email) is the reversed local part):
// the class's partial strategy becomes redaction there, for the value and for anything the
// value detectors find in it.
func (r *Rule) plan(prof *Profile) {
	r.Strat = r.strategies(prof)
	r.settle(prof)
}

// strategies is the rule's strategy per class: the profile's, with partial masks turned
// into redaction for a transformed value.
func (r *Rule) strategies(prof *Profile) StrategyFunc {
	if r.Transformed {
		return revealNothing(prof.For)
	}
	return prof.For
}

// settle sets the rule's Strategy and FreeText from the profile. Strat is made here only
// when the value's own class needs it (a function value is an allocation, and most rules of
// most results have no class): PlanResult sets it afterwards on the rules of a result that
// masks.
func (r *Rule) settle(prof *Profile) {
	if r.Class != "" || r.Composite {
		if r.Strat == nil {
			r.Strat = r.strategies(prof)
		}
		if r.Class != "" {
			r.Strategy = r.Strat(r.Class)
		} else {
			r.Strategy = compositeStrategy(r.Strat, r.Keys)
		}
	}
	r.FreeText = prof.FreeText && textLike(r.Kind)
	if r.samples {
		// Planner statistics hold values of every column, whatever their class: nothing of
		// them shows, and NULL is valid for their anyarray type in text and binary alike.
		r.Strategy = Null
	}
}

// revealNothing is f with the partial strategy replaced by redaction.
func revealNothing(f StrategyFunc) StrategyFunc {
	return func(class string) Strategy {
		if s := f(class); s != Partial {
			return s
		}
		return Redact
	}
}

// compositeStrategy picks the strictest strategy among the classes a mixed value holds.
func compositeStrategy(f StrategyFunc, keys map[string]string) Strategy {
	rank := map[Strategy]int{Raw: 0, Partial: 1, Hash: 2, Redact: 3, Null: 4}
	best := Raw
	for _, cls := range keys {
		if cls == "" {
			continue
		}
		if s := f(cls); rank[s] > rank[best] {
			best = s
		}
	}
	return best
}

// fromSources fills a rule from the source columns of a derived value of type typ (a
// pg_type name, "" when unknown).
func (p *Planner) fromSources(r *Rule, snap *classify.Snapshot, srcs []lineage.ColumnSource, typ string) {
	classes := map[string]bool{}
	keys := map[string]string{}
	kinds := map[string]Kind{}
	var origin []string
	add := func(table, column string) {
		e := snap.ByName(table, column)
		cls := ""
		switch {
		case e != nil && e.IsSensitive():
			cls = e.Class
		case e != nil:
		case classify.StatsColumn(table, column):
			// Planner statistics (pg_stats.most_common_vals, pg_statistic.stavalues1, ...).
			cls, r.samples = classify.Secret, true
		default:
			// A table the catalog has not seen (created since the scan): the name decides,
			// if the value's type can hold what it names (an integer "zip" is no address).
			cls = classify.NameClassOfType(table, column, typ)
		}
		if prev, ok := keys[column]; !ok || prev == "" {
			keys[column] = cls
			if e != nil {
				kinds[column] = KindOfTypeName(e.Type)
			}
		}
		if cls != "" {
			classes[cls] = true
			origin = append(origin, table+"."+column)
		}
	}
	var whole []string // the column list when srcs is exactly one table's whole row
	for _, s := range srcs {
		if s.Column == "*" {
			if _, cols, ok := snap.Resolve(schemaOf(s.Table), lastPart(s.Table)); ok {
				for _, c := range cols {
					add(s.Table, c)
				}
			} else {
				// Unknown table and unknown columns: treat the value as sensitive as a whole.
				classes[classify.Secret] = true
			}
			continue
		}
		add(s.Table, s.Column)
	}
	if len(srcs) > 1 {
		t := srcs[0].Table
		same := true
		for _, s := range srcs {
			same = same && s.Table == t && s.Column != "*"
		}
		if _, cols, ok := snap.Resolve(schemaOf(t), lastPart(t)); same && ok && len(cols) == len(srcs) {
			whole = cols
			for i, c := range cols {
				if srcs[i].Column != c {
					whole = nil
					break
				}
			}
		}
	}
	sort.Strings(origin)
	r.Origin = origin
	switch len(classes) {
	case 0:
	case 1:
		for c := range classes {
			r.Class = c
		}
	default:
		r.Composite = true
	}
	if len(srcs) > 1 {
		r.Keys = keys
		r.KeyKinds = kinds
		r.Fields = whole
	}
}

func schemaOf(table string) string {
	for i := len(table) - 1; i >= 0; i-- {
		if table[i] == '.' {
			return table[:i]
		}
	}
	return ""
}

// lineageFor returns the lineage of the statement whose result has columns called names;
// when the positions cannot be trusted it returns sources by output name instead.
func (p *Planner) lineageFor(session string, c *gate.Check, snap *classify.Snapshot, names []string) ([]lineage.Column, map[string]lineage.Column) {
	n := len(names)
	gen := uint64(0)
	if snap != nil {
		gen = snap.Generation
	}
	resolve, temps := p.temps.resolver(session, snap)
	var exact [][]lineage.Column
	byName := map[string]lineage.Column{}
	for _, st := range c.Statements {
		if st == nil || st.Text == "" {
			continue
		}
		text := st.Text
		if decl := p.cursors.declaration(session, text); decl != "" {
			text = decl
		}
		res, err := p.lineage.Analyze(lineageKey(gen, temps, st, text), text, resolve)
		if err != nil {
			continue
		}
		for _, r := range res {
			if r == nil {
				continue
			}
			if r.Exact && len(r.Columns) == n {
				exact = append(exact, r.Columns)
			} else if cols := alignStar(r.Columns, names); cols != nil {
				exact = append(exact, cols)
			}
			for _, col := range r.Columns {
				names := []string{col.Name}
				if col.Star {
					names = col.Names
				}
				for _, name := range names {
					prev, seen := byName[name]
					byName[name] = lineage.Column{Name: name, Sources: append(prev.Sources, col.Sources...), Preserved: col.Preserved && (!seen || prev.Preserved)}
				}
			}
		}
	}
	switch len(exact) {
	case 0:
		if len(byName) == 0 {
			return nil, nil
		}
		return nil, byName
	case 1:
		return exact[0], nil
	}
	// Several statements of the same width: a column may come from any of them.
	out := make([]lineage.Column, n)
	for i := range out {
		out[i].Preserved = true
	}
	for _, cols := range exact {
		for i := range cols {
			out[i].Name = cols[i].Name
			out[i].Sources = append(out[i].Sources, cols[i].Sources...)
			out[i].Preserved = out[i].Preserved && cols[i].Preserved
		}
	}
	return out, nil
}

// alignStar places the columns of an inexact lineage holding exactly one Star entry on a
// result whose columns are called names: the columns before the star keep their positions,
// those after it count from the end, and the columns between come from the star. A star
// over one table the catalog does not know (and expressions of its columns) (a temporary table, one created elsewhere since
// the scan) gives each of its columns that table's column of the result's name — as
// `SELECT name FROM table` would be classed by its name; a column list renaming it gives
// the new names, which is all there is to go by; any other star gives each of its columns
// all its sources. It returns nil when there is not exactly one star or
// the widths do not fit.
func alignStar(cols []lineage.Column, names []string) []lineage.Column {
	n := len(names)
	star := -1
	for i, c := range cols {
		if c.Star {
			if star >= 0 {
				return nil
			}
			star = i
		}
	}
	if star < 0 || len(cols)-1 > n {
		return nil
	}
	out := make([]lineage.Column, 0, n)
	out = append(out, cols[:star]...)
	st := cols[star]
	table, byName := st.UnknownTable()
	for i := star; i < star+n-(len(cols)-1); i++ {
		c := lineage.Column{Name: names[i], Sources: st.Sources, Preserved: st.Preserved}
		if byName {
			c.Sources = []lineage.ColumnSource{{Table: table, Column: names[i]}}
		}
		out = append(out, c)
	}
	return append(out, cols[star+1:]...)
}
