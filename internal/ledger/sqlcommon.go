package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// runner is the little both stores share: run a query and scan each row. The search,
// aggregation and scan logic is written once on top of it.
type runner interface {
	dialect() dialect
	queryRows(ctx context.Context, sql string, args []any, fn func(scan func(dest ...any) error) error) error
}

func runSearch(ctx context.Context, r runner, q Query, now time.Time) ([]Event, error) {
	sql, args, err := buildSearch(r.dialect(), q, now)
	if err != nil {
		return nil, err
	}
	var out []Event
	err = r.queryRows(ctx, sql, args, func(scan func(...any) error) error {
		var body []byte
		if err := scan(&body); err != nil {
			return err
		}
		ev, err := decodeBody(body)
		if err != nil {
			return err
		}
		out = append(out, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("search ledger: %w", err)
	}
	return out, nil
}

// runWhoDropped answers "who dropped table X": the completed, successful DROPs of the
// table, and the DROPs whose intent is recorded without a completion (Gatehouse died while
// the statement ran, so it may have dropped the table), marked OutcomeUnknown. A DROP with
// both an intent and a completion appears once.
func runWhoDropped(ctx context.Context, r runner, table string, tr TimeRange) ([]DropRecord, error) {
	cond, args := tableMatch("d", table)
	from, to := tr.bounds()
	noix := ""
	if r.dialect() == sqliteSQL {
		noix = "+"
	}
	sql := intentSQL(r.dialect(), strings.ReplaceAll(fmt.Sprintf(whoDroppedSQL, cond), "{NOIX}", noix), "ledger_tables_drops")
	var out []DropRecord
	err := r.queryRows(ctx, sql, append(args, from, to), func(scan func(...any) error) error {
		var body []byte
		var tbl, kind string
		if err := scan(&body, &tbl, &kind); err != nil {
			return err
		}
		ev, err := decodeBody(body)
		if err != nil {
			return err
		}
		if ev.SQLState != "" && ev.SQLState != "00000" {
			return nil // allowed but failed upstream: nothing was dropped
		}
		rec := dropRecord(&ev, kind)
		rec.Table, rec.Outcome = tbl, OutcomeCompleted
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find who dropped %s: %w", table, err)
	}
	unknown, err := droppedByIntent(ctx, r, table, tr)
	if err != nil {
		return nil, err
	}
	if len(unknown) > 0 {
		out = append(out, unknown...)
		slices.SortStableFunc(out, func(a, b DropRecord) int {
			if c := a.Time.Compare(b.Time); c != 0 {
				return c
			}
			return cmp.Compare(a.Seq, b.Seq)
		})
	}
	return out, nil
}

func runIdentityCounts(ctx context.Context, r runner, sql string, args []any) ([]IdentityCount, error) {
	var out []IdentityCount
	err := r.queryRows(ctx, rebind(r.dialect(), sql), args, func(scan func(...any) error) error {
		var ic IdentityCount
		var first, last int64
		if err := scan(&ic.Subject, &ic.IdentityKind, &ic.Statements, &first, &last); err != nil {
			return err
		}
		ic.First, ic.Last = nsTime(first), nsTime(last)
		out = append(out, ic)
		return nil
	})
	return out, err
}

const dayNS = int64(24 * time.Hour)

// runPIIReaders answers from the daily rollup for the whole UTC days inside the range and
// from the per-event rows for the partial days at its edges, so a quarter costs about 90
// rollup rows per reader instead of one row per statement. Reads whose intent is recorded
// without a completion count too (they may have run while Gatehouse died), once each.
func runPIIReaders(ctx context.Context, r runner, class string, tr TimeRange) ([]IdentityCount, error) {
	if class == "" {
		class = "pii"
	}
	from, to := tr.bounds()
	dayFrom := ceilDiv(from, dayNS)
	dayTo := floorDiv(to, dayNS)
	parts := [][]any{}
	if dayFrom < dayTo {
		parts = append(parts, []any{piiReadersDailySQL, class, dayFrom, dayTo})
		parts = append(parts, []any{piiReadersSQL, class, from, dayFrom * dayNS})
		parts = append(parts, []any{piiReadersSQL, class, dayTo * dayNS, to})
	} else {
		parts = append(parts, []any{piiReadersSQL, class, from, to})
	}
	merged := map[[2]string]*IdentityCount{}
	var order [][2]string
	for _, p := range parts {
		if p[0] == piiReadersSQL && p[2].(int64) >= p[3].(int64) {
			continue
		}
		rows, err := runIdentityCounts(ctx, r, p[0].(string), p[1:])
		if err != nil {
			return nil, fmt.Errorf("find readers of %s data: %w", class, err)
		}
		for _, ic := range rows {
			k := [2]string{ic.Subject, ic.IdentityKind}
			m := merged[k]
			if m == nil {
				c := ic
				merged[k] = &c
				order = append(order, k)
				continue
			}
			m.Statements += ic.Statements
			if ic.First.Before(m.First) {
				m.First = ic.First
			}
			if ic.Last.After(m.Last) {
				m.Last = ic.Last
			}
		}
	}
	out := make([]IdentityCount, 0, len(order))
	for _, k := range order {
		out = append(out, *merged[k])
	}
	slices.SortFunc(out, func(a, b IdentityCount) int {
		if a.Statements != b.Statements {
			return cmp.Compare(b.Statements, a.Statements)
		}
		return strings.Compare(a.Subject, b.Subject)
	})
	unknown, err := readersByIntent(ctx, r, class, tr)
	if err != nil {
		return nil, err
	}
	return addIntentCounts(out, unknown), nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }

// runAgentsQueried counts the agents' statements on a table; a write whose intent is
// recorded without a completion counts too (it may have run while Gatehouse died), once.
func runAgentsQueried(ctx context.Context, r runner, table string, tr TimeRange) ([]IdentityCount, error) {
	cond, args := tableMatch("", table)
	from, to := tr.bounds()
	out, err := runIdentityCounts(ctx, r, strings.Replace(fmt.Sprintf(agentsQueriedSQL, cond), "{IX}", indexHint(r.dialect(), "ledger_tables_agents"), 1), append(args, from, to))
	if err != nil {
		return nil, fmt.Errorf("find agents that queried %s: %w", table, err)
	}
	unknown, err := agentsByIntent(ctx, r, table, tr)
	if err != nil {
		return nil, err
	}
	return addIntentCounts(out, unknown), nil
}

const scanSQL = `SELECT seq, body, type, COALESCE(subject, ''), COALESCE(decision, ''), time_ns FROM ledger_events WHERE instance = ? AND seq > ? ORDER BY seq`

func runScan(ctx context.Context, r runner, instance string, after int64, limit int, fn func(StoredEvent) error) error {
	sql := scanSQL
	args := []any{instance, after}
	if limit > 0 {
		sql += " LIMIT ?"
		args = append(args, limit)
	}
	err := r.queryRows(ctx, rebind(r.dialect(), sql), args, func(scan func(...any) error) error {
		var se StoredEvent
		if err := scan(&se.RowSeq, &se.Body, &se.Type, &se.Subject, &se.Decision, &se.TimeNS); err != nil {
			return err
		}
		return fn(se)
	})
	if err != nil {
		return fmt.Errorf("scan ledger of %s: %w", instance, err)
	}
	return nil
}

const checkpointsSQL = `SELECT instance, seq, hash, time_ns, kind, signature FROM ledger_checkpoints`

func runCheckpoints(ctx context.Context, r runner, instance string) ([]Checkpoint, error) {
	sql := checkpointsSQL
	var args []any
	if instance != "" {
		sql += " WHERE instance = ?"
		args = append(args, instance)
	}
	sql += " ORDER BY instance, seq, time_ns"
	var out []Checkpoint
	err := r.queryRows(ctx, rebind(r.dialect(), sql), args, func(scan func(...any) error) error {
		var cp Checkpoint
		var ns int64
		if err := scan(&cp.Instance, &cp.Seq, &cp.Hash, &ns, &cp.Kind, &cp.Signature); err != nil {
			return err
		}
		cp.Time = nsTime(ns)
		out = append(out, cp)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	return out, nil
}

func runInstances(ctx context.Context, r runner) ([]string, error) {
	var out []string
	err := r.queryRows(ctx, `SELECT DISTINCT instance FROM ledger_events UNION SELECT DISTINCT instance FROM ledger_checkpoints ORDER BY 1`, nil, func(scan func(...any) error) error {
		var s string
		if err := scan(&s); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list ledger instances: %w", err)
	}
	return out, nil
}

func runLastBefore(ctx context.Context, r runner, instance string, t time.Time) (int64, string, error) {
	// Retention deletes a prefix of the chain (so it stays contiguous): the longest prefix
	// whose events are all older than t. Walking the chain from its start stops at the
	// first younger event, so the cost is that of the events about to be deleted.
	one := func(q string, args []any, dest ...any) (bool, error) {
		found := false
		err := r.queryRows(ctx, rebind(r.dialect(), q), args, func(scan func(...any) error) error {
			found = true
			return scan(dest...)
		})
		return found, err
	}
	var first int64
	found, err := one(`SELECT seq FROM ledger_events WHERE instance = ? AND time_ns >= ? ORDER BY seq LIMIT 1`, []any{instance, t.UnixNano()}, &first)
	if err != nil {
		return 0, "", fmt.Errorf("find events before %s: %w", t.Format(time.RFC3339), err)
	}
	q, args := `SELECT seq, `+eventHashExpr(r.dialect())+` FROM ledger_events WHERE instance = ? AND seq < ? ORDER BY seq DESC LIMIT 1`, []any{instance, first}
	if !found {
		q, args = `SELECT seq, `+eventHashExpr(r.dialect())+` FROM ledger_events WHERE instance = ? ORDER BY seq DESC LIMIT 1`, []any{instance}
	}
	var seq int64
	var hash string
	found, err = one(q, args, &seq, &hash)
	if err != nil {
		return 0, "", fmt.Errorf("find events before %s: %w", t.Format(time.RFC3339), err)
	}
	if !found {
		return 0, "", nil
	}
	return seq, hash, nil
}

// indexHint is the INDEXED BY clause naming index in SQLite, nothing in PostgreSQL.
func indexHint(d dialect, index string) string {
	if d == sqliteSQL {
		return "INDEXED BY " + index
	}
	return ""
}

// eventHashExpr reads an event row's hash in dialect d.
func eventHashExpr(d dialect) string {
	if d == sqliteSQL {
		return sqliteHashExpr
	}
	return "hash"
}

func runHead(ctx context.Context, r runner, instance string) (int64, string, error) {
	var seq int64
	var hash string
	found := false
	err := r.queryRows(ctx, rebind(r.dialect(), `SELECT seq, `+eventHashExpr(r.dialect())+` FROM ledger_events WHERE instance = ? ORDER BY seq DESC LIMIT 1`), []any{instance}, func(scan func(...any) error) error {
		found = true
		return scan(&seq, &hash)
	})
	if err != nil {
		return 0, "", fmt.Errorf("read chain head of %s: %w", instance, err)
	}
	if found {
		return seq, hash, nil
	}
	err = r.queryRows(ctx, rebind(r.dialect(), `SELECT seq, hash FROM ledger_checkpoints WHERE instance = ? AND kind = 'retention' ORDER BY seq DESC LIMIT 1`), []any{instance}, func(scan func(...any) error) error {
		found = true
		return scan(&seq, &hash)
	})
	if err != nil {
		return 0, "", fmt.Errorf("read retention anchor of %s: %w", instance, err)
	}
	return seq, hash, nil
}

// rebuildDays recomputes the daily rollup for days first..last from the per-event rows,
// after retention deleted rows on those days.
func rebuildDays(first, last int64, d dialect, exec func(q string, args ...any) error) error {
	for day := first; day <= last; day++ {
		if err := exec(rebind(d, `DELETE FROM ledger_class_daily WHERE day = ?`), day); err != nil {
			return fmt.Errorf("rebuild rollup of day %d: %w", day, err)
		}
		if err := exec(rebind(d, classDailyRebuildDay), day, day*dayNS, (day+1)*dayNS); err != nil {
			return fmt.Errorf("rebuild rollup of day %d: %w", day, err)
		}
	}
	return nil
}

// sqlQuerier runs a query through database/sql: a *sql.DB, *sql.Conn or *sql.Tx.
type sqlQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// eachRow runs q on db and calls fn with the Scan of each row it returns, stopping at fn's
// first error.
func eachRow(ctx context.Context, db sqlQuerier, q string, args []any, fn func(scan func(dest ...any) error) error) error {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return scanEach(rows, fn)
}

// scannedRows is the part of a query's result that scanEach reads: *sql.Rows and pgx.Rows
// both have it.
type scannedRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanEach calls fn with the Scan of each of rows, stopping at fn's first error.
func scanEach(rows scannedRows, fn func(scan func(dest ...any) error) error) error {
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}
