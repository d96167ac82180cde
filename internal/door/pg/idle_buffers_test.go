package pg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/iotest"
)

// frameOf builds one message of type t with a body of n bytes.
func frameOf(t byte, n int) []byte {
	f := append([]byte{t}, binary.BigEndian.AppendUint32(nil, uint32(n+4))...)
	for i := 0; i < n; i++ {
		f = append(f, byte(i*7+int(t)))
	}
	return f
}

// TestFrameReaderBuffers reads messages of every size class (within the small buffer,
// straddling it, filling the large one, beyond it) through readers that deliver a byte at a
// time, half a read, or everything, and checks each frame, and that a reader whose input is
// all handed out holds no large buffer.
func TestFrameReaderBuffers(t *testing.T) {
	sizes := []int{0, 10, smallRead - 5, smallRead - 4, smallRead, 3 * smallRead, readSize - 5, readSize - 4, readSize, 3 * readSize, 20}
	var all []byte
	var want [][]byte
	for i, n := range sizes {
		f := frameOf(byte('a'+i), n)
		want = append(want, f)
		all = append(all, f...)
	}
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"whole": func(r io.Reader) io.Reader { return r },
		"byte":  iotest.OneByteReader,
		"half":  iotest.HalfReader,
	} {
		t.Run(name, func(t *testing.T) {
			var pool sync.Pool
			f := newFrameReader(wrap(bytes.NewReader(all)), 0)
			f.pool = &pool
			for i, w := range want {
				got, err := f.next()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(got, w) || cap(got) != len(got) && len(got) <= readSize {
					t.Fatalf("message %d: %d bytes (cap %d), want %d", i, len(got), cap(got), len(w))
				}
			}
			if _, err := f.next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the last message: %v", err)
			}
			if f.bp != nil || &f.rb[0] != &f.small[0] {
				t.Fatal("a reader with nothing buffered still holds a large buffer")
			}
		})
	}
}

func TestFrameReaderTruncated(t *testing.T) {
	full := frameOf('D', 3*smallRead)
	for _, n := range []int{2, 7, smallRead + 3, len(full) - 1} {
		f := newFrameReader(bytes.NewReader(full[:n]), 0)
		_, err := f.next()
		var fe *errFrame
		if !errors.As(err, &fe) {
			t.Fatalf("%d of %d bytes: %v, want a frame error", n, len(full), err)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, io.ErrClosedPipe
	}
	f.n--
	return len(p), nil
}

// TestUpWriter: writes reach the connection in order and only at Flush (or when the buffer
// is full), a flushed writer holds no buffer, and a failed write fails every later call.
func TestUpWriter(t *testing.T) {
	var pool sync.Pool
	var dst bytes.Buffer
	u := &upWriter{w: &dst, pool: &pool}
	var want []byte
	for _, n := range []int{5, 100, outBufSize - 50, 10, 2 * outBufSize, 7} {
		p := frameOf('Q', n)
		want = append(want, p...)
		if k, err := u.Write(p); err != nil || k != len(p) {
			t.Fatal(k, err)
		}
	}
	if dst.Len() >= len(want) {
		t.Fatal("everything was written before Flush")
	}
	if err := u.Flush(); err != nil || !bytes.Equal(dst.Bytes(), want) {
		t.Fatalf("flushed %d bytes, want %d: %v", dst.Len(), len(want), err)
	}
	if cap(u.buf) != 0 || u.bp != nil {
		t.Fatal("a flushed writer still holds its buffer")
	}
	f := &upWriter{w: &failWriter{n: 0}, pool: &pool}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("y")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatal("a write after a failed one succeeded")
	}
}

// countingReader counts the reads made of it.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// TestFrameReaderStreamsInLargeReads: a result of many small rows (a DataRow stream) is
// read in large reads, not a small buffer at a time.
func TestFrameReaderStreamsInLargeReads(t *testing.T) {
	var all []byte
	const rows = 4000
	for i := 0; i < rows; i++ {
		all = append(all, frameOf('D', 45)...)
	}
	var pool sync.Pool
	cr := &countingReader{r: bytes.NewReader(all)}
	f := newFrameReader(cr, 0)
	f.pool = &pool
	for i := 0; i < rows; i++ {
		if _, err := f.next(); err != nil {
			t.Fatal(i, err)
		}
	}
	if max := 2 + len(all)/(readSize-smallRead); cr.reads > max {
		t.Fatalf("%d bytes of rows took %d reads, want at most %d", len(all), cr.reads, max)
	}
}
