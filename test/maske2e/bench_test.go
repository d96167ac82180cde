package maske2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// benchRows is the size of the streamed result of issue 5's benchmark.
const benchRows = 2_000_000

// streamAll runs sql with the simple protocol and reads every row without keeping it,
// returning the row count and the first row's first value.
func streamAll(ctx context.Context, c *pgconn.PgConn, sql string) (int, string, error) {
	mrr := c.Exec(ctx, sql)
	n, first := 0, ""
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		for rr.NextRow() {
			if n == 0 {
				first = string(rr.Values()[0])
			}
			n++
		}
		if _, err := rr.Close(); err != nil {
			return n, first, err
		}
	}
	return n, first, mrr.Close()
}

// BenchmarkStream2MEmails streams 2 million rows with an e-mail column (a catalogued table
// filled by generate_series) directly from PostgreSQL, through Gatehouse for an identity
// that sees raw values, and through Gatehouse with masking, in the same run, and reports
// the throughput of each and the ratios. Run it alone:
//
//	go test ./test/maske2e -run '^$' -bench Stream2M -benchtime 3x
func BenchmarkStream2MEmails(b *testing.B) {
	pg := testkit.StartPostgres(b)
	pg.Exec(b, "postgres", "CREATE DATABASE app")
	pg.Exec(b, "app", fmt.Sprintf(`CREATE TABLE subscribers AS
		SELECT g AS id, 'subscriber' || g || '@example.com' AS email FROM generate_series(1, %d) g`, benchRows))
	pg.Exec(b, "app", "ANALYZE subscribers")
	p := servertest.Start(b, servertest.Options{PolicyYAML: "default", Environment: "prod", Upstream: pg})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cleartext := func(user, secret string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=main sslmode=disable", p.Port, user, secret)
	}
	open := func(dsn string) *pgconn.PgConn {
		c, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			b.Fatalf("connect: %v", err)
		}
		b.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	direct := open(pg.DSN("app"))
	masked := open(cleartext("reader", p.Token(b, "reader", "service")))
	raw := open(cleartext("auditor", p.Token(b, "auditor", "service", "compliance")))
	const q = "SELECT email, id FROM subscribers"

	var tDirect, tRaw, tMasked time.Duration
	run := func(c *pgconn.PgConn, wantMasked bool) time.Duration {
		start := time.Now()
		n, first, err := streamAll(ctx, c, q)
		d := time.Since(start)
		if err != nil || n != benchRows {
			b.Fatalf("stream: %d rows, %v", n, err)
		}
		if isMasked := !strings.HasPrefix(first, "subscriber"); isMasked != wantMasked {
			b.Fatalf("first e-mail %q: masked %v, want %v", first, isMasked, wantMasked)
		}
		return d
	}
	// Warm up: the catalog's first scan and the upstream's buffers.
	run(masked, true)
	b.ResetTimer()
	for range b.N {
		tDirect += run(direct, false)
		tRaw += run(raw, false)
		tMasked += run(masked, true)
	}
	b.StopTimer()
	rows := float64(benchRows) * float64(b.N)
	rate := func(d time.Duration) float64 { return rows / d.Seconds() }
	b.ReportMetric(rate(tDirect), "direct_rows/s")
	b.ReportMetric(rate(tRaw), "gatehouse_raw_rows/s")
	b.ReportMetric(rate(tMasked), "gatehouse_masked_rows/s")
	b.ReportMetric(rate(tMasked)/rate(tDirect), "masked/direct")
	b.ReportMetric(rate(tRaw)/rate(tDirect), "raw/direct")
	b.ReportMetric(float64(tMasked-tRaw)/rows, "mask_ns/value")
	b.Logf("%s rows × %d: direct %v, gatehouse raw %v, gatehouse masked %v", strconv.Itoa(benchRows), b.N, tDirect, tRaw, tMasked)
}
