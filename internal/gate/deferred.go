package gate

import (
	"context"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// maxDeferred bounds the records kept while the ledger is down (about 1 KiB each).
const maxDeferred = 100_000

// deferredEvents holds records of things that happened whatever the ledger's state — a
// session that ended, a login that failed, a connection refused — which the ledger could not
// take when they happened. They keep their own time and are written once the ledger writes
// again, so an outage loses none of them (statements never get here: they are refused while
// the ledger is down).
type deferredEvents struct {
	mu      sync.Mutex
	evs     []*ledger.Event
	dropped int
}

// recordOrDefer records ev, or keeps it for FlushDeferred when the ledger cannot take it.
func (g *Gate) recordOrDefer(ctx context.Context, ev *ledger.Event, what string) {
	if ev.Time.IsZero() {
		ev.Time = g.now()
	}
	err := g.record(ctx, ev)
	if err == nil {
		return
	}
	g.deferred.mu.Lock()
	defer g.deferred.mu.Unlock()
	if len(g.deferred.evs) >= maxDeferred {
		g.deferred.dropped++
		g.log().Error("ledger down and too many records waiting; dropping one", "record", what, "dropped", g.deferred.dropped, "err", err)
		return
	}
	g.deferred.evs = append(g.deferred.evs, ev)
	g.log().Warn("ledger cannot record now; keeping the record until it can", "record", what, "waiting", len(g.deferred.evs), "err", err)
}

// FlushDeferred writes the records kept during a ledger outage, oldest first, and returns
// how many it wrote; it stops at the first that still cannot be written. The server calls it
// periodically.
func (g *Gate) FlushDeferred(ctx context.Context) (int, error) {
	g.deferred.mu.Lock()
	evs := g.deferred.evs
	g.deferred.evs = nil
	g.deferred.mu.Unlock()
	for i, ev := range evs {
		if err := g.record(ctx, ev); err != nil {
			g.deferred.mu.Lock()
			g.deferred.evs = append(evs[i:], g.deferred.evs...)
			g.deferred.mu.Unlock()
			return i, err
		}
	}
	return len(evs), nil
}

// Deferred is the number of records waiting for the ledger, for metrics and tests.
func (g *Gate) Deferred() int {
	g.deferred.mu.Lock()
	defer g.deferred.mu.Unlock()
	return len(g.deferred.evs)
}

// RunDeferred flushes the kept records every interval until ctx ends.
func (g *Gate) RunDeferred(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if g.Deferred() == 0 {
				continue
			}
			if n, err := g.FlushDeferred(ctx); n > 0 {
				g.log().Info("ledger recorded what it could not take during its outage", "records", n, "still_waiting", g.Deferred(), "err", err)
			}
		}
	}
}
