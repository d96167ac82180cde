package approval

import "github.com/gatehouse/gatehouse/internal/keyfile"

// KeyFile is the name of the statement-hashing key in the data directory.
const KeyFile = "approval.key"

// LoadOrCreateKey returns the key kept in path, creating it (32 random bytes, mode 0600) on
// first use. Changing it only orphans approvals given before the change.
func LoadOrCreateKey(path string) ([]byte, error) {
	return keyfile.LoadOrCreate(path, "approval key", 32)
}
