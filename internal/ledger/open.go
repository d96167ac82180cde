package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
)

// OpenStore opens the store the configuration names: SQLite in dataDir by default, or
// PostgreSQL from ledger.dsn / the variable ledger.dsn_env names.
func OpenStore(ctx context.Context, c config.Ledger, dataDir string) (Store, error) {
	switch c.Store {
	case "", "sqlite":
		return OpenSQLite(ctx, dataDir)
	case "postgres", "postgresql":
		dsn := c.DSN
		if c.DSNEnv != "" {
			dsn = os.Getenv(c.DSNEnv)
			if dsn == "" {
				return nil, fmt.Errorf("ledger store: environment variable %s (ledger.dsn_env) is empty", c.DSNEnv)
			}
		}
		if dsn == "" {
			return nil, errors.New("ledger store: postgres needs ledger.dsn or ledger.dsn_env")
		}
		return OpenPostgres(ctx, dsn)
	}
	return nil, fmt.Errorf("ledger store: unknown store %q (sqlite or postgres)", c.Store)
}

// OpenSinks builds the sinks the configuration declares. With a data directory each sink
// is resumable: its cursor lives in dataDir/ledger-sinks under an identity derived from its
// type and path or URL, so it resumes where it stopped across restarts.
func OpenSinks(c config.Ledger, dataDir string) ([]Sink, error) {
	var out []Sink
	for i, s := range c.Sinks {
		switch s.Type {
		case "jsonl":
			if s.Path == "" {
				return nil, fmt.Errorf("ledger sink %d: jsonl needs a path (\"-\" for stdout)", i+1)
			}
			js, err := NewJSONLSink(s.Path)
			if err != nil {
				for _, o := range out {
					o.Close()
				}
				return nil, err
			}
			id := "jsonl:stdout"
			if s.Path != "-" {
				abs, err := filepath.Abs(s.Path)
				if err != nil {
					abs = s.Path
				}
				id = "jsonl:" + abs
			}
			out = append(out, resumable(js, dataDir, id))
		case "webhook":
			if s.URL == "" {
				return nil, fmt.Errorf("ledger sink %d: webhook needs a url", i+1)
			}
			out = append(out, resumable(NewWebhookSink(s.URL), dataDir, "webhook:"+s.URL))
		default:
			return nil, fmt.Errorf("ledger sink %d: unknown type %q (jsonl or webhook)", i+1, s.Type)
		}
	}
	return out, nil
}

// Open builds the ledger a configuration describes: its store, signing key (in the data
// directory), checkpoint schedule and file, sinks and retention. instance names the chain
// ("" for the host name).
func Open(ctx context.Context, cfg *config.Config, instance string, log *slog.Logger) (*Ledger, error) {
	st, err := OpenStore(ctx, cfg.Ledger, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	sinks, err := OpenSinks(cfg.Ledger, cfg.DataDir)
	if err != nil {
		st.Close()
		return nil, err
	}
	l, err := New(ctx, st, Options{
		Instance:           instance,
		DataDir:            cfg.DataDir,
		CheckpointEvery:    cfg.Ledger.CheckpointEvery,
		CheckpointInterval: time.Duration(cfg.Ledger.CheckpointInterval),
		CheckpointFile:     cfg.Ledger.CheckpointFile,
		Retention:          time.Duration(cfg.Ledger.Retention),
		Sinks:              sinks,
		Log:                log,
		Durability:         Durability(cfg.Ledger.Durability),
	})
	if err != nil {
		for _, s := range sinks {
			s.Close()
		}
		st.Close()
		return nil, err
	}
	l.ownsStore = true
	return l, nil
}

// resumable wraps s with a cursor in dataDir, or leaves it as it is without a data
// directory (it then starts at the chain head, as before).
func resumable(s Sink, dataDir, id string) Sink {
	if dataDir == "" {
		return s
	}
	return Resumable(s, filepath.Join(dataDir, SinkCursorDir), id)
}
