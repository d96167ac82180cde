package pg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// DefaultMaxMessageSize bounds one protocol message when Server.MaxMessageSize is zero. It
// is far above anything a real client sends in one message (PostgreSQL itself limits most
// messages to 1 GiB but a proxy must not buffer that much per connection).
const DefaultMaxMessageSize = 64 << 20

// frameReader reads typed protocol messages (1-byte type, int32 length including itself,
// body). It keeps one reusable buffer so the hot path does not allocate; the returned frame
// is valid only until the next call. pgproto3's Backend/Frontend readers decode every
// message into structs, which the relay does not need for most messages; this reader lets
// untouched bytes pass through and leaves decoding (with pgproto3 types) to the caller.
//
// Input is read into a small buffer of the reader's own while messages are small (a round
// trip of pgbench fits in it), and into a large one (readSize) taken from the door's pool
// when they are not; the large one goes back to the pool when everything read has been
// handed out, so an idle session, blocked reading its next message, holds none.
type frameReader struct {
	rd    io.Reader
	rb    []byte // the buffer input is read into: small[:] or a large one (bp)
	r, w  int    // rb[r:w] is read and not yet handed out
	bp    *[]byte
	pool  *sync.Pool // of *[]byte of readSize; nil keeps a large buffer once taken
	small [smallRead]byte
	max   int
	buf   []byte  // assembles messages larger than readSize
	hdr   [5]byte // kept here so reading a header does not allocate
	n     int64   // bytes read so far, for metrics

	// Client readers only: budget is shared by every connection of a door, so messages
	// larger than bigMessage cannot together hold more memory than it allows (held is this
	// reader's share, given back at the next message); conn and bodyTimeout bound the time
	// a message that has started arriving may take to arrive whole.
	budget      *messageBudget
	held        int64
	conn        interface{ SetReadDeadline(time.Time) error }
	bodyTimeout time.Duration

	// The upstream reader only: hint is told when the messages handed out become, and stop
	// being, the rows of a streaming result (streaming says which was told last).
	hint      bulkHinter
	streaming bool
}

// bulkHinter is a reader that reads a streaming result differently (rawSock's bulk reading).
type bulkHinter interface {
	// bulk is on while the messages handed out are DataRow or CopyData, off from the first
	// other message.
	bulk(on bool)
}

// bulk passes the hint to the upstream connection's socket reader.
func (u *upReader) bulk(on bool) { u.raw.bulk(on) }

// errFrame is a malformed, oversized or stalled message: the peer is not speaking the
// protocol (SQLSTATE 08P01), or Gatehouse cannot take the message now (code says which).
type errFrame struct {
	msg  string
	code string // SQLSTATE for the client's FATAL; "" means 08P01
}

func (e *errFrame) Error() string { return e.msg }

// sqlstate is the SQLSTATE a client is told when its connection ends because of e.
func (e *errFrame) sqlstate() string {
	if e.code == "" {
		return "08P01"
	}
	return e.code
}

// bigMessage is the size from which a message draws on the door's shared budget: smaller
// ones are the everyday traffic, and the reader's own buffer covers them.
const bigMessage = 256 << 10

// messageBudget bounds the memory all client connections of a door hold for large messages
// at once, so many clients that each declare a large message and stall cannot exhaust
// memory together; the per-message limit alone bounds only one connection.
type messageBudget struct {
	mu    sync.Mutex
	limit int64
	used  int64
}

func newMessageBudget(limit int64) *messageBudget { return &messageBudget{limit: limit} }

// take reserves n bytes, or reports false when the budget cannot cover them now.
func (b *messageBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *messageBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// release gives back the share of the budget the previous large message held.
func (f *frameReader) release() {
	if f.held > 0 {
		f.budget.give(f.held)
		f.held = 0
	}
}

func newFrameReader(r io.Reader, max int) *frameReader {
	if max <= 0 {
		max = DefaultMaxMessageSize
	}
	f := &frameReader{rd: r, max: max}
	f.rb = f.small[:]
	return f
}

// Sizes of the read buffers (see frameReader).
const (
	smallRead = 1 << 10
	readSize  = 32 << 10
)

// idle is called when everything read has been handed out: a large buffer goes back to the
// pool and reading continues in the small one.
func (f *frameReader) idle() {
	f.r, f.w = 0, 0
	if f.bp == nil || f.pool == nil {
		return
	}
	f.pool.Put(f.bp)
	f.bp, f.rb = nil, f.small[:]
}

// fill reads until need bytes are buffered (need <= readSize), moving what is buffered to
// a large buffer when the small one cannot hold need bytes.
func (f *frameReader) fill(need int) error {
	if f.w-f.r >= need {
		return nil
	}
	// Only the first read after everything was handed out goes to the small buffer: a
	// message that did not arrive whole in it, or more input after it, is a larger burst
	// (a result streaming in), read in large reads.
	small := f.bp == nil // (a large buffer, once taken, is f.rb until idle gives it back)
	if len(f.rb)-f.r < need || small && f.w > 0 {
		if need > len(f.rb) || small {
			if f.bp == nil {
				if bp, ok := f.poolGet(); ok {
					f.bp = bp
				} else {
					b := make([]byte, readSize)
					f.bp = &b
				}
			}
			f.w = copy(*f.bp, f.rb[f.r:f.w])
			f.rb = *f.bp
		} else {
			f.w = copy(f.rb, f.rb[f.r:f.w])
		}
		f.r = 0
	}
	for empty := 0; f.w-f.r < need; {
		n, err := f.rd.Read(f.rb[f.w:])
		f.w += n
		if f.w-f.r >= need {
			return nil
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if empty++; empty >= 100 {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

func (f *frameReader) poolGet() (*[]byte, bool) {
	if f.pool == nil {
		return nil, false
	}
	bp, ok := f.pool.Get().(*[]byte)
	return bp, ok
}

// shrinkAbove is the buffer size above which the reader gives a grown buffer back after a
// large message, so an idle session does not keep megabytes alive.
const shrinkAbove = 1 << 20

// next returns the next whole message: frame[0] is the type, frame[1:5] the length and
// frame[5:] the body. A message that fits the read buffer is returned in place, without a
// copy; a larger one is assembled in the reader's own buffer, which only sessions that
// receive such messages ever allocate.
func (f *frameReader) next() ([]byte, error) {
	f.release()
	if cap(f.buf) > shrinkAbove {
		f.buf = nil
	}
	if f.r == f.w {
		f.idle()
	}
	if err := f.fill(5); err != nil {
		if f.w > f.r && errors.Is(err, io.EOF) {
			return nil, &errFrame{msg: "connection closed inside a message header"}
		}
		return nil, err
	}
	hdr := f.hdr[:]
	copy(hdr, f.rb[f.r:f.r+5])
	n := int64(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 {
		return nil, &errFrame{msg: fmt.Sprintf("invalid message length %d for message type %q", n, hdr[0])}
	}
	if n > int64(f.max) {
		return nil, &errFrame{msg: fmt.Sprintf("message of type %q is %d bytes long, more than the limit of %d bytes", hdr[0], n, f.max)}
	}
	total := int(n) + 1
	if f.hint != nil {
		if on := hdr[0] == 'D' || hdr[0] == 'd'; on != f.streaming {
			f.streaming = on
			f.hint.bulk(on)
		}
	}
	if f.budget != nil && n > bigMessage {
		if !f.budget.take(int64(total)) {
			return nil, &errFrame{msg: fmt.Sprintf("gatehouse is holding too many large messages from all clients to take a message of %d bytes now; retry shortly", n-4), code: "53200"}
		}
		f.held = int64(total)
	}
	stallable := f.conn != nil && f.bodyTimeout > 0 && f.w-f.r < total
	if stallable {
		// The rest of the message must arrive in time: a client that declares a message
		// and stops sending must not hold its buffer (and budget) forever.
		_ = f.conn.SetReadDeadline(time.Now().Add(f.bodyTimeout))
	}
	var frame []byte
	var err error
	if total <= readSize {
		if err = f.fill(total); err == nil {
			frame = f.rb[f.r : f.r+total : f.r+total] // an append by the caller must not reach the next message
			f.r += total
		}
	} else {
		if cap(f.buf) < total {
			f.buf = make([]byte, total)
		}
		f.buf = f.buf[:total]
		k := copy(f.buf, f.rb[f.r:f.w])
		f.r += k
		if k < total {
			_, err = io.ReadFull(f.rd, f.buf[k:])
		}
		frame = f.buf
	}
	if stallable {
		_ = f.conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		f.release() // the message is abandoned: its share of the budget goes back now
		var ne net.Error
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			return nil, &errFrame{msg: fmt.Sprintf("connection closed inside a message of type %q of %d bytes", hdr[0], n-4)}
		case errors.As(err, &ne) && ne.Timeout():
			return nil, &errFrame{msg: fmt.Sprintf("a message of type %q of %d bytes did not arrive whole within %s", hdr[0], n-4, f.bodyTimeout)}
		}
		return nil, err
	}
	f.n += int64(total)
	return frame, nil
}

// nextBuffered returns the next message when it is of type typ and already read whole, nil
// otherwise (without reading: next then takes it), so a run of messages of one type (the
// rows of a COPY) can be relayed in one loop.
func (f *frameReader) nextBuffered(typ byte) []byte {
	b := f.rb[f.r:f.w]
	if len(b) < 5 || b[0] != typ {
		return nil
	}
	total := int(binary.BigEndian.Uint32(b[1:])) + 1
	if total < 5 || total > len(b) || total-1 > f.max {
		return nil
	}
	f.release()
	f.r += total
	f.n += int64(total)
	return b[:total:total]
}

// buffered reports whether more input is already waiting, so writers can delay a flush
// until a burst (a pipeline) has been relayed.
func (f *frameReader) buffered() int { return f.w - f.r }

// leftover returns what is read and not handed out yet.
func (f *frameReader) leftover() []byte { return f.rb[f.r:f.w] }

// cstring returns the NUL-terminated string at the start of b and the rest after it.
func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}
