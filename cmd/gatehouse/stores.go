package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server"
)

// sharedStore reports whether cfg keeps the ledger and state in a shared PostgreSQL store.
func sharedStore(cfg *config.Config) bool {
	return cfg.Ledger.Store == "postgres" || cfg.Ledger.Store == "postgresql"
}

// storeName says which store a read command reads, in words for its output: the embedded
// files in the data directory, or the shared PostgreSQL store (never its DSN, which may hold
// a password).
func storeName(cfg *config.Config, file string) string {
	if sharedStore(cfg) {
		return "the shared PostgreSQL store (ledger.store: postgres)"
	}
	return filepath.Join(cfg.DataDir, file)
}

// errNoData is returned by read commands pointed at a data directory Gatehouse never used,
// instead of creating an empty store there and reporting an empty success.
var errNoData = errors.New("no Gatehouse data")

// needExisting refuses to open an embedded store file that does not exist: the command was
// pointed at the wrong place (no configuration found, or another data directory), and an
// empty answer would read as "nothing happened".
func needExisting(cfg *config.Config, file string) error {
	if sharedStore(cfg) {
		return nil
	}
	path := filepath.Join(cfg.DataDir, file)
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	where := "no configuration file was found"
	if cfg.Path != "" {
		where = "configuration " + cfg.Path
	}
	return fmt.Errorf("%w: %s does not exist (%s, data directory %s). Point this command at the running server's configuration with --config or %s, or at its data directory with --data-dir or %s",
		errNoData, path, where, cfg.DataDir, envConfig, envDataDir)
}

// ledgerFile and stateFile are the embedded stores' files in the data directory.
const (
	ledgerFile = ledger.SQLiteFile
	stateFile  = server.StateDBFile
)
