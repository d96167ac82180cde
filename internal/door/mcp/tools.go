package mcp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// TargetArgs name a target.
type TargetArgs struct {
	Target string `json:"target,omitempty" jsonschema:"the target's name, from list_targets (may be left out on a connection pinned to one target)"`
}

// QueryArgs are the arguments of query, execute and explain.
type QueryArgs struct {
	Target string `json:"target,omitempty" jsonschema:"the target's name, from list_targets (may be left out on a connection pinned to one target)"`
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

func (d *Door) listTargets(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, TargetList, error) {
	id, err := callerOf(req)
	if err != nil {
		return nil, TargetList{}, err
	}
	started := time.Now()
	out := TargetList{Targets: []TargetInfo{}}
	pin := pinnedTarget(req)
	for _, t := range d.Targets() {
		t := t
		if pin != "" && t.Name != pin {
			continue
		}
		dec := d.Gate.Grant(ctx, &gate.Session{Identity: id, Target: &t, Database: t.Database})
		if dec.Action != gate.Allow {
			continue
		}
		out.Targets = append(out.Targets, TargetInfo{Name: t.Name, Environment: t.Environment, Labels: t.Labels, Database: t.Database, Access: dec.Level})
	}
	if err := d.note(ctx, req, id, "list_targets", started, "", int64(len(out.Targets)), ""); err != nil {
		return nil, TargetList{}, err
	}
	return nil, out, nil
}

// note records a tool call that runs no statement (list_targets, approval_status) through the
// gate, as the record of a call without statements: via mcp, with the client and the tool,
// the rows it answered, the approval request it read, or why it failed. Like a statement's
// record, it is on the ledger before the answer leaves.
func (d *Door) note(ctx context.Context, req *sdk.CallToolRequest, id *identity.Identity, tool string, started time.Time, approvalID string, rows int64, failed string) error {
	client := "mcp"
	if req.Session != nil {
		if ci := req.Session.InitializeParams(); ci != nil && ci.ClientInfo != nil {
			client = "mcp:" + ci.ClientInfo.Name + "/" + ci.ClientInfo.Version
		}
	}
	sess := &gate.Session{Identity: id, ApplicationName: client + " tool=" + tool, Options: map[string]string{"gatehouse.tool": tool}, StartedAt: started}
	if req.Extra != nil && req.Extra.TokenInfo != nil {
		sess.ClientAddr, _ = req.Extra.TokenInfo.Extra[clientAddrKey].(string)
		sess.TLS, _ = req.Extra.TokenInfo.Extra[clientTLSKey].(bool)
		if tp := req.Extra.Header.Get("traceparent"); tp != "" {
			sess.Options["gatehouse.traceparent"] = tp
		}
	}
	check := &gate.Check{Via: gate.ViaMCP, Started: started, Decision: gate.Decision{Action: gate.Allow, Rule: "mcp-tool", ApprovalID: approvalID}}
	if err := d.Gate.Done(ctx, sess, check, gate.Outcome{Rows: rows, Error: failed}); err != nil {
		return errors.New("gatehouse: the audit ledger could not record this call, so its answer is withheld; try again shortly")
	}
	return nil
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
	res, _, err := d.runChecked(ctx, req, tool, a, readOnly)
	return nil, res, err
}

// runChecked is run that also returns the masking profile policy gave an allowed statement
// (describe_table tells which columns the caller sees masked).
func (d *Door) runChecked(ctx context.Context, req *sdk.CallToolRequest, tool string, a QueryArgs, readOnly bool) (Result, string, error) {
	target, err := targetOf(req, a.Target)
	if err != nil {
		return Result{}, "", err
	}
	c, err := d.open(ctx, req, tool, target, a.Purpose)
	if err != nil {
		return Result{}, "", err
	}
	defer c.done(ctx)
	check := d.Gate.Check(ctx, c.sess, a.SQL, gate.ViaMCP)
	if msg := d.shapeRefusal(check, readOnly, tool); msg != "" {
		d.refuse(ctx, c, check, "42501", msg)
		return Result{}, "", errors.New(msg)
	}
	if !check.Allowed() {
		msg := check.DenyMessage()
		_ = d.Gate.Done(ctx, c.sess, check, gate.Outcome{SQLState: "42501", Error: msg})
		if check.Decision.Action == gate.RequireApproval {
			res := Result{Status: "pending_approval", ApprovalID: check.Decision.ApprovalID, Message: msg + d.consoleHint(check.Decision.ApprovalID), Rows: [][]any{}}
			return res, "", nil
		}
		return Result{}, "", errors.New(msg)
	}
	res, out, err := d.runAllowed(ctx, c, check, a, readOnly)
	if rerr := d.Gate.Done(ctx, c.sess, check, out); rerr != nil {
		return Result{}, "", errors.New("gatehouse: the audit ledger could not record this statement, so its result is withheld; try again shortly")
	}
	if err != nil {
		return Result{}, "", err
	}
	return res, check.Decision.MaskProfile, nil
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

// runAllowed runs an allowed statement upstream, in a transaction of its own (READ ONLY for
// the reading tools) under a statement timeout, and renders its masked rows. BEGIN, the
// timeout, the statement and (for a read) the ROLLBACK go in one pipeline, so a read costs
// one round trip; a write's COMMIT waits for its row count, which a policy's max affected
// rows may refuse (the write is then rolled back, as the PostgreSQL door does).
func (d *Door) runAllowed(ctx context.Context, c *call, check *gate.Check, a QueryArgs, readOnly bool) (Result, gate.Outcome, error) {
	conn, err := c.conn(ctx)
	if err != nil {
		return Result{}, gate.Outcome{SQLState: "08006", Error: err.Error()}, err
	}
	timeout := d.StatementTimeout
	if timeout <= 0 {
		timeout = DefaultStatementTimeout
	}
	begin := "BEGIN"
	if readOnly {
		begin = "BEGIN READ ONLY"
	}
	params := make([][]byte, len(a.Params))
	for i, p := range a.Params {
		if p != nil {
			params[i] = []byte(*p)
		}
	}
	b := &pgconn.Batch{}
	b.ExecParams(begin, nil, nil, nil, nil)
	b.ExecParams("SET LOCAL statement_timeout = "+strconv.FormatInt(timeout.Milliseconds(), 10), nil, nil, nil, nil)
	b.ExecParams(a.SQL, params, nil, nil, nil)
	if readOnly {
		b.ExecParams("ROLLBACK", nil, nil, nil, nil)
	}
	mrr := conn.ExecBatch(ctx, b)
	var res Result
	var out gate.Outcome
	var tag pgconn.CommandTag
	var stmtErr error
	for i := 0; mrr.NextResult(); i++ {
		rr := mrr.ResultReader()
		if i != 2 {
			_, _ = rr.Close()
			continue
		}
		res, out, tag, stmtErr = d.readRows(ctx, c, check, rr, d.rowLimit(check, a.MaxRows))
	}
	if err := mrr.Close(); err != nil && stmtErr == nil {
		stmtErr = err
	}
	if stmtErr == nil && !readOnly {
		end := "COMMIT"
		if msg := capExceeded(check, tag); msg != "" {
			end, stmtErr = "ROLLBACK", errors.New(msg)
			out.SQLState, out.Error, out.Rows = "54000", msg, 0
		}
		if _, err := conn.Exec(ctx, end).ReadAll(); err != nil && stmtErr == nil {
			stmtErr = fmt.Errorf("%s: %s", strings.ToLower(end), pgMessage(err))
			out.SQLState, out.Error = sqlState(err), err.Error()
		}
	}
	if !conn.IsClosed() && conn.TxStatus() != 'I' {
		// The statement failed inside the transaction (status E): end it, so the connection
		// is idle for the next call.
		_, _ = conn.Exec(ctx, "ROLLBACK").ReadAll()
	}
	if stmtErr != nil {
		if out.SQLState == "" {
			out.SQLState, out.Error = sqlState(stmtErr), pgMessage(stmtErr)
		}
		var pe *pgconn.PgError
		if errors.As(stmtErr, &pe) {
			return Result{}, out, errors.New(maskedText(d.Gate, check, pgMessage(stmtErr)))
		}
		return Result{}, out, stmtErr
	}
	res.Command = tag.String()
	return res, out, nil
}

// capExceeded is why a write that changed rows rows must be rolled back under the policy's
// max affected rows ("" when it may commit).
func capExceeded(check *gate.Check, tag pgconn.CommandTag) string {
	limit := check.Decision.MaxAffectedRows
	if limit <= 0 {
		return ""
	}
	if !(tag.Insert() || tag.Update() || tag.Delete() || strings.HasPrefix(tag.String(), "MERGE")) {
		return fmt.Sprintf("gatehouse: rule %q limits this write to %d affected rows, but it completed as %q, whose count is not the rows it changed (a write inside a CTE or EXPLAIN ANALYZE); it was rolled back — run the write as a plain UPDATE, DELETE, MERGE or INSERT", check.Decision.Rule, limit, tag.String())
	}
	if n := tag.RowsAffected(); n > limit {
		return fmt.Sprintf("gatehouse: the statement would change %d rows, more than the limit of %d affected rows (rule %q); it was rolled back", n, limit, check.Decision.Rule)
	}
	return ""
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

// readRows reads the statement's result: up to limit rows (and MaxBytes), masked.
func (d *Door) readRows(ctx context.Context, c *call, check *gate.Check, rr *pgconn.ResultReader, limit int) (Result, gate.Outcome, pgconn.CommandTag, error) {
	maxBytes := d.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	fields := rr.FieldDescriptions()
	cols := make([]gate.Column, len(fields))
	res := Result{Status: "ok", Rows: [][]any{}}
	for i, f := range fields {
		cols[i] = gate.Column{Name: f.Name, TableOID: f.TableOID, AttNum: f.TableAttributeNumber, TypeOID: f.DataTypeOID, Format: f.Format}
		res.Columns = append(res.Columns, Column{Name: f.Name, Type: typeName(f.DataTypeOID)})
	}
	var masker gate.RowMasker
	if len(fields) > 0 {
		masker = d.Gate.ResultMasker(ctx, c.sess, check, cols)
	}
	var out gate.Outcome
	size := 0
	row := make([][]byte, len(fields))
	for rr.NextRow() {
		out.Rows++
		if len(res.Rows) >= limit || size >= maxBytes {
			res.Truncated = true
			continue
		}
		vals := rr.Values()
		for i, v := range vals {
			row[i] = nil
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
		return Result{}, out, tag, err
	}
	res.RowCount = int64(len(res.Rows))
	res.ValuesMasked = out.Masked
	out.Bytes = int64(size)
	return res, out, tag, nil
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
