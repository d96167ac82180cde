package classify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/lineage"
	"github.com/jackc/pgx/v5"
)

// Entry is the catalog's knowledge of one upstream column.
type Entry struct {
	Schema   string
	Table    string
	Column   string
	Type     string // pg_type name of the column (base type for domains)
	TableOID uint32
	AttNum   uint16
	Kind     string // relkind: r table, p partitioned, v view, m materialized view, f foreign
	// NotNull is pg_attribute.attnotnull: the column never holds NULL (a WHERE col IS NOT
	// NULL on it restricts nothing).
	NotNull bool
	Classification
	// Override is true when the class comes from the operator's overrides, not detection.
	Override bool
}

// Key is "schema.table.column", the name overrides and reports use.
func (e *Entry) Key() string { return e.Schema + "." + e.Table + "." + e.Column }

// IsSensitive reports whether the column holds sensitive data with enough confidence.
func (e *Entry) IsSensitive() bool {
	return e.Sensitive() && (e.Override || e.Confidence >= MinConfidence)
}

// AttKey locates a column the way RowDescription does.
type AttKey struct {
	TableOID uint32
	AttNum   uint16
}

// Snapshot is the result of one scan of a target: every column of every user table and view,
// classified. It is immutable once built; a refresh replaces it.
type Snapshot struct {
	Target     string
	Generation uint64
	ScannedAt  time.Time
	Entries    []Entry
	SearchPath []string

	byAtt  map[AttKey]int
	byName map[string]int
	tables map[string][]string // schema.table → columns in attnum order
	// samples locates the system catalog columns that hold sampled values of other columns
	// (see StatsColumn), as "pg_catalog.relation.column".
	samples map[AttKey]string
	// functions says what calling each function does (functions.go).
	functions functionEffects

	// classes remembers TableClasses per list of table names (the names joined by NUL), so
	// the statements of a session, which name the same few tables over and over, find the
	// sensitive columns of their tables with one map lookup instead of resolving every
	// column of every table again. The snapshot never changes, so neither do the answers;
	// a rescan builds a new snapshot with an empty cache. classesLen bounds it.
	classes    sync.Map
	classesLen atomic.Int64
}

// maxCachedTableLists bounds the table lists a snapshot remembers the sensitive columns of:
// names a client makes up (unknown tables) must not grow it without end. Past it, answers
// are computed every time, as before.
const maxCachedTableLists = 4096

// statsColumns are the columns of the system catalogs and views that hold values sampled
// from every analysed column of every table — planner statistics: most common values,
// histogram bounds, most common array elements, per-expression and extended statistics.
var statsColumns = map[string][]string{
	"pg_stats":              {"most_common_vals", "most_common_elems", "histogram_bounds"},
	"pg_stats_ext":          {"most_common_vals"},
	"pg_stats_ext_exprs":    {"most_common_vals", "most_common_elems", "histogram_bounds"},
	"pg_statistic":          {"stavalues1", "stavalues2", "stavalues3", "stavalues4", "stavalues5"},
	"pg_statistic_ext_data": {"stxdmcv", "stxdexpr"},
}

// StatsColumn reports whether column of table (a system catalog or view, named with or
// without its pg_catalog schema) holds sampled values of other columns, whatever table they
// describe: such a column is sensitive as a whole.
func StatsColumn(table, column string) bool {
	schema, rel := splitQualified(table)
	if schema != "" && schema != "pg_catalog" && schema != "public" {
		// "public" is what lineage assumes for an unqualified relation it does not know,
		// and pg_catalog comes first on every search path.
		return false
	}
	return slices.Contains(statsColumns[rel], column)
}

// SampleColumn returns the name ("pg_catalog.pg_stats.most_common_vals") of the statistics
// column a result column described by table OID and attribute number is, if it is one (see
// StatsColumn).
func (s *Snapshot) SampleColumn(oid uint32, att uint16) (string, bool) {
	if s == nil || oid == 0 {
		return "", false
	}
	name, ok := s.samples[AttKey{oid, att}]
	return name, ok
}

func (s *Snapshot) index() {
	s.byAtt = make(map[AttKey]int, len(s.Entries))
	s.byName = make(map[string]int, len(s.Entries))
	s.tables = make(map[string][]string)
	for i := range s.Entries {
		e := &s.Entries[i]
		s.byAtt[AttKey{e.TableOID, e.AttNum}] = i
		s.byName[e.Key()] = i
		t := e.Schema + "." + e.Table
		s.tables[t] = append(s.tables[t], e.Column)
	}
}

// ByAttr returns the entry of a result column described by table OID and attribute number.
func (s *Snapshot) ByAttr(oid uint32, att uint16) *Entry {
	if s == nil || oid == 0 {
		return nil
	}
	if i, ok := s.byAtt[AttKey{oid, att}]; ok {
		return &s.Entries[i]
	}
	return nil
}

// ByName returns the entry of table ("schema.table") and column.
func (s *Snapshot) ByName(table, column string) *Entry {
	if s == nil {
		return nil
	}
	if i, ok := s.byName[table+"."+column]; ok {
		return &s.Entries[i]
	}
	return nil
}

// Resolve implements lineage.Resolver over the snapshot: an unqualified table is looked up
// along the search path the scan saw (public when it saw none).
func (s *Snapshot) Resolve(schema, table string) (string, []string, bool) {
	if s == nil {
		return "", nil, false
	}
	if schema != "" {
		q := schema + "." + table
		cols, ok := s.tables[q]
		return q, cols, ok
	}
	path := s.SearchPath
	if len(path) == 0 {
		path = []string{"public"}
	}
	for _, sc := range path {
		q := sc + "." + table
		if cols, ok := s.tables[q]; ok {
			return q, cols, true
		}
	}
	return "", nil, false
}

// QualifyTable turns a table name as the parser reports it ("customers", "sales.orders",
// "Mixed" for a quoted identifier) into the snapshot's "schema.table", resolving unqualified
// names along the search path; a name written with surrounding quotes is unquoted, and an
// unknown name is retried in lower case before it comes back qualified with the first schema
// of the path.
func (s *Snapshot) QualifyTable(name string) string {
	schema, table := splitQualified(name)
	if q, _, ok := s.Resolve(schema, table); ok {
		return q
	}
	if q, _, ok := s.Resolve(strings.ToLower(schema), strings.ToLower(table)); ok {
		return q
	}
	if schema == "" {
		schema = "public"
		if s != nil && len(s.SearchPath) > 0 {
			schema = s.SearchPath[0]
		}
	}
	return schema + "." + table
}

func splitQualified(name string) (schema, table string) {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		if len(p) >= 2 && p[0] == '"' && p[len(p)-1] == '"' {
			parts[i] = strings.ReplaceAll(p[1:len(p)-1], `""`, `"`)
		}
	}
	if len(parts) == 1 {
		return "", parts[0]
	}
	return parts[len(parts)-2], parts[len(parts)-1]
}

// Sensitive returns the entries classified as sensitive, in catalog order.
func (s *Snapshot) Sensitive() []Entry {
	if s == nil {
		return nil
	}
	var out []Entry
	for _, e := range s.Entries {
		if e.IsSensitive() {
			out = append(out, e)
		}
	}
	return out
}

// TableClasses returns the sensitive columns of the given tables as "schema.table.column" →
// class, nil when they have none. The map is shared with every caller that asks about the
// same tables: it must not be modified.
func (s *Snapshot) TableClasses(tables []string) map[string]string {
	if s == nil || len(tables) == 0 {
		return nil
	}
	for _, t := range tables {
		if strings.IndexByte(t, 0) >= 0 {
			return s.tableClasses(tables) // the NUL that joins names must not be one's own
		}
	}
	key := tables[0]
	if len(tables) > 1 {
		key = strings.Join(tables, "\x00")
	}
	if v, ok := s.classes.Load(key); ok {
		return v.(map[string]string)
	}
	out := s.tableClasses(tables)
	if s.classesLen.Load() < maxCachedTableLists {
		if _, loaded := s.classes.LoadOrStore(key, out); !loaded {
			s.classesLen.Add(1)
		}
	}
	return out
}

// tableClasses is TableClasses computed afresh.
func (s *Snapshot) tableClasses(tables []string) map[string]string {
	var out map[string]string
	for _, t := range tables {
		q := s.QualifyTable(t)
		for _, c := range s.tables[q] {
			if e := s.ByName(q, c); e != nil && e.IsSensitive() {
				if out == nil {
					out = make(map[string]string)
				}
				out[e.Key()] = e.Class
			}
		}
	}
	return out
}

// ScanOptions tune a scan.
type ScanOptions struct {
	// SampleSize is how many rows are read per table (default 200).
	SampleSize int
	// Overrides set a column's class by name ("schema.table.column" or "table.column" for the
	// public schema) to a class or "none"; they win over detection.
	Overrides map[string]string
	// TableTimeout bounds the sampling of one table (default 5s).
	TableTimeout time.Duration
	// MaxSampledTables bounds how many tables one scan samples (default 2000); the others
	// are classified by their column names.
	MaxSampledTables int
	Log              *slog.Logger
}

// Scan reads the structure of the database conn is connected to, samples every table and
// classifies every column, then follows view definitions so view columns inherit the class
// of the table columns they show.
func Scan(ctx context.Context, conn *pgx.Conn, opts ScanOptions) (*Snapshot, error) {
	if opts.SampleSize <= 0 {
		opts.SampleSize = 200
	}
	if opts.TableTimeout <= 0 {
		opts.TableTimeout = 5 * time.Second
	}
	if opts.MaxSampledTables <= 0 {
		opts.MaxSampledTables = 2000
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	snap := &Snapshot{ScannedAt: time.Now()}
	var path, user string
	if err := conn.QueryRow(ctx, "SELECT current_setting('search_path'), current_user").Scan(&path, &user); err == nil {
		for _, p := range strings.Split(path, ",") {
			p = strings.Trim(strings.TrimSpace(p), `"`)
			if p == "$user" {
				p = user
			}
			if p != "" {
				snap.SearchPath = append(snap.SearchPath, p)
			}
		}
	}
	rows, err := conn.Query(ctx, `
SELECT c.oid, n.nspname, c.relname, c.relkind::text, a.attnum, a.attname,
       COALESCE(bt.typname, t.typname), c.reltuples,
       COALESCE((SELECT i.inhparent FROM pg_inherits i WHERE c.relispartition AND i.inhrelid = c.oid LIMIT 1), 0),
       a.attnotnull
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY n.nspname, c.relname, a.attnum`)
	if err != nil {
		return nil, fmt.Errorf("read column catalog: %w", err)
	}
	reltuples := map[uint32]float32{}
	parents := map[uint32]uint32{} // partition → its parent
	for rows.Next() {
		var e Entry
		var att int16
		var tuples float32
		var parent uint32
		if err := rows.Scan(&e.TableOID, &e.Schema, &e.Table, &e.Kind, &att, &e.Column, &e.Type, &tuples, &parent, &e.NotNull); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read column catalog: %w", err)
		}
		e.AttNum = uint16(att)
		reltuples[e.TableOID] = tuples
		if parent != 0 {
			parents[e.TableOID] = parent
		}
		snap.Entries = append(snap.Entries, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read column catalog: %w", err)
	}

	// Sample and classify table by table. Partitions take their parent's classes instead of
	// being sampled one by one (a partitioned table may have thousands of them).
	sampled := 0
	var partitions [][]Entry
	for start := 0; start < len(snap.Entries); {
		end := start
		for end < len(snap.Entries) && snap.Entries[end].TableOID == snap.Entries[start].TableOID {
			end++
		}
		cols := snap.Entries[start:end]
		start = end
		if _, ok := parents[cols[0].TableOID]; ok {
			partitions = append(partitions, cols)
			continue
		}
		var samples [][]string
		if k := cols[0].Kind; k != "v" && sampled < opts.MaxSampledTables {
			sampled++
			samples, err = sampleTable(ctx, conn, cols, opts, reltuples[cols[0].TableOID])
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("sample %s.%s: %w", cols[0].Schema, cols[0].Table, err)
				}
				log.Warn("classify: cannot sample table; classifying by names only", "table", cols[0].Schema+"."+cols[0].Table, "err", err)
			}
		}
		for i := range cols {
			var s []string
			if samples != nil {
				s = samples[i]
			}
			cols[i].Classification = ClassifyColumn(cols[i].Table, cols[i].Column, cols[i].Type, s)
		}
	}
	if sampled >= opts.MaxSampledTables {
		log.Warn("classify: too many tables to sample; the rest are classified by names only", "sampled", sampled)
	}
	byTable := map[uint32][]Entry{}
	for start := 0; start < len(snap.Entries); {
		end := start
		for end < len(snap.Entries) && snap.Entries[end].TableOID == snap.Entries[start].TableOID {
			end++
		}
		byTable[snap.Entries[start].TableOID] = snap.Entries[start:end]
		start = end
	}
	for _, cols := range partitions {
		root := parents[cols[0].TableOID]
		for depth := 0; depth < 16; depth++ { // multi-level partitioning: go up to the root
			p, ok := parents[root]
			if !ok {
				break
			}
			root = p
		}
		for i := range cols {
			cols[i].Classification = ClassifyColumn(cols[i].Table, cols[i].Column, cols[i].Type, nil)
			for _, pe := range byTable[root] {
				if pe.Column == cols[i].Column {
					cols[i].Classification = pe.Classification
					if pe.Sensitive() {
						cols[i].Evidence = "partition of " + pe.Schema + "." + pe.Table + ": " + pe.Evidence
					}
				}
			}
		}
	}
	snap.index()
	if err := findSampleColumns(ctx, conn, snap); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		log.Warn("classify: cannot locate the planner statistics columns; they are masked by name only", "err", err)
	}
	if err := classifyViews(ctx, conn, snap); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		log.Warn("classify: cannot follow view definitions", "err", err)
	}
	applyOverrides(snap, opts.Overrides)
	if snap.functions, err = scanFunctions(ctx, conn); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		log.Warn("classify: cannot read the function catalog; functions are judged by the built-in list", "err", err)
	}
	return snap, nil
}

func sampleable(typ string) bool {
	switch familyOf(typ) {
	case famText, famNumber, famDate, famInet, famOther:
		t := strings.ToLower(typ)
		return t != "bytea" && t != "json" && t != "jsonb" && t != "xml" && t != "tsvector" && t != "uuid"
	}
	return false
}

// sampleTable reads up to SampleSize rows of the sampleable columns as text. Large tables are
// read with TABLESAMPLE SYSTEM so the rows come from the whole table, not its first pages.
func sampleTable(ctx context.Context, conn *pgx.Conn, cols []Entry, opts ScanOptions, tuples float32) ([][]string, error) {
	var sel []string
	var idx []int
	for i, c := range cols {
		if sampleable(c.Type) {
			sel = append(sel, pgx.Identifier{c.Column}.Sanitize()+"::text")
			idx = append(idx, i)
		}
	}
	out := make([][]string, len(cols))
	if len(sel) == 0 {
		return out, nil
	}
	from := pgx.Identifier{cols[0].Schema, cols[0].Table}.Sanitize()
	if tuples > float32(opts.SampleSize*50) && (cols[0].Kind == "r" || cols[0].Kind == "m") {
		pct := 100 * float64(opts.SampleSize) * 10 / float64(tuples)
		from += fmt.Sprintf(" TABLESAMPLE SYSTEM (%.4f)", pct)
	}
	q := fmt.Sprintf("SELECT %s FROM %s LIMIT %d", strings.Join(sel, ", "), from, opts.SampleSize)
	tctx, cancel := context.WithTimeout(ctx, opts.TableTimeout)
	defer cancel()
	rows, err := conn.Query(tctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	vals := make([]*string, len(sel))
	dst := make([]any, len(sel))
	for i := range vals {
		dst[i] = &vals[i]
	}
	for rows.Next() {
		for i := range vals {
			vals[i] = nil
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		for i, v := range vals {
			if v != nil {
				out[idx[i]] = append(out[idx[i]], *v)
			}
		}
	}
	return out, rows.Err()
}

// findSampleColumns locates the statistics columns (StatsColumn) by table OID and attribute
// number, the way RowDescription names them, so `SELECT * FROM pg_stats` is masked too.
func findSampleColumns(ctx context.Context, conn *pgx.Conn, snap *Snapshot) error {
	rels := make([]string, 0, len(statsColumns))
	for r := range statsColumns {
		rels = append(rels, r)
	}
	rows, err := conn.Query(ctx, `
SELECT c.oid, c.relname, a.attnum, a.attname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relname = ANY($1)`, rels)
	if err != nil {
		return fmt.Errorf("read statistics columns: %w", err)
	}
	defer rows.Close()
	snap.samples = map[AttKey]string{}
	for rows.Next() {
		var oid uint32
		var rel, col string
		var att int16
		if err := rows.Scan(&oid, &rel, &att, &col); err != nil {
			return fmt.Errorf("read statistics columns: %w", err)
		}
		if StatsColumn(rel, col) {
			snap.samples[AttKey{oid, uint16(att)}] = "pg_catalog." + rel + "." + col
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read statistics columns: %w", err)
	}
	return nil
}

// classifyViews gives each view column the class of the table columns it derives from,
// following the view's definition through the same lineage analysis the masker uses.
func classifyViews(ctx context.Context, conn *pgx.Conn, snap *Snapshot) error {
	rows, err := conn.Query(ctx, `
SELECT c.oid, pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		return fmt.Errorf("read view definitions: %w", err)
	}
	defs := map[uint32]string{}
	for rows.Next() {
		var oid uint32
		var def string
		if err := rows.Scan(&oid, &def); err != nil {
			rows.Close()
			return fmt.Errorf("read view definitions: %w", err)
		}
		defs[oid] = def
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read view definitions: %w", err)
	}
	// Views over views: repeat until nothing changes (bounded by the nesting depth).
	for round := 0; round < 8; round++ {
		changed := false
		for oid, def := range defs {
			res, err := lineage.Analyze(def, snap.Resolve)
			if err != nil || len(res) != 1 || res[0] == nil {
				continue
			}
			for i := range snap.Entries {
				e := &snap.Entries[i]
				if e.TableOID != oid || int(e.AttNum) > len(res[0].Columns) {
					continue
				}
				// What the view shows wins over what its column is called.
				if best := strongestSource(snap, res[0].Columns[e.AttNum-1].Sources); best != nil && best != e &&
					(e.Class != best.Class || e.Confidence < best.Confidence) {
					e.Classification = Classification{best.Class, best.Confidence, "view column derived from " + best.Key()}
					changed = true
				}
			}
		}
		if !changed {
			break
		}
	}
	return nil
}

func strongestSource(snap *Snapshot, srcs []lineage.ColumnSource) *Entry {
	var best *Entry
	consider := func(e *Entry) {
		if e != nil && e.IsSensitive() && (best == nil || e.Confidence > best.Confidence) {
			best = e
		}
	}
	for _, s := range srcs {
		if s.Column == "*" {
			for _, c := range snap.tables[s.Table] {
				consider(snap.ByName(s.Table, c))
			}
			continue
		}
		consider(snap.ByName(s.Table, s.Column))
	}
	return best
}

func applyOverrides(snap *Snapshot, overrides map[string]string) {
	for k, class := range overrides {
		key := strings.ToLower(k)
		if strings.Count(key, ".") == 1 {
			key = "public." + key
		}
		i, ok := snap.byName[key]
		if !ok {
			continue
		}
		e := &snap.Entries[i]
		e.Override = true
		e.Classification = Classification{Class: class, Confidence: 1, Evidence: "override"}
	}
}

// Connector opens a connection to a target's database for scanning.
type Connector func(ctx context.Context, target string) (*pgx.Conn, error)

// TargetKey names the catalog of one database of a target: the target's name for its own
// database, "database@target" for another database on the same server (table OIDs are per
// database, so each database needs its own catalog).
func TargetKey(target *config.Target, database string) string {
	if target == nil {
		return ""
	}
	if database == "" || database == target.Database {
		return target.Name
	}
	return database + "@" + target.Name
}

// ConfigConnector connects to the targets of a configuration with their own credentials.
// name is a target name or a TargetKey "database@target".
func ConfigConnector(targets []config.Target) Connector {
	return func(ctx context.Context, name string) (*pgx.Conn, error) {
		database := ""
		if at := strings.LastIndexByte(name, '@'); at > 0 {
			database, name = name[:at], name[at+1:]
		}
		for i := range targets {
			t := &targets[i]
			if t.Name != name {
				continue
			}
			if database == "" {
				database = t.Database
			}
			secret, err := t.Secret()
			if err != nil {
				return nil, err
			}
			mode := t.TLS.Mode
			if mode == "" {
				mode = "disable"
			}
			dsn := fmt.Sprintf("host='%s' port=%d dbname='%s' user='%s' sslmode=%s", quoteDSN(t.Host), t.Port, quoteDSN(database), quoteDSN(t.User), mode)
			if t.TLS.CAFile != "" {
				dsn += fmt.Sprintf(" sslrootcert='%s'", quoteDSN(t.TLS.CAFile))
			}
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				return nil, fmt.Errorf("target %q: connection settings: %w", name, err)
			}
			cfg.Password = secret
			cfg.RuntimeParams["application_name"] = "gatehouse-classify"
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return nil, fmt.Errorf("target %q: connect for classification: %w", name, err)
			}
			return c, nil
		}
		return nil, fmt.Errorf("target %q is not configured", name)
	}
}

// Catalog keeps one Snapshot per target: scanned on first use, rescanned on the next use
// after Invalidate (the gate calls it when DDL passes through) and periodically by Run. It
// implements gate.Catalog.
type Catalog struct {
	connect Connector
	opts    ScanOptions
	// overrides per target, "schema.table.column" → class or "none".
	overrides map[string]map[string]string
	log       *slog.Logger
	// RetryAfter is how long a failed first scan is not retried, so a down target does not
	// make every statement wait for a connection attempt.
	RetryAfter time.Duration
	// ScanTimeout bounds one scan of a target (default 2 minutes).
	ScanTimeout time.Duration
	// StaleWait is how long a statement waits for the rescan that follows an invalidation
	// before it goes on with the previous snapshot (default 5s), so DDL on a large database
	// does not stall every session for the whole scan.
	StaleWait time.Duration
	// OnScan, when set before the catalog is used, is told of every scan: the target key,
	// how long it took and its error (for metrics).
	OnScan func(target string, took time.Duration, err error)

	mu      sync.Mutex
	targets map[string]*targetState
	gen     uint64
}

type targetState struct {
	inflight chan struct{} // closed when the running scan ends; nil when none runs
	snap     *Snapshot
	stale    bool
	lastErr  error
	failedAt time.Time
}

// NewCatalog returns a catalog that scans targets through connect. overrides maps a target
// name to its column overrides.
func NewCatalog(connect Connector, opts ScanOptions, overrides map[string]map[string]string) *Catalog {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Catalog{connect: connect, opts: opts, overrides: overrides, log: log, RetryAfter: 10 * time.Second, ScanTimeout: 2 * time.Minute, StaleWait: 5 * time.Second, targets: map[string]*targetState{}}
}

func (c *Catalog) state(target string) *targetState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.targets[target]
	if !ok {
		st = &targetState{}
		c.targets[target] = st
	}
	return st
}

// Invalidate marks a target's snapshot out of date; the next use rescans it.
func (c *Catalog) Invalidate(target string) {
	st := c.state(target)
	c.mu.Lock()
	st.stale = true
	st.failedAt = time.Time{}
	c.mu.Unlock()
}

// Snapshot returns the target's current snapshot, scanning first when there is none yet or
// it was invalidated. When a rescan fails the previous snapshot is returned with the error.
func (c *Catalog) Snapshot(ctx context.Context, target string) (*Snapshot, error) {
	// One critical section for the look-up and the state: every statement asks (for its
	// sensitive columns, and again for its result's masking).
	c.mu.Lock()
	st, ok := c.targets[target]
	if !ok {
		st = &targetState{}
		c.targets[target] = st
	}
	snap, stale, failedAt, lastErr := st.snap, st.stale, st.failedAt, st.lastErr
	c.mu.Unlock()
	if snap != nil && !stale {
		return snap, nil
	}
	if !failedAt.IsZero() && time.Since(failedAt) < c.RetryAfter {
		return snap, lastErr
	}
	return c.refresh(ctx, target, st, false)
}

// Refresh rescans a target now.
func (c *Catalog) Refresh(ctx context.Context, target string) (*Snapshot, error) {
	return c.refresh(ctx, target, c.state(target), true)
}

func (c *Catalog) refresh(ctx context.Context, target string, st *targetState, force bool) (*Snapshot, error) {
	c.mu.Lock()
	if !force && st.snap != nil && !st.stale {
		snap := st.snap
		c.mu.Unlock()
		return snap, nil
	}
	done := st.inflight
	if done == nil {
		// One scan per target at a time, detached from the caller: a client that gives up
		// must not abort the scan every other session is waiting for.
		done = make(chan struct{})
		st.inflight = done
		st.stale = false // invalidations from now on need another scan
		go c.runScan(target, st, done)
	}
	old := st.snap
	c.mu.Unlock()
	var stale <-chan time.Time
	if old != nil && !force && c.StaleWait > 0 {
		// A rescan after DDL: wait a little for it, then carry on with what was known (the
		// scan goes on and the next statements get its result).
		t := time.NewTimer(c.StaleWait)
		defer t.Stop()
		stale = t.C
	}
	select {
	case <-done:
	case <-stale:
		return old, nil
	case <-ctx.Done():
		c.mu.Lock()
		snap := st.snap
		c.mu.Unlock()
		return snap, fmt.Errorf("wait for the catalog scan of %q: %w", target, ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !st.failedAt.IsZero() {
		return st.snap, st.lastErr
	}
	return st.snap, nil
}

func (c *Catalog) runScan(target string, st *targetState, done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.ScanTimeout)
	defer cancel()
	snap, err := c.scan(ctx, target)
	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(done)
	st.inflight = nil
	if err != nil {
		st.lastErr, st.failedAt = err, time.Now()
		st.stale = st.stale || st.snap != nil
		c.log.Error("classify: catalog scan failed", "target", target, "err", err)
		return
	}
	c.gen++
	snap.Generation = c.gen
	snap.Target = target
	st.snap, st.lastErr, st.failedAt = snap, nil, time.Time{}
	c.log.Info("classify: catalog scanned", "target", target, "columns", len(snap.Entries), "sensitive", len(snap.Sensitive()))
}

func (c *Catalog) scan(ctx context.Context, target string) (snap *Snapshot, err error) {
	if c.OnScan != nil {
		start := time.Now()
		defer func() { c.OnScan(target, time.Since(start), err) }()
	}
	if c.connect == nil {
		return nil, errors.New("catalog has no connector")
	}
	conn, err := c.connect(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("connect to %q for classification: %w", target, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// A table locked by a transaction (a migration's ALTER TABLE holds its lock until
	// COMMIT) is classified by its column names this time rather than stalling the scan
	// that statements wait for after DDL; the COMMIT invalidates the catalog again.
	if _, err := conn.Exec(ctx, "SET lock_timeout = "+scanLockTimeout); err != nil {
		return nil, fmt.Errorf("set lock_timeout for the scan of %q: %w", target, err)
	}
	opts := c.opts
	opts.Overrides = c.overridesFor(target)
	snap, err = Scan(ctx, conn, opts)
	if err != nil {
		return nil, fmt.Errorf("scan %q: %w", target, err)
	}
	return snap, nil
}

// overridesFor returns the column overrides of a catalog key: the target's own, which also
// apply to the other databases of the target ("database@target") unless that key has its
// own.
func (c *Catalog) overridesFor(key string) map[string]string {
	if o, ok := c.overrides[key]; ok {
		return o
	}
	if at := strings.LastIndexByte(key, '@'); at > 0 {
		return c.overrides[key[at+1:]]
	}
	return nil
}

// scanLockTimeout bounds how long a scan waits for a table lock (see Catalog.scan).
const scanLockTimeout = "'200ms'"

// Run rescans every target the catalog has seen each interval until ctx ends.
func (c *Catalog) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		names := make([]string, 0, len(c.targets))
		for n := range c.targets {
			names = append(names, n)
		}
		c.mu.Unlock()
		for _, n := range names {
			if _, err := c.Refresh(ctx, n); err != nil && ctx.Err() != nil {
				return
			}
		}
	}
}

// SensitiveClasses implements gate.Catalog: the distinct classes of the sensitive columns of
// the given tables (qualified or not) of target, sorted. A target that cannot be scanned
// yields none; masking still applies its value detectors.
func (c *Catalog) SensitiveClasses(ctx context.Context, target string, tables []string) []string {
	cols := c.SensitiveColumns(ctx, target, tables)
	seen := map[string]bool{}
	var out []string
	for _, class := range cols {
		if !seen[class] {
			seen[class] = true
			out = append(out, class)
		}
	}
	sort.Strings(out)
	return out
}

// SensitiveColumns returns the sensitive columns of the given tables as
// "schema.table.column" → class, for the ledger's record of what a statement touched.
func (c *Catalog) SensitiveColumns(ctx context.Context, target string, tables []string) map[string]string {
	if len(tables) == 0 {
		return nil
	}
	snap, _ := c.Snapshot(ctx, target)
	if snap == nil {
		return nil
	}
	return snap.TableClasses(tables)
}

// NotNull implements the gate's check of WHERE clauses that restrict nothing when columns
// are NOT NULL (inspect.Statement.WhereTrivialIfNotNull): whether every one of columns of
// table (as the parser names it) is NOT NULL in target. Unknown tables and columns, and a
// target that cannot be scanned, are not.
func (c *Catalog) NotNull(ctx context.Context, target, table string, columns []string) bool {
	snap, _ := c.Snapshot(ctx, target)
	return snap.NotNull(table, columns)
}

// NotNull reports whether every one of columns of table (as the parser names it, resolved
// along the scan's search path) is known to be NOT NULL.
func (s *Snapshot) NotNull(table string, columns []string) bool {
	if s == nil || len(columns) == 0 {
		return false
	}
	qualified := s.QualifyTable(table)
	for _, col := range columns {
		e := s.ByName(qualified, col)
		if e == nil || !e.NotNull {
			return false
		}
	}
	return true
}

// FormatCatalog writes entries as an aligned table for `gatehouse catalog show TARGET`.
func FormatCatalog(w io.Writer, entries []Entry) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COLUMN\tTYPE\tCLASS\tCONFIDENCE\tEVIDENCE")
	for _, e := range entries {
		class := e.Class
		if class == "" {
			class = None
		}
		ev := e.Evidence
		if e.Override {
			ev = "override"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\n", e.Key(), e.Type, class, e.Confidence, ev)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write catalog: %w", err)
	}
	return nil
}

// quoteDSN escapes a value for a single-quoted keyword/value connection string.
func quoteDSN(v string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v)
}
