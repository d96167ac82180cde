package server_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/mask"
	"github.com/gatehouse/gatehouse/internal/server"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// A second instance sharing a PostgreSQL store with another masking key refuses to start,
// saying which file to copy where; with the first instance's key it starts.
func TestSharedStoreRefusesOtherMaskKey(t *testing.T) {
	shared := testkit.StartPostgres(t)
	shared.Exec(t, "postgres", "CREATE DATABASE gatehouse")
	a := servertest.Start(t, servertest.Options{SharedStoreDSN: shared.DSN("gatehouse"), Instance: "gh-a"})

	cfg := *a.Config
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	copyKey := func(name string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(a.DataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.DataDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyKey(approval.KeyFile) // the approval key agrees, so only the masking key can differ
	start := func() (*server.Instance, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return server.Start(ctx, &cfg, server.Options{Instance: "gh-b", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}

	b, err := start()
	if err == nil {
		b.Close()
		t.Fatal("an instance with another masking key started")
	}
	own := filepath.Join(cfg.DataDir, mask.KeyFile)
	if !strings.Contains(err.Error(), "copy mask.key from an existing instance's data directory to "+own) {
		t.Fatalf("refusal does not say what to copy where: %v", err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Fatalf("the refused instance's key: %v", err)
	}

	copyKey(mask.KeyFile)
	b, err = start()
	if err != nil {
		t.Fatalf("with the first instance's masking key: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
