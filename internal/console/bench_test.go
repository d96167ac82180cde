package console

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
	"github.com/gatehouse/gatehouse/internal/store"
)

// discard stands in for the ledger's Record: its cost is the ledger's benchmarks' subject.
type discard struct{}

func (discard) Record(context.Context, *ledger.Event) error { return nil }

// BenchmarkPages measures the console's ledger-backed pages (server time, rendering
// included) over GATEHOUSE_LEDGER_BENCH_EVENTS synthetic events (default 200,000; the issue's
// figure is 10,000,000). GATEHOUSE_LEDGER_BENCH_DIR keeps the loaded SQLite ledger between
// runs and is shared with the ledger's BenchmarkSearch (same layout), so a ledger loaded by
// either serves both.
func BenchmarkPages(b *testing.B) {
	n := int64(200_000)
	if v := os.Getenv("GATEHOUSE_LEDGER_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil || n <= 0 {
			b.Fatalf("GATEHOUSE_LEDGER_BENCH_EVENTS=%q: want a positive number", v)
		}
	}
	ctx := context.Background()
	// The synthetic load's clock, as in the ledger's BenchmarkSearch.
	now := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	dir := os.Getenv("GATEHOUSE_LEDGER_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		dir = filepath.Join(dir, strconv.FormatInt(n, 10))
	}
	st, err := ledger.OpenSQLite(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if seq, _, _ := st.Head(ctx, "synthetic"); seq != n {
		start := time.Now()
		if err := st.LoadSynthetic(ctx, "synthetic", n, now); err != nil {
			b.Fatal(err)
		}
		b.Logf("loaded %d synthetic events in %s", n, time.Since(start).Round(time.Second))
	}
	db, err := store.Open(ctx, filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	apr, err := approval.Open(ctx, db, approval.Options{})
	if err != nil {
		b.Fatal(err)
	}
	key, err := ledger.LoadOrCreateKey(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(Options{Auth: &identity.Chain{}, Ledger: discard{}, Events: st, Approvals: apr, Live: live.New(),
		OIDC: func() []config.OIDC { return nil }, URL: func() string { return "http://127.0.0.1/console/" }, EvidenceKey: key,
		Instance: "synthetic", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now },
		// The synthetic load's sensitive column, as the catalog would find it.
		Catalog: &stubCatalog{cols: []classify.Entry{{Schema: "public", Table: "customers", Column: "email", Override: true,
			Classification: classify.Classification{Class: "email", Confidence: 1}}}},
		Targets: func() []string { return []string{"main"} }})
	if err != nil {
		b.Fatal(err)
	}
	auditor := &session{id: &identity.Identity{Subject: "auditor@corp.example", Kind: identity.Human, Groups: []string{"auditors"}}, seesAll: true, csrf: "x"}
	from, to := now.Add(-90*24*time.Hour).Format(time.RFC3339), now.Format(time.RFC3339)
	week := now.Add(-7 * 24 * time.Hour).Format(time.RFC3339)
	month := now.Add(-30 * 24 * time.Hour).Format(time.RFC3339)
	pages := []struct {
		name, path string
		handler    func(http.ResponseWriter, *viewer)
		question   string
	}{
		{"activity/newest", "/console/audit?search=1", c.auditPage, ""},
		{"activity/identity", "/console/audit?identity=user44@corp.example", c.auditPage, ""},
		{"activity/kind+table", "/console/audit?kind=agent&table=customers", c.auditPage, ""},
		{"activity/class+decision", "/console/audit?class=pii&decision=deny", c.auditPage, ""},
		{"activity/text", "/console/audit?text=t129+status", c.auditPage, ""},
		{"activity/older-page", "/console/audit?identity=user44@corp.example&before=" + week, c.auditPage, ""},
		{"question/who-dropped", "/console/audit/questions/who-dropped?ask=1&table=t7&from=" + from + "&to=" + to, c.questionPage, "who-dropped"},
		{"question/pii-readers-quarter", "/console/audit/questions/pii-readers?ask=1&class=pii&from=" + from + "&to=" + to, c.questionPage, "pii-readers"},
		{"question/pii-readers-month", "/console/audit/questions/pii-readers?ask=1&class=pii&from=" + month + "&to=" + to, c.questionPage, "pii-readers"},
		{"question/agents-week", "/console/audit/questions/agents?ask=1&table=customers&from=" + week + "&to=" + to, c.questionPage, "agents"},
		{"overview", "/console/", c.overview, ""},
		// The data map reuses its month of readers for a minute: "datamap" is a view within
		// it, "datamap/counting" one that counts them.
		{"datamap", "/console/datamap", c.dataMapPage, ""},
		{"datamap/counting", "/console/datamap", func(w http.ResponseWriter, v *viewer) { c.dataMapCache = nil; c.dataMapPage(w, v) }, ""},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, p.path, nil)
			req.SetPathValue("q", p.question)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				p.handler(w, &viewer{session: auditor, r: req})
				if w.Code != http.StatusOK {
					b.Fatalf("%s: HTTP %d: %s", p.path, w.Code, w.Body.String())
				}
			}
		})
	}
}
