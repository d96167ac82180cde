package console

import (
	"context"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// The policy page shows the policy in force as it was loaded, not the file as it is now: an
// edit the engine refused (invalid) is not shown as in force, and the page says the file
// differs. Its reload history lists the newest reloads and says when there are older ones.
func TestPolicyPageShowsThePolicyInForce(t *testing.T) {
	c, led := testConsole(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	good := strings.Replace(string(policy.DefaultText()), "\nrules:\n", "\nrules:\n  - name: in-force-marker\n    when: statement.kind == \"VACUUM\"\n    action: deny\n    message: no\n", 1)
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.NewEngine(policy.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Load(path); err != nil {
		t.Fatal(err)
	}
	c.opts.Policy = eng
	show := func() string {
		t.Helper()
		w := httptest.NewRecorder()
		c.policyPage(w, &viewer{session: viewerIn("auditors"), r: httptest.NewRequest(http.MethodGet, "/console/policy", nil)})
		if w.Code != http.StatusOK {
			t.Fatalf("policy page: HTTP %d\n%s", w.Code, w.Body.String())
		}
		return w.Body.String()
	}
	body := show()
	if !strings.Contains(body, "in-force-marker") || strings.Contains(body, `id="policy-file-changed"`) || !strings.Contains(body, eng.Policy().Hash) {
		t.Fatalf("the policy page right after loading:\n%s", body)
	}
	if !strings.Contains(body, "No reload since the ledger began.") || strings.Contains(body, `id="reloads-more"`) {
		t.Fatalf("reloads before any:\n%s", body)
	}

	// An invalid edit is refused by the engine; the page still shows what is in force.
	if err := os.WriteFile(path, []byte("version: 1\ngrants: [oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := eng.Load(path); err == nil {
		t.Fatal("the engine accepted an invalid policy")
	}
	body = show()
	if !strings.Contains(body, "in-force-marker") || strings.Contains(body, "oops") || !strings.Contains(body, `id="policy-file-changed"`) {
		t.Fatalf("the policy page after a refused edit:\n%s", body)
	}

	for i := range reloadsShown + 1 {
		ev := &ledger.Event{Type: ledger.EventPolicyReload, Time: time.Now().Add(time.Duration(i) * time.Millisecond), Message: path}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	body = show()
	if n := strings.Count(body, `<tr class="reload">`); n != reloadsShown || !strings.Contains(body, `id="reloads-more"`) ||
		!strings.Contains(body, template.HTMLEscapeString(path)) {
		t.Fatalf("%d reloads listed, want the newest %d and a note of older ones:\n%s", n, reloadsShown, body)
	}
}
