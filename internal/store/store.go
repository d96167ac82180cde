// Package store opens the state database that holds tokens and approval requests: the
// embedded SQLite database in the data directory (which by default also holds the ledger), or
// a PostgreSQL database shared by several instances, which tell each other of changes with
// LISTEN/NOTIFY. Each component owns its tables and brings its own ordered migrations, so the
// schema evolves without a central list that everybody edits.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver; no cgo, FTS5 and JSON built in
)

// Open opens (creating if needed) the SQLite database at path with settings suited to a
// proxy: WAL journal, a busy timeout instead of immediate lock errors, foreign keys on.
func Open(ctx context.Context, path string) (*sql.DB, error) {
	return OpenPageSize(ctx, path, 0)
}

// OpenPageSize is Open for a database whose file, when this call creates it, gets pages of
// pageSize bytes (0: SQLite's default); an existing file keeps its own (changing it needs a
// VACUUM outside WAL mode).
func OpenPageSize(ctx context.Context, path string, pageSize int) (*sql.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data directory for %s: %w", path, err)
	}
	if pageSize > 0 {
		if err := createWithPageSize(ctx, path, pageSize); err != nil {
			return nil, err
		}
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL DEFAULT (datetime('now')),
		PRIMARY KEY (component, version))`); err != nil {
		db.Close()
		return nil, fmt.Errorf("create migrations table in %s: %w", path, err)
	}
	return db, nil
}

// createWithPageSize creates the database file at path with pages of pageSize bytes when it
// does not exist yet. The page size is fixed by the file's first write; Open's WAL setting
// would make that write with the default size (the driver runs its DSN pragmas in
// lexicographic order, journal_mode before page_size), so the file is made here first.
func createWithPageSize(ctx context.Context, path string, pageSize int) error {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	// Setting the (unused) user version writes the file's first page.
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA page_size = %d; PRAGMA user_version = 1; PRAGMA user_version = 0`, pageSize)); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// Migrate applies, in order and each in its own transaction, the migrations of component
// that have not been applied yet. Migration i (0-based) is version i+1; never edit or
// reorder a released migration, only append.
func Migrate(ctx context.Context, db *sql.DB, component string, migrations []string) error {
	var have int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?`, component).Scan(&have); err != nil {
		return fmt.Errorf("read schema version of %s: %w", component, err)
	}
	for i := have; i < len(migrations); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(component, version) VALUES (?, ?)`, component, i+1); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
		}
	}
	return nil
}
