package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The client loads below are what pgbench cannot do: a pipelined batch, a long
// multi-statement string, streaming a large table, many idle sessions and connection churn.
// Each is bounded in count and time.

// batchQuery is the statement a pgx batch repeats: pgbench -S's, by key.
const batchQuery = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

// runBatch times one pgx SendBatch of n statements in one session (after a small batch that
// prepares the statement), the way an application pipelines a burst of reads.
func runBatch(ctx context.Context, ep endpoint, n, accounts int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, ep.dsn())
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	send := func(n int) error {
		b := &pgx.Batch{}
		for i := range n {
			b.Queue(batchQuery, 1+(i*7919)%accounts)
		}
		br := conn.SendBatch(ctx, b)
		for i := range n {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("statement %d of the batch: %w", i+1, err)
			}
		}
		return br.Close()
	}
	if err := send(10); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := send(n); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// runMulti times one simple-protocol query string of n `SELECT 1;` statements.
func runMulti(ctx context.Context, ep endpoint, n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, ep.dsn())
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	sql := strings.Repeat("SELECT 1;", n)
	t0 := time.Now()
	res, err := conn.Exec(ctx, sql).ReadAll()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if len(res) != n {
		return 0, fmt.Errorf("%d results for %d statements", len(res), n)
	}
	return d, nil
}

// streamTable is the table the streaming legs read: an email column Gatehouse's catalog
// classes as sensitive (so the default policy masks it) beside ordinary columns.
const streamTable = "bench_people"

func streamSetupSQL(rows int) string {
	return fmt.Sprintf(`CREATE TABLE %[1]s (id int PRIMARY KEY, email text NOT NULL, score int NOT NULL, note text NOT NULL);
INSERT INTO %[1]s SELECT i, 'user' || i || '@example.com', i %% 1000, 'order ' || i FROM generate_series(1, %[2]d) i;`, streamTable, rows)
}

// streamResult is what one pass over the table gave.
type streamResult struct {
	rows  int64
	bytes int64
	// raw counts rows whose email arrived unmasked (as generated).
	raw     int64
	elapsed time.Duration
}

// rowsPerSec is the pass's rate in rows a second. Every leg streams the same rows, so the
// ratio of two legs' rates is the inverse ratio of their times; a rate of value bytes would
// count a masked leg slower for the shorter values it delivers (u***@example.com for
// user1234567@example.com: a leg as fast as direct scored 0.84).
func (r streamResult) rowsPerSec() float64 { return float64(r.rows) / r.elapsed.Seconds() }

// rawEmail reports whether email is the generated, unmasked address of row id.
func rawEmail(buf []byte, id, email []byte) bool {
	buf = append(append(append(buf[:0], "user"...), id...), "@example.com"...)
	return bytes.Equal(buf, email)
}

// runSelect streams SELECT * of the table in the text format and counts the bytes of the
// values and the rows whose email was not masked.
func runSelect(ctx context.Context, ep endpoint) (streamResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, ep.dsn())
	if err != nil {
		return streamResult{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var r streamResult
	var buf []byte
	t0 := time.Now()
	rr := conn.ExecParams(ctx, "SELECT id, email, score, note FROM "+streamTable, nil, nil, nil, nil)
	for rr.NextRow() {
		v := rr.Values()
		r.rows++
		for _, c := range v {
			r.bytes += int64(len(c))
		}
		if len(v) == 4 && rawEmail(buf, v[0], v[1]) {
			r.raw++
		}
	}
	if _, err := rr.Close(); err != nil {
		return r, err
	}
	r.elapsed = time.Since(t0)
	return r, nil
}

// copyCounter consumes COPY text output line by line.
type copyCounter struct {
	r       *streamResult
	partial []byte
	buf     []byte
}

func (c *copyCounter) Write(p []byte) (int, error) {
	n := len(p)
	c.r.bytes += int64(n)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.partial = append(c.partial, p...)
			break
		}
		line := p[:i]
		if len(c.partial) > 0 {
			line = append(c.partial, line...)
			c.partial = c.partial[:0]
		}
		c.line(line)
		p = p[i+1:]
	}
	return n, nil
}

func (c *copyCounter) line(l []byte) {
	c.r.rows++
	id, rest, ok := bytes.Cut(l, []byte{'\t'})
	if !ok {
		return
	}
	email, _, _ := bytes.Cut(rest, []byte{'\t'})
	if rawEmail(c.buf, id, email) {
		c.r.raw++
	}
}

// runCopy streams COPY table TO STDOUT (text format).
func runCopy(ctx context.Context, ep endpoint) (streamResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, ep.dsn())
	if err != nil {
		return streamResult{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var r streamResult
	t0 := time.Now()
	if _, err := conn.CopyTo(ctx, &copyCounter{r: &r}, "COPY "+streamTable+" TO STDOUT"); err != nil {
		return r, err
	}
	r.elapsed = time.Since(t0)
	return r, nil
}

// runIdle opens n sessions that each run SELECT 1 and then sit idle, and returns how much
// the resident memory of proc grew per session. The sessions are closed before it returns.
func runIdle(ctx context.Context, ep endpoint, proc *process, n int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	// One session first, so what every process allocates once is not counted per session.
	warm, err := pgconn.Connect(ctx, ep.dsn())
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer warm.Close(context.Background())
	if _, err := warm.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		return 0, err
	}
	if err := sleep(ctx, time.Second); err != nil {
		return 0, err
	}
	before := proc.rss()
	conns := make([]*pgconn.PgConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close(context.Background())
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := pgconn.Connect(ctx, ep.dsn())
				if err == nil {
					_, err = c.Exec(ctx, "SELECT 1").ReadAll()
					conns[i] = c
				}
				if err != nil {
					errs <- fmt.Errorf("session %d: %w", i+1, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	if err := sleep(ctx, 2*time.Second); err != nil {
		return 0, err
	}
	after := proc.rss()
	if before == 0 || after == 0 {
		return 0, errors.New("no RSS readable in /proc")
	}
	return float64(after-before) / float64(n), nil
}

// runConnect counts connect + SELECT 1 + close cycles per second with parallel workers,
// for at most d or max cycles.
func runConnect(ctx context.Context, ep endpoint, parallel int, d time.Duration, maxCycles int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	cfg, err := pgconn.ParseConfig(ep.dsn())
	if err != nil {
		return 0, err
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	t0 := time.Now()
	stop := t0.Add(d)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				if done.Add(1) > int64(maxCycles) {
					done.Add(-1)
					return
				}
				c, err := pgconn.ConnectConfig(ctx, cfg)
				if err == nil {
					_, err = c.Exec(ctx, "SELECT 1").ReadAll()
					if cerr := c.Close(ctx); err == nil {
						err = cerr
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(done.Load()) / elapsed.Seconds(), nil
}

// formatCount renders n with thousands separators.
func formatCount(n float64) string {
	s := strconv.FormatInt(int64(n+0.5), 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
