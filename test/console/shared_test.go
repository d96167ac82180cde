package console

import (
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	consolepkg "github.com/gatehouse/gatehouse/internal/console"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// sharedPolicy lets everyone do anything but drop tables, so the shared test has a refusal
// to count.
const sharedPolicy = `version: 1
grants:
  - name: everyone-admin
    kinds: [human, service, agent]
    level: admin
rules:
  - name: no-drops
    when: statement.kind.startsWith("DROP")
    action: deny
    message: nobody drops tables here
masking:
  default: none
`

// With two instances sharing a PostgreSQL store, instance B's console lists a psql session
// connected to instance A (naming A), live, and ending it there gives psql FATAL 57P01; the
// kill is on B's ledger chain. B's overview shows the fleet's statements and refusals, A's
// included, with a row per instance.
func TestConsoleSharedStore(t *testing.T) {
	shared := testkit.StartPostgres(t)
	shared.Exec(t, "postgres", "CREATE DATABASE gatehouse")
	dsn := shared.DSN("gatehouse")
	a := servertest.Start(t, servertest.Options{SharedStoreDSN: dsn, Instance: "ghA", PolicyYAML: sharedPolicy})
	b := servertest.Start(t, servertest.Options{SharedStoreDSN: dsn, Instance: "ghB", KeysFrom: a.DataDir, Upstream: a.Upstream, PolicyYAML: sharedPolicy})
	// psql goes to A; the browser to B's console.
	e := &env{p: a, url: "http://" + b.HTTPAddr + consolepkg.Prefix, tokens: map[string]string{}}
	e.tokens[dana] = a.Token(t, dana, "human")
	e.tokens[sam] = a.Token(t, sam, "human", "security")
	e.startBrowser(t)

	br := e.browser(t)
	br.signInToken(e, e.tokens[sam], sam)
	// B's overview counts the statements run on A (one of them refused): the fleet's
	// statements, refusals and held statements, with a row per instance.
	ran := e.psql(t, dana, "counted-on-a", "-c", "SELECT 1", "-c", "DROP TABLE forbidden")
	if err := ran.wait(t); err == nil || !strings.Contains(ran.stderr.String(), "42501") {
		t.Fatalf("the refused DELETE on A: err=%v stderr=%s", err, ran.stderr.String())
	}
	br.do(chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#instances")))
	// The numbers arrive over server-sent events once A has published and B has polled.
	run(br, chromedp.Poll[bool](`(() => {
		const a = document.querySelector("#instances tr.instance:nth-child(2)");
		return a !== null && a.querySelector(".name").textContent === "ghA" && a.querySelector(".refused").textContent === "1" &&
			Number(a.querySelector(".statements").textContent) >= 2 && document.getElementById("refused").textContent === "1";
	})()`, chromedp.WithPollingTimeout(30*time.Second)))
	if got := br.text("#instances tr.instance:nth-child(1) .name"); got != "ghB" {
		t.Fatalf("B's overview lists itself first as %q", got)
	}
	ownB, _ := strconv.Atoi(br.text("#instances tr.instance:nth-child(1) .statements"))
	onA, _ := strconv.Atoi(br.text("#instances tr.instance:nth-child(2) .statements"))
	if sum, _ := strconv.Atoi(br.text("#statements")); sum != ownB+onA || ownB != 0 {
		t.Fatalf("B's overview: %d statements in all, %d on B, %d on A", sum, ownB, onA)
	}
	// A session on A, opened on B's console, shows its statements as A records them in the
	// shared ledger, the next one without a reload, and that it ended.
	inter := e.psql(t, dana, "interactive-on-a", "-f", "-")
	if _, err := io.WriteString(inter.stdin, "SELECT 1 AS first_statement;\n"); err != nil {
		t.Fatal(err)
	}
	open := `//tr[contains(@class,"session")][contains(., "interactive-on-a")]//a[contains(@class,"open")]`
	br.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.Search(open)), chromedp.Click(chromedp.Search(open)),
		chromedp.WaitVisible(chromedp.CSS("#session-remote")))
	run(br, chromedp.Poll[bool](`[...document.querySelectorAll("#statements tr.statement")].some(tr => tr.textContent.includes("first_statement"))`,
		chromedp.WithPollingTimeout(30*time.Second)))
	if _, err := io.WriteString(inter.stdin, "DROP TABLE second_statement;\n"); err != nil {
		t.Fatal(err)
	}
	run(br, chromedp.Poll[bool](`document.querySelectorAll("#statements tr.statement.refused").length === 1`, chromedp.WithPollingTimeout(30*time.Second)))
	if got := br.text("#statements tr.statement.refused"); !strings.Contains(got, "DROP TABLE second_statement") || !strings.Contains(got, "no-drops") {
		t.Fatalf("the remote session's refused statement: %q", got)
	}
	inter.stdin.Close()
	_ = inter.wait(t)
	br.do(chromedp.WaitVisible(chromedp.CSS("#session-ended")))

	br.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS("#sessions")), chromedp.WaitNotPresent(chromedp.CSS(`tr.session`)))
	ps := e.psql(t, dana, "on-instance-a", "-c", "SELECT pg_sleep(120)")
	// The row arrives over server-sent events from the other instance, without a reload.
	br.do(chromedp.WaitVisible(chromedp.CSS(`tr.session button.end`)))
	if got := br.text("tr.session td.instance"); got != "ghA" {
		t.Fatalf("the session's instance on B's console: %q, want ghA", got)
	}
	if app := br.text("tr.session td.app"); app != "on-instance-a" {
		t.Fatalf("live session application %q, want on-instance-a", app)
	}
	// Its page on B says where it runs.
	br.do(chromedp.Click(chromedp.CSS(`tr.session a.open`)), chromedp.WaitVisible(chromedp.CSS("#session-remote")))
	if got := br.text("#session-instance"); got != "ghA" {
		t.Fatalf("the session page names instance %q", got)
	}
	br.do(chromedp.Navigate(e.url+"sessions"), chromedp.WaitVisible(chromedp.CSS(`tr.session button.end`)),
		chromedp.Click(chromedp.CSS(`tr.session button.end`)), chromedp.WaitVisible(chromedp.CSS("#sessions")))
	err := ps.wait(t)
	stderr := ps.stderr.String()
	if err == nil || !strings.Contains(stderr, "57P01") || !strings.Contains(stderr, "session ended by "+sam) {
		t.Fatalf("psql on A after B's console ended its session: err=%v stderr=%s", err, stderr)
	}
	evs := e.search(t, ledger.Query{Type: consolepkg.EventSessionKill})
	if len(evs) != 1 || evs[0].Subject != sam || evs[0].Instance != "ghB" || !strings.Contains(evs[0].Message, "on instance ghA") {
		t.Fatalf("want one session.kill event by %s on B's chain naming ghA, got %+v", sam, evs)
	}
	br.do(chromedp.WaitNotPresent(chromedp.CSS(`tr.session`)))
}
