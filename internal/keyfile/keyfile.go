// Package keyfile keeps the installation's secret keys (masking tokens, approval statement
// hashes) in the data directory: created once with random bytes and mode 0600, then read
// back unchanged, because every value derived from a key changes when the key does.
package keyfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MinSize is the shortest key accepted from a file: anything shorter was not made here.
const MinSize = 16

// LoadOrCreate returns the key kept in path, creating it (size random bytes, mode 0600) on
// first use; what names the key in errors ("masking key").
func LoadOrCreate(path, what string, size int) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) < MinSize {
			return nil, fmt.Errorf("%s %s is too short (%d bytes, want at least %d)", what, path, len(b), MinSize)
		}
		return b, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	key := make([]byte, size)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate %s: %w", what, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create %s directory: %w", what, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreate(path, what, size) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", what, err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", what, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", what, err)
	}
	return key, nil
}
