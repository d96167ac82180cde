package pg

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
type frameReader struct {
	br  *bufio.Reader
	max int
	buf []byte
	hdr [5]byte // kept here so reading a header does not allocate
	n   int64   // bytes read so far, for metrics
}

// errFrame is a malformed or oversized message: the peer is not speaking the protocol.
type errFrame struct{ msg string }

func (e *errFrame) Error() string { return e.msg }

func newFrameReader(r io.Reader, max int) *frameReader {
	if max <= 0 {
		max = DefaultMaxMessageSize
	}
	return &frameReader{br: bufio.NewReaderSize(r, 32<<10), max: max, buf: make([]byte, 0, 8<<10)}
}

// shrinkAbove is the buffer size above which the reader gives a grown buffer back after a
// large message, so an idle session does not keep megabytes alive.
const shrinkAbove = 1 << 20

// next returns the next whole message: frame[0] is the type, frame[1:5] the length and
// frame[5:] the body.
func (f *frameReader) next() ([]byte, error) {
	if cap(f.buf) > shrinkAbove {
		f.buf = make([]byte, 0, 8<<10)
	}
	hdr := f.hdr[:]
	if _, err := io.ReadFull(f.br, hdr); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &errFrame{"connection closed inside a message header"}
		}
		return nil, err
	}
	n := int64(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 {
		return nil, &errFrame{fmt.Sprintf("invalid message length %d for message type %q", n, hdr[0])}
	}
	if n > int64(f.max) {
		return nil, &errFrame{fmt.Sprintf("message of type %q is %d bytes long, more than the limit of %d bytes", hdr[0], n, f.max)}
	}
	total := int(n) + 1
	if cap(f.buf) < total {
		f.buf = make([]byte, total)
	}
	f.buf = f.buf[:total]
	copy(f.buf, hdr)
	if _, err := io.ReadFull(f.br, f.buf[5:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, &errFrame{fmt.Sprintf("connection closed inside a message of type %q of %d bytes", hdr[0], n-4)}
		}
		return nil, err
	}
	f.n += int64(total)
	return f.buf, nil
}

// buffered reports whether more input is already waiting, so writers can delay a flush
// until a burst (a pipeline) has been relayed.
func (f *frameReader) buffered() int { return f.br.Buffered() }

// cstring returns the NUL-terminated string at the start of b and the rest after it.
func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}
