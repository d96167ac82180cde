package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/store"
)

// StateDBFile is the embedded state database (tokens, approval requests) in the data
// directory, used unless the store is PostgreSQL.
const StateDBFile = "gatehouse.db"

// StateStore says where tokens and approval requests live. They follow the ledger: with
// ledger.store postgres they are kept in the same PostgreSQL database (their own schema), so
// several instances sharing it know the same tokens and approvals; otherwise in the embedded
// SQLite database in the data directory. dsn is empty for SQLite.
func StateStore(cfg *config.Config) (dsn string, err error) {
	switch cfg.Ledger.Store {
	case "", "sqlite":
		return "", nil
	case "postgres", "postgresql":
		dsn = cfg.Ledger.DSN
		if cfg.Ledger.DSNEnv != "" {
			dsn = os.Getenv(cfg.Ledger.DSNEnv)
			if dsn == "" {
				return "", fmt.Errorf("state store: environment variable %s (ledger.dsn_env) is empty", cfg.Ledger.DSNEnv)
			}
		}
		if dsn == "" {
			return "", errors.New("state store: postgres needs ledger.dsn or ledger.dsn_env")
		}
		return dsn, nil
	}
	return "", fmt.Errorf("state store: unknown store %q (sqlite or postgres)", cfg.Ledger.Store)
}

// OpenStateStore opens the state database the configuration names (see StateStore). The
// server and the administrative commands both use it, so `gatehouse token` and
// `gatehouse approvals` see what the instances see.
func OpenStateStore(ctx context.Context, cfg *config.Config) (*sql.DB, error) {
	dsn, err := StateStore(cfg)
	if err != nil {
		return nil, err
	}
	if dsn == "" {
		return store.Open(ctx, filepath.Join(cfg.DataDir, StateDBFile))
	}
	return store.OpenPostgres(ctx, dsn)
}

// openStateListener returns a listener for other instances' changes when the state store
// is shared (PostgreSQL), or nil for the embedded store.
func openStateListener(cfg *config.Config, log *slog.Logger) (*store.Listener, error) {
	dsn, err := StateStore(cfg)
	if err != nil || dsn == "" {
		return nil, err
	}
	return store.NewListener(dsn, log.With("part", "state-listener"))
}
