package approval

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/store"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// TestPostgresStore runs the store's tests against a PostgreSQL state store, as instances
// sharing one use it: the same behaviour, including use-once under a race, with each test
// in a fresh database.
func TestPostgresStore(t *testing.T) {
	pg := testkit.StartPostgres(t)
	n := 0
	fresh := func(t *testing.T) *sql.DB {
		t.Helper()
		n++
		name := fmt.Sprintf("state%d", n)
		pg.Exec(t, "postgres", "CREATE DATABASE "+name)
		db, err := store.OpenPostgres(context.Background(), pg.DSN(name))
		if err != nil {
			t.Fatal(err)
		}
		if store.DialectOf(db) != store.Postgres {
			t.Fatal("not a PostgreSQL store")
		}
		return db
	}
	fixtureDB = fresh
	defer func() { fixtureDB = nil }()
	// Two handles (pools) on one database, as two instances sharing it have.
	twoHandles := func(t *testing.T) []*sql.DB {
		n++
		name := fmt.Sprintf("state%d", n)
		pg.Exec(t, "postgres", "CREATE DATABASE "+name)
		var dbs []*sql.DB
		for range 2 {
			db, err := store.OpenPostgres(context.Background(), pg.DSN(name))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			dbs = append(dbs, db)
		}
		return dbs
	}
	for name, fn := range map[string]func(*testing.T){
		"RequestApproveUseOnce":    TestRequestApproveUseOnce,
		"LiteralsNeverStored":      TestLiteralsNeverStored,
		"DenyAndExpiry":            TestDenyAndExpiry,
		"ConcurrentUseOneWins":     TestConcurrentUseExactlyOneWins,
		"ConcurrentHoldFilesOne":   TestConcurrentHoldFilesOneRequest,
		"UnrecordedActionsUndone":  TestUnrecordedActionsAreUndone,
		"ExpiryRecordedOnce":       TestExpiryRecordedOnce,
		"UnrecordedExpiryRetried":  TestUnrecordedExpiryIsRetried,
		"ExpiryRaceRecordsOnce":    func(t *testing.T) { testExpiryRaceRecordsOnce(t, twoHandles(t)...) },
		"InstancesShareRequests":   func(t *testing.T) { testInstancesShareRequests(t, fresh(t)) },
		"InstancesMustShareTheKey": func(t *testing.T) { testInstancesMustShareTheKey(t, fresh(t)) },
	} {
		t.Run(name, fn)
	}
}

// A request filed through one store is decided and used through another on the same database.
func testInstancesShareRequests(t *testing.T, db *sql.DB) {
	ctx := context.Background()
	defer db.Close()
	a := newFixture(t)
	// Rebuild a's store on the shared database, and b beside it with the same key.
	var err error
	if a.s, err = Open(ctx, db, Options{Recorder: a.rec, Key: a.s.key, Now: a.clk.Now, Settings: a.s.settings}); err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, db, Options{Recorder: a.rec, Key: a.s.key, Now: a.clk.Now, Settings: a.s.settings})
	if err != nil {
		t.Fatal(err)
	}
	h := a.held(alice, "DROP TABLE orders")
	d, err := a.s.Hold(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Approve(ctx, d.ApprovalID, bob, ""); err != nil {
		t.Fatalf("approve through the other store: %v", err)
	}
	id, err := a.s.Approved(ctx, h)
	if err != nil || id != d.ApprovalID {
		t.Fatalf("approved = %q, %v; want %s", id, err, d.ApprovalID)
	}
	if ok, err := b.Use(ctx, id, h); !ok || err != nil {
		t.Fatalf("use through the other store: %v %v", ok, err)
	}
	if ok, err := a.s.Use(ctx, id, h); ok || err != nil {
		t.Fatalf("second use: %v %v", ok, err)
	}
}

// An instance with another approval key is refused, rather than never matching approvals.
func testInstancesMustShareTheKey(t *testing.T, db *sql.DB) {
	ctx := context.Background()
	defer db.Close()
	k1, err := LoadOrCreateKey(filepath.Join(t.TempDir(), KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey(filepath.Join(t.TempDir(), KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, db, Options{Key: k1}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, db, Options{Key: k1}); err != nil {
		t.Fatalf("same key refused: %v", err)
	}
	if _, err := Open(ctx, db, Options{Key: k2}); err == nil || !strings.Contains(err.Error(), "copy "+KeyFile) {
		t.Fatalf("other key: %v", err)
	}
	if _, err := Open(ctx, db, Options{}); err != nil {
		t.Fatalf("keyless reader refused: %v", err)
	}
}
