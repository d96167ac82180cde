package mask

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the length of a generated hashing key.
const KeySize = 32

// LoadOrCreateKey returns the installation's hashing key kept in path, creating it (random,
// mode 0600) on first use. The key must stay stable: tokens made with another key differ, so
// joins across a key change break.
func LoadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) < 16 {
			return nil, fmt.Errorf("masking key %s is too short (%d bytes, want at least 16)", path, len(b))
		}
		return b, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read masking key: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate masking key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create masking key directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateKey(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("create masking key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("write masking key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write masking key: %w", err)
	}
	return key, nil
}
