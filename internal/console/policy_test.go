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

	// Reloads name the policy they put in force; the newest is the one in force, an older
	// one another policy, and reloads recorded before events carried the hash say so.
	reload := func(i int, msg string) {
		t.Helper()
		ev := &ledger.Event{Type: ledger.EventPolicyReload, Time: time.Now().Add(time.Duration(i) * time.Millisecond), Message: msg}
		if err := led.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	reload(0, ledger.PolicyReloadMessage(path, "0123456789abcdef01234567"))
	reload(1, path)
	reload(2, ledger.PolicyReloadMessage(path, eng.Policy().Hash))
	body = show()
	if strings.Count(body, `<tr class="reload">`) != 3 || strings.Count(body, `class="reload-in-force"`) != 1 ||
		!strings.Contains(body, `<code class="reload-hash">`+eng.Policy().Hash+`</code> <span class="reload-in-force">in force</span>`) ||
		!strings.Contains(body, `<code class="reload-hash">0123456789abcdef01234567</code></td>`) || !strings.Contains(body, "not recorded") ||
		strings.Contains(body, "policy 0123") {
		t.Fatalf("reloads with the hash of the policy each put in force:\n%s", body)
	}
	for i := range reloadsShown + 1 {
		reload(3+i, ledger.PolicyReloadMessage(path, eng.Policy().Hash))
	}
	body = show()
	if n := strings.Count(body, `<tr class="reload">`); n != reloadsShown || !strings.Contains(body, `id="reloads-more"`) ||
		!strings.Contains(body, template.HTMLEscapeString(path)) {
		t.Fatalf("%d reloads listed, want the newest %d and a note of older ones:\n%s", n, reloadsShown, body)
	}
}
