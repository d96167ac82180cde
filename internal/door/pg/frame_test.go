package pg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

// TestFrameReaderChunks reads the same messages however the bytes arrive — one read for
// everything (each message is then returned from the reader's buffer without a copy), one
// byte at a time, or in chunks that split headers and bodies — and gets the same frames and
// byte count. Messages too large for the buffer, or large enough to draw on the door's
// budget, take the long way.
func TestFrameReaderChunks(t *testing.T) {
	var msgs [][]byte
	for _, size := range []int{0, 1, 60, 4000, 32<<10 - 5, 32 << 10, bigMessage + 10, 7} {
		body := bytes.Repeat([]byte{byte(size)}, size)
		msgs = append(msgs, frame('D', body))
	}
	stream := bytes.Join(msgs, nil)
	readers := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(stream) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"halves":   func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			fr := newFrameReader(mk(), 1<<20)
			fr.budget = newMessageBudget(1 << 20)
			for i, want := range msgs {
				got, err := fr.next()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(want))
				}
			}
			if _, err := fr.next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the last message: %v, want EOF", err)
			}
			if fr.n != int64(len(stream)) {
				t.Fatalf("counted %d bytes, read %d", fr.n, len(stream))
			}
		})
	}
	// Whatever is buffered, a bad length is reported, not returned as a frame.
	for _, bad := range [][]byte{{'Q', 0, 0, 0, 3, 'x', 'x', 'x'}, {'Q', 0x7f, 0, 0, 0, 0, 0, 0}} {
		fr := newFrameReader(bytes.NewReader(bad), 1<<16)
		var fe *errFrame
		if _, err := fr.next(); !errors.As(err, &fe) {
			t.Fatalf("%x: %v, want a malformed-message error", bad, err)
		}
	}
}

// hintLog records a frameReader's bulk hints.
type hintLog struct{ hints []bool }

func (h *hintLog) bulk(on bool) { h.hints = append(h.hints, on) }

// TestFrameReaderBulkHints: the upstream reader says when the messages it hands out become
// rows of a result (DataRow, CopyData) and when they stop being, once per change, whether
// rows come through next or nextBuffered: so the socket's bulk reading ends at the first
// message after the rows.
func TestFrameReaderBulkHints(t *testing.T) {
	stream := bytes.Join([][]byte{
		frame('T', []byte("cols")), frame('D', []byte("r1")), frame('D', []byte("r2")), frame('D', []byte("r3")),
		frame('C', []byte("SELECT 3\x00")), frame('H', []byte("copy")), frame('d', []byte("l1")), frame('d', []byte("l2")),
		frame('c', nil), frame('C', []byte("COPY 2\x00")), frame('Z', []byte("I")),
	}, nil)
	h := &hintLog{}
	fr := newFrameReader(bytes.NewReader(stream), 1<<20)
	fr.hint = h
	var types []byte
	for {
		f, err := fr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, f[0])
		for f[0] == 'D' || f[0] == 'd' {
			if f = fr.nextBuffered(f[0]); f == nil {
				break
			}
			types = append(types, f[0])
		}
	}
	if string(types) != "TDDDCHddcCZ" {
		t.Fatalf("read %q", types)
	}
	if fmt.Sprint(h.hints) != "[true false true false]" {
		t.Fatalf("hints %v, want on and off around each run of rows", h.hints)
	}
}
