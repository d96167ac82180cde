package mask

import "github.com/gatehouse/gatehouse/internal/keyfile"

// KeySize is the length of a generated hashing key.
const KeySize = 32

// LoadOrCreateKey returns the installation's hashing key kept in path, creating it (random,
// mode 0600) on first use. The key must stay stable: tokens made with another key differ, so
// joins across a key change break.
func LoadOrCreateKey(path string) ([]byte, error) {
	return keyfile.LoadOrCreate(path, "masking key", KeySize)
}
