package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// The synthetic load generates plausible events inside the database with one INSERT ...
// SELECT per table per chunk, so benchmarks can search 1 or 10 million events without
// spending an hour going through Record. The events are not chained (Verify rejects them);
// they exist to measure the indexes. Distribution: 20% agents (50 of them), 20% services,
// 60% humans (5000); 500 tables plus "customers" every 97th event; every 7th event reads an
// email column; every 10th is an UPDATE, every 10007th a DROP TABLE; 2% denied.
const syntheticCTE = `{SERIES}
gen AS (SELECT i,
	CASE WHEN i % 10 < 2 THEN 'agent' WHEN i % 10 < 4 THEN 'service' ELSE 'human' END AS ik,
	CASE WHEN i % 97 = 0 THEN 'customers' ELSE 't' || (i % 500) END AS name,
	CASE WHEN i % 10007 = 0 THEN 'DROP TABLE' WHEN i % 10 = 9 THEN 'UPDATE' ELSE 'SELECT' END AS kind,
	CASE WHEN i % 7 = 0 THEN 'email' END AS cls,
	$4 + i * $5 AS ns
	FROM {FROM}),
syn AS (SELECT i, ik, name, kind, cls, ns,
	CASE ik WHEN 'agent' THEN 'agent-' || (i % 50) WHEN 'service' THEN 'svc-' || (i % 30) ELSE 'user' || (i % 5000) || '@corp.example' END AS subj,
	CASE kind WHEN 'SELECT' THEN 'read' WHEN 'UPDATE' THEN 'write' ELSE 'ddl' END AS cat,
	CASE kind WHEN 'SELECT' THEN 'SELECT id, email FROM public.' || name || ' WHERE id = ?'
		WHEN 'UPDATE' THEN 'UPDATE public.' || name || ' SET status = ? WHERE id = ?'
		ELSE 'DROP TABLE public.' || name END AS txt,
	'db' || (i % 20) AS target,
	CASE WHEN i % 3 = 0 THEN 'production' ELSE 'staging' END AS env,
	CASE WHEN i % 50 = 0 THEN 'deny' ELSE 'allow' END AS dec
	FROM gen)
`

type syntheticDialect struct {
	series, from, hex, json, text string
	min, max                      string
}

var syntheticPostgres = syntheticDialect{
	series: `WITH`,
	from:   `generate_series($1::bigint, $2::bigint) AS s(i)`,
	hex:    `lpad(to_hex(i), 64, '0')`,
	json: `json_build_object('seq', i, 'instance', $3::text, 'type', 'statement',
		'time', to_char(to_timestamp(ns / 1000000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
		'subject', subj, 'identity_kind', ik, 'target', target, 'environment', env, 'decision', dec,
		'statements', json_build_array(json_build_object('kind', kind, 'category', cat, 'text', txt, 'tables_read', json_build_array('public.' || name),
			'sensitive', CASE WHEN cls IS NULL THEN NULL ELSE json_build_object('public.' || name || '.email', cls) END)))::text`,
	text: "::text",
	min:  "LEAST",
	max:  "GREATEST",
}

// syntheticStatements returns the statements that load seqs $1..$2 of instance $3, with
// times $4 + seq*$5 nanoseconds, into the PostgreSQL store.
func syntheticStatements(d syntheticDialect) (prep []string, inserts []string) {
	cte := strings.NewReplacer("{SERIES}", d.series, "{FROM}", d.from).Replace(syntheticCTE)
	src := "syn"
	t := d.text
	qt := ", query_text"
	qv := ", txt"
	inserts = []string{
		`INSERT INTO ledger_events(instance, seq, time_ns, type, subject, identity_kind, target, environment, decision, session, hash, body` + qt + `) ` + cte +
			`SELECT $3` + t + `, i, ns, 'statement', subj, ik, target, env, dec, 's' || (i / 20), ` + d.hex + `, ` + d.json + qv + ` FROM ` + src,
		`INSERT INTO ledger_tables(instance, seq, time_ns, subject, identity_kind, decision, tbl, name, kind, category, access) ` + cte +
			`SELECT $3` + t + `, i, ns, subj, ik, dec, 'public.' || name, name, kind, cat, CASE cat WHEN 'read' THEN 'r' ELSE 'w' END FROM ` + src,
		`INSERT INTO ledger_classes(instance, seq, time_ns, subject, identity_kind, decision, class, col, category) ` + cte +
			`SELECT $3` + t + `, i, ns, subj, ik, dec, cls, 'public.' || name || '.email', cat FROM ` + src + ` WHERE cls IS NOT NULL
			UNION ALL SELECT $3` + t + `, i, ns, subj, ik, dec, 'pii', 'public.' || name || '.email', cat FROM ` + src + ` WHERE cls IS NOT NULL`,
		`INSERT INTO ledger_statements(instance, seq, time_ns, kind, category) ` + cte + `SELECT $3` + t + `, i, ns, kind, cat FROM ` + src,
		`INSERT INTO ledger_class_daily(class, category, decision, day, subject, identity_kind, n, first_ns, last_ns) ` + cte +
			`SELECT * FROM (SELECT cls, cat, dec, ns / 86400000000000 AS day, subj, ik, COUNT(*) AS n, MIN(ns) AS f, MAX(ns) AS l FROM ` + src + ` WHERE cls IS NOT NULL GROUP BY cls, cat, dec, ns / 86400000000000, subj, ik
			UNION ALL SELECT 'pii', cat, dec, ns / 86400000000000, subj, ik, COUNT(*), MIN(ns), MAX(ns) FROM ` + src + ` WHERE cls IS NOT NULL GROUP BY cat, dec, ns / 86400000000000, subj, ik) x WHERE $3` + t + ` IS NOT NULL
			ON CONFLICT (class, category, decision, day, subject, identity_kind) DO UPDATE SET n = ledger_class_daily.n + excluded.n,
			first_ns = ` + d.min + `(ledger_class_daily.first_ns, excluded.first_ns), last_ns = ` + d.max + `(ledger_class_daily.last_ns, excluded.last_ns)`,
		`INSERT INTO ledger_table_reads(` + tableReadsColumns + `) ` + cte +
			`SELECT target, 'public.' || name, cls, ns / 3600000000000, ik, subj, $3` + t + `, COUNT(*), MIN(i), MAX(i) FROM ` + src + ` WHERE cls IS NOT NULL
			GROUP BY target, name, cls, ns / 3600000000000, ik, subj
			ON CONFLICT (target, tbl, class, hour, identity_kind, subject, instance) DO UPDATE SET n = ledger_table_reads.n + excluded.n,
			min_seq = ` + d.min + `(ledger_table_reads.min_seq, excluded.min_seq), max_seq = ` + d.max + `(ledger_table_reads.max_seq, excluded.max_seq)`,
	}
	return prep, inserts
}

// syntheticSpan spreads n events over 90 days ending at start.
func syntheticSpan(n int64, start time.Time) (base, step int64) {
	step = int64(90*24*time.Hour) / max(n, 1)
	return start.Add(-90 * 24 * time.Hour).UnixNano(), step
}

// syntheticNames are the strings synthetic events are made of, built once per load
// (formatting them for every event was a fifth of generating it). Events share them, their
// table lists and their sensitive-column maps: nothing modifies an event once made.
type syntheticNames struct {
	humans, agents, services, targets []string
	tables                            []syntheticTable // t0..t499, then customers
}

type syntheticTable struct {
	name, selectText, updateText, dropText string
	read                                   []string          // its qualified name
	email                                  map[string]string // its email column, class email
}

func newSyntheticNames() *syntheticNames {
	nm := &syntheticNames{}
	for i := range 5000 {
		nm.humans = append(nm.humans, fmt.Sprintf("user%d@corp.example", i))
	}
	for i := range 50 {
		nm.agents = append(nm.agents, fmt.Sprintf("agent-%d", i))
	}
	for i := range 30 {
		nm.services = append(nm.services, fmt.Sprintf("svc-%d", i))
	}
	for i := range 20 {
		nm.targets = append(nm.targets, fmt.Sprintf("db%d", i))
	}
	for i := range 501 {
		name := fmt.Sprintf("t%d", i)
		if i == 500 {
			name = "customers"
		}
		nm.tables = append(nm.tables, syntheticTable{name: name,
			selectText: "SELECT id, email FROM public." + name + " WHERE id = ?", updateText: "UPDATE public." + name + " SET status = ? WHERE id = ?",
			dropText: "DROP TABLE public." + name, read: []string{"public." + name}, email: map[string]string{"public." + name + ".email": "email"}})
	}
	return nm
}

// syntheticEvent is event i of a synthetic load of the SQLite store: the distribution of
// syntheticCTE, built in Go (the events the PostgreSQL load generates in SQL).
func syntheticEvent(nm *syntheticNames, instance string, i, base, step int64) *Event {
	ik, subj := "human", nm.humans[i%5000]
	switch {
	case i%10 < 2:
		ik, subj = "agent", nm.agents[i%50]
	case i%10 < 4:
		ik, subj = "service", nm.services[i%30]
	}
	t := &nm.tables[i%500]
	if i%97 == 0 {
		t = &nm.tables[500]
	}
	kind, cat, txt := "SELECT", "read", t.selectText
	switch {
	case i%10007 == 0:
		kind, cat, txt = "DROP TABLE", "ddl", t.dropText
	case i%10 == 9:
		kind, cat, txt = "UPDATE", "write", t.updateText
	}
	st := Statement{Kind: kind, Category: cat, Redacted: txt, TablesRead: t.read}
	if i%7 == 0 {
		st.Sensitive = t.email
	}
	env, dec := "staging", "allow"
	if i%3 == 0 {
		env = "production"
	}
	if i%50 == 0 {
		dec = "deny"
	}
	hash := strconv.FormatInt(i, 16)
	return &Event{Seq: i, Instance: instance, Type: EventStatement, Time: time.Unix(0, base+i*step).UTC(),
		SessionID: "s" + strconv.FormatInt(i/20, 10), Subject: subj, IdentityKind: ik, Target: nm.targets[i%20], Environment: env,
		Statements: []Statement{st}, Decision: dec, Hash: strings.Repeat("0", 64-len(hash)) + hash}
}

// dropSecondaryIndexes drops the explicitly created indexes of the tables a synthetic load
// fills and returns the statements that create them again.
func dropSecondaryIndexes(ctx context.Context, conn *sql.Conn) ([]string, error) {
	q := `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ('` +
		strings.Join(sqliteSyntheticIndexedTables, "', '") + `') AND name NOT IN ('` + strings.Join(sqliteSyntheticKeptIndexes, "', '") + `') ORDER BY name`
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("load synthetic events: list indexes: %w", err)
	}
	var names, creates []string
	for rows.Next() {
		var name, create string
		if err := rows.Scan(&name, &create); err != nil {
			rows.Close()
			return nil, fmt.Errorf("load synthetic events: list indexes: %w", err)
		}
		names, creates = append(names, name), append(creates, create)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load synthetic events: list indexes: %w", err)
	}
	for i, name := range names {
		if _, err := conn.ExecContext(ctx, `DROP INDEX "`+name+`"`); err != nil {
			// Put back what was dropped so far.
			for _, c := range creates[:i] {
				conn.ExecContext(context.WithoutCancel(ctx), c)
			}
			return nil, fmt.Errorf("load synthetic events: drop index %s: %w", name, err)
		}
	}
	return creates, nil
}

// postgresSyntheticChunk is how many synthetic events one INSERT ... SELECT per table loads
// into PostgreSQL: large enough that statement overhead vanishes, small enough that a
// chunk's sorts and hash aggregates stay in memory.
const postgresSyntheticChunk = 1_000_000

// syntheticPostgresTables are the tables a PostgreSQL synthetic load fills.
var syntheticPostgresTables = []string{"ledger_events", "ledger_tables", "ledger_classes", "ledger_statements", "ledger_class_daily", "ledger_table_reads"}

// postgresSyntheticWorkers is how many connections load chunks side by side.
const postgresSyntheticWorkers = 2

// LoadSynthetic implements Store. For speed it drops the secondary indexes of the event and
// side tables (and their text vector's GIN index) for the load, inserts chunk by chunk with
// asynchronous commit (a crash of PostgreSQL during the load can lose the load, never events
// committed before), then builds the indexes once, each from sorted data with a large
// maintenance_work_mem, also when the load fails. Autovacuum is off for the load; at the
// end one VACUUM (ANALYZE) sets the visibility map and the planner's statistics.
// A process killed during the load leaves the store without those indexes: synthetic
// databases are for benchmarks, throw such one away.
func (s *PostgresStore) LoadSynthetic(ctx context.Context, instance string, n int64, start time.Time) (err error) {
	_, stmts := syntheticStatements(syntheticPostgres)
	base, step := syntheticSpan(n, start)
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("load synthetic events: %w", err)
	}
	// The session settings below must not follow the connection back into the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	for _, set := range []string{`SET synchronous_commit = off`, `SET maintenance_work_mem = '1GB'`, `SET work_mem = '256MB'`,
		`SET max_parallel_maintenance_workers = 2`} {
		if _, err := conn.Exec(ctx, set); err != nil {
			return fmt.Errorf("load synthetic events: %s: %w", set, err)
		}
	}
	rows, err := conn.Query(ctx, `SELECT i.indexname, i.indexdef FROM pg_indexes i
		WHERE i.schemaname = current_schema() AND i.tablename = ANY($1)
		AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.connamespace = current_schema()::regnamespace)
		ORDER BY i.indexname`, syntheticIndexedTables)
	if err != nil {
		return fmt.Errorf("load synthetic events: list indexes: %w", err)
	}
	var creates []string
	names, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (name string, err error) {
		var def string
		err = r.Scan(&name, &def)
		creates = append(creates, def)
		return name, err
	})
	if err != nil {
		return fmt.Errorf("load synthetic events: list indexes: %w", err)
	}
	dropped := 0
	defer func() {
		// Rebuild even when the load failed: the store must keep its indexes.
		t := time.Now()
		for _, ix := range creates[:dropped] {
			if _, ierr := conn.Exec(context.WithoutCancel(ctx), ix); ierr != nil {
				err = errors.Join(err, fmt.Errorf("load synthetic events: rebuild index: %w", ierr))
			}
		}
		slog.Debug("synthetic load rebuilt indexes", "indexes", dropped, "took", time.Since(t))
		for _, t := range syntheticPostgresTables {
			if _, aerr := conn.Exec(context.WithoutCancel(ctx), `ALTER TABLE `+t+` RESET (autovacuum_enabled)`); aerr != nil {
				err = errors.Join(err, fmt.Errorf("load synthetic events: %s: autovacuum back on: %w", t, aerr))
			}
		}
		if err == nil {
			// VACUUM as well as ANALYZE: it sets the visibility map, as autovacuum would
			// have over an append-only ledger (index-only scans skip the heap), and it does
			// not start in the background while the benchmark measures.
			if _, err = conn.Exec(ctx, `VACUUM (ANALYZE) `+strings.Join(syntheticPostgresTables, ", ")); err != nil {
				err = fmt.Errorf("load synthetic events: vacuum analyze: %w", err)
			}
		}
	}()
	// Autovacuum would scan the tables again and again while they grow.
	for _, t := range syntheticPostgresTables {
		if _, err := conn.Exec(ctx, `ALTER TABLE `+t+` SET (autovacuum_enabled = false)`); err != nil {
			return fmt.Errorf("load synthetic events: %s: autovacuum off: %w", t, err)
		}
	}
	for _, name := range names {
		if _, err := conn.Exec(ctx, `DROP INDEX `+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("load synthetic events: drop index %s: %w", name, err)
		}
		dropped++
	}
	// The per-event rows of different chunks go in side by side (generating them is CPU
	// bound); the rollup's upserts of a chunk can meet another chunk's on the same keys,
	// so they run one chunk after the other, on this connection.
	perEvent, rollups := stmts[:len(stmts)-2], stmts[len(stmts)-2:]
	chunks := make(chan int64)
	errs := make(chan error, postgresSyntheticWorkers)
	var wg sync.WaitGroup
	for range postgresSyntheticWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := range chunks {
				hi := min(lo+postgresSyntheticChunk-1, n)
				err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
						return err
					}
					for _, q := range perEvent {
						if _, err := tx.Exec(ctx, q, lo, hi, instance, base, step); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("load synthetic events %d..%d: %w", lo, hi, err)
					return
				}
			}
		}()
	}
	func() {
		defer close(chunks)
		for lo := int64(1); lo <= n; lo += postgresSyntheticChunk {
			select {
			case chunks <- lo:
			case err = <-errs:
				return
			case <-ctx.Done():
				err = ctx.Err()
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	if err := <-errs; err != nil {
		return err
	}
	for lo := int64(1); lo <= n; lo += postgresSyntheticChunk {
		hi := min(lo+postgresSyntheticChunk-1, n)
		for _, rollup := range rollups {
			if _, err := conn.Exec(ctx, rollup, lo, hi, instance, base, step); err != nil {
				return fmt.Errorf("load synthetic events %d..%d: rollup: %w", lo, hi, err)
			}
		}
	}
	return nil
}
