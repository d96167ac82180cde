package mask

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// Instances sharing a PostgreSQL store must hold the same masking key: the first one's
// check value is recorded, the same key passes, another key is refused naming the file to
// copy and where, and the key itself never reaches the store.
func TestCheckSharedKey(t *testing.T) {
	ctx := context.Background()
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE state")
	dirA, dirB := t.TempDir(), t.TempDir()
	pathA, pathB := filepath.Join(dirA, KeyFile), filepath.Join(dirB, KeyFile)
	kA, err := LoadOrCreateKey(pathA)
	if err != nil {
		t.Fatal(err)
	}
	kB, err := LoadOrCreateKey(pathB)
	if err != nil {
		t.Fatal(err)
	}
	// Two handles, as two instances have.
	dbA, err := store.OpenPostgres(ctx, pg.DSN("state"))
	if err != nil {
		t.Fatal(err)
	}
	defer dbA.Close()
	dbB, err := store.OpenPostgres(ctx, pg.DSN("state"))
	if err != nil {
		t.Fatal(err)
	}
	defer dbB.Close()

	if err := CheckSharedKey(ctx, dbA, kA, pathA); err != nil {
		t.Fatalf("first instance: %v", err)
	}
	if err := CheckSharedKey(ctx, dbA, kA, pathA); err != nil {
		t.Fatalf("first instance again: %v", err)
	}
	err = CheckSharedKey(ctx, dbB, kB, pathB)
	if err == nil || !strings.Contains(err.Error(), "copy mask.key from an existing instance's data directory to "+pathB) {
		t.Fatalf("other key: %v", err)
	}
	for _, leak := range []string{hex.EncodeToString(kB), base64.StdEncoding.EncodeToString(kB), string(kB)} {
		if strings.Contains(err.Error(), leak) {
			t.Fatal("the error shows the key")
		}
	}
	if err := CheckSharedKey(ctx, dbB, kA, pathB); err != nil {
		t.Fatalf("same key on the second instance: %v", err)
	}

	// Only a keyed check value is stored, never the key.
	var rows int
	var value string
	if err := dbA.QueryRowContext(ctx, `SELECT count(*), max(value) FROM mask_meta`).Scan(&rows, &value); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || value != keyCheck(kA) || value == keyCheck(kB) {
		t.Fatalf("mask_meta holds %d rows, value %q", rows, value)
	}
	for _, leak := range []string{hex.EncodeToString(kA), base64.StdEncoding.EncodeToString(kA), hex.EncodeToString(kA[:8])} {
		if strings.Contains(value, leak) {
			t.Fatal("the stored check value contains the key")
		}
	}
}

// The embedded store serves one instance: nothing to compare, nothing written.
func TestCheckSharedKeyEmbedded(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := CheckSharedKey(ctx, db, []byte("0123456789abcdef0123456789abcdef"), "mask.key"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'mask_meta'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("mask_meta in the embedded store: %d %v", n, err)
	}
}
