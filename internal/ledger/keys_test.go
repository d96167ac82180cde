package ledger

import (
	"context"
	"crypto/ed25519"
	"os"
	"strings"
	"testing"
)

// TestCheckpointFileKeys: every line of the external checkpoint file names its signer's
// key, so a verifier pins each instance's key from outside the store; a line whose named key
// does not verify its own checkpoint is an error, not a key to trust.
func TestCheckpointFileKeys(t *testing.T) {
	ts := storeMakers(t)[0].make(t)
	l := newLedger(t, ts, Options{Instance: "gh-keys", CheckpointEvery: 2})
	record(t, l, stmtEvent("alice", "human", "SELECT 1", nil, nil), stmtEvent("alice", "human", "SELECT 2", nil, nil))
	if err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	keys, err := CheckpointFileKeys(context.Background(), l.opts.CheckpointFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !keys["gh-keys"].Equal(l.PublicKey()) {
		t.Fatalf("keys from the checkpoint file = %v, want gh-keys → %s", keys, PublicKeyBase64(l.PublicKey()))
	}
	b, err := os.ReadFile(l.opts.CheckpointFile)
	if err != nil {
		t.Fatal(err)
	}
	stranger := testKey(t).Public().(ed25519.PublicKey)
	forged := strings.Replace(string(b), PublicKeyBase64(l.PublicKey()), PublicKeyBase64(stranger), 1)
	if err := os.WriteFile(l.opts.CheckpointFile, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckpointFileKeys(context.Background(), l.opts.CheckpointFile); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a line naming another key: %v", err)
	}
}
