package console

import (
	"testing"
	"time"
)

// The overview's append latency covers the last commitWindow group commits only.
func TestCommitWindow(t *testing.T) {
	var w CommitWindow
	if got := w.Latency(); got.Commits != 0 {
		t.Fatalf("empty window: %+v", got)
	}
	for i := 1; i <= 100; i++ {
		w.Observe(time.Duration(i) * time.Millisecond)
	}
	if got := w.Latency(); got.Commits != 100 || got.P50 != 51*time.Millisecond || got.P99 != 100*time.Millisecond || got.Max != 100*time.Millisecond {
		t.Fatalf("100 commits: %+v", got)
	}
	// A burst of slow commits long ago leaves the window once enough new ones arrive.
	for range commitWindow {
		w.Observe(time.Millisecond)
	}
	if got := w.Latency(); got.Commits != commitWindow || got.Max != time.Millisecond || got.P50 != time.Millisecond {
		t.Fatalf("after %d fast commits: %+v", commitWindow, got)
	}
}
