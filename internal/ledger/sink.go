package ledger

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

// Sink streams committed events out of Gatehouse (to a SIEM, a log shipper, a file). Sinks
// run behind the ledger: a slow or failing sink never slows or fails Record; it catches up
// from the store when it recovers, and a ResumableSink also catches up on what was
// committed while Gatehouse was stopped.
type Sink interface {
	// Name identifies the sink in logs.
	Name() string
	// Write delivers events in chain order; an error makes the ledger retry the same batch.
	Write(ctx context.Context, events []Event) error
	// Close flushes and releases the sink.
	Close() error
}

// JSONLSink writes one JSON object per event per line, to a file (appended, 0600) or to
// stdout.
type JSONLSink struct {
	name string
	w    *bufio.Writer
	f    *os.File // nil for stdout
	mu   sync.Mutex
}

// NewJSONLSink opens path for appending; "-" means stdout.
func NewJSONLSink(path string) (*JSONLSink, error) {
	if path == "-" {
		return &JSONLSink{name: "jsonl:stdout", w: bufio.NewWriter(os.Stdout)}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open JSON lines sink: %w", err)
	}
	return &JSONLSink{name: "jsonl:" + path, w: bufio.NewWriter(f), f: f}, nil
}

// Name implements Sink.
func (s *JSONLSink) Name() string { return s.name }

// Write implements Sink.
func (s *JSONLSink) Write(_ context.Context, events []Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	enc := json.NewEncoder(s.w)
	for i := range events {
		if err := enc.Encode(&events[i]); err != nil {
			return fmt.Errorf("write event to %s: %w", s.name, err)
		}
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("write events to %s: %w", s.name, err)
	}
	if s.f != nil {
		// The runner advances the sink's cursor once Write returns: the lines must be on
		// disk by then, or a power loss would drop them for good.
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", s.name, err)
		}
	}
	return nil
}

// Close implements Sink.
func (s *JSONLSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.w.Flush()
	if s.f != nil {
		err = errors.Join(err, s.f.Sync(), s.f.Close())
	}
	return err
}

// WebhookSink POSTs batches of events as a JSON array to a URL; any 2xx answer
// acknowledges the batch.
type WebhookSink struct {
	URL    string
	Header http.Header
	Client *http.Client
}

// NewWebhookSink returns a sink that posts to url with a 10s timeout per batch.
func NewWebhookSink(url string) *WebhookSink {
	return &WebhookSink{URL: url, Client: &http.Client{Timeout: 10 * time.Second}}
}

// Name implements Sink (user information and query left out: they may hold credentials).
func (s *WebhookSink) Name() string { return "webhook:" + redactURL(s.URL) }

// Write implements Sink.
func (s *WebhookSink) Write(ctx context.Context, events []Event) error {
	body, err := json.Marshal(events)
	if err != nil {
		return fmt.Errorf("encode events for webhook: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("post events to webhook: %w", err)
	}
	for k, v := range s.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	c := s.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("post events to webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post events to webhook: %s", resp.Status)
	}
	return nil
}

// Close implements Sink.
func (s *WebhookSink) Close() error { return nil }

// sinkRunner feeds one sink from the store: told the new head after each commit, it reads
// the events it has not delivered yet and writes them in batches, retrying with backoff.
// A ResumableSink starts from its cursor (what it acknowledged before a restart or an
// outage) and the cursor advances after every acknowledged batch, so delivery is
// at-least-once in chain order: a crash between a delivery and its cursor write repeats that
// batch. Other sinks start at the head the ledger found at start-up.
type sinkRunner struct {
	sink     Sink
	store    Store
	instance string
	log      *slog.Logger
	cursor   *sinkCursor // nil: not resumable

	mu     sync.Mutex
	target int64
	sent   int64
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}
	cancel context.CancelFunc
}

func newSinkRunner(st Store, instance string, from int64, s Sink, log *slog.Logger) *sinkRunner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &sinkRunner{sink: s, store: st, instance: instance, log: log, target: from, sent: from,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	if rs, ok := s.(*ResumableSink); ok {
		r.cursor = cursorFor(rs, instance)
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		r.sent = r.resume(rctx, from)
		rcancel()
	}
	go r.run(ctx)
	return r
}

// resume returns where delivery starts: the sink's cursor, or the head (written as the
// cursor at once, so that what is committed from now on reaches the sink even if the
// process stops before its first delivery).
func (r *sinkRunner) resume(ctx context.Context, head int64) int64 {
	c := r.cursor
	found, err := c.load()
	if err != nil {
		r.log.Error("ledger sink cursor unreadable; delivering from the chain head", "sink", r.sink.Name(), "err", err)
	}
	if !found {
		if err := c.save(head, ""); err != nil {
			r.log.Error("ledger sink cursor", "sink", r.sink.Name(), "err", err)
		}
		return head
	}
	if c.Seq > head {
		// The store holds less than the sink already received: it is a different chain
		// (a new store). Every event of this one is new to the sink.
		r.log.Warn("ledger sink cursor is past the chain head (new store?); delivering the chain from its start",
			"sink", r.sink.Name(), "cursor", c.Seq, "head", head)
		return 0
	}
	if c.Hash != "" && c.Seq > 0 {
		err := r.store.Scan(ctx, r.instance, c.Seq-1, 1, func(se StoredEvent) error {
			ev, err := decodeBody(se.Body)
			if err != nil {
				return err
			}
			if ev.Seq == c.Seq && ev.Hash != c.Hash {
				r.log.Warn("ledger sink cursor names an event the store does not hold (new store?); delivering the chain from its start",
					"sink", r.sink.Name(), "cursor", c.Seq)
				c.Seq = 0
			}
			return nil
		})
		if err != nil {
			r.log.Warn("ledger sink cannot check its cursor against the store; resuming from it", "sink", r.sink.Name(), "err", err)
		}
	}
	if c.Seq < head {
		r.log.Info("ledger sink resumes", "sink", r.sink.Name(), "from", c.Seq, "head", head)
	}
	return c.Seq
}

func (r *sinkRunner) notify(head int64) {
	r.mu.Lock()
	if head > r.target {
		r.target = head
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *sinkRunner) run(ctx context.Context) {
	defer close(r.done)
	backoff := 100 * time.Millisecond
	for {
		r.mu.Lock()
		target, sent := r.target, r.sent
		r.mu.Unlock()
		if sent >= target {
			select {
			case <-r.wake:
				continue
			case <-r.quit:
				return
			}
		}
		var batch []Event
		err := r.store.Scan(ctx, r.instance, sent, 500, func(se StoredEvent) error {
			ev, err := decodeBody(se.Body)
			if err != nil {
				return err
			}
			batch = append(batch, ev)
			return nil
		})
		if err == nil && len(batch) > 0 {
			err = r.sink.Write(ctx, batch)
		}
		if err != nil {
			r.log.Warn("ledger sink cannot deliver; will retry", "sink", r.sink.Name(), "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-r.quit:
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if len(batch) == 0 {
			// The store has fewer events than announced (retention): nothing to send.
			r.mu.Lock()
			r.sent = target
			r.mu.Unlock()
			continue
		}
		last := &batch[len(batch)-1]
		if r.cursor != nil {
			if err := r.cursor.save(last.Seq, last.Hash); err != nil {
				// Delivery goes on; after a restart the sink receives these events again.
				r.log.Warn("ledger sink cursor not saved", "sink", r.sink.Name(), "err", err)
			}
		}
		r.mu.Lock()
		r.sent = last.Seq
		r.mu.Unlock()
	}
}

// close delivers what is pending (within ctx) and closes the sink.
func (r *sinkRunner) close(ctx context.Context) error {
	// Give the runner until ctx ends to catch up, then stop it.
	deadline := time.NewTicker(10 * time.Millisecond)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		caught := r.sent >= r.target
		r.mu.Unlock()
		if caught || ctx.Err() != nil {
			break
		}
		select {
		case <-deadline.C:
		case <-ctx.Done():
		case <-r.done:
		}
	}
	close(r.quit)
	r.cancel()
	<-r.done
	return r.sink.Close()
}
