package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// receiver records the bodies it accepts; it answers 503 to the first `fail` requests.
type receiver struct {
	mu     sync.Mutex
	fail   int
	tries  int
	bodies [][]byte
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	if r.tries <= r.fail {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	r.bodies = append(r.bodies, b)
}

func (r *receiver) got() ([][]byte, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...), r.tries
}

func TestDeliversEachFormatWithRetries(t *testing.T) {
	slack, teams, hook := &receiver{fail: 2}, &receiver{}, &receiver{}
	mux := http.NewServeMux()
	mux.Handle("/slack", slack)
	mux.Handle("/teams", teams)
	mux.Handle("/hook", hook)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	req := approval.Request{ID: "apr_0123456789", Requester: "dana@corp.example", RequesterKind: "human", Target: "prod-db",
		Environment: "prod", Rule: "production-schema-changes-need-approval", StatementKind: "ALTER TABLE",
		Statement: "ALTER TABLE customers ADD COLUMN tier text DEFAULT $1 -- <@channel>", Status: approval.Pending,
		ExpiresAt: time.Now().Add(time.Hour)}
	n, err := New([]config.Notifier{{Type: "slack", URL: srv.URL + "/slack"}, {Type: "teams", URL: srv.URL + "/teams"}, {Type: "webhook", URL: srv.URL + "/hook"}},
		Options{Lookup: func(context.Context, string) (approval.Request, error) { return req, nil },
			ConsoleURL: func() string { return "http://127.0.0.1:8080/console/" }, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	n.Observe(&ledger.Event{Type: ledger.EventStatement, ApprovalID: req.ID}) // not an approval step: nothing sent
	n.Observe(&ledger.Event{Type: ledger.EventApprovalRequested, ApprovalID: req.ID})
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := slack.got()
		tb, _ := teams.got()
		hb, _ := hook.got()
		if len(s) == 1 && len(tb) == 1 && len(hb) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bodies: slack %d teams %d webhook %d", len(s), len(tb), len(hb))
		}
		time.Sleep(10 * time.Millisecond)
	}
	sb, tries := slack.got()
	if tries != 3 {
		t.Fatalf("slack tried %d times, want 3 (two 503s, then accepted)", tries)
	}
	var sm struct {
		Blocks []struct {
			Type     string                 `json:"type"`
			Text     *struct{ Text string } `json:"text"`
			Elements []struct{ URL string } `json:"elements"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(sb[0], &sm); err != nil || len(sm.Blocks) != 4 || sm.Blocks[3].Elements[0].URL != "http://127.0.0.1:8080/console/approvals/apr_0123456789" {
		t.Fatalf("slack body %s (%v)", sb[0], err)
	}
	if !strings.Contains(sm.Blocks[2].Text.Text, "DEFAULT $1 -- &lt;@channel&gt;") {
		t.Fatalf("slack statement block %q: want the redacted text with mrkdwn escaped", sm.Blocks[2].Text.Text)
	}
	tb, _ := teams.got()
	var tm struct {
		Type        string `json:"type"`
		Attachments []struct {
			ContentType string `json:"contentType"`
			Content     struct {
				Type    string `json:"type"`
				Actions []struct{ Type, URL string }
			} `json:"content"`
		} `json:"attachments"`
	}
	if err := json.Unmarshal(tb[0], &tm); err != nil || tm.Type != "message" || tm.Attachments[0].ContentType != "application/vnd.microsoft.card.adaptive" ||
		tm.Attachments[0].Content.Type != "AdaptiveCard" || tm.Attachments[0].Content.Actions[0].Type != "Action.OpenUrl" {
		t.Fatalf("teams body %s (%v)", tb[0], err)
	}
	hb, _ := hook.got()
	var m Message
	if err := json.Unmarshal(hb[0], &m); err != nil || m.Event != ledger.EventApprovalRequested || m.ApprovalID != req.ID || m.Statement != req.Statement {
		t.Fatalf("webhook body %s (%v)", hb[0], err)
	}
}

// A receiver that never answers does not hold up anyone: Observe returns at once even when
// the queue is full, and messages beyond it are dropped.
func TestObserveNeverBlocks(t *testing.T) {
	n, err := New([]config.Notifier{{Type: "webhook", URL: "http://127.0.0.1:9/none"}},
		Options{Lookup: func(context.Context, string) (approval.Request, error) { return approval.Request{}, nil },
			ConsoleURL: func() string { return "" }, QueueSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ { // not running: the queue fills after 2
			n.Observe(&ledger.Event{Type: ledger.EventApprovalRequested, ApprovalID: "apr_0123456789"})
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a hang detector, not a speed check
		t.Fatal("Observe blocked on a full queue")
	}
}

func TestURLEnvMustBeSet(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_SLACK_URL", "")
	_, err := New([]config.Notifier{{Type: "slack", URLEnv: "GATEHOUSE_TEST_SLACK_URL"}},
		Options{Lookup: func(context.Context, string) (approval.Request, error) { return approval.Request{}, nil }, ConsoleURL: func() string { return "" }})
	if err == nil || !strings.Contains(err.Error(), "GATEHOUSE_TEST_SLACK_URL") {
		t.Fatalf("New with an empty url_env: %v", err)
	}
}
