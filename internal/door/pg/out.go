package pg

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// Sizes of the client-bound output buffer (see clientOut).
const (
	// outBufSize is the capacity the buffers of the door's pool are made with (and the
	// size at which upWriter writes): a round trip's output fits many times.
	outBufSize = 32 << 10
	// outFlushAt is the size at which the relayed bytes that nothing holds back are written
	// without waiting for the end of the burst. It is larger than outBufSize: the rows of a
	// large result leave in writes of this size, a quarter of the system calls (and of the
	// client's wake-ups) of 32 KiB writes; the buffer grows to it once and goes back to the
	// pool grown (up to outShrinkAbove).
	outFlushAt = 128 << 10
	// outHoldMax bounds the bytes held back behind unanswered ledger records: above it the
	// upstream loop waits for the records instead of reading on.
	outHoldMax = 256 << 10
	// outShrinkAbove is the capacity above which the buffer is given back once empty, so an
	// idle session does not keep a large result's buffer alive.
	outShrinkAbove = 1 << 20
)

// clientOut is everything the upstream loop sends the client (it is owned by that loop).
// Relayed bytes are collected while a burst of upstream messages is handled and written with
// one write when the burst ends, the way a pooler relays.
//
// A statement's completion enters together with the Ack of its ledger record, and holds
// back itself and everything after it until that Ack is answered: the client never sees a
// result whose record is not on record, and never sees anything ahead of one. Meanwhile the
// relay keeps forwarding and reading upstream, so the records of a pipeline are committed
// together (one group commit) instead of one after another. A record that fails turns its
// completion into ledgerError (58000); the completion itself never leaves.
//
// An idle session holds no buffer: once everything queued has been written, the buffer goes
// back to the door's pool (when pool is set) and the next message takes one again.
type clientOut struct {
	w     io.Writer
	buf   []byte
	bp    *[]byte    // the pool's holder of buf, reused for the hand-back
	pool  *sync.Pool // of *[]byte with outBufSize capacity or more; nil keeps the buffer
	holds []hold     // in buffer order
	err   error      // the first failed write; later writes are dropped
	// failed is told about every record that could not be written (for the log).
	failed func(error)
}

// hold is a span of clientOut.buf that waits for a ledger record.
type hold struct {
	start, end int
	ack        *ledger.Ack
	// completion: the span is the statement's completion, replaced by ledgerError when the
	// record fails. Otherwise the span is empty and only orders what follows after a record
	// (a refusal the client never sees).
	completion bool
}

func newClientOut(w io.Writer, failed func(error)) *clientOut {
	return &clientOut{w: w, failed: failed}
}

// take gives the empty buffer a backing array: the pool's, else a new one.
func (o *clientOut) take() {
	if o.pool != nil {
		if bp, ok := o.pool.Get().(*[]byte); ok {
			o.bp, o.buf = bp, (*bp)[:0]
			return
		}
	}
	o.buf = make([]byte, 0, outBufSize)
}

// giveBack returns the empty buffer's backing array to the pool, so an idle session holds
// none; one grown for a large result is left to the collector instead.
func (o *clientOut) giveBack() {
	if o.pool == nil || cap(o.buf) > outShrinkAbove {
		if cap(o.buf) > outShrinkAbove {
			o.buf, o.bp = nil, nil
		}
		return
	}
	if o.bp == nil {
		o.bp = new([]byte)
	}
	*o.bp = o.buf[:0]
	o.pool.Put(o.bp)
	o.buf, o.bp = nil, nil
}

// emit queues frame for the client. When the buffer is full, what nothing holds back is
// written now.
func (o *clientOut) emit(frame []byte) {
	if cap(o.buf) == 0 {
		o.take()
	}
	if len(o.holds) == 0 && len(o.buf)+len(frame) > outFlushAt {
		// Nothing held: write what is queued, and a large frame directly, without copying.
		o.writeOut(o.buf)
		o.buf = o.buf[:0]
		if len(frame) >= outFlushAt {
			o.writeOut(frame)
			return
		}
	}
	o.buf = append(o.buf, frame...)
	if len(o.buf) > outFlushAt && len(o.holds) > 0 {
		o.release(context.Background(), false)
	}
}

// tail returns the queue for the caller to append one message of about n bytes to in
// place (then commit), saving the copy emit makes; what nothing holds back is written first
// when the message would not fit, as emit does.
func (o *clientOut) tail(n int) []byte {
	if cap(o.buf) == 0 {
		o.take()
	}
	if len(o.holds) == 0 && len(o.buf) > 0 && len(o.buf)+n > outFlushAt {
		o.writeOut(o.buf)
		o.buf = o.buf[:0]
	}
	return o.buf
}

// commit takes back the queue tail returned, with one message appended to it.
func (o *clientOut) commit(buf []byte) {
	o.buf = buf
	if len(o.buf) > outFlushAt && len(o.holds) > 0 {
		o.release(context.Background(), false)
	}
}

// emitHeld queues a statement's completion behind the Ack of its record.
func (o *clientOut) emitHeld(ack *ledger.Ack, completion []byte) {
	if cap(o.buf) == 0 {
		o.take()
	}
	start := len(o.buf)
	o.buf = append(o.buf, completion...)
	o.holds = append(o.holds, hold{start: start, end: len(o.buf), ack: ack, completion: true})
}

// after makes everything queued from now on wait for ack as well (a record whose failure
// the client is not told about).
func (o *clientOut) after(ack *ledger.Ack) {
	o.holds = append(o.holds, hold{start: len(o.buf), end: len(o.buf), ack: ack})
}

// holding reports how many bytes wait for unanswered records.
func (o *clientOut) holding() int {
	if len(o.holds) == 0 {
		return 0
	}
	return len(o.buf) - o.holds[0].start
}

// release writes what may leave. With wait it waits (within ctx) for every record the
// buffer holds and writes all of it; without, it writes up to the first record that is not
// answered yet. It returns the first write error.
func (o *clientOut) release(ctx context.Context, wait bool) error {
	stop, settled, failed := len(o.buf), 0, false
	for i := range o.holds {
		h := &o.holds[i]
		if !wait && !h.ack.Answered() {
			stop = h.start
			break
		}
		if err := h.ack.Wait(ctx); err != nil {
			o.failed(err)
			if h.completion {
				h.ack, failed = nil, true
			}
		}
		settled++
	}
	if failed {
		o.writeOut(o.replaceFailed(o.holds[:settled], stop))
	} else {
		o.writeOut(o.buf[:stop])
	}
	n := copy(o.buf, o.buf[stop:])
	o.buf = o.buf[:n]
	rest := copy(o.holds, o.holds[settled:])
	clear(o.holds[rest:])
	o.holds = o.holds[:rest]
	for i := range o.holds {
		o.holds[i].start -= stop
		o.holds[i].end -= stop
	}
	if n == 0 && cap(o.buf) > 0 {
		o.giveBack()
	}
	return o.err
}

// replaceFailed returns buf[:stop] with the completions of failed records (holds whose
// ack was cleared) replaced by ledgerError.
func (o *clientOut) replaceFailed(holds []hold, stop int) []byte {
	msg, err := ledgerError().Encode(nil)
	if err != nil {
		o.err = fmt.Errorf("encode ledger error: %w", err)
		return nil
	}
	out := make([]byte, 0, stop+len(msg))
	pos := 0
	for _, h := range holds {
		if h.ack != nil || !h.completion {
			continue
		}
		out = append(out, o.buf[pos:h.start]...)
		out = append(out, msg...)
		pos = h.end
	}
	return append(out, o.buf[pos:stop]...)
}

func (o *clientOut) writeOut(b []byte) {
	if len(b) == 0 || o.err != nil {
		return
	}
	if _, err := o.w.Write(b); err != nil {
		o.err = fmt.Errorf("write to client: %w", err)
	}
}

// upWriter buffers what the client loop sends upstream until Flush, like a bufio.Writer of
// outBufSize bytes, in a buffer taken from the door's pool (when pool is set) and given back
// once flushed, so an idle session holds none.
type upWriter struct {
	w    io.Writer
	buf  []byte
	bp   *[]byte
	pool *sync.Pool // of *[]byte with outBufSize capacity or more; nil keeps the buffer
	err  error      // the first failed write: every later Write and Flush returns it
}

func newUpWriter(w io.Writer) *upWriter { return &upWriter{w: w} }

// Write queues p, writing what is queued first when p does not fit, and p itself when it is
// as large as the buffer.
func (u *upWriter) Write(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	if len(u.buf)+len(p) > outBufSize && len(u.buf) > 0 {
		if err := u.Flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= outBufSize {
		n, err := u.w.Write(p)
		u.err = err
		return n, err
	}
	if cap(u.buf) == 0 {
		u.take()
	}
	u.buf = append(u.buf, p...)
	return len(p), nil
}

// Flush writes what is queued and gives the buffer back to the pool.
func (u *upWriter) Flush() error {
	if u.err != nil {
		return u.err
	}
	if len(u.buf) > 0 {
		if _, err := u.w.Write(u.buf); err != nil {
			u.err = err
			return err
		}
	}
	if u.pool != nil && cap(u.buf) > 0 {
		if u.bp == nil {
			u.bp = new([]byte)
		}
		*u.bp = u.buf[:0]
		u.pool.Put(u.bp)
		u.buf, u.bp = nil, nil
	}
	u.buf = u.buf[:0]
	return nil
}

// Reset drops what is queued and makes u write to w.
func (u *upWriter) Reset(w io.Writer) {
	u.w, u.buf, u.err = w, u.buf[:0], nil
}

func (u *upWriter) take() {
	if u.pool != nil {
		if bp, ok := u.pool.Get().(*[]byte); ok {
			u.bp, u.buf = bp, (*bp)[:0]
			return
		}
	}
	u.buf = make([]byte, 0, outBufSize)
}
