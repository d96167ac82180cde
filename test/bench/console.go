package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// The console rows: the latency of the console's ledger-backed pages (the activity search
// and the three auditor questions) over HTTP, as a signed-in auditor's browser would fetch
// them, from a Gatehouse of their own over a ledger of synthetic events (the ledger's
// synthetic load: 90 days of events ending now, spread over many identities, tables and
// classes), once per ledger store.
//
// PostgreSQL store: -console-pg-events (1 million in make bench: 10 million load in about 20
// minutes on a 2-core machine, past make bench's 10-minute budget) events loaded by
// PostgresStore.LoadSynthetic into a database of its own on the benchmark's cluster, and a
// Gatehouse with ledger.store: postgres over it; the load's time is reported beside it.
//
// Embedded store: loading 10 million events into SQLite takes longer than the row's budget
// on a slow or loaded machine, so a small first load measures the rate and the row loads
// the largest count that fits in what is left of -console-budget; the report names the
// count loaded.

// consolePages are the pages timed; the row's value is the slowest page's p50. The overview
// counts the last day's sensitive reads; the data map aggregates a month of the readers of
// public.customers.email (consoleRow creates that table in the target, so the catalog finds
// the column the synthetic load's events read).
var consolePages = []struct{ name, path string }{
	{"overview", ""},
	{"data map", "datamap"},
	{"activity, newest", "audit?search=1"},
	{"activity, one identity", "audit?search=1&identity=user44@corp.example"},
	{"activity, agents on a table", "audit?search=1&kind=agent&table=customers"},
	{"activity, pii refusals", "audit?search=1&class=pii&decision=deny"},
	{"activity, text", "audit?search=1&text=t129+status"},
	{"who dropped t7, 90 days", "audit/questions/who-dropped?ask=1&table=t7&since=90d"},
	{"pii readers, 30 days", "audit/questions/pii-readers?ask=1&class=pii&since=30d"},
	{"agents on customers, 7 days", "audit/questions/agents?ask=1&table=customers&since=7d"},
}

// consoleRequests is how many timed requests each page gets (after two of warm-up).
const consoleRequests = 15

// consoleProbeEvents is the size of the first load, which measures the loading rate.
const consoleProbeEvents = 100_000

// consolePageMargin is the time the embedded leg keeps, out of what the budget leaves it,
// for starting its Gatehouse, signing in and timing the pages: 10 pages of 17 requests
// take 51 s at the 300 ms goal (measured: 8 s over 10 million events, at a load of 6–16),
// the rest goes to loading the ledger.
const consolePageMargin = time.Minute

func (b *bench) consoleRow(ctx context.Context) error {
	b.res.set("console", legGHEvery, meas{note: "n/a (one ledger)"})
	b.res.set("console-pg", legGHEvery, meas{note: "n/a (one ledger)"})
	if _, err := os.Stat(b.bin); err != nil {
		b.res.set("console", legGH, meas{note: "n/a (no binary)"})
		b.res.set("console-pg", legGH, meas{note: "n/a (no binary)"})
		return nil
	}
	began := time.Now()
	if err := b.pg.exec(ctx, "app", "CREATE TABLE IF NOT EXISTS public.customers (id int PRIMARY KEY, email text)"); err != nil {
		return fmt.Errorf("console row: create the data map's table: %w", err)
	}
	if b.o.consolePGEvents > 0 {
		if err := b.consolePostgres(ctx); err != nil {
			return err
		}
	}
	if err := b.consoleEmbedded(ctx, began.Add(b.o.consoleBudget)); err != nil {
		return err
	}
	b.log.Info("console section done", "seconds", fmt.Sprintf("%.0f", time.Since(began).Seconds()))
	return nil
}

// consoleEmbedded is the embedded (SQLite) store's leg: as many events as load before
// deadline, up to -console-events.
func (b *bench) consoleEmbedded(ctx context.Context, deadline time.Time) error {
	began := time.Now()
	dir, n, err := b.loadConsoleLedger(ctx, deadline)
	if err != nil {
		return b.consoleFailed(ctx, "console", err)
	}
	moveIn := func(_ context.Context, dataDir string) error { return os.Rename(dir, dataDir) }
	worst, err := b.timeConsole(ctx, gatehouseSpec{name: "gatehouse-console", prepare: moveIn}, "console")
	if err != nil || worst < 0 {
		return err
	}
	b.res.set("console-events", legGH, meas{v: float64(n)})
	b.log.Info("console row done", "store", "embedded", "events", n, "slowest_p50_ms", fmt.Sprintf("%.1f", worst), "seconds", fmt.Sprintf("%.0f", time.Since(began).Seconds()))
	return nil
}

// consolePostgres is the PostgreSQL store's leg: -console-pg-events synthetic events
// loaded by PostgresStore.LoadSynthetic into a database of its own on the benchmark's
// cluster, and a Gatehouse configured with ledger.store: postgres over it.
func (b *bench) consolePostgres(ctx context.Context) error {
	began := time.Now()
	n := b.o.consolePGEvents
	if err := b.pg.exec(ctx, "postgres", "CREATE DATABASE console_ledger"); err != nil {
		return b.consoleFailed(ctx, "console-pg", err)
	}
	dsn := b.pg.dsn("console_ledger")
	st, err := ledger.OpenPostgres(ctx, dsn)
	if err != nil {
		return b.consoleFailed(ctx, "console-pg", err)
	}
	err = st.LoadSynthetic(ctx, "synthetic", n, time.Now())
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return b.consoleFailed(ctx, "console-pg", fmt.Errorf("load %d synthetic events: %w", n, err))
	}
	load := time.Since(began)
	b.res.set("console-pg-load", legGH, meas{v: load.Seconds()})
	b.log.Info("console row: PostgreSQL ledger loaded", "events", n, "seconds", fmt.Sprintf("%.0f", load.Seconds()))
	worst, err := b.timeConsole(ctx, gatehouseSpec{name: "gatehouse-console-pg", ledgerDSN: dsn}, "console-pg")
	if err != nil || worst < 0 {
		return err
	}
	b.res.set("console-pg-events", legGH, meas{v: float64(n)})
	b.log.Info("console row done", "store", "postgres", "events", n, "slowest_p50_ms", fmt.Sprintf("%.1f", worst), "seconds", fmt.Sprintf("%.0f", time.Since(began).Seconds()))
	return nil
}

// timeConsole starts a Gatehouse as spec says, signs in and times every page, and records
// the slowest page's p50 under key. It returns that p50, or -1 when the leg could not run
// (then key holds the reason).
func (b *bench) timeConsole(ctx context.Context, spec gatehouseSpec, key string) (float64, error) {
	g, err := startGatehouse(ctx, b.bin, spec, b.work, b.pg, b.log)
	if err != nil {
		return -1, b.consoleFailed(ctx, key, err)
	}
	defer g.stop()
	if g.unavailable != "" {
		b.res.set(key, legGH, meas{note: g.unavailable})
		return -1, nil
	}
	client, err := consoleSignIn(ctx, b.bin, g)
	if err != nil {
		return -1, b.consoleFailed(ctx, key, err)
	}
	var worst float64
	for _, p := range consolePages {
		first, lat, err := timePage(ctx, client, g.httpURL+"/console/"+p.path)
		if err != nil {
			return -1, b.consoleFailed(ctx, key, fmt.Errorf("%s: %w", p.name, err))
		}
		p50 := percentile(lat, 50)
		b.log.Info("console page", "leg", key, "page", p.name, "p50_ms", fmt.Sprintf("%.1f", p50), "max_ms", fmt.Sprintf("%.1f", lat[len(lat)-1]),
			"first_ms", fmt.Sprintf("%.1f", first))
		worst = max(worst, p50)
	}
	b.res.set(key, legGH, meas{v: worst})
	return worst, nil
}

func (b *bench) consoleFailed(ctx context.Context, key string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.log.Error("console row failed", "leg", key, "err", err)
	b.res.set(key, legGH, meas{note: "failed"})
	return nil
}

// loadConsoleLedger loads a ledger of -console-events synthetic events into a directory of
// its own, or, when that many cannot be loaded before deadline (less a margin for starting
// Gatehouse and timing the pages), the largest it can: it loads consoleProbeEvents first,
// and while a load at least a quarter larger is predicted (from the last load's rate, plus
// a fifth for the index builds growing faster than linearly) to fit, loads that instead.
// It returns the directory and the count loaded.
func (b *bench) loadConsoleLedger(ctx context.Context, deadline time.Time) (string, int64, error) {
	want := b.o.consoleEvents
	n := min(want, consoleProbeEvents)
	dir := ""
	for {
		next := filepath.Join(b.work, fmt.Sprintf("console-ledger-%d", n))
		st, err := ledger.OpenSQLite(ctx, next)
		if err != nil {
			return "", 0, err
		}
		t0 := time.Now()
		err = st.LoadSynthetic(ctx, "synthetic", n, time.Now())
		took := time.Since(t0)
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", 0, fmt.Errorf("load %d synthetic events: %w", n, err)
		}
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
		dir = next
		left := time.Until(deadline) - consolePageMargin
		fit := int64(float64(left) / (1.2 * float64(took) / float64(n)))
		b.log.Info("console row: ledger loaded", "events", n, "seconds", fmt.Sprintf("%.0f", took.Seconds()), "would_fit_now", fit)
		if n >= want || fit < n*5/4 {
			return dir, n, nil
		}
		n = min(want, roundDown(fit))
	}
}

// roundDown keeps two significant digits, so the row names a readable count.
func roundDown(n int64) int64 {
	p := int64(1)
	for n/p >= 100 {
		p *= 10
	}
	return n / p * p
}

// consoleSignIn creates an auditor's token with the CLI and signs in to the console with it,
// as the sign-in page's form does (its CSRF cookie and field included).
func consoleSignIn(ctx context.Context, bin string, g *gatehouse) (*http.Client, error) {
	cmd := exec.CommandContext(ctx, bin, "--config", g.cfgPath, "token", "create", "--name", "bench-auditor", "--kind", "human", "--group", "auditors", "--ttl", "2h")
	cmd.Env = g.env
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("token create: %w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("token create: %w", err)
	}
	secret := firstLine(string(out))
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: time.Minute}
	base := g.httpURL + "/console/"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"login", nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sign-in page: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	u, _ := url.Parse(base)
	var csrf string
	for _, c := range jar.Cookies(u) {
		if c.Name == "gatehouse_console_login" {
			csrf = c.Value
		}
	}
	if csrf == "" {
		return nil, errors.New("the sign-in page set no CSRF cookie")
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"login/token", strings.NewReader(url.Values{"csrf": {csrf}, "token": {secret}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sign in: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="viewer">bench-auditor<`) {
		return nil, fmt.Errorf("sign in: HTTP %d", resp.StatusCode)
	}
	return client, nil
}

// timePage fetches the page twice to warm up, then consoleRequests times, and returns the
// first (cold) request's latency and the timed ones' sorted, in milliseconds (request sent to
// body read). The first shows what a page that reuses its counts for a while (the overview's
// sensitive reads, the data map's readers) costs when it counts them.
func timePage(ctx context.Context, client *http.Client, u string) (float64, []float64, error) {
	get := func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return err
	}
	var first float64
	for i := range 2 {
		t0 := time.Now()
		if err := get(); err != nil {
			return 0, nil, err
		}
		if i == 0 {
			first = float64(time.Since(t0)) / float64(time.Millisecond)
		}
	}
	lat := make([]float64, 0, consoleRequests)
	for range consoleRequests {
		t0 := time.Now()
		if err := get(); err != nil {
			return 0, nil, err
		}
		lat = append(lat, float64(time.Since(t0))/float64(time.Millisecond))
	}
	slices.Sort(lat)
	return first, lat, nil
}
