package console

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
)

// overviewData is the overview's model: what is happening now.
type overviewData struct {
	Sessions int
	ByKind   map[string]int
	ByTarget map[string]int
	ByEnv    map[string]int
	Waiting  int
	// The rest is for the viewers who see everything.
	Global bool
	// Activity is the statements per second, refusals and held statements of every live
	// instance sharing the store (this instance's alone on the embedded store); Instances
	// each instance's, when the store is shared.
	Activity      live.Activity
	Instances     []live.Activity
	LedgerHealth  string
	Head          int64
	LastCP        *ledger.Checkpoint
	LastVerify    *verification
	SensitiveRead int64
	Updated       time.Time
	// Append is the ledger's recent group-commit latency (Commits: how many it covers);
	// Backlog the records acknowledged but not yet indexed (-1: the store indexes as it
	// writes, so there is no lag to show).
	Append  AppendLatency
	Backlog int
}

// AppendLatency summarises the ledger's recent group commits.
type AppendLatency struct {
	P50, P99, Max time.Duration
	Commits       int
}

// CommitWindow keeps the durations of the ledger's last group commits, so the overview can
// show the append latency now rather than since start. Safe for concurrent use; the zero
// value is ready.
type CommitWindow struct {
	mu   sync.Mutex
	d    [commitWindow]time.Duration
	next int
}

// commitWindow is how many of the last group commits the overview's latency covers.
const commitWindow = 512

// Observe adds one group commit's duration.
func (w *CommitWindow) Observe(took time.Duration) {
	w.mu.Lock()
	w.d[w.next%commitWindow] = took
	w.next++
	w.mu.Unlock()
}

// Latency summarises the commits in the window.
func (w *CommitWindow) Latency() AppendLatency {
	w.mu.Lock()
	n := min(w.next, commitWindow)
	d := make([]time.Duration, n)
	copy(d, w.d[:n])
	w.mu.Unlock()
	if n == 0 {
		return AppendLatency{}
	}
	slices.Sort(d)
	return AppendLatency{P50: d[n/2], P99: d[min(n-1, n*99/100)], Max: d[n-1], Commits: n}
}

// verification is the last ledger verification the console ran (evidence page).
type verification struct {
	At       time.Time
	OK       bool
	Problems int
	By       string
}

// verifyTTL is how long the last verification read from the ledger is reused before it is
// read again (another instance sharing the store may have run one since).
const verifyTTL = 30 * time.Second

// lastVerification is the newest ledger verification run from any console, as recorded in
// the ledger (nil when there has been none).
func (c *Console) lastVerification(ctx context.Context) *verification {
	c.mu.Lock()
	last, at := c.lastVerify, c.verifyAt
	c.mu.Unlock()
	if !at.IsZero() && c.opts.Now().Sub(at) < verifyTTL {
		return last
	}
	evs, err := c.opts.Events.Search(ctx, ledger.Query{Type: EventVerified, Limit: 1})
	if err != nil {
		c.opts.Log.Warn("console: read the last verification", "err", err)
		return last
	}
	if len(evs) == 1 {
		e := evs[0]
		last = &verification{At: e.Time, OK: e.Rows == 0, Problems: int(e.Rows), By: e.Subject}
	}
	c.mu.Lock()
	c.lastVerify, c.verifyAt = last, c.opts.Now()
	c.mu.Unlock()
	return last
}

// sensitiveTTL is how long the sensitive-reads count is reused: it aggregates a day of the
// ledger, too much to redo for every viewer every two seconds.
const sensitiveTTL = 10 * time.Second

// sensitiveReads counts statements that read personal data in the last 24 hours (cached).
func (c *Console) sensitiveReads(ctx context.Context) int64 {
	c.mu.Lock()
	if time.Since(c.sensitiveAt) < sensitiveTTL {
		n := c.sensitiveN
		c.mu.Unlock()
		return n
	}
	c.mu.Unlock()
	now := c.opts.Now()
	rows, err := c.opts.Events.PIIReaders(ctx, "pii", ledger.TimeRange{From: now.Add(-24 * time.Hour), To: now})
	if err != nil {
		c.opts.Log.Warn("console: count sensitive reads", "err", err)
		return -1
	}
	var n int64
	for _, r := range rows {
		n += r.Statements
	}
	c.mu.Lock()
	c.sensitiveN, c.sensitiveAt = n, time.Now()
	c.mu.Unlock()
	return n
}

// overviewOf gathers the overview for v.
func (c *Console) overviewOf(ctx context.Context, v *viewer) overviewData {
	list := c.ListSessions(v.id)
	d := overviewData{Sessions: len(list), ByKind: map[string]int{}, ByTarget: map[string]int{}, ByEnv: map[string]int{}, Updated: c.opts.Now()}
	for _, s := range list {
		d.ByKind[s.Kind]++
		d.ByTarget[s.Target]++
		d.ByEnv[s.Environment]++
	}
	f := approval.Filter{Status: approval.Pending, Limit: 1000}
	if !v.seesAll {
		f.Requester = v.id.Subject
	}
	if reqs, err := c.opts.Approvals.List(ctx, f); err == nil {
		d.Waiting = len(reqs)
	} else {
		c.opts.Log.Error("console: list approvals", "err", err)
	}
	if !v.seesAll {
		return d
	}
	d.Global = true
	d.Activity, d.Instances = c.opts.Fleet.Activity()
	d.LedgerHealth = "OK"
	if c.opts.LedgerHealth != nil {
		if err := c.opts.LedgerHealth(); err != nil {
			d.LedgerHealth = "FAILING: " + err.Error()
		}
	}
	if inst := c.opts.Instance; inst != "" {
		if seq, _, err := c.opts.Events.Head(ctx, inst); err == nil {
			d.Head = seq
		}
		if cps, err := c.opts.Events.Checkpoints(ctx, inst); err == nil && len(cps) > 0 {
			d.LastCP = &cps[len(cps)-1]
		}
	}
	d.LastVerify = c.lastVerification(ctx)
	d.SensitiveRead = c.sensitiveReads(ctx)
	d.Backlog = -1
	if c.opts.IndexBacklog != nil {
		d.Backlog = c.opts.IndexBacklog()
	}
	if c.opts.Commits != nil {
		d.Append = c.opts.Commits.Latency()
	}
	return d
}

// overview shows what is happening now; the page updates itself over server-sent events.
func (c *Console) overview(w http.ResponseWriter, v *viewer) {
	c.render(w, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Viewer: v, Data: c.overviewOf(v.r.Context(), v)})
}

// overviewEvery is how often the live overview is pushed.
const overviewEvery = 2 * time.Second

// overviewStream pushes the overview (event "overview") every overviewEvery until the
// viewer's console session ends.
func (c *Console) overviewStream(w http.ResponseWriter, v *viewer) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ctx := v.r.Context()
	t := c.pages["overview"]
	tick := time.NewTicker(overviewEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !c.stillValid(v.r, v.session) {
			_ = writeSSE(w, "ended", "")
			fl.Flush()
			return
		}
		d := c.overviewOf(ctx, v)
		var b strings.Builder
		if err := t.ExecuteTemplate(&b, "overview_body", page{Viewer: v, Data: d}); err != nil {
			c.opts.Log.Error("console: render overview", "err", err)
			return
		}
		if !writeSSE(w, "overview", b.String()) {
			return
		}
		fl.Flush()
	}
}
