package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Checkpoint kinds.
const (
	// CheckpointPeriodic seals the chain head every N events or T seconds.
	CheckpointPeriodic = "periodic"
	// CheckpointRetention anchors the chain after retention deleted its beginning: it
	// names the last deleted event, whose hash the new first event links to.
	CheckpointRetention = "retention"
)

// Checkpoint is a signed statement "the chain of Instance had Hash at Seq at Time". Kept in
// the store and copied to an external file, it lets a verifier detect a rewritten chain (the
// hash at Seq no longer matches) and a cut-off tail (the chain ends before Seq).
type Checkpoint struct {
	Instance  string    `json:"instance"`
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Signature string    `json:"signature"`
}

// signedBytes is exactly what the signature covers: a versioned, line-separated encoding
// with no ambiguity (instance names cannot contain a newline; see Options.Instance).
func (c *Checkpoint) signedBytes() []byte {
	var b bytes.Buffer
	b.WriteString("gatehouse-ledger-checkpoint-v1\n")
	b.WriteString(c.Instance)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatInt(c.Seq, 10))
	b.WriteByte('\n')
	b.WriteString(c.Hash)
	b.WriteByte('\n')
	b.WriteString(c.Time.UTC().Format(time.RFC3339Nano))
	b.WriteByte('\n')
	b.WriteString(c.Kind)
	return b.Bytes()
}

func (c *Checkpoint) sign(key ed25519.PrivateKey) {
	c.Time = c.Time.UTC()
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, c.signedBytes()))
}

// VerifySignature reports whether the checkpoint was signed by the holder of pub.
func (c *Checkpoint) VerifySignature(pub ed25519.PublicKey) bool {
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return false
	}
	return ed25519.Verify(pub, c.signedBytes(), sig)
}

// checkpointFile appends checkpoints as JSON lines to a file outside the store, fsync'd, so
// that someone who can rewrite the store cannot also quietly drop the record of its head.
type checkpointFile struct {
	path string
	// key is the signer's public key (base64), written on every line: the file lives outside
	// the store, so it pins each instance's key where the store's writers cannot change it.
	key string
}

// fileCheckpoint is one line of the external checkpoint file.
type fileCheckpoint struct {
	Checkpoint
	Key string `json:"key,omitempty"`
}

func (f checkpointFile) append(cp Checkpoint) error {
	if f.path == "" {
		return nil
	}
	line, err := json.Marshal(fileCheckpoint{Checkpoint: cp, Key: f.key})
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return fmt.Errorf("create checkpoint file directory: %w", err)
	}
	fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open checkpoint file: %w", err)
	}
	if _, err := fh.Write(append(line, '\n')); err != nil {
		fh.Close()
		return fmt.Errorf("append checkpoint: %w", err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return fmt.Errorf("sync checkpoint file: %w", err)
	}
	return fh.Close()
}

// ReadCheckpoints reads checkpoints written as JSON lines (the external checkpoint file or
// an export of the store's checkpoints).
func ReadCheckpoints(ctx context.Context, r io.Reader) ([]Checkpoint, error) {
	var out []Checkpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if line%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var cp Checkpoint
		if err := json.Unmarshal(b, &cp); err != nil {
			return nil, fmt.Errorf("checkpoint line %d: %w", line, err)
		}
		out = append(out, cp)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	return out, nil
}

// CheckpointFileKeys returns the public key each instance's lines in the external checkpoint
// file name, checked against the lines' own signatures: a verifier pins them, since the file
// lives outside the store. Lines without a key (older files) pin nothing; two different keys
// for one instance are an error.
func CheckpointFileKeys(ctx context.Context, path string) (map[string]ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint file: %w", err)
	}
	keys := map[string]ed25519.PublicKey{}
	for n, line := range bytes.Split(b, []byte("\n")) {
		if n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var fc fileCheckpoint
		if err := json.Unmarshal(line, &fc); err != nil || fc.Key == "" {
			continue // ReadCheckpoints reports malformed lines
		}
		raw, err := base64.StdEncoding.DecodeString(fc.Key)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("checkpoint file %s line %d: key %q is not an Ed25519 public key", path, n+1, fc.Key)
		}
		pub := ed25519.PublicKey(raw)
		if !fc.Checkpoint.VerifySignature(pub) {
			return nil, fmt.Errorf("checkpoint file %s line %d: the checkpoint does not verify with the key the line names", path, n+1)
		}
		if prev, ok := keys[fc.Instance]; ok && !prev.Equal(pub) {
			return nil, fmt.Errorf("checkpoint file %s: instance %s appears with two different keys", path, fc.Instance)
		}
		keys[fc.Instance] = pub
	}
	return keys, nil
}

// ReadCheckpointFile reads a checkpoint file; a missing file is an error (a verifier that
// was told to use one must not silently skip it).
func ReadCheckpointFile(ctx context.Context, path string) ([]Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("checkpoint file %s does not exist", path)
		}
		return nil, fmt.Errorf("open checkpoint file: %w", err)
	}
	defer f.Close()
	return ReadCheckpoints(ctx, f)
}
