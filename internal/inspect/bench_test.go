package inspect

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"strconv"
	"strings"
	"testing"
)

// benchSQL are representative statements: a pgbench -S lookup, an analytics query with a
// CTE and joins, and an update.
var benchSQL = map[string]string{
	"pgbench":   "SELECT abalance FROM pgbench_accounts WHERE aid = ",
	"analytics": "WITH x AS (SELECT a.id, b.name FROM public.users a JOIN orders b ON a.id = b.uid WHERE a.created > now() - interval '7 days') SELECT count(*), lower(name) FROM x LEFT JOIN t2 ON t2.id = x.id GROUP BY 2 ORDER BY 1 DESC LIMIT ",
	"update":    "UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = ",
}

// BenchmarkInspectCold measures a statement never seen before: caches disabled, so every
// iteration parses, walks, fingerprints and normalizes.
func BenchmarkInspectCold(b *testing.B) {
	for name, sql := range benchSQL {
		b.Run(name, func(b *testing.B) {
			in := New(0)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if got := in.Inspect(sql + strconv.Itoa(i)); len(got) != 1 {
					b.Fatal("no statement")
				}
			}
		})
	}
}

// BenchmarkInspectNewLiteral measures a known statement shape with a new literal each time
// (pgbench -S in simple query mode, ad-hoc lookups by id): the exact-text cache misses, the
// shape cache hits after one Normalize.
func BenchmarkInspectNewLiteral(b *testing.B) {
	for name, sql := range benchSQL {
		b.Run(name, func(b *testing.B) {
			in := New(1000)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if got := in.Inspect(sql + strconv.Itoa(i)); len(got) != 1 {
					b.Fatal("no statement")
				}
			}
		})
	}
}

// BenchmarkInspectCached measures a repeated text (prepared statements, ORMs with bind
// parameters): a cache hit.
func BenchmarkInspectCached(b *testing.B) {
	for name, sql := range benchSQL {
		b.Run(name, func(b *testing.B) {
			in := New(1000)
			text := sql + "$1"
			in.Inspect(text)
			b.ReportAllocs()
			for b.Loop() {
				if got := in.Inspect(text); len(got) != 1 {
					b.Fatal("no statement")
				}
			}
		})
	}
}

// BenchmarkInspectCachedParallel is the cached path under contention from every core.
func BenchmarkInspectCachedParallel(b *testing.B) {
	in := New(1000)
	text := benchSQL["pgbench"] + "$1"
	in.Inspect(text)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			in.Inspect(text)
		}
	})
}

// BenchmarkPgQueryFloor is the cost of the pg_query calls a cold inspection cannot avoid
// (Parse, Fingerprint, Normalize) with no analysis at all, to show what the walk adds; and
// Summary alone, for comparison with the design note.
func BenchmarkPgQueryFloor(b *testing.B) {
	sql := benchSQL["pgbench"] + "42"
	b.Run("parse+fingerprint+normalize", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := pg_query.Parse(sql); err != nil {
				b.Fatal(err)
			}
			_, _ = pg_query.Fingerprint(sql)
			_, _ = pg_query.Normalize(sql)
		}
	})
	b.Run("summary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := pg_query.Summary(sql, -1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkInspectMulti measures one query string of N statements, too long for the
// exact-text cache (as a client's generated script is): the same statement repeated (the
// bench's 10,000 `SELECT 1;`), and N statements that differ in a literal. ns/stmt must not
// grow with N.
func BenchmarkInspectMulti(b *testing.B) {
	for _, n := range []int{1000, 10_000} {
		for _, kind := range []string{"same", "literals"} {
			b.Run(kind+"/N="+strconv.Itoa(n), func(b *testing.B) {
				var sb strings.Builder
				for i := range n {
					if kind == "same" {
						sb.WriteString("SELECT 1;")
					} else {
						sb.WriteString(benchSQL["pgbench"] + strconv.Itoa(i) + ";")
					}
				}
				sql := sb.String()
				in := New(50_000)
				b.ReportAllocs()
				for b.Loop() {
					if got := in.Inspect(sql); len(got) != n {
						b.Fatalf("%d statements", len(got))
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/stmt")
			})
		}
	}
}
