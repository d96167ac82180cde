package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
)

// Type OIDs the door renders as JSON numbers, booleans or JSON; everything else is the text
// PostgreSQL sends (numeric stays text: JSON numbers would lose its precision).
const (
	oidBool   = 16
	oidInt8   = 20
	oidInt2   = 21
	oidInt4   = 23
	oidJSON   = 114
	oidFloat4 = 700
	oidFloat8 = 701
	oidJSONB  = 3802
)

var typeNames = map[uint32]string{16: "boolean", 17: "bytea", 18: "char", 19: "name", 20: "bigint", 21: "smallint", 23: "integer",
	25: "text", 26: "oid", 114: "json", 700: "real", 701: "double precision", 1042: "character", 1043: "character varying",
	1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz", 1186: "interval", 1700: "numeric", 2950: "uuid",
	3802: "jsonb", 1009: "text[]", 1007: "integer[]", 1016: "bigint[]"}

// typeName names a result column's type for the agent.
func typeName(oid uint32) string {
	if n, ok := typeNames[oid]; ok {
		return n
	}
	return "oid " + strconv.FormatUint(uint64(oid), 10)
}

// jsonValue renders one text-format value faithfully as JSON.
func jsonValue(oid uint32, v []byte) any {
	if v == nil {
		return nil
	}
	s := string(v)
	switch oid {
	case oidBool:
		return s == "t"
	case oidInt2, oidInt4, oidInt8:
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	case oidFloat4, oidFloat8:
		if f, err := strconv.ParseFloat(s, 64); err == nil && !strings.ContainsAny(s, "NaInf") {
			return f
		}
	case oidJSON, oidJSONB:
		if json.Valid(v) {
			return json.RawMessage(append([]byte(nil), v...))
		}
	}
	return s
}

// maskedText scrubs a database error's text the way the PostgreSQL door scrubs an
// ErrorResponse's message, with the statement's masking profile.
func maskedText(g *gate.Gate, c *gate.Check, text string) string {
	out, _ := g.MaskText(c, text)
	return out
}

// TableInfo is one entry of list_tables.
type TableInfo struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Kind   string `json:"kind" jsonschema:"table or view"`
	// Sensitive lists the sensitive classes the table's columns hold.
	Sensitive []string `json:"sensitive,omitempty"`
}

// TableList is list_tables' result.
type TableList struct {
	Tables []TableInfo `json:"tables"`
}

// ListTablesArgs are list_tables' arguments.
type ListTablesArgs struct {
	Target string `json:"target,omitempty" jsonschema:"the target's name, from list_targets (may be left out on a connection pinned to one target)"`
	Schema string `json:"schema,omitempty" jsonschema:"only this schema"`
	Search string `json:"search,omitempty" jsonschema:"only tables whose name contains this text"`
}

const listTablesSQL = `SELECT schemaname, tablename, 'table' FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
UNION ALL SELECT schemaname, viewname, 'view' FROM pg_catalog.pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2`

// listTables lists tables and views through the gate (a recorded catalog read) and marks
// the sensitive classes the classification catalog found in each.
func (d *Door) listTables(ctx context.Context, req *sdk.CallToolRequest, a ListTablesArgs) (*sdk.CallToolResult, TableList, error) {
	var err error
	if a.Target, err = targetOf(req, a.Target); err != nil {
		return nil, TableList{}, err
	}
	_, res, err := d.run(ctx, req, "list_tables", QueryArgs{Target: a.Target, SQL: listTablesSQL, MaxRows: DefaultMaxRows}, true)
	if err != nil {
		return nil, TableList{}, err
	}
	snap := d.snapshot(ctx, a.Target)
	out := TableList{Tables: []TableInfo{}}
	for _, r := range res.Rows {
		schema, _ := r[0].(string)
		name, _ := r[1].(string)
		kind, _ := r[2].(string)
		if a.Schema != "" && schema != a.Schema || a.Search != "" && !strings.Contains(strings.ToLower(name), strings.ToLower(a.Search)) {
			continue
		}
		out.Tables = append(out.Tables, TableInfo{Schema: schema, Name: name, Kind: kind, Sensitive: classesOf(snap, schema, name)})
	}
	return nil, out, nil
}

func (d *Door) snapshot(ctx context.Context, targetName string) *classify.Snapshot {
	t, ok := d.Target(targetName)
	if !ok {
		return nil
	}
	return d.Gate.Columns(ctx, &gate.Session{Target: t, Database: t.Database})
}

func classesOf(snap *classify.Snapshot, schema, table string) []string {
	seen := map[string]bool{}
	for _, e := range snap.Sensitive() {
		if e.Schema == schema && e.Table == table {
			seen[e.Class] = true
		}
	}
	out := make([]string, 0, len(seen))
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// DescribeArgs are describe_table's arguments.
type DescribeArgs struct {
	Target string `json:"target,omitempty" jsonschema:"the target's name, from list_targets (may be left out on a connection pinned to one target)"`
	Table  string `json:"table" jsonschema:"the table, optionally schema-qualified (public.customers)"`
}

// ColumnInfo describes one column of a table.
type ColumnInfo struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	NotNull bool   `json:"not_null"`
	// Class is the sensitive class found for the column ("" for none), Masked whether
	// this identity sees its values masked.
	Class  string `json:"class,omitempty"`
	Masked bool   `json:"masked"`
}

// TableDescription is describe_table's result.
type TableDescription struct {
	Schema        string       `json:"schema"`
	Name          string       `json:"name"`
	Columns       []ColumnInfo `json:"columns"`
	PrimaryKey    []string     `json:"primary_key,omitempty"`
	EstimatedRows int64        `json:"estimated_rows"`
}

// describeTable describes a table from the classification catalog and a recorded catalog
// read for its key and size.
func (d *Door) describeTable(ctx context.Context, req *sdk.CallToolRequest, a DescribeArgs) (*sdk.CallToolResult, TableDescription, error) {
	var err error
	if a.Target, err = targetOf(req, a.Target); err != nil {
		return nil, TableDescription{}, err
	}
	snap := d.snapshot(ctx, a.Target)
	if snap == nil {
		return nil, TableDescription{}, fmt.Errorf("target %q is unknown or its catalogue cannot be read now", a.Target)
	}
	schema, table := "", a.Table
	if i := strings.IndexByte(a.Table, '.'); i >= 0 {
		schema, table = a.Table[:i], a.Table[i+1:]
	}
	qualified, cols, ok := snap.Resolve(schema, table)
	if !ok {
		return nil, TableDescription{}, fmt.Errorf("table %q not found on %s; call list_tables", a.Table, a.Target)
	}
	schema, table, _ = strings.Cut(qualified, ".")
	reg := quoteIdent(schema) + "." + quoteIdent(table)
	sql := `SELECT c.reltuples::bigint, coalesce((SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = c.oid AND i.indisprimary), '') FROM pg_catalog.pg_class c WHERE c.oid = ` + quoteLiteral(reg) + `::regclass`
	q, err := d.checkedRead(ctx, req, "describe_table", a.Target, sql)
	if err != nil {
		return nil, TableDescription{}, err
	}
	out := TableDescription{Schema: schema, Name: table, Columns: []ColumnInfo{}}
	if len(q.res.Rows) == 1 {
		if n, ok := q.res.Rows[0][0].(int64); ok {
			out.EstimatedRows = n
		}
		if pk, _ := q.res.Rows[0][1].(string); pk != "" {
			out.PrimaryKey = strings.Split(pk, ",")
		}
	}
	for _, col := range cols {
		e := snap.ByName(qualified, col)
		ci := ColumnInfo{Name: col}
		if e != nil {
			ci.Type, ci.NotNull = e.Type, e.NotNull
			if e.IsSensitive() {
				ci.Class = e.Class
				ci.Masked = d.Gate.SeesMasked(q.profile, e.Class)
			}
		}
		out.Columns = append(out.Columns, ci)
	}
	return nil, out, nil
}

// readResult is a recorded read and the masking profile policy gave it.
type readResult struct {
	res     Result
	profile string
}

// checkedRead runs a read through the one path and keeps the decision's masking profile.
func (d *Door) checkedRead(ctx context.Context, req *sdk.CallToolRequest, tool, target, sql string) (readResult, error) {
	res, profile, err := d.runChecked(ctx, req, tool, QueryArgs{Target: target, SQL: sql}, true)
	if err != nil {
		return readResult{}, err
	}
	return readResult{res: res, profile: profile}, nil
}

func quoteIdent(s string) string   { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
