package mask

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
)

// Describer tells the result columns of a query exactly as PostgreSQL describes them to a
// client (RowDescription: name, type, table OID and attribute number), by preparing — never
// executing — the query on a connection of its own to the target. COPY ... TO STDOUT sends
// no row description, so without this the masks of its columns would be guessed from the
// statement text alone, which cannot count what `(t).*`, `json_populate_record(...)` or an
// unknown table expands into, nor tell the types binary values need.
type Describer struct {
	connect classify.Connector
	timeout time.Duration

	mu   sync.Mutex
	idle map[string]*pgx.Conn // one idle connection per catalog key
}

// NewDescriber returns a describer that connects through connect (the catalog's connector:
// the target's own credentials, "database@target" keys).
func NewDescriber(connect classify.Connector) *Describer {
	return &Describer{connect: connect, timeout: 5 * time.Second, idle: map[string]*pgx.Conn{}}
}

// Describe returns the result columns of sql (one statement) on the database key names, in
// text format.
func (d *Describer) Describe(ctx context.Context, key, sql string) ([]gate.Column, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	d.mu.Lock()
	conn := d.idle[key]
	delete(d.idle, key)
	d.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		var err error
		if conn, err = d.connect(ctx, key); err != nil {
			return nil, fmt.Errorf("describe a result: connect to %s: %w", key, err)
		}
	}
	sd, err := conn.PgConn().Prepare(ctx, "", sql, nil)
	if err != nil {
		if ctx.Err() != nil || conn.IsClosed() {
			_ = conn.Close(context.Background())
			return nil, fmt.Errorf("describe a result: %w", err)
		}
		d.release(key, conn)
		return nil, fmt.Errorf("describe a result: %w", err)
	}
	d.release(key, conn)
	cols := make([]gate.Column, len(sd.Fields))
	for i, f := range sd.Fields {
		cols[i] = gate.Column{Name: f.Name, TableOID: f.TableOID, AttNum: f.TableAttributeNumber, TypeOID: f.DataTypeOID}
	}
	return cols, nil
}

func (d *Describer) release(key string, conn *pgx.Conn) {
	d.mu.Lock()
	prev := d.idle[key]
	d.idle[key] = conn
	d.mu.Unlock()
	if prev != nil {
		_ = prev.Close(context.Background())
	}
}

// Close closes the idle connections.
func (d *Describer) Close() {
	d.mu.Lock()
	idle := d.idle
	d.idle = map[string]*pgx.Conn{}
	d.mu.Unlock()
	for _, c := range idle {
		_ = c.Close(context.Background())
	}
}

// UseDescriber makes COPY ... TO STDOUT planning describe the COPY's query on the target, so
// its columns are masked exactly as the same SELECT's (see Describer).
func (p *Planner) UseDescriber(d *Describer) { p.describer = d }

// copyQuery returns the query whose rows a COPY ... TO STDOUT statement writes: its query,
// or a SELECT of its table's columns. version is the parse tree's.
func copyQuery(cs *pg.CopyStmt, version int32) (string, error) {
	if cs.Query != nil {
		return pg.Deparse(&pg.ParseResult{Version: version, Stmts: []*pg.RawStmt{{Stmt: cs.Query}}})
	}
	rv := cs.Relation
	if rv == nil {
		return "", fmt.Errorf("COPY without a table or a query")
	}
	cols := "*"
	if len(cs.Attlist) > 0 {
		var names []string
		for _, a := range cs.Attlist {
			if s := a.GetString_(); s != nil {
				names = append(names, quoteIdent(s.Sval))
			}
		}
		cols = strings.Join(names, ", ")
	}
	table := quoteIdent(rv.Relname)
	if rv.Schemaname != "" {
		table = quoteIdent(rv.Schemaname) + "." + table
	}
	return "SELECT " + cols + " FROM " + table, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
