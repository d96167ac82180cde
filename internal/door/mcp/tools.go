package mcp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/upstream"
)

// TargetArgs name a target.
type TargetArgs struct {
	Target string `json:"target" jsonschema:"the target's name, from list_targets"`
}

// QueryArgs are the arguments of query, execute and explain.
type QueryArgs struct {
	Target string `json:"target" jsonschema:"the target's name, from list_targets"`
	SQL    string `json:"sql" jsonschema:"exactly one SQL statement; use $1, $2 ... for params"`
	// Params are the statement's parameters, as text (NULL: null).
	Params []*string `json:"params,omitempty" jsonschema:"values for $1, $2 ... as text; null for SQL NULL"`
	// Purpose says why the statement runs; it lands in the audit ledger.
	Purpose string `json:"purpose,omitempty" jsonschema:"why you run this (recorded in the audit ledger)"`
	// MaxRows lowers the row limit of a query (the door's and the policy's limits still apply).
	MaxRows int `json:"max_rows,omitempty" jsonschema:"at most this many rows (default and cap: the server's limit)"`
}

// TargetInfo is one entry of list_targets.
type TargetInfo struct {
	Name        string            `json:"name"`
	Environment string            `json:"environment"`
	Labels      map[string]string `json:"labels,omitempty"`
	Database    string            `json:"database"`
	Access      string            `json:"access" jsonschema:"read, write or admin: what policy grants you"`
}

// TargetList is list_targets' result.
type TargetList struct {
	Targets []TargetInfo `json:"targets"`
}

// Column is a result column.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Result is the result of query and execute.
type Result struct {
	Columns   []Column `json:"columns,omitempty"`
	Rows      [][]any  `json:"rows"`
	RowCount  int64    `json:"row_count"`
	Truncated bool     `json:"truncated"`
	// Command is the command tag PostgreSQL returned (SELECT 3, UPDATE 1, ...).
	Command string `json:"command,omitempty"`
	// ValuesMasked counts values replaced by masking in the rows shown.
	ValuesMasked int64 `json:"values_masked,omitempty"`
	// Status is "ok", or "pending_approval" for a statement held for approval.
	Status string `json:"status"`
	// ApprovalID and Message explain a pending approval: what to ask for and where.
	ApprovalID string `json:"approval_id,omitempty"`
	Message    string `json:"message,omitempty"`
}

func (d *Door) addTools(s *sdk.Server) {
	sdk.AddTool(s, &sdk.Tool{Name: "list_targets", Description: "List the databases (targets) you may use, with their environment (dev, staging, prod) and the access level policy grants you."}, d.listTargets)
	sdk.AddTool(s, &sdk.Tool{Name: "list_tables", Description: "List the tables and views of a target, with the sensitive data classes (email, ssn, card, ...) their columns hold."}, d.listTables)
	sdk.AddTool(s, &sdk.Tool{Name: "describe_table", Description: "Describe one table: columns, types, primary key, estimated rows, and each column's sensitive class and whether you see it masked."}, d.describeTable)
	sdk.AddTool(s, &sdk.Tool{Name: "query", Description: "Run ONE read-only SQL statement (SELECT, WITH ... SELECT, SHOW) and get rows as JSON. Policy applies; sensitive values come back masked; results are limited (see truncated). Writes are refused: use execute."}, d.query)
	sdk.AddTool(s, &sdk.Tool{Name: "explain", Description: "Show the query plan of ONE statement without running it (EXPLAIN without ANALYZE)."}, d.explain)
	sdk.AddTool(s, &sdk.Tool{Name: "execute", Description: "Run ONE statement that changes data or schema (INSERT, UPDATE, DELETE, DDL). Policy decides; a statement that needs a human's approval returns status pending_approval with an approval id: once approved, run the identical statement again and it runs once."}, d.execute)
	sdk.AddTool(s, &sdk.Tool{Name: "approval_status", Description: "Report where one of your approval requests stands (pending, approved, denied, expired or used), by the approval_id a held execute returned, and what to do next."}, d.approvalStatus)
}

// call is one tool call's gate session on a target.
type call struct {
	d    *Door
	sess *gate.Session
	conn *pgconn.PgConn
}

// open authenticates the call, opens its gate session (which records it and picks the
// least-privileged upstream role) and connects upstream.
func (d *Door) open(ctx context.Context, req *sdk.CallToolRequest, tool, targetName, purpose string) (*call, error) {
	id, err := callerOf(req)
	if err != nil {
		return nil, err
	}
	t, ok := d.Target(targetName)
	if !ok || t == nil {
		return nil, fmt.Errorf("target %q does not exist; call list_targets for the targets you can use", targetName)
	}
	// The application name says which client and which tool: the ledger event of the call
	// carries it ("mcp:claude-code/2.1.0 tool=query"), so an audit search by door shows both.
	app := "mcp"
	if ci := req.Session.InitializeParams(); ci != nil && ci.ClientInfo != nil {
		app = "mcp:" + ci.ClientInfo.Name + "/" + ci.ClientInfo.Version
	}
	app += " tool=" + tool
	sess := &gate.Session{ID: gate.NewSessionID(), Identity: id, Target: t, Database: t.Database, ApplicationName: app,
		Options: map[string]string{"gatehouse.tool": tool}, StartedAt: time.Now()}
	if purpose != "" {
		sess.Options["gatehouse.purpose"] = purpose
	}
	if req.Extra != nil && req.Extra.Header != nil {
		if tp := req.Extra.Header.Get("traceparent"); tp != "" {
			sess.Options["gatehouse.traceparent"] = tp
		}
	}
	dec, err := d.Gate.OpenSession(ctx, sess)
	if err != nil {
		return nil, errors.New("gatehouse: the audit ledger cannot record this call, so it is refused; try again shortly")
	}
	if dec.Action != gate.Allow {
		msg := dec.Message
		if msg == "" {
			msg = fmt.Sprintf("access to target %q denied", t.Name)
		}
		return nil, fmt.Errorf("gatehouse: denied by rule %q: %s", dec.Rule, msg)
	}
	d.Gate.Attach(sess, "mcp", nil)
	params := map[string]string{"application_name": app}
	if sess.UpstreamRole != "" {
		params["role"] = sess.UpstreamRole
	}
	conn, err := upstream.Connect(ctx, upstream.Request{Target: t, Database: t.Database, Params: params})
	if err != nil {
		d.Gate.CloseSession(context.WithoutCancel(ctx), sess, "upstream connection failed")
		return nil, fmt.Errorf("could not connect to target %q: %v", t.Name, err)
	}
	return &call{d: d, sess: sess, conn: conn}, nil
}

func (c *call) close(ctx context.Context, reason string) {
	_ = c.conn.Close(context.WithoutCancel(ctx))
	c.d.Gate.CloseSession(context.WithoutCancel(ctx), c.sess, reason)
}

func (d *Door) listTargets(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, TargetList, error) {
	id, err := callerOf(req)
	if err != nil {
		return nil, TargetList{}, err
	}
	out := TargetList{Targets: []TargetInfo{}}
	for _, t := range d.Targets() {
		t := t
		dec := d.Gate.Grant(ctx, &gate.Session{Identity: id, Target: &t, Database: t.Database})
		if dec.Action != gate.Allow {
			continue
		}
		out.Targets = append(out.Targets, TargetInfo{Name: t.Name, Environment: t.Environment, Labels: t.Labels, Database: t.Database, Access: dec.Level})
	}
	return nil, out, nil
}

// query runs one read-only statement inside a READ ONLY transaction.
func (d *Door) query(ctx context.Context, req *sdk.CallToolRequest, a QueryArgs) (*sdk.CallToolResult, Result, error) {
	return d.run(ctx, req, "query", a, true)
}

// execute runs one statement that may change data or schema.
func (d *Door) execute(ctx context.Context, req *sdk.CallToolRequest, a QueryArgs) (*sdk.CallToolResult, Result, error) {
	return d.run(ctx, req, "execute", a, false)
}

// explain shows a plan: EXPLAIN of the statement, decided by the gate like the statement.
func (d *Door) explain(ctx context.Context, req *sdk.CallToolRequest, a QueryArgs) (*sdk.CallToolResult, Result, error) {
	if strings.Contains(strings.ToUpper(a.SQL), "ANALYZE") {
		return nil, Result{}, errors.New("explain shows plans without running statements; EXPLAIN ANALYZE runs the statement: use query or execute")
	}
	a.SQL = "EXPLAIN " + a.SQL
	return d.run(ctx, req, "explain", a, true)
}

// run is the one path of every statement a tool runs: gate check, upstream, masking, record.
func (d *Door) run(ctx context.Context, req *sdk.CallToolRequest, tool string, a QueryArgs, readOnly bool) (*sdk.CallToolResult, Result, error) {
	c, err := d.open(ctx, req, tool, a.Target, a.Purpose)
	if err != nil {
		return nil, Result{}, err
	}
	reason := "tool call done"
	defer func() { c.close(ctx, reason) }()
	check := d.Gate.Check(ctx, c.sess, a.SQL, gate.ViaMCP)
	if msg := d.shapeRefusal(check, readOnly, tool); msg != "" {
		d.refuse(ctx, c, check, "42501", msg)
		return nil, Result{}, errors.New(msg)
	}
	if !check.Allowed() {
		msg := check.DenyMessage()
		_ = d.Gate.Done(ctx, c.sess, check, gate.Outcome{SQLState: "42501", Error: msg})
		if check.Decision.Action == gate.RequireApproval {
			res := Result{Status: "pending_approval", ApprovalID: check.Decision.ApprovalID, Message: msg + d.consoleHint(check.Decision.ApprovalID), Rows: [][]any{}}
			return nil, res, nil
		}
		return nil, Result{}, errors.New(msg)
	}
	if d.onDecision != nil {
		d.onDecision(check)
	}
	res, out, err := d.runAllowed(ctx, c, check, a, readOnly)
	if rerr := d.Gate.Done(ctx, c.sess, check, out); rerr != nil {
		return nil, Result{}, errors.New("gatehouse: the audit ledger could not record this statement, so its result is withheld; try again shortly")
	}
	if err != nil {
		return nil, Result{}, err
	}
	return nil, res, nil
}

func (d *Door) consoleHint(id string) string {
	if d.ConsoleURL == "" || id == "" {
		return ""
	}
	return " (decide it at " + strings.TrimSuffix(d.ConsoleURL, "/") + "/approvals/" + id + ")"
}

// shapeRefusal is why a statement cannot run through this tool at all, whatever policy says:
// several statements in one call, a write through a read-only tool.
func (d *Door) shapeRefusal(c *gate.Check, readOnly bool, tool string) string {
	if len(c.Statements) != 1 {
		return fmt.Sprintf("gatehouse: %s runs exactly one statement; this text holds %d (stacked statements are refused)", tool, len(c.Statements))
	}
	st := c.Statements[0]
	if readOnly && st.Category != inspect.Read {
		return fmt.Sprintf("gatehouse: %s only reads; this is a %s statement (%s): use execute", tool, st.Category, st.Kind)
	}
	if st.Category == inspect.Transaction {
		return "gatehouse: each tool call is its own transaction; transaction control statements are refused"
	}
	return ""
}

// refuse records a door-shape refusal through the gate (the decision is the door's, the
// record the gate's, as for every refusal).
func (d *Door) refuse(ctx context.Context, c *call, check *gate.Check, code, msg string) {
	check.Decision = gate.Decision{Action: gate.Deny, Rule: "mcp-tool-shape", Message: msg}
	if len(check.Statements) > 0 {
		check.Denied = check.Statements[0]
	}
	_ = d.Gate.Done(ctx, c.sess, check, gate.Outcome{SQLState: code, Error: msg})
}

// runAllowed runs an allowed statement upstream and renders its masked rows.
func (d *Door) runAllowed(ctx context.Context, c *call, check *gate.Check, a QueryArgs, readOnly bool) (Result, gate.Outcome, error) {
	timeout := d.StatementTimeout
	if timeout <= 0 {
		timeout = DefaultStatementTimeout
	}
	begin := "BEGIN"
	if readOnly {
		begin = "BEGIN READ ONLY"
	}
	if err := c.conn.Exec(ctx, begin+"; SET LOCAL statement_timeout = "+fmt.Sprint(timeout.Milliseconds())).Close(); err != nil {
		return Result{}, gate.Outcome{SQLState: sqlState(err), Error: err.Error()}, fmt.Errorf("start the transaction: %w", err)
	}
	limit := d.rowLimit(check, a.MaxRows)
	res, out, err := d.readRows(ctx, c, check, a, limit)
	end := "COMMIT"
	if readOnly || err != nil {
		end = "ROLLBACK"
	}
	if cerr := c.conn.Exec(ctx, end).Close(); cerr != nil && err == nil {
		out.SQLState, out.Error = sqlState(cerr), cerr.Error()
		return Result{}, out, fmt.Errorf("%s: %s", strings.ToLower(end), pgMessage(cerr))
	}
	return res, out, err
}

// rowLimit is the smallest of the door's limit, the caller's and the policy's.
func (d *Door) rowLimit(check *gate.Check, asked int) int {
	limit := d.MaxRows
	if limit <= 0 {
		limit = DefaultMaxRows
	}
	if asked > 0 && asked < limit {
		limit = asked
	}
	if m := check.Decision.MaxRows; m > 0 && int(m) < limit {
		limit = int(m)
	}
	return limit
}

// readRows runs the statement and collects up to limit rows (and MaxBytes), masked.
func (d *Door) readRows(ctx context.Context, c *call, check *gate.Check, a QueryArgs, limit int) (Result, gate.Outcome, error) {
	maxBytes := d.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	params := make([][]byte, len(a.Params))
	for i, p := range a.Params {
		if p != nil {
			params[i] = []byte(*p)
		}
	}
	rr := c.conn.ExecParams(ctx, a.SQL, params, nil, nil, nil)
	fields := rr.FieldDescriptions()
	cols := make([]gate.Column, len(fields))
	res := Result{Status: "ok", Rows: [][]any{}}
	for i, f := range fields {
		cols[i] = gate.Column{Name: f.Name, TableOID: f.TableOID, AttNum: f.TableAttributeNumber, TypeOID: f.DataTypeOID, Format: f.Format}
		res.Columns = append(res.Columns, Column{Name: f.Name, Type: typeName(f.DataTypeOID)})
	}
	masker := d.Gate.ResultMasker(ctx, c.sess, check, cols)
	var out gate.Outcome
	size := 0
	for rr.NextRow() {
		out.Rows++
		if len(res.Rows) >= limit || size >= maxBytes {
			res.Truncated = true
			continue
		}
		vals := rr.Values()
		row := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = append([]byte(nil), v...)
			}
		}
		if masker != nil {
			out.Masked += int64(masker.MaskRow(row))
		}
		jr := make([]any, len(row))
		for i, v := range row {
			jr[i] = jsonValue(fields[i].DataTypeOID, v)
			size += len(v)
		}
		res.Rows = append(res.Rows, jr)
	}
	d.Gate.CountMasked(c.sess, masker)
	tag, err := rr.Close()
	if err != nil {
		out.SQLState, out.Error = sqlState(err), pgMessage(err)
		return Result{}, out, fmt.Errorf("%s", maskedText(d.Gate, check, pgMessage(err)))
	}
	res.Command = tag.String()
	res.RowCount = int64(len(res.Rows))
	res.ValuesMasked = out.Masked
	out.Bytes = int64(size)
	return res, out, nil
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return "08006"
}

func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Severity + ": " + pe.Message + " (SQLSTATE " + pe.Code + ")"
	}
	return err.Error()
}
