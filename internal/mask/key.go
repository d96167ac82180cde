package mask

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"

	"github.com/gatehouse/gatehouse/internal/keyfile"
	"github.com/gatehouse/gatehouse/internal/store"
)

// KeySize is the length of a generated hashing key.
const KeySize = 32

// KeyFile is the name of the masking key in the data directory.
const KeyFile = "mask.key"

// LoadOrCreateKey returns the installation's hashing key kept in path, creating it (random,
// mode 0600) on first use. The key must stay stable: tokens made with another key differ, so
// joins across a key change break.
func LoadOrCreateKey(path string) ([]byte, error) {
	return keyfile.LoadOrCreate(path, "masking key", KeySize)
}

// keyMigrations hold the check value of the masking key on a PostgreSQL store shared by
// several instances (the embedded store has one instance, so nothing to agree with). Never
// edit a released entry; append.
var keyMigrations = []string{
	`CREATE TABLE mask_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
}

// keyCheck is the value stored to compare instances' masking keys: an HMAC of a fixed label
// under the key, so it proves which key an instance holds without revealing it (or letting
// anyone holding the store compute hash-masked tokens).
func keyCheck(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("gatehouse mask key check v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// CheckSharedKey makes sure every instance sharing a PostgreSQL state store masks with the
// same key, kept at path on this instance: otherwise the same value would hash to different
// tokens depending on which instance a client reached, and joins across masked output
// would silently break. The first instance to start records its key's check value; one with
// another key is refused. On the embedded store it does nothing. To change the key of every
// instance, stop them all and delete the row in mask_meta along with replacing the files.
func CheckSharedKey(ctx context.Context, db *sql.DB, key []byte, path string) error {
	d := store.DialectOf(db)
	if d != store.Postgres {
		return nil
	}
	if err := store.MigrateDialect(ctx, db, "mask", nil, keyMigrations); err != nil {
		return fmt.Errorf("check masking key against the shared store: %w", err)
	}
	check := keyCheck(key)
	if _, err := db.ExecContext(ctx, `INSERT INTO mask_meta(key, value) VALUES ('key_check', $1) ON CONFLICT DO NOTHING`, check); err != nil {
		return fmt.Errorf("check masking key against the shared store: %w", err)
	}
	var have string
	if err := db.QueryRowContext(ctx, `SELECT value FROM mask_meta WHERE key = 'key_check'`).Scan(&have); err != nil {
		return fmt.Errorf("check masking key against the shared store: %w", err)
	}
	if !hmac.Equal([]byte(have), []byte(check)) {
		return fmt.Errorf("masking key %s differs from the one the other instances sharing this store use: copy %s from an existing instance's data directory to %s, then start again", path, KeyFile, path)
	}
	return nil
}
