package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeyFile is the name of the checkpoint signing key inside the data directory.
const KeyFile = "ledger-signing.key"

// LoadOrCreateKey reads the Ed25519 checkpoint signing key from dir, generating it (mode
// 0600) on first start. The key signs checkpoints so that a verifier holding only the public
// key can tell genuine chain heads from forged ones.
func LoadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		return parsePrivateKey(b, path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read ledger signing key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory for ledger signing key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ledger signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode ledger signing key: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	// O_EXCL: two processes starting at once must not overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return LoadOrCreateKey(dir)
		}
		return nil, fmt.Errorf("create ledger signing key: %w", err)
	}
	if _, err := f.Write(pemBytes); err != nil {
		f.Close()
		return nil, fmt.Errorf("write ledger signing key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync ledger signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close ledger signing key: %w", err)
	}
	return priv, nil
}

func parsePrivateKey(b []byte, path string) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("ledger signing key %s: not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ledger signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("ledger signing key %s: not an Ed25519 key", path)
	}
	return priv, nil
}

// PublicKeyPEM encodes a public key as a PEM "PUBLIC KEY" block (PKIX), the form
// `gatehouse audit verify` and openssl accept.
func PublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("encode public key: %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// PublicKeyBase64 encodes the raw 32-byte public key in standard base64, short enough to
// paste into a ticket or a configuration file.
func PublicKeyBase64(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey accepts a public key as PEM (PKIX) or as base64 of the raw 32 bytes.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil {
			return nil, errors.New("parse public key: bad PEM")
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, errors.New("parse public key: not an Ed25519 key")
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("parse public key: neither PEM nor base64: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("parse public key: %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// PinnedKeys are the checkpoint keys a verifier trusts per instance: trusted (the
// configuration's ledger.trusted_keys, base64 by instance) and the keys the lines of the
// external checkpoint file name (checkpointFile, "" for none). Both live outside the store.
// A disagreement between them is an error, not a choice.
func PinnedKeys(ctx context.Context, trusted map[string]string, checkpointFile string) (map[string]ed25519.PublicKey, error) {
	keys := map[string]ed25519.PublicKey{}
	for inst, k := range trusted {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ledger.trusted_keys.%s: %q is not an Ed25519 public key in base64", inst, k)
		}
		keys[inst] = raw
	}
	if checkpointFile == "" {
		return keys, nil
	}
	fromFile, err := CheckpointFileKeys(ctx, checkpointFile)
	if err != nil {
		return nil, err
	}
	for inst, k := range fromFile {
		if pinned, ok := keys[inst]; ok && !pinned.Equal(k) {
			return nil, fmt.Errorf("instance %s: the checkpoint file %s names key %s, but ledger.trusted_keys pins %s", inst, checkpointFile, PublicKeyBase64(k), PublicKeyBase64(pinned))
		}
		keys[inst] = k
	}
	return keys, nil
}

// ReadTrustedKeys adds the keys of a JSON file {instance: base64 key} (an evidence pack's
// trusted-keys.json) to keys; a key that contradicts one already pinned is an error.
func ReadTrustedKeys(path string, keys map[string]ed25519.PublicKey) (map[string]ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trusted keys: %w", err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: expected a JSON object of instance name to base64 public key: %w", path, err)
	}
	if keys == nil {
		keys = map[string]ed25519.PublicKey{}
	}
	for inst, k := range m {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%s: instance %s: %q is not an Ed25519 public key in base64", path, inst, k)
		}
		if prev, ok := keys[inst]; ok && !prev.Equal(ed25519.PublicKey(raw)) {
			return nil, fmt.Errorf("%s: instance %s: key %s contradicts the pinned %s", path, inst, k, PublicKeyBase64(prev))
		}
		keys[inst] = raw
	}
	return keys, nil
}

// EncodeKeys renders pinned keys as the JSON object ReadTrustedKeys reads.
func EncodeKeys(keys map[string]ed25519.PublicKey) ([]byte, error) {
	m := make(map[string]string, len(keys))
	for inst, k := range keys {
		m[inst] = PublicKeyBase64(k)
	}
	return json.MarshalIndent(m, "", "  ")
}
