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
// from the store when it recovers.
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

// Name implements Sink.
func (s *WebhookSink) Name() string { return "webhook:" + s.URL }

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
// Delivery starts at the head the ledger found at start-up; events committed while the
// process was down are delivered only by an export.
type sinkRunner struct {
	sink     Sink
	store    Store
	instance string
	log      *slog.Logger

	mu     sync.Mutex
	target int64
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}
	sent   int64
	cancel context.CancelFunc
}

func newSinkRunner(st Store, instance string, from int64, s Sink, log *slog.Logger) *sinkRunner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &sinkRunner{sink: s, store: st, instance: instance, log: log, target: from, sent: from,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	go r.run(ctx)
	return r
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
		target := r.target
		r.mu.Unlock()
		if r.sent >= target {
			select {
			case <-r.wake:
				continue
			case <-r.quit:
				return
			}
		}
		var batch []Event
		err := r.store.Scan(ctx, r.instance, r.sent, 500, func(se StoredEvent) error {
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
			r.log.Warn("ledger sink cannot deliver; will retry", "sink", r.sink.Name(), "err", err)
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
		r.mu.Lock()
		r.sent = batch[len(batch)-1].Seq
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
