package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresSchema is the schema the ledger's tables live in, so they never collide with the
// tables of whatever else shares the database.
const PostgresSchema = "gatehouse_ledger"

// postgresMigrations mirror sqliteMigrations. The statements' text is kept in query_text with
// a generated tsvector (simple configuration: SQL is not English prose) under a GIN index.
var postgresMigrations = []string{`
CREATE TABLE ledger_events (
	instance TEXT NOT NULL,
	seq BIGINT NOT NULL,
	time_ns BIGINT NOT NULL,
	type TEXT NOT NULL,
	subject TEXT,
	identity_kind TEXT,
	target TEXT,
	environment TEXT,
	decision TEXT,
	session TEXT,
	hash TEXT NOT NULL,
	body TEXT NOT NULL,
	query_text TEXT,
	fts tsvector GENERATED ALWAYS AS (to_tsvector('simple', COALESCE(query_text, ''))) STORED,
	PRIMARY KEY (instance, seq)
);
CREATE INDEX ledger_events_time ON ledger_events(time_ns);
CREATE INDEX ledger_events_subject ON ledger_events(subject text_pattern_ops, time_ns);
CREATE INDEX ledger_events_subject_time ON ledger_events(subject, time_ns);
CREATE INDEX ledger_events_kind ON ledger_events(identity_kind, time_ns);
CREATE INDEX ledger_events_target ON ledger_events(target, time_ns);
CREATE INDEX ledger_events_decision ON ledger_events(decision, time_ns);
CREATE INDEX ledger_events_type ON ledger_events(type, time_ns);
CREATE INDEX ledger_events_session ON ledger_events(session);
CREATE INDEX ledger_events_fts ON ledger_events USING gin(fts);
CREATE TABLE ledger_tables (
	instance TEXT NOT NULL, seq BIGINT NOT NULL, time_ns BIGINT NOT NULL,
	subject TEXT, identity_kind TEXT, decision TEXT,
	tbl TEXT NOT NULL, name TEXT NOT NULL, kind TEXT, category TEXT, access TEXT,
	PRIMARY KEY (instance, seq, tbl)
);
CREATE INDEX ledger_tables_name ON ledger_tables(name, time_ns);
CREATE INDEX ledger_tables_tbl ON ledger_tables(tbl, time_ns);
CREATE INDEX ledger_tables_agents ON ledger_tables(name, identity_kind, time_ns, subject);
CREATE TABLE ledger_classes (
	instance TEXT NOT NULL, seq BIGINT NOT NULL, time_ns BIGINT NOT NULL,
	subject TEXT, identity_kind TEXT, decision TEXT,
	class TEXT NOT NULL, col TEXT, category TEXT,
	PRIMARY KEY (instance, seq, class)
);
CREATE INDEX ledger_classes_class ON ledger_classes(class, time_ns);
CREATE INDEX ledger_classes_readers ON ledger_classes(class, category, decision, time_ns, subject, identity_kind);
CREATE TABLE ledger_statements (
	instance TEXT NOT NULL, seq BIGINT NOT NULL, time_ns BIGINT NOT NULL,
	kind TEXT NOT NULL, category TEXT NOT NULL,
	PRIMARY KEY (instance, seq, kind, category)
);
CREATE INDEX ledger_statements_kind ON ledger_statements(kind, time_ns);
CREATE INDEX ledger_statements_category ON ledger_statements(category, time_ns);
CREATE TABLE ledger_checkpoints (
	instance TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, time_ns BIGINT NOT NULL,
	kind TEXT NOT NULL, signature TEXT NOT NULL,
	PRIMARY KEY (instance, seq, kind)
);
`,
	// 2: filters on identity kind and decision narrow the side-table scans.
	`CREATE INDEX ledger_classes_decision ON ledger_classes(class, decision, time_ns);
CREATE INDEX ledger_classes_kind ON ledger_classes(class, identity_kind, time_ns);
CREATE INDEX ledger_tables_decision ON ledger_tables(name, decision, time_ns);
`,
	// 3: "who dropped table X" finds the DROP rows of a table directly.
	`CREATE INDEX ledger_tables_kind ON ledger_tables(name, kind, time_ns);
CREATE INDEX ledger_tables_tbl_kind ON ledger_tables(tbl, kind, time_ns);
CREATE INDEX ledger_classes_readers_by_subject ON ledger_classes(class, category, decision, subject, identity_kind, time_ns);
`,
	// 4: PostgreSQL sorts "newest first" on (time_ns, seq); with seq in the indexes it
	// walks them instead of sorting every match. The text vector splits on every
	// non-alphanumeric character, as SQLite's FTS5 tokenizer does, so "t129" finds
	// "public.t129" in both stores.
	`DROP INDEX ledger_events_time; CREATE INDEX ledger_events_time ON ledger_events(time_ns, seq);
DROP INDEX ledger_events_subject_time; CREATE INDEX ledger_events_subject_time ON ledger_events(subject, time_ns, seq);
DROP INDEX ledger_events_kind; CREATE INDEX ledger_events_kind ON ledger_events(identity_kind, time_ns, seq);
DROP INDEX ledger_events_target; CREATE INDEX ledger_events_target ON ledger_events(target, time_ns, seq);
DROP INDEX ledger_events_decision; CREATE INDEX ledger_events_decision ON ledger_events(decision, time_ns, seq);
DROP INDEX ledger_events_type; CREATE INDEX ledger_events_type ON ledger_events(type, time_ns, seq);
DROP INDEX ledger_tables_name; CREATE INDEX ledger_tables_name ON ledger_tables(name, time_ns, seq);
DROP INDEX ledger_tables_tbl; CREATE INDEX ledger_tables_tbl ON ledger_tables(tbl, time_ns, seq);
DROP INDEX ledger_tables_decision; CREATE INDEX ledger_tables_decision ON ledger_tables(name, decision, time_ns, seq);
CREATE INDEX ledger_tables_kind_time ON ledger_tables(name, identity_kind, time_ns, seq);
DROP INDEX ledger_classes_class; CREATE INDEX ledger_classes_class ON ledger_classes(class, time_ns, seq);
DROP INDEX ledger_classes_decision; CREATE INDEX ledger_classes_decision ON ledger_classes(class, decision, time_ns, seq);
DROP INDEX ledger_classes_kind; CREATE INDEX ledger_classes_kind ON ledger_classes(class, identity_kind, time_ns, seq);
DROP INDEX ledger_statements_kind; CREATE INDEX ledger_statements_kind ON ledger_statements(kind, time_ns, seq);
DROP INDEX ledger_statements_category; CREATE INDEX ledger_statements_category ON ledger_statements(category, time_ns, seq);
ALTER TABLE ledger_events DROP COLUMN fts;
ALTER TABLE ledger_events ADD COLUMN fts tsvector GENERATED ALWAYS AS (to_tsvector('simple', regexp_replace(COALESCE(query_text, ''), '[^[:alnum:]]+', ' ', 'g'))) STORED;
CREATE INDEX ledger_events_fts ON ledger_events USING gin(fts);
`,
	// 5: a daily rollup of sensitive-data access per identity, so "who read PII last
	// quarter" reads one row per reader per day instead of one per statement.
	`CREATE TABLE ledger_class_daily (
	class TEXT NOT NULL, category TEXT NOT NULL, decision TEXT NOT NULL, day BIGINT NOT NULL,
	subject TEXT NOT NULL, identity_kind TEXT NOT NULL,
	n BIGINT NOT NULL, first_ns BIGINT NOT NULL, last_ns BIGINT NOT NULL,
	PRIMARY KEY (class, category, decision, day, subject, identity_kind)
);
INSERT INTO ledger_class_daily(class, category, decision, day, subject, identity_kind, n, first_ns, last_ns)
SELECT class, COALESCE(category, ''), COALESCE(decision, ''), floor(time_ns / 86400000000000.0)::bigint, COALESCE(subject, ''), COALESCE(identity_kind, ''), COUNT(*), MIN(time_ns), MAX(time_ns)
FROM ledger_classes GROUP BY 1, 2, 3, 4, 5, 6;
`,
	// 6: the row the ledger rewrites to find out that a failed store writes again.
	`CREATE TABLE ledger_probe (id INTEGER PRIMARY KEY, at_ns BIGINT NOT NULL);
`,
	// 7: intents get side-table rows too, told apart by type (see the SQLite migration 7).
	`ALTER TABLE ledger_tables ADD COLUMN type TEXT NOT NULL DEFAULT 'statement';
ALTER TABLE ledger_classes ADD COLUMN type TEXT NOT NULL DEFAULT 'statement';
ALTER TABLE ledger_statements ADD COLUMN type TEXT NOT NULL DEFAULT 'statement';
UPDATE ledger_statements s SET type = 'statement.intent' FROM ledger_events e WHERE e.instance = s.instance AND e.seq = s.seq AND e.type = 'statement.intent';
DROP INDEX ledger_tables_agents;
CREATE INDEX ledger_tables_agents ON ledger_tables(name, identity_kind, time_ns, subject, type);
DROP INDEX ledger_classes_readers;
CREATE INDEX ledger_classes_readers ON ledger_classes(class, category, decision, time_ns, subject, identity_kind, type);
DROP INDEX ledger_classes_readers_by_subject;
CREATE INDEX ledger_classes_readers_by_subject ON ledger_classes(class, category, decision, subject, identity_kind, time_ns, type);
CREATE INDEX ledger_tables_intents ON ledger_tables(name, identity_kind, time_ns) WHERE type = 'statement.intent';
CREATE INDEX ledger_classes_intents ON ledger_classes(class, category, time_ns) WHERE type = 'statement.intent';
CREATE INDEX ledger_statements_intents ON ledger_statements(kind, time_ns) WHERE type = 'statement.intent';
DROP INDEX ledger_events_session;
CREATE INDEX ledger_events_session ON ledger_events(session, seq);
`,
	// 8: sensitive columns read per table and hour, for the console's data map (tablereads.go).
	tableReadsPostgresMigration}

// PostgresStore keeps the ledger in PostgreSQL, shared by several Gatehouse instances (each
// appends to its own chain). A commit is durable by PostgreSQL's own rules
// (synchronous_commit on the server decides; the default is on).
type PostgresStore struct {
	pool *pgxpool.Pool
}

// OpenPostgres connects to dsn, creates the ledger schema and applies its migrations. A
// short connect timeout is set unless the DSN has one, so that while the database is down
// Record fails fast (the gate refuses statements) instead of hanging.
func OpenPostgres(ctx context.Context, dsn string) (*PostgresStore, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open ledger store: parse PostgreSQL DSN: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 3 * time.Second
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = PostgresSchema
	cfg.ConnConfig.RuntimeParams["application_name"] = "gatehouse-ledger"
	// A ledger commit is acknowledged to a waiting statement: it must be on disk whatever the
	// server's default for synchronous_commit is.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open ledger store: %w", err)
	}
	s := &PostgresStore{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies the migrations not yet applied, serialised across instances by an
// advisory lock so that two instances starting together do not race.
func (s *PostgresStore) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate ledger schema: connect: %w", err)
	}
	defer conn.Release()
	const lockKey = 0x6761746568 // "gateh"
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("migrate ledger schema: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey) //nolint:errcheck // unlocked on disconnect anyway
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+PostgresSchema+`;
		CREATE TABLE IF NOT EXISTS `+PostgresSchema+`.schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate ledger schema: create schema: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("migrate ledger schema: read version: %w", err)
	}
	for i := have; i < len(postgresMigrations); i++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, postgresMigrations[i]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations(version) VALUES ($1)`, i+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate ledger schema to version %d: %w", i+1, err)
		}
	}
	return nil
}

// Pool exposes the connection pool, for tests and tools that need to look underneath.
func (s *PostgresStore) Pool() *pgxpool.Pool { return s.pool }

func (s *PostgresStore) dialect() dialect { return postgresSQL }

func (s *PostgresStore) queryRows(ctx context.Context, q string, args []any, fn func(scan func(dest ...any) error) error) error {
	return eachPgxRow(ctx, s.pool, q, args, fn)
}

// pgxQuerier runs a query through pgx: a pool, a connection or a transaction.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// eachPgxRow is eachRow through pgx.
func eachPgxRow(ctx context.Context, db pgxQuerier, q string, args []any, fn func(scan func(dest ...any) error) error) error {
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return scanEach(rows, fn)
}

// Head implements Store.
func (s *PostgresStore) Head(ctx context.Context, instance string) (int64, string, error) {
	return runHead(ctx, s, instance)
}

// Append implements Store: one transaction; all rows are sent in one pipelined batch.
//
// Every commit is synchronous, so CommitWritten is as durable as CommitSynced here: the
// PostgreSQL store does not relax the contract.
func (s *PostgresStore) Append(ctx context.Context, recs []Record, cps []Checkpoint, _ Commit) error {
	b := &pgx.Batch{}
	var reads map[tableReadKey]tableReadSum // the batch's sensitive columns per table and hour
	for _, r := range recs {
		ev := r.Event
		ns := ev.Time.UnixNano()
		if ev.Type == EventStatement && hasSensitive(ev) {
			if reads == nil {
				reads = map[tableReadKey]tableReadSum{}
			}
			addTableReads(reads, ev, ns)
		}
		tables, classes, stmts, text := indexRows(ev)
		b.Queue(`INSERT INTO ledger_events(instance, seq, time_ns, type, subject, identity_kind, target, environment, decision, session, hash, body, query_text)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			ev.Instance, ev.Seq, ns, string(ev.Type), ev.Subject, ev.IdentityKind, ev.Target, ev.Environment, ev.Decision, ev.SessionID, ev.Hash, string(r.Body), text)
		for _, t := range tables {
			b.Queue(`INSERT INTO ledger_tables(instance, seq, time_ns, subject, identity_kind, decision, tbl, name, kind, category, access, type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
				ev.Instance, ev.Seq, ns, ev.Subject, ev.IdentityKind, ev.Decision, t.tbl, t.name, t.kind, t.category, t.access, string(ev.Type))
		}
		for _, c := range classes {
			b.Queue(`INSERT INTO ledger_classes(instance, seq, time_ns, subject, identity_kind, decision, class, col, category, type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
				ev.Instance, ev.Seq, ns, ev.Subject, ev.IdentityKind, ev.Decision, c.class, c.column, c.category, string(ev.Type))
			if ev.Type == EventStatement { // the rollup counts completed statements only
				b.Queue(classDailySQL(postgresSQL), c.class, c.category, ev.Decision, floorDiv(ns, dayNS), ev.Subject, ev.IdentityKind, 1, ns, ns)
			}
		}
		for _, st := range stmts {
			b.Queue(`INSERT INTO ledger_statements(instance, seq, time_ns, kind, category, type) VALUES ($1, $2, $3, $4, $5, $6)`, ev.Instance, ev.Seq, ns, st.kind, st.category, string(ev.Type))
		}
	}
	for k, r := range reads {
		b.Queue(upsertTableReads(postgresSQL), k.target, k.table, k.class, k.hour, k.identityKind, k.subject, k.instance, r.n, r.minSeq, r.maxSeq)
	}
	for _, cp := range cps {
		b.Queue(`INSERT INTO ledger_checkpoints(instance, seq, hash, time_ns, kind, signature) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			cp.Instance, cp.Seq, cp.Hash, cp.Time.UnixNano(), cp.Kind, cp.Signature)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("append %d events to ledger: %w", len(recs), err)
	}
	return nil
}

// SyncWritten implements Store: every commit is synchronous here, so nothing waits.
func (s *PostgresStore) SyncWritten(context.Context) error { return nil }

// Probe implements Store: a committed one-row write.
func (s *PostgresStore) Probe(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO ledger_probe(id, at_ns) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at_ns = excluded.at_ns`, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("probe ledger store: %w", err)
	}
	return nil
}

// AddCheckpoint implements Store.
func (s *PostgresStore) AddCheckpoint(ctx context.Context, cp Checkpoint) error {
	return s.Append(ctx, nil, []Checkpoint{cp}, CommitSynced)
}

// Checkpoints implements Store.
func (s *PostgresStore) Checkpoints(ctx context.Context, instance string) ([]Checkpoint, error) {
	return runCheckpoints(ctx, s, instance)
}

// Instances implements Store.
func (s *PostgresStore) Instances(ctx context.Context) ([]string, error) { return runInstances(ctx, s) }

// Scan implements Store.
func (s *PostgresStore) Scan(ctx context.Context, instance string, after int64, limit int, fn func(StoredEvent) error) error {
	return runScan(ctx, s, instance, after, limit, fn)
}

// LastBefore implements Store.
func (s *PostgresStore) LastBefore(ctx context.Context, instance string, t time.Time) (int64, string, error) {
	return runLastBefore(ctx, s, instance, t)
}

// DeleteThrough implements Store.
func (s *PostgresStore) DeleteThrough(ctx context.Context, instance string, seq int64, anchor Checkpoint) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var minNS, maxNS *int64
		if err := tx.QueryRow(ctx, `SELECT MIN(time_ns), MAX(time_ns) FROM ledger_classes WHERE instance = $1 AND seq <= $2`, instance, seq).Scan(&minNS, &maxNS); err != nil {
			return fmt.Errorf("rollup: %w", err)
		}
		for _, t := range []string{"ledger_tables", "ledger_classes", "ledger_statements"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+t+` WHERE instance = $1 AND seq <= $2`, instance, seq); err != nil {
				return fmt.Errorf("%s: %w", t, err)
			}
		}
		if minNS != nil {
			exec := func(q string, args ...any) error { _, err := tx.Exec(ctx, q, args...); return err }
			if err := rebuildDays(floorDiv(*minNS, dayNS), floorDiv(*maxNS, dayNS), postgresSQL, exec); err != nil {
				return err
			}
		}
		query := func(q string, args []any, fn func(scan func(...any) error) error) error {
			return eachPgxRow(ctx, tx, q, args, fn)
		}
		exec := func(q string, args ...any) error { _, err := tx.Exec(ctx, q, args...); return err }
		if err := retireTableReads(ctx, postgresSQL, instance, seq, query, exec); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM ledger_events WHERE instance = $1 AND seq <= $2`, instance, seq)
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		n = tag.RowsAffected()
		if _, err := tx.Exec(ctx, `DELETE FROM ledger_checkpoints WHERE instance = $1 AND seq < $2`, instance, seq); err != nil {
			return fmt.Errorf("checkpoints: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO ledger_checkpoints(instance, seq, hash, time_ns, kind, signature) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			anchor.Instance, anchor.Seq, anchor.Hash, anchor.Time.UnixNano(), anchor.Kind, anchor.Signature)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("apply retention: %w", err)
	}
	return n, nil
}

// Search implements Store.
func (s *PostgresStore) Search(ctx context.Context, q Query) ([]Event, error) {
	return runSearch(ctx, s, q, time.Now())
}

// WhoDropped implements Store.
func (s *PostgresStore) WhoDropped(ctx context.Context, table string, r TimeRange) ([]DropRecord, error) {
	return runWhoDropped(ctx, s, table, r)
}

// PIIReaders implements Store.
func (s *PostgresStore) PIIReaders(ctx context.Context, class string, r TimeRange) ([]IdentityCount, error) {
	return runPIIReaders(ctx, s, class, r)
}

// AgentsQueried implements Store.
func (s *PostgresStore) AgentsQueried(ctx context.Context, table string, r TimeRange) ([]IdentityCount, error) {
	return runAgentsQueried(ctx, s, table, r)
}

// Close implements Store.
func (s *PostgresStore) Close() error {
	s.pool.Close()
	return nil
}
