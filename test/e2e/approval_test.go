package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// approvalPolicy holds every DROP in production for approval; dba may administer.
const approvalPolicy = `version: 1
grants:
  - name: dba-admin
    groups: [dba]
    level: admin
rules:
  - name: production-drops-need-approval
    when: target.production && statement.kind.startsWith("DROP")
    action: require_approval
    message: dropping things in production needs someone else's approval.
masking:
  default: none
`

const approvalRule = "production-drops-need-approval"

// approvalValidity is the test's short approval window, so expiry is seen in seconds.
const approvalValidity = 3 * time.Second

var approvalIDRE = regexp.MustCompile(`approval request (apr_[0-9a-z]{10}) `)

// api calls the approval API and decodes the JSON answer.
func api(t *testing.T, p *servertest.Proxy, method, path string, auth func(*http.Request), body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctxT(t, 15*time.Second), method, "http://"+p.HTTPAddr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: HTTP %d, not JSON: %q", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func basic(user, tok string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, tok) }
}

// held runs sql and requires it to be held for approval, returning the request id.
func held(t *testing.T, c *pgx.Conn, sql, want string) string {
	t.Helper()
	_, err := c.Exec(ctxT(t, 15*time.Second), sql)
	msg := pgMessage(err)
	if pgCode(err) != "42501" || !strings.HasPrefix(msg, `gatehouse: rule "`+approvalRule+`" requires approval: dropping things in production needs someone else's approval; `) ||
		!strings.Contains(msg, want) {
		t.Fatalf("%s: want held (42501, %q), got %v", sql, want, err)
	}
	m := approvalIDRE.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("%s: no approval request id in %q", sql, msg)
	}
	return m[1]
}

func tableExists(t *testing.T, p *servertest.Proxy, name string) bool {
	t.Helper()
	return upstreamQuery(t, p.Upstream, "app", "SELECT (to_regclass('public."+name+"') IS NOT NULL)::text") == "true"
}

func TestApprovalWorkflow(t *testing.T) {
	p := servertest.Start(t, servertest.Options{PolicyYAML: approvalPolicy, Environment: "prod",
		Configure: func(cfg *config.Config) { cfg.Approvals.ValidFor = config.Duration(approvalValidity) }})
	p.Upstream.Exec(t, "app", `CREATE TABLE orders(id int); CREATE TABLE customers(id int); CREATE TABLE items(id int);
		CREATE TABLE marks(id int); CREATE TABLE ext(id int); CREATE TABLE m1(id int); CREATE TABLE m2(id int)`)
	const aliceName, bobName, daveName = "alice@corp.example", "bob@corp.example", "dave@corp.example"
	alice := p.Token(t, aliceName, "human", "dba")
	bob := p.Token(t, bobName, "human", "dba")
	dave := p.Token(t, daveName, "human", "analysts")
	ca := connect(t, p.DSN(aliceName, alice, ""))
	cb := connect(t, p.DSN(bobName, bob, ""))
	ctx := ctxT(t, 2*time.Minute)

	// A DBA's DROP in production is held, with a request id and what to do next.
	id := held(t, ca, "DROP TABLE orders", "created: ask an approver to run `gatehouse approvals approve ")
	if !tableExists(t, p, "orders") {
		t.Fatal("held DROP ran")
	}
	alive(ctx, t, ca, "held statement")
	// Running it again before anyone decides reuses the request.
	if again := held(t, ca, "DROP TABLE orders;", "is waiting for a decision"); again != id {
		t.Fatalf("second hold filed %s, want %s", again, id)
	}

	// Who may see and decide it.
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+id+"/approve", nil, "{}"); code != http.StatusUnauthorized {
		t.Fatalf("unauthenticated approve: %d", code)
	}
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+id+"/approve", bearer(bob+"x"), "{}"); code != http.StatusUnauthorized {
		t.Fatalf("bad token approve: %d", code)
	}
	if code, out := api(t, p, "POST", "/api/v1/approvals/"+id+"/approve", bearer(alice), "{}"); code != http.StatusForbidden || !strings.Contains(out["error"].(string), "your own") {
		t.Fatalf("self approval: %d %v", code, out)
	}
	if code, out := api(t, p, "POST", "/api/v1/approvals/"+id+"/approve", basic(daveName, dave), "{}"); code != http.StatusForbidden || !strings.Contains(out["error"].(string), "not an approver") {
		t.Fatalf("non-approver: %d %v", code, out)
	}
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+id+"/approve", bearer(bob), ""); code != http.StatusUnsupportedMediaType {
		t.Fatalf("approve without a JSON body: %d", code)
	}
	if code, out := api(t, p, "GET", "/api/v1/approvals?status=pending", bearer(bob), ""); code != http.StatusOK || !strings.Contains(jsonText(out), id) ||
		strings.Contains(jsonText(out), "orders WHERE") {
		t.Fatalf("approver's pending list: %d %v", code, out)
	}
	if code, out := api(t, p, "GET", "/api/v1/approvals", basic(daveName, dave), ""); code != http.StatusOK || strings.Contains(jsonText(out), id) {
		t.Fatalf("a stranger sees others' requests: %d %v", code, out)
	}
	if code, _ := api(t, p, "GET", "/api/v1/approvals/"+id, basic(daveName, dave), ""); code != http.StatusNotFound {
		t.Fatalf("a stranger reads another's request: %d", code)
	}

	// Another DBA approves with its own token.
	code, out := api(t, p, "POST", "/api/v1/approvals/"+id+"/approve", bearer(bob), `{"comment": "migration 42"}`)
	if code != http.StatusOK {
		t.Fatalf("approve: %d %v", code, out)
	}
	if a := out["approval"].(map[string]any); a["status"] != "approved" || a["decided_by"] != bobName || a["requester"] != aliceName || a["statement"] != "DROP TABLE orders" {
		t.Fatalf("approved: %v", a)
	}
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+id+"/deny", bearer(bob), "{}"); code != http.StatusConflict {
		t.Fatalf("deciding twice: %d", code)
	}

	// The approval covers exactly that statement by that identity.
	other := held(t, ca, "DROP TABLE customers", "created")
	if other == id || !tableExists(t, p, "customers") {
		t.Fatal("approval covered another table")
	}
	if byBob := held(t, cb, "DROP TABLE orders", "created"); byBob == id {
		t.Fatal("approval covered another identity")
	}
	// The requester runs it again: it runs, once.
	if _, err := ca.Exec(ctx, "DROP TABLE orders"); err != nil {
		t.Fatalf("approved DROP: %v", err)
	}
	if tableExists(t, p, "orders") {
		t.Fatal("approved DROP did not run")
	}
	if again := held(t, ca, "DROP TABLE orders", "created"); again == id {
		t.Fatal("a used approval was offered again")
	}
	if code, out := api(t, p, "GET", "/api/v1/approvals/"+id, bearer(alice), ""); code != http.StatusOK || out["approval"].(map[string]any)["status"] != "used" {
		t.Fatalf("after use: %d %v", code, out)
	}

	// Denied: running it again says so, and nothing runs.
	denied := held(t, ca, "DROP TABLE items", "created")
	if code, out := api(t, p, "POST", "/api/v1/approvals/"+denied+"/deny", basic(bobName, bob), `{"comment": "not during the freeze"}`); code != http.StatusOK {
		t.Fatalf("deny: %d %v", code, out)
	}
	if again := held(t, ca, "DROP TABLE items", `was denied by bob@corp.example: "not during the freeze"`); again != denied || !tableExists(t, p, "items") {
		t.Fatalf("after deny: %s", again)
	}

	// The extended protocol: Parse is held; once approved, Parse only prepares and the first
	// Execute uses the approval; a second Execute of the same prepared statement is held.
	res := ca.PgConn().ExecParams(ctx, "DROP TABLE ext", nil, nil, nil, nil).Read()
	if pgCode(res.Err) != "42501" {
		t.Fatalf("extended-protocol DROP: %v", res.Err)
	}
	ext := approvalIDRE.FindStringSubmatch(pgMessage(res.Err))[1]
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+ext+"/approve", bearer(bob), "{}"); code != http.StatusOK {
		t.Fatalf("approve %s: %d", ext, code)
	}
	if _, err := ca.PgConn().Prepare(ctx, "drop_ext", "DROP TABLE ext", nil); err != nil {
		t.Fatalf("prepare approved statement: %v", err)
	}
	if res := ca.PgConn().ExecPrepared(ctx, "drop_ext", nil, nil, nil).Read(); res.Err != nil || tableExists(t, p, "ext") {
		t.Fatalf("approved extended-protocol DROP: %v", res.Err)
	}
	if res := ca.PgConn().ExecPrepared(ctx, "drop_ext", nil, nil, nil).Read(); pgCode(res.Err) != "42501" || strings.Contains(pgMessage(res.Err), ext) {
		t.Fatalf("second execute of a used approval: %v", res.Err)
	}

	// A multi-statement string runs only when every held statement in it is approved, and an
	// approval is used only when the whole string runs.
	const both = "DROP TABLE m1; DROP TABLE m2"
	first := held(t, ca, both, "created")
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+first+"/approve", bearer(bob), "{}"); code != http.StatusOK {
		t.Fatalf("approve %s: %d", first, code)
	}
	second := held(t, ca, both, "created")
	if second == first || !tableExists(t, p, "m1") {
		t.Fatal("half-approved string ran")
	}
	if r, _ := p.Instance.Approvals().Get(ctx, first); r.Status != approval.Approved {
		t.Fatalf("approval used by a string that did not run: %+v", r)
	}
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+second+"/approve", bearer(bob), "{}"); code != http.StatusOK {
		t.Fatalf("approve %s: %d", second, code)
	}
	if _, err := ca.Exec(ctx, both); err != nil || tableExists(t, p, "m1") || tableExists(t, p, "m2") {
		t.Fatalf("fully approved string: %v", err)
	}

	// An approval not used within its window lapses.
	lapsing := held(t, ca, "DROP TABLE marks", "created")
	if code, _ := api(t, p, "POST", "/api/v1/approvals/"+lapsing+"/approve", bearer(bob), "{}"); code != http.StatusOK {
		t.Fatalf("approve %s: %d", lapsing, code)
	}
	time.Sleep(approvalValidity + 200*time.Millisecond)
	if again := held(t, ca, "DROP TABLE marks", "created"); again == lapsing || !tableExists(t, p, "marks") {
		t.Fatal("a lapsed approval was used")
	}
	if _, out := api(t, p, "GET", "/api/v1/approvals/"+lapsing, bearer(bob), ""); out["approval"].(map[string]any)["status"] != "expired" {
		t.Fatalf("lapsed approval: %v", out)
	}

	// The ledger: the statement that ran carries the approval id, and every step is an event.
	// (The refused runs carry the id of the request filed for them too.)
	stmts := searchLedger(t, p, ledger.Query{Type: ledger.EventStatement, Table: "orders", Decision: "allow", Limit: 100}, func(evs []ledger.Event) bool {
		return len(evs) > 0
	})
	if len(stmts) != 1 || stmts[0].ApprovalID != id || stmts[0].Subject != aliceName || stmts[0].Rule != approvalRule || stmts[0].SQLState != "" {
		t.Fatalf("approved statement events: %+v", stmts)
	}
	heldEvs := searchLedger(t, p, ledger.Query{Type: ledger.EventStatement, Table: "orders", Decision: "require_approval", Identity: aliceName}, func(evs []ledger.Event) bool {
		return len(evs) == 3
	})
	for _, e := range heldEvs {
		if e.SQLState != "42501" || e.ApprovalID == "" {
			t.Fatalf("held statement event: %+v", e)
		}
	}
	for typ, who := range map[ledger.EventType]string{
		ledger.EventApprovalRequested: aliceName, ledger.EventApprovalApproved: bobName, ledger.EventApprovalUsed: aliceName,
	} {
		searchLedger(t, p, ledger.Query{Type: typ}, func(evs []ledger.Event) bool {
			for _, e := range evs {
				if e.ApprovalID == id && e.Subject == who && e.Rule == approvalRule && e.Target == "main" &&
					len(e.Statements) == 1 && e.Statements[0].Redacted == "DROP TABLE orders" {
					return true
				}
			}
			return false
		})
	}
	searchLedger(t, p, ledger.Query{Type: ledger.EventApprovalDenied, Identity: bobName}, func(evs []ledger.Event) bool {
		return len(evs) == 1 && evs[0].ApprovalID == denied && strings.Contains(evs[0].Message, "not during the freeze")
	})
	searchLedger(t, p, ledger.Query{Type: ledger.EventAdmin, Identity: aliceName}, func(evs []ledger.Event) bool {
		for _, e := range evs {
			if strings.Contains(e.Message, "/approve refused: you cannot decide your own") {
				return true
			}
		}
		return false
	})
	rep, err := ledger.Verify(ctx, ledger.StoreSource{Store: p.Instance.Ledger().Store()}, p.Instance.Ledger().PublicKey())
	if err != nil || !rep.OK {
		t.Fatalf("ledger verification: %v\n%s", err, rep)
	}

	// The store agrees: one request of each final kind for alice's orders.
	list, err := p.Instance.Approvals().List(ctx, approval.Filter{Requester: aliceName, Status: approval.Used})
	if err != nil || len(list) != 4 {
		t.Fatalf("used approvals: %+v %v", list, err)
	}
}

func jsonText(v any) string {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(v)
	return b.String()
}
