package store

import (
	"context"
	"path/filepath"
	"testing"
)

func TestMigrateAppliesOnceInOrder(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	m := []string{`CREATE TABLE a(x INTEGER)`, `ALTER TABLE a ADD COLUMN y TEXT`}
	if err := Migrate(ctx, db, "test", m); err != nil {
		t.Fatal(err)
	}
	// Re-running must not re-apply (CREATE TABLE a would fail).
	if err := Migrate(ctx, db, "test", m); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	db.Close()
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m = append(m, `INSERT INTO a(x, y) VALUES (1, 'one')`)
	if err := Migrate(ctx, db, "test", m); err != nil {
		t.Fatal(err)
	}
	var y string
	if err := db.QueryRowContext(ctx, `SELECT y FROM a WHERE x = 1`).Scan(&y); err != nil || y != "one" {
		t.Fatalf("y=%q err=%v", y, err)
	}
	if err := Migrate(ctx, db, "bad", []string{`THIS IS NOT SQL`}); err == nil {
		t.Fatal("a broken migration was accepted")
	}
}

func TestRebind(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT a FROM t WHERE x = ? AND y = ?`, `SELECT a FROM t WHERE x = $1 AND y = $2`},
		{`UPDATE t SET r = 'why?' WHERE "odd?" = ? LIMIT ?`, `UPDATE t SET r = 'why?' WHERE "odd?" = $1 LIMIT $2`},
		{`SELECT 'it''s?', ?`, `SELECT 'it''s?', $1`},
		{`SELECT 1`, `SELECT 1`},
	} {
		if got := Rebind(Postgres, c.in); got != c.want {
			t.Errorf("Rebind(%q) = %q, want %q", c.in, got, c.want)
		}
		if got := Rebind(SQLite, c.in); got != c.in {
			t.Errorf("SQLite Rebind changed %q to %q", c.in, got)
		}
	}
}
