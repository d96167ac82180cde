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
// classes), once per ledger store. The two ledgers load side by side; the pages are timed
// after both are loaded. Each leg reports its events, its load time and every page's p50
// and max.
//
// Embedded store: -console-events (10 million in make bench) loaded by
// SQLiteStore.LoadSynthetic, which stores what the indexer would (TestSQLiteSyntheticLoad
// MatchesIndexer) in a few minutes. On a machine too slow or too loaded for that within
// -console-budget, a first small load measures the rate and the row loads the largest count
// predicted to fit; the report names the count loaded.
//
// PostgreSQL store: -console-pg-events (1 million in make bench: 10 million load in about 20
// minutes on a 2-core machine, past make bench's 10-minute budget) events loaded by
// PostgresStore.LoadSynthetic into a database of its own on the benchmark's cluster, and a
// Gatehouse with ledger.store: postgres over it.

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

// consoleProbeEvents is the size of the first load, which measures the loading rate (less
// what a load of consoleFixedEvents takes): large enough that a few seconds of another
// process's load do not halve the count predicted (100,000 events took 3 s in one run, 9 s
// in the next, beside the PostgreSQL load).
const consoleProbeEvents = 200_000

// consolePageMargin is the time the budget keeps, after the ledgers are loaded, for
// starting the two legs' Gatehouses, signing in and timing their pages (measured: 8 s for
// both legs over 4.6 million embedded and 1 million PostgreSQL events, 8 s for the embedded
// leg over 10 million, at loads of 4–16); the rest goes to loading the embedded ledger.
const consolePageMargin = 30 * time.Second

// consoleLoadSlack is how much slower per event than the probe (less what any load costs)
// the larger load is assumed to be. None: it runs beside the PostgreSQL leg's load (52-126
// s of PostgreSQL's CPU on the 2-core machine) and the probe alone, but larger loads cost
// less per event (with the whole probe's time: 40 µs per event, then 4.2 million at 32 µs
// beside PostgreSQL; 30 -> 27 µs for 6.1 million; with this: 15 µs, then 10 million in 172 s
// beside PostgreSQL at a load of 0.4-1.7).
const consoleLoadSlack = 1.0

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
	// The two ledgers load side by side (the PostgreSQL load runs mostly in PostgreSQL, the
	// embedded one in this process, and each has single-threaded phases); the pages are
	// timed once both are loaded, one leg after the other, on an otherwise idle machine.
	type pgLoaded struct {
		dsn  string
		took time.Duration
		err  error
	}
	pgDone := make(chan pgLoaded, 1)
	startPG := func() {
		if b.o.consolePGEvents <= 0 {
			close(pgDone)
			return
		}
		go func() {
			t := time.Now()
			dsn, err := b.loadConsolePostgres(ctx)
			pgDone <- pgLoaded{dsn, time.Since(t), err}
		}()
	}
	// The PostgreSQL load starts after the embedded leg's probe, which then measures the
	// rate of the embedded load alone.
	dir, n, took, loadErr := b.loadConsoleLedger(ctx, began.Add(b.o.consoleBudget), startPG)
	if pl, ok := <-pgDone; ok {
		if err := b.consolePostgres(ctx, pl.dsn, pl.took, pl.err); err != nil {
			return err
		}
	}
	if err := b.consoleEmbedded(ctx, dir, n, took, loadErr); err != nil {
		return err
	}
	b.log.Info("console section done", "seconds", fmt.Sprintf("%.0f", time.Since(began).Seconds()))
	return nil
}

// consoleEmbedded is the embedded (SQLite) store's leg: it times the pages over the ledger
// loadConsoleLedger loaded into dir (n events, in took).
func (b *bench) consoleEmbedded(ctx context.Context, dir string, n int64, took time.Duration, loadErr error) error {
	if loadErr != nil {
		return b.consoleFailed(ctx, "console", loadErr)
	}
	b.res.set("console-load", legGH, meas{v: took.Seconds()})
	b.res.set("console-events", legGH, meas{v: float64(n)})
	moveIn := func(_ context.Context, dataDir string) error { return os.Rename(dir, dataDir) }
	worst, err := b.timeConsole(ctx, gatehouseSpec{name: "gatehouse-console", prepare: moveIn}, "console")
	if err != nil || worst < 0 {
		return err
	}
	b.log.Info("console row done", "store", "embedded", "events", n, "load_seconds", fmt.Sprintf("%.0f", took.Seconds()), "slowest_p50_ms", fmt.Sprintf("%.1f", worst))
	return nil
}

// loadConsolePostgres loads -console-pg-events synthetic events with
// PostgresStore.LoadSynthetic into a database of its own on the benchmark's cluster and
// returns its connection string.
func (b *bench) loadConsolePostgres(ctx context.Context) (string, error) {
	n := b.o.consolePGEvents
	if err := b.pg.exec(ctx, "postgres", "CREATE DATABASE console_ledger"); err != nil {
		return "", err
	}
	dsn := b.pg.dsn("console_ledger")
	st, err := ledger.OpenPostgres(ctx, dsn)
	if err != nil {
		return "", err
	}
	err = st.LoadSynthetic(ctx, "synthetic", n, time.Now())
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("load %d synthetic events: %w", n, err)
	}
	return dsn, nil
}

// consolePostgres is the PostgreSQL store's leg: a Gatehouse configured with
// ledger.store: postgres over the ledger loadConsolePostgres loaded (in took).
func (b *bench) consolePostgres(ctx context.Context, dsn string, took time.Duration, loadErr error) error {
	if loadErr != nil {
		return b.consoleFailed(ctx, "console-pg", loadErr)
	}
	n := b.o.consolePGEvents
	b.res.set("console-pg-load", legGH, meas{v: took.Seconds()})
	b.log.Info("console row: PostgreSQL ledger loaded", "events", n, "seconds", fmt.Sprintf("%.0f", took.Seconds()))
	worst, err := b.timeConsole(ctx, gatehouseSpec{name: "gatehouse-console-pg", ledgerDSN: dsn}, "console-pg")
	if err != nil || worst < 0 {
		return err
	}
	b.res.set("console-pg-events", legGH, meas{v: float64(n)})
	b.log.Info("console row done", "store", "postgres", "events", n, "load_seconds", fmt.Sprintf("%.0f", took.Seconds()), "slowest_p50_ms", fmt.Sprintf("%.1f", worst))
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
	for i, p := range consolePages {
		first, lat, err := timePage(ctx, client, g.httpURL+"/console/"+p.path)
		if err != nil {
			return -1, b.consoleFailed(ctx, key, fmt.Errorf("%s: %w", p.name, err))
		}
		p50, top := percentile(lat, 50), lat[len(lat)-1]
		b.log.Info("console page", "leg", key, "page", p.name, "p50_ms", fmt.Sprintf("%.1f", p50), "max_ms", fmt.Sprintf("%.1f", top),
			"first_ms", fmt.Sprintf("%.1f", first))
		b.res.set(consolePageKey(key, i), legGH, meas{note: fmt.Sprintf("%.1f ms (max %.1f)", p50, top)})
		worst = max(worst, p50)
	}
	b.res.set(key, legGH, meas{v: worst})
	return worst, nil
}

// consolePageKey is the result key of page i of a console leg (key: its row).
func consolePageKey(key string, i int) string { return fmt.Sprintf("%s-page-%d", key, i) }

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
// and while a load at least a quarter larger is predicted (from the last load's rate, less
// what any load costs, and consoleLoadSlack) to fit, loads that instead; afterProbe runs
// once the first load is done
// (or failed). It returns the directory, the count loaded and how long that load took.
func (b *bench) loadConsoleLedger(ctx context.Context, deadline time.Time, afterProbe func()) (string, int64, time.Duration, error) {
	want := b.o.consoleEvents
	n := min(want, consoleProbeEvents)
	dir := ""
	// What a load costs whatever its size (creating the store, building indexes and
	// statistics): a tiny load's time, taken out of the probe's before its rate predicts
	// a larger load.
	fixed, err := loadSyntheticTime(ctx, filepath.Join(b.work, "console-ledger-fixed"), consoleFixedEvents)
	if err != nil {
		return "", 0, 0, err
	}
	defer func() {
		if afterProbe != nil {
			afterProbe()
		}
	}()
	for {
		if dir != "" && afterProbe != nil {
			afterProbe()
			afterProbe = nil
		}
		next := filepath.Join(b.work, fmt.Sprintf("console-ledger-%d", n))
		t0 := time.Now()
		if err := loadSynthetic(ctx, next, n); err != nil {
			return "", 0, 0, err
		}
		took := time.Since(t0)
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
		dir = next
		left := time.Until(deadline) - consolePageMargin - fixed
		perEvent := consoleLoadSlack * float64(max(took-fixed, took/2)) / float64(n)
		fit := int64(float64(left) / perEvent)
		b.log.Info("console row: ledger loaded", "events", n, "seconds", fmt.Sprintf("%.0f", took.Seconds()), "fixed_seconds", fmt.Sprintf("%.1f", fixed.Seconds()),
			"would_fit_now", fit)
		if n >= want || fit < n*5/4 {
			return dir, n, took, nil
		}
		n = min(want, roundDown(fit))
	}
}

// consoleFixedEvents is the size of the load that measures what any load costs.
const consoleFixedEvents = 1000

// loadSynthetic creates an embedded store in dir and loads n synthetic events into it.
func loadSynthetic(ctx context.Context, dir string, n int64) error {
	st, err := ledger.OpenSQLite(ctx, dir)
	if err != nil {
		return err
	}
	err = st.LoadSynthetic(ctx, "synthetic", n, time.Now())
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("load %d synthetic events: %w", n, err)
	}
	return nil
}

// loadSyntheticTime is how long loadSynthetic takes for n events; the store is removed.
func loadSyntheticTime(ctx context.Context, dir string, n int64) (time.Duration, error) {
	t0 := time.Now()
	err := loadSynthetic(ctx, dir, n)
	took := time.Since(t0)
	_ = os.RemoveAll(dir)
	return took, err
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
