package ledger

import (
	"context"
	"fmt"
	"os"
	"strconv"
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
			b.ResetTimer()
			for i := 0; i < len(rows); i += batch {
				if err := x.storeBatches(ctx, []logBatch{{rows: rows[i:min(i+batch, len(rows))]}}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
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
