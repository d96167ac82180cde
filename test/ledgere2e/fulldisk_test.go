package ledgere2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// TestFullDiskRecovers puts the data directory on a small file system of its own, fills it
// while clients work, and frees part of it again. Statements must be refused while the
// ledger cannot write (fail closed), a login during the outage gets the outage's SQLSTATE,
// Gatehouse must become ready again by itself as soon as a record fits (no statement has to
// come to find out), and the end of a session that closed during the outage must reach the
// ledger once it writes again.
func TestFullDiskRecovers(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", e.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 40 MiB tmpfs on the data directory (this test needs root, as CI runs): %v %s", err, out)
	}
	t.Cleanup(func() {
		e.cleanup()
		_ = exec.Command("umount", "-l", e.dataDir).Run()
	})
	secret := e.token("worker", "service")
	e.start()
	ctx := context.Background()
	closer := e.mustConnect("worker", secret, "closes-during-outage")
	var one int
	if err := closer.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}

	// Fill the file system: a 20 MiB file to free later, then everything else.
	fill := func(name string, max int64) {
		f, err := os.Create(filepath.Join(e.dataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for n := int64(0); n < max; n += int64(len(buf)) {
			if _, err := f.Write(buf); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					return
				}
				t.Fatal(err)
			}
		}
	}
	fill("filler-free-later", 20<<20)
	fill("filler-rest", 1<<30)

	// Work until the ledger runs out of room (bounded in count and time).
	loadCtx, stop := context.WithTimeout(ctx, 60*time.Second)
	defer stop()
	var refused sync.Once
	outage := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.connect(loadCtx, "worker", secret, "filler")
			if err != nil {
				return
			}
			defer c.Close(context.Background())
			for n := 0; n < 100000 && loadCtx.Err() == nil; n++ {
				if _, err := c.Exec(loadCtx, "SELECT $1::int /*purpose='fill'*/", n); err != nil {
					if code, _ := sqlState(err); code == "58000" {
						refused.Do(func() { close(outage) })
						return
					}
					return
				}
			}
		}()
	}
	select {
	case <-outage:
	case <-loadCtx.Done():
		t.Fatalf("no statement was refused with a full disk (fail closed)\n%s", e.serveLog())
	}
	stop()
	wg.Wait()
	if code, err := e.ready(ctx); err == nil && code == http.StatusOK {
		t.Errorf("readyz says ready while the ledger cannot write")
	}
	// A login now is refused for the outage, not as a permission problem.
	if _, err := e.connect(ctx, "worker", secret, "login-during-outage"); err == nil {
		t.Errorf("a login succeeded while the ledger could not record it")
	} else if code, _ := sqlState(err); code != "58000" {
		t.Errorf("login during the outage: SQLSTATE %s (%v), want 58000", code, err)
	}
	// A session that ends now must not be lost.
	closer.Close(ctx)

	if err := os.Remove(filepath.Join(e.dataDir, "filler-free-later")); err != nil {
		t.Fatal(err)
	}
	// Ready again by itself, without statements to find out.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, err := e.ready(ctx); err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30 s after 20 MiB were freed\n%s", e.serveLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
	c := e.mustConnect("worker", secret, "after-outage")
	if err := c.QueryRow(ctx, "SELECT 2").Scan(&one); err != nil {
		t.Fatalf("statement after the disk was freed: %v", err)
	}
	c.Close(ctx)
	// The session that closed during the outage is on the ledger.
	deadline = time.Now().Add(30 * time.Second)
	for {
		out, _, err := e.cli(ctx, "audit", "search", "--type", "session.end", "--json", "--limit", "1000")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev ledger.Event
			if json.Unmarshal([]byte(line), &ev) == nil && ev.ApplicationName == "closes-during-outage" {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the end of the session closed during the outage never reached the ledger\n%s", e.serveLog())
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.verify("after a full disk")
}
