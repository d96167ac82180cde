package gate_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// recordingCatalog is a gate.Catalog that remembers which catalog each call named.
type recordingCatalog struct {
	mu          sync.Mutex
	invalidated []string
	asked       map[string]bool
}

var _ gate.Catalog = (*recordingCatalog)(nil)

func (c *recordingCatalog) SensitiveColumns(_ context.Context, target string, _ []string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked[target] = true
	return nil
}

func (c *recordingCatalog) Invalidate(target string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidated = append(c.invalidated, target)
}

func (c *recordingCatalog) Snapshot(context.Context, string) (*classify.Snapshot, error) {
	return nil, nil
}

func (c *recordingCatalog) NotNull(_ context.Context, target, _ string, _ []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked[target] = true
	return false
}

func (c *recordingCatalog) FunctionEffects(_ context.Context, target string) inspect.FunctionEffect {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked[target] = true
	return nil
}

func (c *recordingCatalog) take() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := strings.Join(c.invalidated, ",")
	c.invalidated = nil
	return out
}

// TestDDLInvalidatesTheSessionsCatalog: a session on another database of its target
// (dbname=shop@db-dev) reads and invalidates the catalog "shop@db-dev", not the target's;
// DDL inside a transaction invalidates it again at COMMIT (a rescan during the transaction
// cannot see the new tables), not after a ROLLBACK.
func TestDDLInvalidatesTheSessionsCatalog(t *testing.T) {
	g, _ := newGate(t)
	cat := &recordingCatalog{asked: map[string]bool{}}
	g.Catalog = cat
	ctx := context.Background()
	s := session("dev", identity.Human, "dba")
	s.Target.Database = "app"
	s.Database = "shop"
	if d, err := g.OpenSession(ctx, s); err != nil || d.Action != gate.Allow {
		t.Fatalf("open: %+v %v", d, err)
	}
	run := func(sql string) {
		t.Helper()
		c := g.Check(ctx, s, sql, gate.ViaQuery)
		if !c.Allowed() {
			t.Fatalf("%s: refused %+v", sql, c.Decision)
		}
		if err := g.Done(ctx, s, c, gate.Outcome{}); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	run("CREATE TABLE p(city_id int)")
	if got := cat.take(); got != "shop@db-dev" {
		t.Errorf("after autocommit DDL: invalidated %q, want shop@db-dev", got)
	}
	run("DELETE FROM p WHERE city_id IS NOT NULL")
	if got := cat.take(); got != "" {
		t.Errorf("a write invalidated %q", got)
	}
	if !cat.asked["shop@db-dev"] || cat.asked["db-dev"] {
		t.Errorf("catalogs asked: %v, want only shop@db-dev", cat.asked)
	}
	run("COMMIT") // the autocommit DDL's flag: one spare rescan at most
	cat.take()

	run("BEGIN")
	run("CREATE TABLE q(zip int)")
	run("INSERT INTO q VALUES (1)")
	run("COMMIT")
	if got := cat.take(); got != "shop@db-dev,shop@db-dev" {
		t.Errorf("DDL then COMMIT invalidated %q, want shop@db-dev twice", got)
	}
	run("DO $$ BEGIN CREATE TABLE IF NOT EXISTS d(zip int); END $$")
	if got := cat.take(); got != "shop@db-dev" {
		t.Errorf("after a DO block: invalidated %q, want shop@db-dev", got)
	}
	run("COMMIT")
	cat.take()
	run("BEGIN")
	run("CREATE TABLE r(zip int)")
	run("ROLLBACK")
	run("BEGIN")
	run("COMMIT")
	if got := cat.take(); got != "shop@db-dev" {
		t.Errorf("DDL, ROLLBACK, BEGIN, COMMIT invalidated %q, want once (the DDL)", got)
	}
}
