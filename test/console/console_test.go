// Package console drives Gatehouse's web console with a real headless Chromium (chromedp)
// against a running Gatehouse, a throwaway PostgreSQL cluster, the real psql and the
// in-test OpenID provider, proving what the console issue's "Done when" list asks.
package console

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/config"
	consolepkg "github.com/gatehouse/gatehouse/internal/console"
	"github.com/gatehouse/gatehouse/internal/evidence"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// The people of the test.
const (
	sam  = "sam@corp.example"  // OIDC, groups dba + security: approves, ends sessions, sees all
	dana = "dana@corp.example" // token, group dba: files the approval request
	vic  = "vic@corp.example"  // token, no privileged group: sees only their own
	bot  = "report-bot"        // an AI agent's token
)

// env is one running Gatehouse with its IdP and browser.
type env struct {
	p       *servertest.Proxy
	idp     *idp.Provider
	url     string          // console base URL, ending in /console/
	alloc   context.Context // the browser's first tab; new browser contexts derive from it
	top     *testing.T
	hooks   *hookReceiver
	tokens  map[string]string
	docsDir string
}

func setup(t *testing.T) *env {
	t.Helper()
	prov := idp.Start(t)
	prov.AddUser(sam, "dba", "security")
	hooks := &hookReceiver{fail: map[string]int{"/slack": 1}}
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod", Configure: func(c *config.Config) {
		c.OIDC = []config.OIDC{{Issuer: prov.Issuer, Audience: []string{idp.ConsoleClientID}, CAFile: prov.CAFile, ConsoleClientID: idp.ConsoleClientID}}
		scratch := c.Targets[0]
		scratch.Name, scratch.Environment = "scratch", "dev"
		c.Targets = append(c.Targets, scratch)
		c.Approvals.Notify = []config.Notifier{{Type: "slack", URL: hookSrv.URL + "/slack"}, {Type: "teams", URL: hookSrv.URL + "/teams"},
			{Type: "webhook", URL: hookSrv.URL + "/generic"}}
	}})
	p.Upstream.Exec(t, "app", "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, note text); INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com', 'first'), (2, 'Bo', 'bo@example.com', 'second')")
	e := &env{p: p, idp: prov, hooks: hooks, url: "http://" + p.HTTPAddr + consolepkg.Prefix, tokens: map[string]string{}}
	prov.AllowConsoleRedirect(e.url + "callback")
	e.tokens[dana] = p.Token(t, dana, "human", "dba")
	e.tokens[vic] = p.Token(t, vic, "human")
	e.tokens[bot] = p.Token(t, bot, "agent")
	e.docsDir = filepath.Join("..", "..", "docs")
	e.startBrowser(t)
	return e
}

// startBrowser starts headless Chromium for e; browser contexts derive from it.
func (e *env) startBrowser(t *testing.T) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900),
		// The test IdP's certificate comes from its own throwaway CA.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	root, cancelRoot := chromedp.NewContext(alloc)
	t.Cleanup(cancelRoot)
	// The first run starts the browser and must not carry a timeout.
	if err := chromedp.Do(root, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	e.alloc, e.top = root, t
}

// hookReceiver is the local chat and webhook receiver: it keeps the bodies per path and
// fails the first fail[path] requests with 503, so retries are exercised.
type hookReceiver struct {
	mu     sync.Mutex
	fail   map[string]int
	bodies map[string][]string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail[r.URL.Path] > 0 {
		h.fail[r.URL.Path]--
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	if h.bodies == nil {
		h.bodies = map[string][]string{}
	}
	h.bodies[r.URL.Path] = append(h.bodies[r.URL.Path], string(b))
}

// wait returns the bodies at path once there are n of them.
func (h *hookReceiver) wait(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		h.mu.Lock()
		got := append([]string(nil), h.bodies[path]...)
		h.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s received %d bodies, want %d", path, len(got), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: run scripts/deps.sh (it installs Debian's chromium)")
	return ""
}

// browser is one isolated browser context (its own cookies), like a separate person.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func (e *env) browser(t *testing.T) *browser {
	t.Helper()
	ctx, cancel := chromedp.NewContext(e.alloc, chromedp.WithNewBrowserContext())
	e.top.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("open a browser context: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

// do runs steps with a generous timeout.
// in is b reporting to the (sub)test t.
func (b *browser) in(t *testing.T) *browser { return &browser{t: t, ctx: b.ctx} }

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Fatalf("browser at %s: %v\npage text:\n%s", loc, err, body)
	}
}

func run[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %v", err)
	}
	return v
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return run(b, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
}

// fetch requests path from the page, as the page's own script would (same cookies), and
// returns the status and body.
func (b *browser) fetch(method, path string) (int, string) {
	b.t.Helper()
	js := fmt.Sprintf(`fetch(%q, {method: %q, credentials: "same-origin"}).then(async r => r.status + "\n" + await r.text())`, path, method)
	out := run(b, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	code, body, _ := strings.Cut(out, "\n")
	n, _ := strconv.Atoi(code)
	return n, body
}

// signInToken signs in by pasting a Gatehouse token.
func (b *browser) signInToken(e *env, token, who string) {
	b.t.Helper()
	b.do(chromedp.Navigate(e.url+"login"),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#token-submit")),
		chromedp.WaitVisible(chromedp.CSS("#viewer")))
	if got := b.text("#viewer"); got != who {
		b.t.Fatalf("signed in as %q, want %q", got, who)
	}
}

// psql runs a psql process through Gatehouse (verbose errors show SQLSTATEs).
type psql struct {
	cmd    *exec.Cmd
	stderr strings.Builder
	stdout strings.Builder
	done   chan error
	// stdin feeds statements to a psql started with "-f", "-".
	stdin io.WriteCloser
}

func (e *env) psql(t *testing.T, user, app string, args ...string) *psql {
	t.Helper()
	return e.psqlOn(t, e.p.Target, user, app, args...)
}

// psqlOn is psql on another target.
func (e *env) psqlOn(t *testing.T, target, user, app string, args ...string) *psql {
	t.Helper()
	dsn := fmt.Sprintf("host=localhost port=%d user=%s dbname=%s sslmode=verify-full sslrootcert=%s application_name=%s",
		e.p.Port, user, target, e.p.CAFile, app)
	ps := &psql{done: make(chan error, 1)}
	ps.cmd = exec.Command("psql", append([]string{"-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose", "-v", "ON_ERROR_STOP=1", "-d", dsn}, args...)...)
	ps.cmd.Env = append(os.Environ(), "PGPASSWORD="+e.tokens[user], "PGCONNECT_TIMEOUT=10")
	ps.cmd.Stdout, ps.cmd.Stderr = &ps.stdout, &ps.stderr
	if len(args) == 2 && args[0] == "-f" && args[1] == "-" {
		var err error
		if ps.stdin, err = ps.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ps.cmd.Start(); err != nil {
		t.Fatalf("start psql: %v", err)
	}
	go func() { ps.done <- ps.cmd.Wait() }()
	t.Cleanup(func() {
		_ = ps.cmd.Process.Kill()
		<-ps.done
	})
	return ps
}

// wait waits for psql to exit and returns its error.
func (ps *psql) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ps.done:
		ps.done <- err
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("psql did not exit: stderr %s", ps.stderr.String())
		return nil
	}
}

// unzip extracts a flat zip archive into a new directory.
func unzip(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("the download is not a zip: %v", err)
	}
	dir := t.TempDir()
	for _, f := range zr.File {
		if f.Name != filepath.Base(f.Name) {
			t.Fatalf("zip entry %q is not a plain file name", f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// upstreamOne runs a query on the upstream directly and returns its single value as text.
func upstreamOne(t *testing.T, e *env, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.p.Upstream.DSN("app"))
	if err != nil {
		t.Fatalf("connect upstream: %v", err)
	}
	defer c.Close(context.Background())
	var v string
	if err := c.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil {
		t.Fatalf("upstream %q: %v", sql, err)
	}
	return v
}

func (e *env) search(t *testing.T, q ledger.Query) []ledger.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs, err := e.p.Instance.Ledger().Store().Search(ctx, q)
	if err != nil {
		t.Fatalf("search ledger: %v", err)
	}
	return evs
}

func (e *env) screenshot(t *testing.T, b *browser, name string) {
	t.Helper()
	png := run(b, chromedp.FullScreenshot(100))
	if err := os.MkdirAll(e.docsDir, 0o755); err != nil {
		t.Fatalf("docs dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(e.docsDir, name), png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
}

var consoleLinkRE = regexp.MustCompile(`decide it at (http://\S+/console/approvals/(apr_[0-9a-z]{10}))`)

// TestConsole walks the console's Done-when list in one Gatehouse and one browser, in order
// (each step builds on the previous one).
func TestConsole(t *testing.T) {
	e := setup(t)
	var samB, danaB, vicB *browser

	t.Run("1 sign-in through the IdP login page", func(t *testing.T) {
		samB = e.browser(t)
		samB.do(chromedp.Navigate(e.url),
			chromedp.WaitVisible(chromedp.CSS("#oidc-0")),
			chromedp.Click(chromedp.CSS("#oidc-0")),
			chromedp.WaitVisible(chromedp.CSS("#username")),
			chromedp.SendKeys(chromedp.CSS("#username"), sam),
			chromedp.SendKeys(chromedp.CSS("#password"), idp.UserPassword),
			chromedp.Click(chromedp.CSS("#submit")),
			chromedp.WaitVisible(chromedp.CSS("#viewer")))
		if got := samB.text("#viewer"); got != sam {
			t.Fatalf("signed in as %q, want %q", got, sam)
		}
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventSignIn, Identity: sam}); len(evs) != 1 || evs[0].AuthMethod != "oidc" {
			t.Fatalf("want one console.sign_in event by OIDC for %s, got %+v", sam, evs)
		}
		// A wrong token is refused and recorded.
		b := e.browser(t)
		b.do(chromedp.Navigate(e.url+"login"), chromedp.SendKeys(chromedp.CSS("#token"), "gh_not_a_token"),
			chromedp.Click(chromedp.CSS("#token-submit")), chromedp.WaitVisible(chromedp.CSS("#error")))
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventSignInFailed}); len(evs) != 1 {
			t.Fatalf("want one console.sign_in_failed event, got %d", len(evs))
		}
	})

	t.Run("2 a psql session appears live and ending it gives FATAL 57P01", func(t *testing.T) {
		samB := samB.in(t)
		samB.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS("#sessions")))
		ps := e.psql(t, dana, "nightly-report", "-c", "SELECT pg_sleep(120)")
		// The row arrives over server-sent events, without a reload.
		samB.do(chromedp.WaitVisible(chromedp.CSS(`tr.session button.end`)))
		if app := samB.text("tr.session td.app"); app != "nightly-report" {
			t.Fatalf("live session application %q, want nightly-report", app)
		}
		samB.do(chromedp.Click(chromedp.CSS(`tr.session button.end`)), chromedp.WaitVisible(chromedp.CSS("#sessions")))
		err := ps.wait(t)
		stderr := ps.stderr.String()
		if err == nil || !strings.Contains(stderr, "57P01") || !strings.Contains(stderr, "session ended by "+sam) {
			t.Fatalf("psql after the console ended its session: err=%v stderr=%s", err, stderr)
		}
		evs := e.search(t, ledger.Query{Type: consolepkg.EventSessionKill})
		if len(evs) != 1 || evs[0].Subject != sam || !strings.Contains(evs[0].Message, dana) {
			t.Fatalf("want one session.kill event by %s naming %s, got %+v", sam, dana, evs)
		}
		samB.do(chromedp.WaitNotPresent(chromedp.CSS(`tr.session`)))
	})

	var aprID, aprURL string
	t.Run("2b opening a session shows its statements as they happen", func(t *testing.T) {
		samB := samB.in(t)
		ps := e.psql(t, dana, "interactive", "-f", "-")
		if _, err := io.WriteString(ps.stdin, "SELECT id FROM customers WHERE id = 1;\n"); err != nil {
			t.Fatal(err)
		}
		// Open this psql's session by its application name: an earlier subtest's session may
		// still be listed while its end is being recorded (seen under load: the first row was
		// that one, whose page never shows a statement).
		open := `//tr[contains(@class,"session")][contains(., "interactive")]//a[contains(@class,"open")]`
		samB.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.Search(open)),
			chromedp.Click(chromedp.Search(open)), chromedp.WaitVisible(chromedp.CSS(`#statements tr.statement`)))
		if got := samB.text("#statements"); !strings.Contains(got, "SELECT id FROM customers WHERE id = $1") {
			t.Fatalf("the session page shows:\n%s", got)
		}
		// The next statement arrives without a reload, with its refusal.
		if _, err := io.WriteString(ps.stdin, "DELETE FROM customers;\n"); err != nil {
			t.Fatal(err)
		}
		run(samB, chromedp.Poll[bool](`document.querySelectorAll("#statements tr.statement.refused").length === 1`, chromedp.WithPollingTimeout(30*time.Second)))
		if got := samB.text("#statements tr.statement.refused"); !strings.Contains(got, "DELETE FROM customers") || !strings.Contains(got, "deny") {
			t.Fatalf("the refused statement's row: %q", got)
		}
		ps.stdin.Close()
		_ = ps.wait(t)
		samB.do(chromedp.WaitVisible(chromedp.CSS("#session-ended")))
	})

	t.Run("3 a held ALTER TABLE is approved in the browser by a second identity", func(t *testing.T) {
		samB := samB.in(t)
		alter := "ALTER TABLE customers ADD COLUMN tier text DEFAULT 'zebra-secret'"
		ps := e.psql(t, dana, "migrate", "-c", alter)
		_ = ps.wait(t)
		m := consoleLinkRE.FindStringSubmatch(ps.stderr.String())
		if m == nil || !strings.Contains(ps.stderr.String(), "42501") {
			t.Fatalf("want a 42501 refusal naming the request's console URL, got: %s", ps.stderr.String())
		}
		aprURL, aprID = m[1], m[2]
		if !strings.HasPrefix(aprURL, e.url) {
			t.Fatalf("console link %s is not under %s", aprURL, e.url)
		}

		// The requester is an approver too, but may not decide their own request.
		danaB = e.browser(t)
		danaB.signInToken(e, e.tokens[dana], dana)
		danaB.do(chromedp.Navigate(aprURL), chromedp.WaitVisible(chromedp.CSS("#approve")),
			chromedp.Click(chromedp.CSS("#approve")), chromedp.WaitVisible(chromedp.CSS("#error")))
		if msg := danaB.text("#error"); !strings.Contains(msg, "your own approval request") {
			t.Fatalf("self-approval: page says %q", msg)
		}
		if st := danaB.text("#status"); st != "pending" {
			t.Fatalf("after a refused self-approval the request is %q", st)
		}

		samB.do(chromedp.Navigate(aprURL), chromedp.WaitVisible(chromedp.CSS("#approve")))
		if got := samB.text("#statement"); !strings.Contains(got, "ALTER TABLE customers ADD COLUMN tier") {
			t.Fatalf("request page shows statement %q", got)
		}
		e.screenshot(t, samB, "console-approval.png")
		samB.do(chromedp.SendKeys(chromedp.CSS("#comment"), "migration 42"),
			chromedp.Click(chromedp.CSS("#approve")), chromedp.WaitVisible(chromedp.CSS("#decided-by")))
		if st := samB.text("#status"); st != "approved" {
			t.Fatalf("after approval the request is %q", st)
		}
		ps = e.psql(t, dana, "migrate", "-c", alter)
		if err := ps.wait(t); err != nil {
			t.Fatalf("approved ALTER TABLE: %v %s", err, ps.stderr.String())
		}
		if got := upstreamOne(t, e, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'tier'"); got != "1" {
			t.Fatalf("column tier exists %s times upstream after the approved run", got)
		}
	})

	t.Run("4 the Slack, Teams and generic webhook bodies arrive at a local receiver", func(t *testing.T) {
		for _, path := range []string{"/slack", "/teams", "/generic"} {
			bodies := e.hooks.wait(t, path, 2) // filed, then approved
			for i, b := range bodies {
				if strings.Contains(b, "zebra-secret") {
					t.Fatalf("%s body %d carries the statement's literal: %s", path, i, b)
				}
				if !strings.Contains(b, aprURL) || !strings.Contains(b, "ALTER TABLE customers ADD COLUMN tier text DEFAULT $1") {
					t.Fatalf("%s body %d lacks the console link or the redacted statement: %s", path, i, b)
				}
			}
		}
		slack := e.hooks.wait(t, "/slack", 2)
		if !strings.Contains(slack[0], `"Open in Gatehouse"`) || !strings.Contains(slack[0], `"blocks"`) || !strings.Contains(slack[1], "Approved by "+sam) {
			t.Fatalf("slack bodies:\n%s\n%s", slack[0], slack[1])
		}
		teams := e.hooks.wait(t, "/teams", 2)
		if !strings.Contains(teams[0], `"application/vnd.microsoft.card.adaptive"`) || !strings.Contains(teams[0], `"Action.OpenUrl"`) {
			t.Fatalf("teams body: %s", teams[0])
		}
		generic := e.hooks.wait(t, "/generic", 2)
		if !strings.Contains(generic[0], `"event":"approval.requested"`) || !strings.Contains(generic[1], `"event":"approval.approved"`) {
			t.Fatalf("generic bodies:\n%s\n%s", generic[0], generic[1])
		}
	})

	t.Run("5 a search finds the statement and its CSV export matches the ledger", func(t *testing.T) {
		samB := samB.in(t)
		samB.do(chromedp.Navigate(e.url+"audit"),
			chromedp.SetValue(chromedp.CSS(`input[name="table"]`), "customers"),
			chromedp.SetValue(chromedp.CSS(`input[name="type"]`), "statement"),
			chromedp.Click(chromedp.CSS("#search")),
			chromedp.WaitVisible(chromedp.CSS("#events")))
		rows := samB.text("#events")
		if !strings.Contains(rows, "ALTER TABLE customers ADD COLUMN tier") {
			t.Fatalf("search results do not show the ALTER TABLE:\n%s", rows)
		}
		href := run(samB, chromedp.AttributeValue(chromedp.CSS("#export-csv"), "href"))
		code, body := samB.fetch("GET", href.Value)
		if code != 200 {
			t.Fatalf("CSV export: HTTP %d %s", code, body)
		}
		recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		if err != nil {
			t.Fatalf("CSV export does not parse: %v", err)
		}
		want := e.search(t, ledger.Query{Table: "customers", Type: ledger.EventStatement, Limit: ledger.MaxLimit})
		if len(recs) != len(want)+1 || len(want) == 0 {
			t.Fatalf("CSV has %d rows for %d ledger events", len(recs)-1, len(want))
		}
		for i, ev := range want {
			if got, exp := strings.Join(recs[i+1], "|"), strings.Join(consolepkg.CSVRow(&ev), "|"); got != exp {
				t.Fatalf("CSV row %d:\n got %s\nwant %s", i, got, exp)
			}
		}
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventExport, Identity: sam}); len(evs) != 1 {
			t.Fatalf("want one console.export event, got %d", len(evs))
		}
	})

	t.Run("5 a search by rule finds the refusals that rule made", func(t *testing.T) {
		samB := samB.in(t)
		const rule = "no-update-or-delete-without-where"
		samB.do(chromedp.Navigate(e.url+"audit"),
			chromedp.SetValue(chromedp.CSS(`input[name="rule"]`), rule),
			chromedp.Click(chromedp.CSS("#search")),
			chromedp.WaitVisible(chromedp.CSS("#events")))
		rows := run(samB, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#events tr.event td.statement")].map(td => td.textContent)`))
		want := e.search(t, ledger.Query{Rule: rule})
		if len(want) == 0 || len(rows) != len(want) {
			t.Fatalf("search by rule shows %d events, the ledger has %d: %q", len(rows), len(want), rows)
		}
		for _, r := range rows {
			if !strings.Contains(r, "DELETE FROM customers") {
				t.Fatalf("search by rule %s shows %q", rule, r)
			}
		}
	})

	t.Run("5 the three auditor questions have pages", func(t *testing.T) {
		samB := samB.in(t)
		for _, r := range []struct{ target, user, sql string }{{"scratch", dana, "CREATE TABLE scratch_t (a int)"}, {"scratch", dana, "DROP TABLE scratch_t"},
			{"main", dana, "SELECT email FROM customers"}, {"main", bot, "SELECT id FROM customers"}} {
			ps := e.psqlOn(t, r.target, r.user, "auditor-fixture", "-c", r.sql)
			if err := ps.wait(t); err != nil {
				t.Fatalf("%s on %s: %v %s", r.sql, r.target, err, ps.stderr.String())
			}
		}
		ask := func(q, param, value string) []string {
			samB.do(chromedp.Navigate(e.url+"audit"), chromedp.Click(chromedp.CSS("#q-"+q)), chromedp.WaitVisible(chromedp.CSS("#ask")))
			if param != "" {
				samB.do(chromedp.SetValue(chromedp.CSS("#q-"+param), value))
			}
			samB.do(chromedp.Click(chromedp.CSS("#ask")), chromedp.WaitVisible(chromedp.CSS("#answers")))
			return run(samB, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr.answer td.subject")].map(td => td.textContent)`))
		}
		if got := ask("who-dropped", "table", "scratch_t"); len(got) != 1 || got[0] != dana {
			t.Fatalf("who dropped scratch_t: %v, want [%s]", got, dana)
		}
		if got := ask("pii-readers", "", ""); !slices.Contains(got, dana) {
			t.Fatalf("PII readers: %v, want %s among them", got, dana)
		}
		if got := ask("agents", "table", "customers"); len(got) != 1 || got[0] != bot {
			t.Fatalf("agents on customers: %v, want [%s]", got, bot)
		}
	})

	t.Run("the data map shows the sensitive columns and who read them", func(t *testing.T) {
		samB := samB.in(t)
		samB.do(chromedp.Navigate(e.url+"datamap"), chromedp.WaitVisible(chromedp.CSS("#readers")))
		keys := run(samB, chromedp.Evaluate[[]string](`[...document.querySelectorAll("table[data-target=main] tr.column td.key")].map(td => td.textContent)`))
		if !slices.Contains(keys, "public.customers.email") {
			t.Fatalf("data map columns of main: %v", keys)
		}
		if got := samB.text("#readers"); !strings.Contains(got, "email") {
			t.Fatalf("readers table: %q", got)
		}
		// The email column is masked partially for viewers without raw access (the built-in
		// policy's default profile), and dana's read of it counts for the table, as a human.
		strategy := run(samB, chromedp.Evaluate[string](`[...document.querySelectorAll("table[data-target=main] tr.column")].filter(tr => tr.querySelector("td.key").textContent === "public.customers.email").map(tr => tr.querySelector("td.strategy").textContent).join()`))
		if strategy != "partial" {
			t.Fatalf("masking strategy of public.customers.email: %q, want partial", strategy)
		}
		if got := samB.text(`table.table-readers[data-target=main] tr.table-reader[data-table="public.customers"][data-class=email] td.human`); !strings.HasPrefix(got, "1 (") || strings.HasPrefix(got, "1 (0") {
			t.Fatalf("human readers of public.customers email: %q, want 1 identity with statements", got)
		}
		if got := samB.text(`table.table-readers[data-target=main] tr.table-reader[data-table="public.customers"][data-class=email] td.agent`); got != "0 (0)" {
			t.Fatalf("agent readers of public.customers email: %q, want none", got)
		}
		samB.do(chromedp.Click(chromedp.CSS("button.rescan")),
			chromedp.WaitVisible(chromedp.CSS("#rescanned")))
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventRescan, Identity: sam}); len(evs) != 1 {
			t.Fatalf("want one console.rescan event, got %d", len(evs))
		}
	})

	t.Run("the policy page shows the policy and decides a statement", func(t *testing.T) {
		samB := samB.in(t)
		samB.do(chromedp.Navigate(e.url+"policy"), chromedp.WaitVisible(chromedp.CSS("#policy-text")),
			chromedp.SendKeys(chromedp.CSS("#try-as"), dana), chromedp.SendKeys(chromedp.CSS("#try-groups"), "dba"),
			chromedp.SendKeys(chromedp.CSS("#try-target"), "main"), chromedp.SendKeys(chromedp.CSS("#try-sql"), "DROP TABLE customers"),
			chromedp.Click(chromedp.CSS("#try")), chromedp.WaitVisible(chromedp.CSS("pre.explanation")))
		if got := samB.text("pre.explanation"); !strings.Contains(got, "DENY") || !strings.Contains(got, "no-drop-or-truncate-in-production") {
			t.Fatalf("policy test of DROP TABLE in production: %q", got)
		}
		if got := samB.text("#policy-text"); !strings.Contains(got, "production-schema-changes-need-approval") {
			t.Fatalf("the built-in policy is not shown: %.200q", got)
		}
	})

	t.Run("the policy replay shows what a candidate policy would have decided", func(t *testing.T) {
		samB := samB.in(t)
		// The built-in policy plus a rule refusing every read of customers.
		cand := strings.Replace(string(policy.DefaultText()), "\nrules:\n", "\nrules:\n  - name: no-customer-reads\n    when: statement.kind == \"SELECT\" && statement.tables.exists(t, t.endsWith(\"customers\"))\n    action: deny\n    message: no\n", 1)
		if cand == string(policy.DefaultText()) {
			t.Fatal("could not add a rule to the built-in policy's text")
		}
		samB.do(chromedp.Navigate(e.url+"policy"), chromedp.Click(chromedp.CSS("#replay-link")), chromedp.WaitVisible(chromedp.CSS("#replay-policy")),
			chromedp.SetValue(chromedp.CSS("#replay-policy"), "version: 1\ngrants:\n  - name: x\n    kinds: [human]\n    levle: read\n"),
			chromedp.Click(chromedp.CSS("#replay")), chromedp.WaitVisible(chromedp.CSS("#policy-errors")))
		if got := samB.text("#policy-errors"); !strings.Contains(got, "candidate policy:5:") {
			t.Fatalf("validation errors of the candidate: %q", got)
		}
		samB.do(chromedp.SetValue(chromedp.CSS("#replay-policy"), cand), chromedp.Click(chromedp.CSS("#replay")), chromedp.WaitVisible(chromedp.CSS("#changes")))
		rules := run(samB, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#changes tr.change td.rule")].map(td => td.textContent)`))
		if len(rules) == 0 {
			t.Fatalf("no changed decision listed: %s", samB.text("main"))
		}
		for _, r := range rules {
			if r != "no-customer-reads" {
				t.Fatalf("changed decisions by rules %v, want only no-customer-reads", rules)
			}
		}
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventPolicyReplay, Identity: sam}); len(evs) != 1 {
			t.Fatalf("want one console.policy_replay event, got %d", len(evs))
		}
	})

	t.Run("6 the evidence zip downloads and audit evidence --check passes on it", func(t *testing.T) {
		samB := samB.in(t)
		samB.do(chromedp.Navigate(e.url+"evidence"),
			chromedp.SetValue(chromedp.CSS(`input[name="since"]`), "1d"),
			chromedp.Click(chromedp.CSS("#verify")),
			chromedp.WaitVisible(chromedp.CSS("#verification")))
		if got := samB.text("#verification"); got != "OK" {
			t.Fatalf("ledger verification on the evidence page: %s\n%s", got, samB.text("#report"))
		}
		if off := samB.text("#offline"); !strings.Contains(off, "gatehouse audit evidence --check evidence") || !strings.Contains(off, "gatehouse audit verify --file evidence/events.jsonl") {
			t.Fatalf("offline commands: %q", off)
		}
		href := run(samB, chromedp.AttributeValue(chromedp.CSS("#download"), "href"))
		b64 := run(samB, chromedp.Evaluate[string](fmt.Sprintf(`fetch(%q, {credentials: "same-origin"}).then(r => {
			if (!r.ok || r.headers.get("Content-Type") !== "application/zip") throw new Error("HTTP " + r.status + " " + r.headers.get("Content-Type"));
			return r.arrayBuffer();
		}).then(b => { const u = new Uint8Array(b); let s = ""; for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]); return btoa(s); })`, href.Value), chromedp.EvalAwaitPromise))
		zipped, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		dir := unzip(t, zipped)
		var out strings.Builder
		if err := evidence.Check(context.Background(), &out, dir, ""); err != nil {
			t.Fatalf("audit evidence --check on the downloaded pack: %v\n%s", err, out.String())
		}
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventDownload, Identity: sam}); len(evs) != 1 {
			t.Fatalf("want one console.download event, got %d", len(evs))
		}
	})

	t.Run("7 a viewer outside the privileged groups sees only their own rows", func(t *testing.T) {
		samB := samB.in(t)
		mine := e.psql(t, vic, "vic-client", "-c", "SELECT pg_sleep(120)")
		other := e.psql(t, dana, "dana-client", "-c", "SELECT pg_sleep(120)")
		_, _ = mine, other
		vicB = e.browser(t)
		vicB.signInToken(e, e.tokens[vic], vic)
		vicB.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS(`tr.session`)))
		// Wait for both sessions to be live before looking.
		deadline := time.Now().Add(30 * time.Second)
		for len(e.p.Instance.Gate().Live.List()) < 2 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		vicB.do(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`tr.session`)))
		subjects := run(vicB, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr.session td.subject")].map(td => td.textContent)`))
		if len(subjects) != 1 || subjects[0] != vic {
			t.Fatalf("vic sees sessions of %v, want only their own", subjects)
		}
		if n := run(vicB, chromedp.Evaluate[int](`document.querySelectorAll("button.end").length`)); n != 0 {
			t.Fatalf("vic is offered %d End buttons", n)
		}
		vicB.do(chromedp.Navigate(e.url+"audit?search=1&type=session.start"), chromedp.WaitVisible(chromedp.CSS("#events")))
		subjects = run(vicB, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr.event td.subject")].map(td => td.textContent)`))
		if len(subjects) == 0 {
			t.Fatal("vic's own session start is not in their search")
		}
		for _, s := range subjects {
			if s != vic {
				t.Fatalf("vic's search shows an event of %s", s)
			}
		}
		vicB.do(chromedp.Navigate(e.url + "approvals"))
		if body := vicB.text("main"); strings.Contains(body, aprID) {
			t.Fatalf("vic sees dana's request %s", aprID)
		}
		if code, _ := vicB.fetch("GET", aprURL); code != 404 {
			t.Fatalf("vic opening dana's request: HTTP %d, want 404", code)
		}
		// Sam sees both.
		samB.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS(`tr.session`)))
		if n := run(samB, chromedp.Evaluate[int](`document.querySelectorAll("tr.session").length`)); n != 2 {
			t.Fatalf("sam sees %d sessions, want 2", n)
		}
	})

	t.Run("8 recorded values render inert", func(t *testing.T) {
		samB := samB.in(t)
		xss := `SELECT 1 AS "<script>window.__xss=1</script>", 2 AS """><img src=x onerror=window.__xss=2>"`
		ps := e.psql(t, dana, "xss", "-c", xss)
		if err := ps.wait(t); err != nil {
			t.Fatalf("psql: %v %s", err, ps.stderr.String())
		}
		samB.do(chromedp.Navigate(e.url+"audit?search=1&type=statement&identity="+dana+"&text=script"), chromedp.WaitVisible(chromedp.CSS("#events")))
		got := samB.text("#events td.statement")
		if !strings.Contains(got, `<script>window.__xss=1</script>`) || !strings.Contains(got, `<img src=x onerror=window.__xss=2>`) {
			t.Fatalf("the statement's text is not shown as text: %q", got)
		}
		if n := run(samB, chromedp.Evaluate[int](`document.querySelectorAll("main script, main img").length`)); n != 0 {
			t.Fatalf("the page holds %d script/img elements from recorded values", n)
		}
		if v := run(samB, chromedp.Evaluate[string](`String(window.__xss)`)); v != "undefined" {
			t.Fatalf("an XSS payload ran: window.__xss = %s", v)
		}
	})

	t.Run("9 a POST without the CSRF token is refused", func(t *testing.T) {
		samB := samB.in(t)
		e.psql(t, dana, "csrf-target", "-c", "SELECT pg_sleep(120)")
		samB.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS(`tr.session button.end`)))
		live := e.p.Instance.Gate().Live.List()
		if len(live) != 1 {
			t.Fatalf("want one live session to try to end, have %d", len(live))
		}
		code, body := samB.fetch("POST", consolepkg.Prefix+"sessions/"+live[0].ID+"/end")
		if code != 403 || !strings.Contains(body, "CSRF") {
			t.Fatalf("POST without CSRF token: HTTP %d %s", code, body)
		}
		if _, ok := e.p.Instance.Gate().Live.Get(live[0].ID); !ok {
			t.Fatal("the session ended although the POST had no CSRF token")
		}
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventRefused, Identity: sam}); len(evs) == 0 {
			t.Fatal("the refused POST is not in the ledger")
		}
	})

	t.Run("a one-click sign-in link works once", func(t *testing.T) {
		link, err := e.p.Instance.Console().SignInLink(e.tokens[dana], time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		b := e.browser(t)
		b.do(chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#viewer")))
		if got := b.text("#viewer"); got != dana {
			t.Fatalf("the link signed in %q, want %s", got, dana)
		}
		again := e.browser(t)
		again.do(chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#error")))
		if msg := again.text("#error"); !strings.Contains(msg, "already used") {
			t.Fatalf("a second use of the link: %q", msg)
		}
	})

	t.Run("10 a revoked token's console session ends", func(t *testing.T) {
		vicB := vicB.in(t)
		vicB.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS("#viewer")))
		if err := e.p.Instance.Tokens().Revoke(context.Background(), vic); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		vicB.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS("#ended")))
		if loc := run(vicB, chromedp.Location()); !strings.Contains(loc, "/console/login") {
			t.Fatalf("after revocation vic is at %s, want the sign-in page", loc)
		}
		if evs := e.search(t, ledger.Query{Type: consolepkg.EventSessionEnded, Identity: vic}); len(evs) != 1 || !strings.Contains(evs[0].Message, "revoked") {
			t.Fatalf("want one console.session_ended (revoked) event for vic, got %+v", evs)
		}
	})

	t.Run("the overview updates itself over server-sent events", func(t *testing.T) {
		samB := samB.in(t)
		samB.do(chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#statements")))
		before, _ := strconv.Atoi(samB.text("#statements"))
		_ = e.psql(t, dana, "overview", "-c", "SELECT 1", "-c", "SELECT 2").wait(t)
		deadline := time.Now().Add(30 * time.Second)
		for {
			now, _ := strconv.Atoi(run(samB, chromedp.Evaluate[string](`document.getElementById("statements").textContent`)))
			if now >= before+2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the overview still counts %d statements (before %d) without a reload", now, before)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got := samB.text("#last-verify"); !strings.HasPrefix(got, "OK at ") {
			t.Fatalf("last verification on the overview: %q", got)
		}
		if got := samB.text("#ledger-health"); got != "OK" {
			t.Fatalf("ledger health: %q", got)
		}
		if got := samB.text("#append-latency"); !strings.HasPrefix(got, "p50 ") || !strings.Contains(got, "commits") {
			t.Fatalf("ledger append latency on the overview: %q", got)
		}
		if got := samB.text("#index-lag"); !strings.HasSuffix(got, " records") {
			t.Fatalf("index lag on the overview: %q", got)
		}
		// Sessions arriving show up by themselves too.
		e.psql(t, dana, "psql", "-c", "SELECT pg_sleep(120)")
		e.psql(t, bot, "report-agent", "-c", "SELECT pg_sleep(120)")
		run(samB, chromedp.Poll[bool](`document.getElementById("open-sessions").textContent === "2"`, chromedp.WithPollingTimeout(30*time.Second)))
		e.screenshot(t, samB, "console-overview.png")
	})
}
