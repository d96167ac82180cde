package ledger

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkIndex measures what the SQLite indexer costs per event (CPU of this process,
// one goroutine, no fsync wait): storing the event row and deriving its search index rows,
// in batches as the indexer takes them from the commit log. This is most of what recording
// costs the proxy's CPU, so it is what the pgbench ratio moves with.
func BenchmarkIndex(b *testing.B) {
	for _, shape := range []struct {
		name string
		ev   func(i int) *Event
	}{
		{"pgbench-select", func(i int) *Event {
			return stmtEvent("bench@corp", "SELECT", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", []string{"public.pgbench_accounts"}, nil)
		}},
		{"pii-select", func(i int) *Event {
			return stmtEvent(fmt.Sprintf("user%d@corp", i%50), "SELECT", "SELECT id, email FROM public.customers WHERE id = $1", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
		}},
	} {
		b.Run(shape.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := OpenSQLite(ctx, b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			batch := benchBatch
			start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
			rows := make([]eventRow, 0, b.N)
			for i := 0; i < b.N; i++ {
				ev := shape.ev(i)
				ev.Instance, ev.Seq, ev.Time = "bench", int64(i+1), start.Add(time.Duration(i)*time.Millisecond)
				ev.SessionID = fmt.Sprintf("s%d", i/100)
				ev.Hash = fmt.Sprintf("%064x", i)
				body, ok := appendCanonicalEvent(nil, ev)
				if !ok {
					b.Fatal("encode event")
				}
				rows = append(rows, rowOf(ev, body))
			}
			x := s.ix
			x.mu.Lock()
			defer x.mu.Unlock()
			cpu0 := processCPU(b)
			w0, f0, iok := processIO(b)
			b.ResetTimer()
			for i := 0; i < len(rows); i += batch {
				if err := x.storeBatches(ctx, []logBatch{{rows: rows[i:min(i+batch, len(rows))]}}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
			reportIO(b, w0, f0, iok, "event")
		})
	}
}

// benchBatch is how many events one indexer transaction covers in BenchmarkIndex: about
// what the indexer gathers in indexGather at a few thousand statements a second.
// GATEHOUSE_INDEX_BATCH=200 shows what smaller transactions cost.
var benchBatch = func() int {
	if n, err := strconv.Atoi(os.Getenv("GATEHOUSE_INDEX_BATCH")); err == nil && n > 0 {
		return n
	}
	return 1000
}()

// BenchmarkSustained is the embedded ledger end to end at a sustained rate, for `make
// bench`: 64 sessions record pgbench-like SELECT events through Ledger.Record (group commit
// into the commit log, under each durability contract) while the indexer stores them in
// SQLite with their search indexes, and the clock stops only once every event is indexed.
// Reported: events/s over that whole time, index-lag-ms (how long indexing still took
// after the last Record returned: the indexes are current within that), and cpu-µs/event
// (all of the process's CPU, recording and indexing). Run it with -cpu 1 for the one-core
// figure, e.g. `go test -run '^$' -bench BenchmarkSustained -cpu 1 -benchtime 200000x
// ./internal/ledger`.
func BenchmarkSustained(b *testing.B) {
	for _, d := range []Durability{DurabilitySensitive, DurabilityEvery} {
		b.Run("durability="+string(d), func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			s, err := OpenSQLite(ctx, dir)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			l, err := New(ctx, s, Options{Instance: "bench", Key: testKey(b), Durability: d})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(ctx)
			const sessions = 64
			var next atomic.Int64
			var wg sync.WaitGroup
			cpu0 := processCPU(b)
			w0, f0, iok := processIO(b)
			b.ResetTimer()
			start := time.Now()
			for w := 0; w < sessions; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						ev := stmtEvent("bench@corp", "SELECT", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", []string{"public.pgbench_accounts"}, nil)
						ev.SessionID = fmt.Sprintf("s%d", w)
						if err := l.Record(ctx, ev); err != nil {
							b.Error(err)
							return
						}
					}
				}(w)
			}
			wg.Wait()
			recorded := time.Now()
			if err := s.ix.sync(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(time.Since(recorded).Milliseconds()), "index-lag-ms")
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
			reportIO(b, w0, f0, iok, "event")
		})
	}
}
