package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// handRecorder hands out Acks that the test answers by hand, in any order it likes.
type handRecorder struct {
	mu      sync.Mutex
	answers []func(error)
}

func (h *handRecorder) Record(ctx context.Context, ev *ledger.Event) error { return nil }

func (h *handRecorder) Healthy() error { return nil }

func (h *handRecorder) Submit(ctx context.Context, ev *ledger.Event) *ledger.Ack {
	a, answer := ledger.NewAck()
	h.mu.Lock()
	h.answers = append(h.answers, answer)
	h.mu.Unlock()
	return a
}

func (h *handRecorder) answer(i int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.answers[i](err)
}

func (h *handRecorder) submitted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.answers)
}

func backend(t testing.TB, msgs ...pgproto3.BackendMessage) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// relayUpstream feeds msgs to the response side as the upstream loop would within one burst,
// and writes what may leave without waiting for a record.
func relayUpstream(t *testing.T, r *relay, msgs ...pgproto3.BackendMessage) {
	t.Helper()
	r.ur = newFrameReader(bytes.NewReader(backend(t, msgs...)), 1<<16)
	for {
		fr, err := r.ur.next()
		if err != nil {
			break
		}
		if err := r.fromUpstream(context.Background(), fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.out.release(context.Background(), false); err != nil {
		t.Fatal(err)
	}
}

func allowed() *gate.Check { return &gate.Check{Decision: gate.Decision{Action: gate.Allow}} }

// TestCompletionsWaitForTheirRecords: a pipeline's completions reach the client only once
// their ledger records are answered, in order, while the relay goes on relaying; a record
// that fails turns its completion into 58000 and the completion itself never leaves.
func TestCompletionsWaitForTheirRecords(t *testing.T) {
	row := &pgproto3.DataRow{Values: [][]byte{[]byte("1")}}
	done1 := &pgproto3.CommandComplete{CommandTag: []byte("SELECT 11")}
	done2 := &pgproto3.CommandComplete{CommandTag: []byte("SELECT 22")}
	ready := &pgproto3.ReadyForQuery{TxStatus: 'I'}
	setup := func() (*relay, *bytes.Buffer, *handRecorder) {
		r, out := offlineRelay(bytes.NewReader(nil), nil)
		h := &handRecorder{}
		r.srv.Gate.Recorder = h
		r.push(&pending{request: request{kind: pExecute, check: allowed()}})
		r.push(&pending{request: request{kind: pExecute, check: allowed()}})
		r.push(&pending{request: request{kind: pSync}})
		relayUpstream(t, r, row, done1, row, done2, ready)
		return r, out, h
	}

	t.Run("in order", func(t *testing.T) {
		r, out, h := setup()
		if h.submitted() != 2 {
			t.Fatalf("%d records submitted while relaying, want 2 (the relay must not wait for the first before reading on)", h.submitted())
		}
		if want := backend(t, row); !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("before any record is answered the client got %q, want only the first row %q", out.Bytes(), want)
		}
		// The second record answered first (a ledger never does this): still nothing may
		// overtake the first.
		h.answer(1, nil)
		_ = r.out.release(context.Background(), false)
		if want := backend(t, row); !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("released ahead of an unanswered record: %q", out.Bytes())
		}
		h.answer(0, nil)
		_ = r.out.release(context.Background(), false)
		if want := backend(t, row, done1, row, done2, ready); !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("after both records: %q, want %q", out.Bytes(), want)
		}
	})

	t.Run("partly", func(t *testing.T) {
		r, out, h := setup()
		h.answer(0, nil)
		_ = r.out.release(context.Background(), false)
		if want := backend(t, row, done1, row); !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("after the first record: %q, want %q", out.Bytes(), want)
		}
	})

	t.Run("failed record", func(t *testing.T) {
		r, out, h := setup()
		h.answer(0, errors.New("disk full"))
		h.answer(1, nil)
		if err := r.out.release(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		want := backend(t, row, ledgerError(), row, done2, ready)
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("failed record: client got %q, want %q", out.Bytes(), want)
		}
		if bytes.Contains(out.Bytes(), []byte("SELECT 11")) {
			t.Fatal("the completion of a statement whose record failed was released")
		}
	})
}

// TestSimpleQueryWaitsForItsRecord: a simple Query's last completion and ReadyForQuery wait
// for its record; a failed record shows as 58000 before ReadyForQuery.
func TestSimpleQueryWaitsForItsRecord(t *testing.T) {
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 23}}}
	row := &pgproto3.DataRow{Values: [][]byte{[]byte("1")}}
	cc := &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}
	z := &pgproto3.ReadyForQuery{TxStatus: 'I'}
	for _, fail := range []bool{false, true} {
		r, out := offlineRelay(bytes.NewReader(nil), nil)
		h := &handRecorder{}
		r.srv.Gate.Recorder = h
		r.push(&pending{request: request{kind: pQuery, check: allowed()}})
		relayUpstream(t, r, rd, row, cc, z)
		if want := backend(t, rd, row); !bytes.Equal(out.Bytes(), want) || h.submitted() != 1 {
			t.Fatalf("before the record: %q (%d submitted)", out.Bytes(), h.submitted())
		}
		var err error
		want := backend(t, rd, row, cc, z)
		if fail {
			err = errors.New("disk full")
			want = backend(t, rd, row, ledgerError(), z)
		}
		h.answer(0, err)
		_ = r.out.release(context.Background(), false)
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("fail=%v: client got %q, want %q", fail, out.Bytes(), want)
		}
	}
}

// groupRecorder commits like the ledger's group commit: it gathers submissions for a moment,
// then answers all of them at once, in order, counting commits.
type groupRecorder struct {
	*recorder
	mu      sync.Mutex
	waiting []func(error)
	kick    chan struct{}
	commits atomic.Int64
}

func newGroupRecorder(t *testing.T, rec *recorder) *groupRecorder {
	g := &groupRecorder{recorder: rec, kick: make(chan struct{}, 1)}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-g.kick:
			}
			time.Sleep(2 * time.Millisecond) // gather, as a group commit does
			g.mu.Lock()
			batch := g.waiting
			g.waiting = nil
			g.mu.Unlock()
			g.commits.Add(1)
			for _, answer := range batch {
				answer(nil)
			}
		}
	}()
	t.Cleanup(func() { close(stop) })
	return g
}

func (g *groupRecorder) Submit(ctx context.Context, ev *ledger.Event) *ledger.Ack {
	if err := g.recorder.Record(ctx, ev); err != nil {
		return ledger.AnsweredAck(err)
	}
	a, answer := ledger.NewAck()
	g.mu.Lock()
	g.waiting = append(g.waiting, answer)
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	return a
}

// TestPipelineRecordsCommitTogether: the statements of a pipelined batch do not wait for each
// other's records, so a batch of N statements takes a few group commits, not N.
func TestPipelineRecordsCommitTogether(t *testing.T) {
	var g *groupRecorder
	e := startEnv(t, func(e *env) {
		g = newGroupRecorder(t, e.rec)
		e.srv.Gate.Recorder = g
	})
	ctx := ctxT(t, 60*time.Second)
	const n = 400
	for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
		cfg, err := pgx.ParseConfig(e.dsn("alice", "main"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = m
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		before := g.commits.Load()
		b := &pgx.Batch{}
		for i := range n {
			b.Queue("select $1::int", i)
		}
		br := c.SendBatch(ctx, b)
		for i := range n {
			var got int
			if err := br.QueryRow().Scan(&got); err != nil || got != i {
				t.Fatalf("%v: statement %d: %d, %v", m, i, got, err)
			}
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
		// Waiting for each record before reading on takes one commit per statement.
		if commits := g.commits.Load() - before; commits > n/4 {
			t.Errorf("%v: a batch of %d statements took %d commits; pipelined records must share commits", m, n, commits)
		} else {
			t.Logf("%v: a batch of %d statements took %d commits", m, n, commits)
		}
	}
	if got := len(e.rec.statements("select $1::int")); got < 3*n {
		t.Fatalf("%d statements recorded, want at least %d", got, 3*n)
	}
}

// planRecorder records the statements each result's masking was planned from.
type planRecorder struct {
	ssnMasker
	seen [][]string
}

func (p *planRecorder) Plan(ctx context.Context, s *gate.Session, c *gate.Check, cols []gate.Column) gate.RowMasker {
	var texts []string
	for _, st := range c.Statements {
		texts = append(texts, st.Text)
	}
	p.seen = append(p.seen, texts)
	return nil
}

// TestMultiStatementPlansEachResultOnce: each result of a multi-statement string is planned
// from its own statement, so N statements cost N plans of one statement, not N of N.
func TestMultiStatementPlansEachResultOnce(t *testing.T) {
	pr := &planRecorder{}
	r, _ := offlineRelay(bytes.NewReader(nil), pr)
	r.srv.Gate.Inspector = inspect.New(10)
	c := r.srv.Gate.Check(context.Background(), r.sess, "select 1 as a; set x.y = 1; select 2 as b; select 3 as c", gate.ViaQuery)
	r.push(&pending{request: request{kind: pQuery, check: c}})
	var msgs []pgproto3.BackendMessage
	for i, name := range []string{"a", "", "b", "c"} {
		if name == "" {
			msgs = append(msgs, &pgproto3.CommandComplete{CommandTag: []byte("SET")})
			continue
		}
		msgs = append(msgs,
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte(name), DataTypeOID: 23}}},
			&pgproto3.DataRow{Values: [][]byte{[]byte{byte('0' + i)}}},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	}
	relayUpstream(t, r, append(msgs, &pgproto3.ReadyForQuery{TxStatus: 'I'})...)
	want := [][]string{{"select 1 as a"}, {"select 2 as b"}, {"select 3 as c"}}
	if fmt.Sprint(pr.seen) != fmt.Sprint(want) {
		t.Fatalf("results planned from %q, want %q", pr.seen, want)
	}
}
