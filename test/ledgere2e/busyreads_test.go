package ledgere2e

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestReadsWhileBusy runs the CLI's reads (verify, search, export) again and again in their
// own processes while clients keep the server busy, so its commit log rotates and its
// sealed segments are stored and deleted under the readers. A reader must never fail
// because of a live writer's log files, and must never remove them.
func TestReadsWhileBusy(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.start()
	secret := e.token("loader", "service")
	e.mustConnect("loader", secret, "setup").Close(context.Background())
	if _, err := e.direct(t).Exec(context.Background(), "CREATE TABLE IF NOT EXISTS busy(id int)"); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithTimeout(context.Background(), 25*time.Second)
	defer stop()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.connect(ctx, "loader", secret, "busy")
			if err != nil {
				return
			}
			defer c.Close(context.Background())
			for n := 0; n < 200000 && ctx.Err() == nil; n++ {
				if _, err := c.Exec(ctx, "SELECT $1::int", pgx.QueryExecModeSimpleProtocol, n); err != nil && ctx.Err() == nil {
					t.Errorf("load: %v", err)
					return
				}
			}
		}()
	}
	for round := 0; round < 6 && ctx.Err() == nil; round++ {
		for _, args := range [][]string{
			{"audit", "verify"},
			{"audit", "search", "--identity", "loader", "--limit", "5"},
			{"audit", "export", "-o", filepath.Join(t.TempDir(), "ledger.jsonl")},
		} {
			if _, _, err := e.cli(ctx, args...); err != nil && ctx.Err() == nil {
				t.Fatalf("round %d, while the server is busy: %v", round, err)
			}
		}
	}
	stop()
	wg.Wait()
	if _, err := e.ready(context.Background()); err != nil {
		t.Fatalf("the server is not ready after the reads: %v\n%s", err, e.serveLog())
	}
	e.verify("after the busy reads")
}
