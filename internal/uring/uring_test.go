//go:build linux

package uring

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func openTestFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFdatasyncThroughRing(t *testing.T) {
	r, err := Open()
	if !KernelAllows() {
		if err == nil {
			t.Fatal("io_uring is disabled on this kernel, yet Open succeeded")
		}
		r = nil // the fallback the ledger uses
	} else if err != nil {
		t.Fatalf("open a ring on a kernel that allows io_uring: %v", err)
	}
	defer r.Close()
	f := openTestFile(t)
	fd := int(f.Fd())
	if _, err := f.Write([]byte("record")); err != nil {
		t.Fatal(err)
	}
	if err := r.Fdatasync(fd); err != nil {
		t.Fatalf("sync a written file: %v", err)
	}
	if r != nil && r.Syncs() != 1 {
		t.Fatalf("syncs through the ring = %d, want 1", r.Syncs())
	}

	// The sync's own failure comes back as the system call's error: a pipe cannot be synced.
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	if err := r.Fdatasync(p[1]); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("sync of a pipe: %v, want EINVAL", err)
	}
}

func TestConcurrentSyncsEachComplete(t *testing.T) {
	if !KernelAllows() {
		t.Log("io_uring is disabled here: the ring's fallback is what runs")
	}
	r, _ := Open()
	defer r.Close()
	f := openTestFile(t)
	fd := int(f.Fd())
	var wg sync.WaitGroup
	errs := make(chan error, 8*50)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := f.WriteAt([]byte{byte(g), byte(i)}, int64(g*100+i*2)); err != nil {
					errs <- err
					return
				}
				if err := r.Fdatasync(fd); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if r != nil && r.Syncs() != 8*50 {
		t.Fatalf("syncs through the ring = %d, want %d", r.Syncs(), 8*50)
	}
}

func TestClosedRingStillSyncs(t *testing.T) {
	r, err := Open()
	if err != nil {
		if KernelAllows() {
			t.Fatal(err)
		}
		return
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	f := openTestFile(t)
	if err := r.Fdatasync(int(f.Fd())); err != nil {
		t.Fatalf("sync after close (the plain system call): %v", err)
	}
	if r.Syncs() != 0 {
		t.Fatal("a closed ring counted a sync")
	}
}

// TestRingOutOfStepIsNotUsedAgain: when a submission fails (here the descriptor is not a
// ring), the sync is still made, the plain way, and so is every later one: a ring whose
// submission queue may hold a stale entry would answer a later caller with another's
// completion, or never.
func TestRingOutOfStepIsNotUsedAgain(t *testing.T) {
	r, err := Open()
	if err != nil {
		if KernelAllows() {
			t.Fatal(err)
		}
		return
	}
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	ringFD := r.fd
	r.fd = int(null.Fd())
	f := openTestFile(t)
	if err := r.Fdatasync(int(f.Fd())); err != nil {
		t.Fatalf("sync after a failed submission: %v", err)
	}
	r.fd = ringFD
	if err := r.Fdatasync(int(f.Fd())); err != nil {
		t.Fatalf("a later sync: %v", err)
	}
	if r.Syncs() != 0 || !r.broken {
		t.Fatalf("syncs through the ring %d, broken %v: want 0 and true", r.Syncs(), r.broken)
	}
}
