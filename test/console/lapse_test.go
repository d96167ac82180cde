package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	consolepkg "github.com/gatehouse/gatehouse/internal/console"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// A request's notification is sent again when it lapses, not only when it is filed and
// decided: an approval nobody uses within approvals.valid_for reaches the Slack, Teams and
// generic receivers as lapsed, with the console link and only the redacted statement.
func TestLapseIsNotified(t *testing.T) {
	hooks := &hookReceiver{}
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod", Configure: func(c *config.Config) {
		c.Approvals.ValidFor = config.Duration(2 * time.Second) // the expiry sweep then runs every second
		c.Approvals.Notify = []config.Notifier{{Type: "slack", URL: hookSrv.URL + "/slack"}, {Type: "teams", URL: hookSrv.URL + "/teams"},
			{Type: "webhook", URL: hookSrv.URL + "/generic"}}
	}})
	p.Upstream.Exec(t, "app", "CREATE TABLE customers (id int PRIMARY KEY)")
	e := &env{p: p, url: "http://" + p.HTTPAddr + consolepkg.Prefix, tokens: map[string]string{}}
	e.tokens[dana] = p.Token(t, dana, "human", "dba")
	samToken := p.Token(t, sam, "human", "dba")

	ps := e.psql(t, dana, "migrate", "-c", "ALTER TABLE customers ADD COLUMN tier text DEFAULT 'zebra-secret'")
	_ = ps.wait(t)
	m := consoleLinkRE.FindStringSubmatch(ps.stderr.String())
	if m == nil {
		t.Fatalf("want a held ALTER TABLE with its console link, got: %s", ps.stderr.String())
	}
	link, id := m[1], m[2]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.HTTPAddr+"/api/v1/approvals/"+id+"/approve", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+samToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("approve %s: HTTP %d", id, resp.StatusCode)
	}
	// Filed, approved, then lapsed unused.
	generic := hooks.wait(t, "/generic", 3)
	if !strings.Contains(generic[2], `"event":"approval.expired"`) || !strings.Contains(generic[2], `"approval_id":"`+id+`"`) {
		t.Fatalf("the third generic body is not the lapse of %s: %s", id, generic[2])
	}
	slack, teams := hooks.wait(t, "/slack", 3), hooks.wait(t, "/teams", 3)
	for _, b := range []string{generic[2], slack[2], teams[2]} {
		if !strings.Contains(b, "Lapsed: ALTER TABLE on main") || !strings.Contains(b, link) || strings.Contains(b, "zebra-secret") {
			t.Fatalf("lapse notification lacks its title or link, or carries a literal: %s", b)
		}
	}
}
