// Package notify tells people about approval requests where they already are: a Slack
// incoming webhook (Block Kit), a Microsoft Teams workflow webhook (Adaptive Card) or any
// JSON webhook. A message goes out when a request is filed and again when it is decided or
// lapses. Messages carry the redacted statement (literals replaced) and a link to the
// request's page in the console, never literals or secrets, and no way to decide: a chat
// account alone must never approve a production change. Sending never blocks or fails the
// statement or the decision: each receiver has its own queue and worker, failures are
// retried with backoff, and a full queue drops (and logs) rather than waits.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// Options tune a Notifier.
type Options struct {
	// Lookup reads a request's current state (the approval store's Get).
	Lookup func(ctx context.Context, id string) (approval.Request, error)
	// ConsoleURL returns the console's base URL (ending in "/console/").
	ConsoleURL func() string
	Log        *slog.Logger
	// Backoff is the first retry's delay (default 1s), doubled per attempt up to MaxBackoff
	// (default 1m); Attempts bounds the tries per message (default 8).
	Backoff    time.Duration
	MaxBackoff time.Duration
	Attempts   int
	// QueueSize bounds the messages waiting per receiver (default 256).
	QueueSize int
	// Client sends the requests (default: a client with a 10 s timeout).
	Client *http.Client
}

// Notifier delivers approval notifications. Create it with New, start it with Run.
type Notifier struct {
	opts    Options
	workers []*worker
}

// worker is one receiver with its queue.
type worker struct {
	kind  string
	url   string
	queue chan item
}

// item is one notification to build and send: the event that happened to a request.
type item struct {
	event ledger.EventType
	id    string
}

// New returns a notifier for the receivers. A receiver whose url_env is unset is an error, so
// a missing secret is noticed at start and not at the first request.
func New(receivers []config.Notifier, opts Options) (*Notifier, error) {
	if opts.Lookup == nil || opts.ConsoleURL == nil {
		return nil, errors.New("notify: Lookup and ConsoleURL are required")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 8
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	n := &Notifier{opts: opts}
	for i, r := range receivers {
		u := r.URL
		if r.URLEnv != "" {
			if u = os.Getenv(r.URLEnv); u == "" {
				return nil, fmt.Errorf("approvals.notify[%d]: environment variable %s (url_env) is empty", i, r.URLEnv)
			}
		}
		n.workers = append(n.workers, &worker{kind: r.Type, url: u, queue: make(chan item, opts.QueueSize)})
	}
	return n, nil
}

// Run delivers until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range n.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.work(ctx, w)
		}()
	}
	wg.Wait()
}

// notifies are the event types that make a message.
var notifies = map[ledger.EventType]bool{
	ledger.EventApprovalRequested: true, ledger.EventApprovalApproved: true,
	ledger.EventApprovalDenied: true, ledger.EventApprovalExpired: true,
}

// Observe queues a message for ev if it is an approval being filed, decided or lapsing. It
// never blocks.
func (n *Notifier) Observe(ev *ledger.Event) {
	if n == nil || !notifies[ev.Type] || ev.ApprovalID == "" {
		return
	}
	for _, w := range n.workers {
		select {
		case w.queue <- item{event: ev.Type, id: ev.ApprovalID}:
		default:
			n.opts.Log.Warn("approval notification dropped: the receiver's queue is full", "receiver", w.kind, "approval", ev.ApprovalID, "event", ev.Type)
		}
	}
}

func (n *Notifier) work(ctx context.Context, w *worker) {
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-w.queue:
			n.deliver(ctx, w, it)
		}
	}
}

// deliver builds the message from the request's current state and sends it, retrying with
// backoff.
func (n *Notifier) deliver(ctx context.Context, w *worker, it item) {
	var (
		body []byte
		err  error
	)
	delay := n.opts.Backoff
	for attempt := 1; attempt <= n.opts.Attempts; attempt++ {
		if body == nil {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var req approval.Request
			req, err = n.opts.Lookup(lctx, it.id)
			cancel()
			if err == nil {
				body, err = Render(w.kind, NewMessage(it.event, req, n.opts.ConsoleURL()))
				if err != nil {
					n.opts.Log.Error("approval notification cannot be built", "receiver", w.kind, "err", err)
					return
				}
			}
		}
		if body != nil {
			if err = n.post(ctx, w, body); err == nil {
				return
			}
		}
		var perm permanentError
		if errors.As(err, &perm) {
			break
		}
		n.opts.Log.Info("approval notification failed; retrying", "receiver", w.kind, "approval", it.id, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, n.opts.MaxBackoff)
	}
	n.opts.Log.Error("approval notification given up", "receiver", w.kind, "approval", it.id, "event", it.event, "err", err)
}

// permanentError is an answer that retrying will not change (4xx other than 408 and 429).
type permanentError struct{ status int }

func (e permanentError) Error() string {
	return fmt.Sprintf("receiver refused the message: HTTP %d", e.status)
}

func (n *Notifier) post(ctx context.Context, w *worker, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return permanentError{}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		// The error text holds the URL, which for chat webhooks is a credential.
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("send: %w", ue.Err)
		}
		return errors.New("send failed")
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return permanentError{resp.StatusCode}
	}
	return fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
}

// Message is what every receiver's format says about one step of a request.
type Message struct {
	Event         ledger.EventType `json:"event"`
	Title         string           `json:"title"`
	ApprovalID    string           `json:"approval_id"`
	Status        approval.Status  `json:"status"`
	Requester     string           `json:"requester"`
	RequesterKind string           `json:"requester_kind"`
	Target        string           `json:"target"`
	Environment   string           `json:"environment,omitempty"`
	Database      string           `json:"database,omitempty"`
	Rule          string           `json:"rule"`
	// Statement is the redacted text (literals replaced), as the ledger keeps it.
	Statement string    `json:"statement"`
	Purpose   string    `json:"purpose,omitempty"`
	DecidedBy string    `json:"decided_by,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	URL       string    `json:"url"`
}

// NewMessage describes request r after event for the console at consoleURL.
func NewMessage(event ledger.EventType, r approval.Request, consoleURL string) Message {
	m := Message{Event: event, ApprovalID: r.ID, Status: r.Status, Requester: r.Requester, RequesterKind: r.RequesterKind,
		Target: r.Target, Environment: r.Environment, Database: r.Database, Rule: r.Rule, Statement: r.Statement,
		Purpose: r.Reason, DecidedBy: r.DecidedBy, ExpiresAt: r.ExpiresAt, URL: consoleURL + "approvals/" + r.ID}
	switch event {
	case ledger.EventApprovalRequested:
		m.Title = fmt.Sprintf("Approval needed: %s on %s", r.StatementKind, r.Target)
	case ledger.EventApprovalApproved:
		m.Title = fmt.Sprintf("Approved by %s: %s on %s", r.DecidedBy, r.StatementKind, r.Target)
	case ledger.EventApprovalDenied:
		m.Title = fmt.Sprintf("Denied by %s: %s on %s", r.DecidedBy, r.StatementKind, r.Target)
	case ledger.EventApprovalExpired:
		m.Title = fmt.Sprintf("Lapsed: %s on %s", r.StatementKind, r.Target)
	}
	return m
}

// Render encodes m in the receiver type's format.
func Render(kind string, m Message) ([]byte, error) {
	switch kind {
	case "slack":
		return json.Marshal(slackMessage(m))
	case "teams":
		return json.Marshal(teamsMessage(m))
	case "webhook":
		return json.Marshal(m)
	}
	return nil, fmt.Errorf("unknown notifier type %q", kind)
}

// facts are the labelled values every chat format shows.
func facts(m Message) [][2]string {
	where := m.Target
	if m.Environment != "" {
		where += " (" + m.Environment + ")"
	}
	f := [][2]string{{"Request", m.ApprovalID}, {"Requester", m.Requester + " (" + m.RequesterKind + ")"}, {"Target", where},
		{"Rule", m.Rule}, {"Status", string(m.Status)}}
	if m.Purpose != "" {
		f = append(f, [2]string{"Purpose", m.Purpose})
	}
	if m.Status == approval.Pending {
		f = append(f, [2]string{"Lapses", m.ExpiresAt.UTC().Format(time.RFC3339)})
	}
	return f
}

// slackEscape escapes the three characters Slack's mrkdwn gives meaning (links, mentions).
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slackMessage is a Block Kit message for an incoming webhook: header, facts, the statement
// and an "Open in Gatehouse" button.
func slackMessage(m Message) map[string]any {
	var fields []map[string]any
	for _, f := range facts(m) {
		fields = append(fields, map[string]any{"type": "mrkdwn", "text": "*" + f[0] + "*\n" + slackEscape(f[1])})
	}
	return map[string]any{
		"text": slackEscape(m.Title + " — " + m.ApprovalID),
		"blocks": []map[string]any{
			{"type": "header", "text": map[string]any{"type": "plain_text", "text": truncate(m.Title, 150)}},
			{"type": "section", "fields": fields},
			{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": "```" + slackEscape(truncate(m.Statement, 2900)) + "```"}},
			{"type": "actions", "elements": []map[string]any{{"type": "button", "text": map[string]any{"type": "plain_text", "text": "Open in Gatehouse"},
				"url": m.URL, "style": "primary", "action_id": "open_gatehouse"}}},
		},
	}
}

// teamsMessage is an Adaptive Card in the message envelope Teams workflow webhooks take.
func teamsMessage(m Message) map[string]any {
	var fs []map[string]any
	for _, f := range facts(m) {
		fs = append(fs, map[string]any{"title": f[0], "value": f[1]})
	}
	card := map[string]any{
		"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
		"type":    "AdaptiveCard",
		"version": "1.4",
		"body": []map[string]any{
			{"type": "TextBlock", "text": m.Title, "weight": "Bolder", "size": "Medium", "wrap": true},
			{"type": "FactSet", "facts": fs},
			{"type": "TextBlock", "text": truncate(m.Statement, 4000), "fontType": "Monospace", "wrap": true},
		},
		"actions": []map[string]any{{"type": "Action.OpenUrl", "title": "Open in Gatehouse", "url": m.URL}},
	}
	return map[string]any{"type": "message", "attachments": []map[string]any{
		{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": nil, "content": card},
	}}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
