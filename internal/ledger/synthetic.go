package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
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
	fts                           bool
}

var syntheticSQLite = syntheticDialect{
	series: `WITH RECURSIVE series(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM series WHERE i < $2),`,
	from:   `series`,
	hex:    `printf('%064x', i)`,
	json: `json_object('seq', i, 'instance', $3, 'type', 'statement', 'time', strftime('%Y-%m-%dT%H:%M:%fZ', ns / 1000000000.0, 'unixepoch'),
		'subject', subj, 'identity_kind', ik, 'target', target, 'environment', env, 'decision', dec,
		'statements', json_array(json_object('kind', kind, 'category', cat, 'text', txt, 'tables_read', json_array('public.' || name),
			'sensitive', json(CASE WHEN cls IS NULL THEN 'null' ELSE json_object('public.' || name || '.email', cls) END))))`,
	text: "",
	fts:  true,
	min:  "min",
	max:  "max",
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
// times $4 + seq*$5 nanoseconds: for SQLite, the rows are generated once into a temporary
// table (generating them is the slow part there) and copied into each table from it.
func syntheticStatements(d syntheticDialect) (prep []string, inserts []string) {
	cte := strings.NewReplacer("{SERIES}", d.series, "{FROM}", d.from).Replace(syntheticCTE)
	src := "syn"
	if d.fts {
		// SQLite: numbered parameters are ?NNN.
		r := strings.NewReplacer("$1", "?1", "$2", "?2", "$3", "?3", "$4", "?4", "$5", "?5")
		prep = []string{`DROP TABLE IF EXISTS temp.syn_load`, r.Replace(`CREATE TEMP TABLE syn_load AS ` + cte + `SELECT * FROM syn`)}
		cte, src = "", "syn_load"
	}
	t := d.text
	qt := ", query_text"
	qv := ", txt"
	if d.fts {
		qt, qv = "", ""
	}
	if d.fts {
		// SQLite keeps facets, interned texts and segment terms (segindex.go) instead of
		// the search-only side-table rows and per-event full text.
		return prep, syntheticSQLiteInserts(d)
	}
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
	}
	return prep, inserts
}

// syntheticSQLiteInserts loads syn_load into the SQLite store's tables: events with their
// facets and interned texts, the side-table rows the auditor questions read, the rollup and
// the segment terms, as the indexer would have written them.
func syntheticSQLiteInserts(d syntheticDialect) []string {
	const sep = "char(31)"
	facets := sep + ` || 'n:' || name || ` + sep + ` || 'T:public.' || name || ` + sep +
		` || (CASE WHEN cls IS NULL THEN '' ELSE 'c:' || cls || ` + sep + ` || 'c:pii' || ` + sep + ` END)` +
		` || 'k:' || kind || ` + sep + ` || 'g:' || cat || ` + sep + ` || 'q:' || kind || '|' || cat || ` + sep
	terms := []string{`'*'`, `'s:' || subj`, `'i:' || ik`, `'t:' || target`, `'v:' || env`, `'@:' || ?3`, `'y:statement'`, `'d:' || dec`,
		`'n:' || name`, `'T:public.' || name`, `'k:' || kind`, `'g:' || cat`, `'q:' || kind || '|' || cat`, `'x:' || text_id`}
	var sel []string
	for _, t := range terms {
		sel = append(sel, `SELECT seg, ns, `+t+` AS term FROM syn_seg`)
	}
	sel = append(sel, `SELECT seg, ns, 'c:' || cls FROM syn_seg WHERE cls IS NOT NULL`, `SELECT seg, ns, 'c:pii' FROM syn_seg WHERE cls IS NOT NULL`)
	return []string{
		`DROP TABLE IF EXISTS temp.syn_maxtext`,
		`CREATE TEMP TABLE syn_maxtext AS SELECT COALESCE(MAX(id), 0) AS m FROM ledger_texts`,
		`INSERT INTO ledger_texts(text) SELECT DISTINCT txt FROM syn_load WHERE txt NOT IN (SELECT text FROM ledger_texts)`,
		`INSERT INTO ledger_text_fts(rowid, text) SELECT id, text FROM ledger_texts WHERE id > (SELECT m FROM syn_maxtext)`,
		`INSERT INTO ledger_events(instance, seq, time_ns, type, subject, identity_kind, target, environment, decision, session, hash, body, facets, text_id, aux)
			SELECT ?3, i, ns, 'statement', subj, ik, target, env, dec, 's' || (i / 20), ` + d.hex + `, ` + strings.ReplaceAll(d.json, "$3", "?3") + `, ` + facets + `,
			(SELECT id FROM ledger_texts WHERE text = txt), (ik = 'agent' OR kind LIKE 'DROP%' OR cls IS NOT NULL) FROM syn_load`,
		`INSERT INTO ledger_tables(instance, seq, time_ns, subject, identity_kind, decision, tbl, name, kind, category, access)
			SELECT ?3, i, ns, subj, ik, dec, 'public.' || name, name, kind, cat, CASE cat WHEN 'read' THEN 'r' ELSE 'w' END FROM syn_load WHERE ik = 'agent' OR kind LIKE 'DROP%'`,
		`INSERT INTO ledger_classes(instance, seq, time_ns, subject, identity_kind, decision, class, col, category)
			SELECT ?3, i, ns, subj, ik, dec, cls, 'public.' || name || '.email', cat FROM syn_load WHERE cls IS NOT NULL
			UNION ALL SELECT ?3, i, ns, subj, ik, dec, 'pii', 'public.' || name || '.email', cat FROM syn_load WHERE cls IS NOT NULL`,
		`INSERT INTO ledger_statements(instance, seq, time_ns, kind, category) SELECT ?3, i, ns, kind, cat FROM syn_load WHERE kind LIKE 'DROP%'`,
		`INSERT INTO ledger_class_daily(class, category, decision, day, subject, identity_kind, n, first_ns, last_ns)
			SELECT * FROM (SELECT cls, cat, dec, ns / 86400000000000 AS day, subj, ik, COUNT(*) AS n, MIN(ns) AS f, MAX(ns) AS l FROM syn_load WHERE cls IS NOT NULL GROUP BY cls, cat, dec, ns / 86400000000000, subj, ik
			UNION ALL SELECT 'pii', cat, dec, ns / 86400000000000, subj, ik, COUNT(*), MIN(ns), MAX(ns) FROM syn_load WHERE cls IS NOT NULL GROUP BY cat, dec, ns / 86400000000000, subj, ik) x WHERE ?3 IS NOT NULL
			ON CONFLICT (class, category, decision, day, subject, identity_kind) DO UPDATE SET n = ledger_class_daily.n + excluded.n,
			first_ns = min(ledger_class_daily.first_ns, excluded.first_ns), last_ns = max(ledger_class_daily.last_ns, excluded.last_ns)`,
		`DROP TABLE IF EXISTS temp.syn_seg`,
		`CREATE TEMP TABLE syn_seg AS SELECT e.id >> ` + fmt.Sprint(segmentShift) + ` AS seg, s.*, e.text_id FROM syn_load s JOIN ledger_events e ON e.instance = ?3 AND e.seq = s.i`,
		`INSERT INTO ledger_terms(term, seg, min_ns, max_ns) SELECT term, seg, MIN(ns), MAX(ns) FROM (` + strings.Join(sel, " UNION ALL ") + `) WHERE true GROUP BY term, seg
			ON CONFLICT (term, seg) DO UPDATE SET min_ns = min(ledger_terms.min_ns, excluded.min_ns), max_ns = max(ledger_terms.max_ns, excluded.max_ns)`,
		`DROP TABLE temp.syn_seg`,
	}
}

// syntheticSpan spreads n events over 90 days ending at start.
func syntheticSpan(n int64, start time.Time) (base, step int64) {
	step = int64(90*24*time.Hour) / max(n, 1)
	return start.Add(-90 * 24 * time.Hour).UnixNano(), step
}

// sqliteSyntheticChunk is how many synthetic events one SQLite transaction loads: large, as
// the load runs without fsync and with the secondary indexes dropped.
const sqliteSyntheticChunk = 1_000_000

// syntheticIndexedTables are the tables whose secondary indexes a SQLite synthetic load
// drops and rebuilds: building an index once from sorted data is much cheaper than keeping
// it up to date row by row once it no longer fits in the page cache.
var syntheticIndexedTables = []string{"ledger_events", "ledger_tables", "ledger_classes", "ledger_statements"}

// LoadSynthetic implements Store. For speed it loads with synchronous=OFF (a crash during
// the load can lose the load, never events committed before: they are durable already) and
// drops the secondary indexes of the event and side tables for the load, building them again
// at the end, also when the load fails. A process killed during the load leaves the
// database without them: synthetic databases are for benchmarks, throw such one away.
func (s *SQLiteStore) LoadSynthetic(ctx context.Context, instance string, n int64, start time.Time) (err error) {
	prep, inserts := syntheticStatements(syntheticSQLite)
	base, step := syntheticSpan(n, start)
	// One connection: the temporary table, the page cache and the pragmas are per connection.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("load synthetic events: %w", err)
	}
	defer conn.Close()
	for _, p := range []string{`PRAGMA cache_size = -1048576`, `PRAGMA synchronous = OFF`, `PRAGMA temp_store = MEMORY`, `PRAGMA threads = 4`} {
		if _, err := conn.ExecContext(ctx, p); err != nil {
			return fmt.Errorf("load synthetic events: %s: %w", p, err)
		}
	}
	defer func() {
		// Back to the store's settings before the connection returns to the pool.
		for _, p := range []string{`PRAGMA cache_size = -2000`, `PRAGMA synchronous = FULL`, `PRAGMA temp_store = DEFAULT`, `PRAGMA threads = 0`, `PRAGMA analysis_limit = 0`, `DROP TABLE IF EXISTS temp.syn_load`} {
			if _, perr := conn.ExecContext(context.WithoutCancel(ctx), p); perr != nil {
				err = errors.Join(err, fmt.Errorf("load synthetic events: %s: %w", p, perr))
			}
		}
	}()
	indexes, err := dropSecondaryIndexes(ctx, conn)
	if err != nil {
		return err
	}
	defer func() {
		// Rebuild even when the load failed: the store must keep its indexes.
		t := time.Now()
		for _, ix := range indexes {
			if _, ierr := conn.ExecContext(context.WithoutCancel(ctx), ix); ierr != nil {
				err = errors.Join(err, fmt.Errorf("load synthetic events: rebuild index: %w", ierr))
			}
		}
		slog.Debug("synthetic load rebuilt indexes", "indexes", len(indexes), "took", time.Since(t))
		if err == nil {
			// Statistics for the planner, from a sample of each index (a full ANALYZE of
			// ten million rows takes minutes).
			if _, err = conn.ExecContext(ctx, `PRAGMA analysis_limit = 10000`); err == nil {
				_, err = conn.ExecContext(ctx, `ANALYZE`)
			}
			if err != nil {
				err = fmt.Errorf("load synthetic events: analyze: %w", err)
			}
		}
	}()
	for lo := int64(1); lo <= n; lo += sqliteSyntheticChunk {
		hi := min(lo+sqliteSyntheticChunk-1, n)
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("load synthetic events: %w", err)
		}
		for _, q := range append(append([]string(nil), prep...), inserts...) {
			var args []any
			if strings.Contains(q, "?") {
				args = []any{lo, hi, instance, base, step}
			}
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				tx.Rollback()
				return fmt.Errorf("load synthetic events %d..%d: %w", lo, hi, err)
			}
		}
		// The load wrote the index rows of its events itself: the indexer must not do it
		// again.
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_index_state(instance, seq) VALUES (?, ?)
			ON CONFLICT (instance) DO UPDATE SET seq = max(seq, excluded.seq)`, instance, hi); err != nil {
			tx.Rollback()
			return fmt.Errorf("load synthetic events: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("load synthetic events: %w", err)
		}
	}
	return nil
}

// dropSecondaryIndexes drops the explicitly created indexes of the tables a synthetic load
// fills and returns the statements that create them again.
func dropSecondaryIndexes(ctx context.Context, conn *sql.Conn) ([]string, error) {
	q := `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ('` +
		strings.Join(syntheticIndexedTables, "', '") + `') ORDER BY name`
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
var syntheticPostgresTables = []string{"ledger_events", "ledger_tables", "ledger_classes", "ledger_statements", "ledger_class_daily"}

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
	perEvent, rollup := stmts[:len(stmts)-1], stmts[len(stmts)-1]
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
		if _, err := conn.Exec(ctx, rollup, lo, hi, instance, base, step); err != nil {
			return fmt.Errorf("load synthetic events %d..%d: rollup: %w", lo, hi, err)
		}
	}
	return nil
}
