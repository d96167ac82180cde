package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

// durablePostgres starts a throwaway cluster and turns durability back on (the kit runs
// clusters with fsync off for speed), so append benchmarks measure real commits.
func durablePostgres(b *testing.B) *testkit.Postgres {
	pg := testkit.StartPostgres(b)
	pg.Exec(b, "postgres", "ALTER SYSTEM SET fsync = on")
	pg.Exec(b, "postgres", "ALTER SYSTEM SET synchronous_commit = on")
	pg.Exec(b, "postgres", "ALTER SYSTEM SET full_page_writes = on")
	pg.Exec(b, "postgres", "SELECT pg_reload_conf()")
	return pg
}

func benchStores(parent *testing.B) []struct {
	name string
	open func(b *testing.B) Store
} {
	var once sync.Once
	var pg *testkit.Postgres
	n := 0
	return []struct {
		name string
		open func(b *testing.B) Store
	}{
		{"sqlite", func(b *testing.B) Store {
			s, err := OpenSQLite(context.Background(), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"postgres", func(b *testing.B) Store {
			once.Do(func() { pg = durablePostgres(parent) })
			n++
			db := fmt.Sprintf("bench%d", n)
			pg.Exec(b, "postgres", "CREATE DATABASE "+db)
			s, err := OpenPostgres(context.Background(), pg.DSN(db))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
}

// BenchmarkAppend measures Record throughput with durability on (SQLite synchronous=FULL,
// PostgreSQL fsync and synchronous_commit on) for 1 and 32 concurrent writers.
func BenchmarkAppend(b *testing.B) {
	for _, st := range benchStores(b) {
		for _, writers := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/writers=%d", st.name, writers), func(b *testing.B) {
				s := st.open(b)
				l, err := New(context.Background(), s, Options{Instance: "bench", Key: testKey(nil), CheckpointEvery: 1000})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close(context.Background())
				var next atomic.Int64
				var wg sync.WaitGroup
				cpu0 := processCPU(b)
				b.ResetTimer()
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							ev := stmtEvent("bench@corp", "SELECT", "SELECT id, email FROM public.customers WHERE id = $1", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
							if err := l.Record(context.Background(), ev); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
				// The CPU this process spent per event, including the SQLite indexer's
				// catch-up: what recording costs the proxy, apart from waiting for disks.
				if sq, ok := s.(*SQLiteStore); ok {
					if err := sq.ix.sync(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
			})
		}
	}
}

// processCPU is the user and system CPU time this process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processIO is what the process has written to disk so far (/proc/self/io write_bytes:
// the bytes of the page cache pages it dirtied, which writeback sends to the disk) and its
// minor page faults: the disk bytes and faults a record costs, besides its CPU. ok is
// false where /proc/self/io cannot be read (the metrics are then left out).
func processIO(b *testing.B) (writeBytes, faults int64, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, found := strings.CutPrefix(line, "write_bytes: "); found {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, ru.Minflt, err == nil
		}
	}
	return 0, 0, false
}

// reportIO reports the disk bytes and minor faults per op since processIO's w0, f0.
func reportIO(b *testing.B, w0, f0 int64, ok bool, per string) {
	w1, f1, ok1 := processIO(b)
	if !ok || !ok1 || b.N == 0 {
		return
	}
	b.ReportMetric(float64(w1-w0)/float64(b.N), "disk-B/"+per)
	b.ReportMetric(float64(f1-f0)/float64(b.N), "faults/"+per)
}

// BenchmarkSearch measures searches and the auditor aggregations over a ledger of
// GATEHOUSE_LEDGER_BENCH_EVENTS synthetic events (default 1,000,000; set 10000000 for the
// 10M figure). GATEHOUSE_LEDGER_BENCH_DIR keeps the SQLite database between runs.
func BenchmarkSearch(parent *testing.B) {
	b := parent
	n := int64(1_000_000)
	if v := os.Getenv("GATEHOUSE_LEDGER_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil || n <= 0 {
			b.Fatalf("GATEHOUSE_LEDGER_BENCH_EVENTS=%q: want a positive number", v)
		}
	}
	ctx := context.Background()
	now := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	var pg *testkit.Postgres
	opens := []struct {
		name string
		open func(b *testing.B) (Store, bool)
	}{
		{"sqlite", func(b *testing.B) (Store, bool) {
			dir := os.Getenv("GATEHOUSE_LEDGER_BENCH_DIR")
			if dir == "" {
				dir = b.TempDir()
			} else {
				dir = filepath.Join(dir, strconv.FormatInt(n, 10))
			}
			s, err := OpenSQLite(ctx, dir)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			seq, _, _ := s.Head(ctx, "synthetic")
			return s, seq == n
		}},
		{"postgres", func(b *testing.B) (Store, bool) {
			if pg == nil {
				pg = testkit.StartPostgres(parent)
			}
			s, err := OpenPostgres(ctx, pg.DSN("postgres"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s, false
		}},
	}
	week := TimeRange{From: now.Add(-7 * 24 * time.Hour), To: now}
	quarter := TimeRange{From: now.Add(-90 * 24 * time.Hour), To: now}
	queries := []struct {
		name string
		run  func(s Store) (int, error)
	}{
		{"newest100", func(s Store) (int, error) { e, err := s.Search(ctx, Query{}); return len(e), err }},
		{"identity=user44@corp.example", func(s Store) (int, error) {
			e, err := s.Search(ctx, Query{Identity: "user44@corp.example"})
			return len(e), err
		}},
		{"identity_glob=user42*/week", func(s Store) (int, error) {
			e, err := s.Search(ctx, Query{Identity: "user42*", From: week.From, To: week.To})
			return len(e), err
		}},
		{"kind=agent+table=customers", func(s Store) (int, error) {
			e, err := s.Search(ctx, Query{IdentityKind: "agent", Table: "customers"})
			return len(e), err
		}},
		{"class=pii+decision=deny", func(s Store) (int, error) {
			e, err := s.Search(ctx, Query{Class: "pii", Decision: "deny"})
			return len(e), err
		}},
		{"statement_kind=DROP_TABLE", func(s Store) (int, error) {
			e, err := s.Search(ctx, Query{StatementKind: "DROP TABLE"})
			return len(e), err
		}},
		{"text=t129+status", func(s Store) (int, error) {
			e, err := s.Search(ctx, Query{Text: "t129 status"})
			return len(e), err
		}},
		{"who_dropped=t7/quarter", func(s Store) (int, error) { r, err := s.WhoDropped(ctx, "t7", quarter); return len(r), err }},
		{"pii_readers/quarter", func(s Store) (int, error) { r, err := s.PIIReaders(ctx, "pii", quarter); return len(r), err }},
		{"agents_queried=customers/week", func(s Store) (int, error) {
			r, err := s.AgentsQueried(ctx, "customers", week)
			return len(r), err
		}},
	}
	for _, o := range opens {
		b.Run(fmt.Sprintf("%s/events=%d", o.name, n), func(b *testing.B) {
			s, loaded := o.open(b)
			if !loaded {
				start := time.Now()
				if err := s.LoadSynthetic(ctx, "synthetic", n, now); err != nil {
					b.Fatal(err)
				}
				b.Logf("loaded %d synthetic events in %s", n, time.Since(start).Round(time.Second))
			}
			for _, q := range queries {
				b.Run(q.name, func(b *testing.B) {
					rows := 0
					for i := 0; i < b.N; i++ {
						r, err := q.run(s)
						if err != nil {
							b.Fatal(err)
						}
						rows = r
					}
					b.ReportMetric(float64(rows), "rows")
				})
			}
		})
	}
}

// BenchmarkSubmitPlainRead measures what a plain read's record costs its session under
// ledger.durability sensitive (embedded store): Submit, then Wait on the Ack, as the relay
// does for a pgbench -S round trip. Run with -cpu 1,2 for one and two sessions at a time.
func BenchmarkSubmitPlainRead(b *testing.B) {
	s, err := OpenSQLite(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l, err := New(context.Background(), s, Options{Instance: "bench", Key: testKey(nil), CheckpointEvery: 1000})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	ctx := context.Background()
	cpu0 := processCPU(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ev := stmtEvent("bench@corp", "SELECT", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", []string{"public.pgbench_accounts"}, nil)
			if err := l.Submit(ctx, ev).Wait(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := s.ix.sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
}

// BenchmarkTPCB measures what the records of one pgbench TPC-B transaction cost under
// ledger.durability sensitive (embedded store), 8 sessions at a time, as the gate makes
// them: BEGIN; three UPDATEs, a SELECT and an INSERT, each write's intent written (its
// block's intents are synced together before END is forwarded) and every statement's
// completion submitted and waited for; END after a Sync. One op is one transaction.
func BenchmarkTPCB(b *testing.B) {
	s, err := OpenSQLite(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l, err := New(context.Background(), s, Options{Instance: "bench", Key: testKey(nil), CheckpointEvery: 1000})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	ctx := context.Background()
	stmts := []struct{ kind, text, table string }{
		{"BEGIN", "BEGIN", ""},
		{"UPDATE", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", "public.pgbench_accounts"},
		{"SELECT", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", "public.pgbench_accounts"},
		{"UPDATE", "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2", "public.pgbench_tellers"},
		{"UPDATE", "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2", "public.pgbench_branches"},
		{"INSERT", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)", "public.pgbench_history"},
		{"COMMIT", "END", ""},
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := processCPU(b)
	w0, f0, iok := processIO(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				for _, st := range stmts {
					var tables []string
					if st.table != "" {
						tables = []string{st.table}
					}
					switch st.kind {
					case "UPDATE", "INSERT":
						ev := stmtEvent("bench@corp", st.kind, st.text, tables, nil)
						ev.Type = EventStatementIntent
						if err := l.RecordWritten(ctx, ev); err != nil {
							b.Error(err)
							return
						}
					case "COMMIT":
						if err := l.Sync(ctx); err != nil {
							b.Error(err)
							return
						}
					}
					if err := l.Submit(ctx, stmtEvent("bench@corp", st.kind, st.text, tables, nil)).Wait(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	if err := s.ix.sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/txn")
	reportIO(b, w0, f0, iok, "txn")
	s.wmu.Lock()
	b.ReportMetric(float64(s.bgSyncs)/float64(b.N), "bg-syncs/txn")
	s.wmu.Unlock()
}
