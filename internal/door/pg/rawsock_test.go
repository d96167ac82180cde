//go:build linux

package pg

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/upstream"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	a, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

func rawOf(t testing.TB, c net.Conn) *rawSock {
	t.Helper()
	rs, ok := newRawSock(c)
	if !ok {
		t.Fatalf("newRawSock(%T) refused a TCP connection", c)
	}
	return rs
}

// A write larger than the socket buffers waits for the reader (EAGAIN, then the poller)
// and arrives whole and in order; the peer's close reads as io.EOF.
func TestRawSockLargeWriteAndEOF(t *testing.T) {
	a, b := tcpPair(t)
	wa, rb := rawOf(t, a), rawOf(t, b)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	werr := make(chan error, 1)
	go func() {
		n, err := wa.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = a.Close()
		}
		werr <- err
	}()
	got, err := io.ReadAll(rb)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written (or not in order)", len(got), len(want))
	}
	if n, err := rb.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
}

// A read honours the connection's deadline, and Close ends a read that waits.
func TestRawSockDeadlineAndClose(t *testing.T) {
	a, _ := tcpPair(t)
	ra := rawOf(t, a)
	_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := ra.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	_ = a.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := ra.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	_ = a.Close()
	expectClosedRead(t, done, "a waiting read")
}

// The upstream reader returns the bytes given back to the connection before the socket's.
func TestUpReaderReadsUnreadFirst(t *testing.T) {
	a, b := tcpPair(t)
	up := &upstream.Conn{Conn: b}
	up.Unread([]byte("given back"))
	u := &upReader{up: up, raw: rawOf(t, b)}
	if _, err := a.Write([]byte(" then the socket")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 64)
	for len(got) < len("given back then the socket") {
		n, err := u.Read(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "given back then the socket" {
		t.Fatalf("read %q", got)
	}
}

// A session over plain TCP relays through raw sockets on both sides; TLS connections keep
// their own reads and writes.
func TestRelayUsesRawSockets(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 10*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	if _, err := c.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	e.srv.mu.Lock()
	var rs []*relay
	for _, l := range e.srv.sessions {
		rs = append(rs, l...)
	}
	e.srv.mu.Unlock()
	if len(rs) != 1 {
		t.Fatalf("%d relays registered, want 1", len(rs))
	}
	r := rs[0]
	if _, ok := r.cr.rd.(*rawSock); !ok {
		t.Errorf("client reader is %T, want *rawSock", r.cr.rd)
	}
	if _, ok := r.out.w.(*rawSock); !ok {
		t.Errorf("client writer is %T, want *rawSock", r.out.w)
	}
	if _, ok := r.ur.rd.(*upReader); !ok {
		t.Errorf("upstream reader is %T, want *upReader", r.ur.rd)
	}
	if _, ok := r.uw.w.(*rawSock); !ok {
		t.Errorf("upstream writer is %T, want *rawSock", r.uw.w)
	}
	a, _ := tcpPair(t)
	if _, ok := newRawSock(tlsLike{a}); ok {
		t.Error("newRawSock took a connection that is not a plain socket")
	}
}

// A TLS session runs over raw socket calls too, and relays a large result whole.
func TestTLSRelaysOverRawSockets(t *testing.T) {
	e := startEnv(t, func(e *env) { e.srv.TLS = selfSigned(t) })
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, strings.Replace(e.dsn("alice", "main"), "sslmode=disable", "sslmode=require", 1))
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatal("sslmode=require connection is not TLS")
	}
	var n, total int64
	if err := c.QueryRow(ctx, "select count(*), sum(length(x)) from (select repeat('y', g) x from generate_series(1, 3000) g) s").Scan(&n, &total); err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(ctx, "select repeat('y', g) from generate_series(1, 3000) g")
	if err != nil {
		t.Fatal(err)
	}
	var got, sum int64
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got++
		sum += int64(len(s))
	}
	if rows.Err() != nil || got != n || sum != total {
		t.Fatalf("TLS result: %d rows of %d bytes, want %d of %d (%v)", got, sum, n, total, rows.Err())
	}
	e.srv.mu.Lock()
	var rs []*relay
	for _, l := range e.srv.sessions {
		rs = append(rs, l...)
	}
	e.srv.mu.Unlock()
	if len(rs) != 1 {
		t.Fatalf("%d relays registered, want 1", len(rs))
	}
	tc, ok := rs[0].client.(*tls.Conn)
	if !ok {
		t.Fatalf("client connection is %T, want *tls.Conn", rs[0].client)
	}
	if _, ok := tc.NetConn().(*sockConn); !ok {
		t.Errorf("TLS runs over %T, want *sockConn", tc.NetConn())
	}
}

// tlsLike is a connection that wraps a socket, as a TLS connection does.
type tlsLike struct{ net.Conn }

// A round trip of reads and writes allocates nothing (a closure per call would).
func TestRawSockAllocatesNothing(t *testing.T) {
	a, b := tcpPair(t)
	wa, rb := rawOf(t, a), rawOf(t, b)
	msg := []byte("Q\x00\x00\x00\x0dselect 1\x00")
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := wa.Write(msg); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(msg); {
			k, err := rb.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			n += k
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per write and read, want 0", allocs)
	}
}

// readN reads exactly n bytes from r within d, or fails the test: a read that waits for a
// low-water mark the peer never reaches would hang.
// expectClosedRead waits for the result of a read that Close of its connection must end
// (what names the read in the failure): net.ErrClosed, within 5 s.
func expectClosedRead(t *testing.T, result <-chan error, what string) {
	t.Helper()
	select {
	case err := <-result:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Close did not end %s", what)
	}
}

func readN(t *testing.T, r io.Reader, n int, d time.Duration) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	errc := make(chan error, 1)
	go func() {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			errc <- err
			return
		}
		got <- b
	}()
	select {
	case b := <-got:
		return b
	case err := <-errc:
		t.Fatalf("read %d bytes: %v", n, err)
	case <-time.After(d):
		t.Fatalf("%d bytes written were not read within %s", n, d)
	}
	return nil
}

// lowatOf returns the socket's receive low-water mark, 1 for the default (an accepted
// socket reports 0, which the kernel reads as 1).
func lowatOf(t *testing.T, rs *rawSock) int {
	t.Helper()
	v, err := rs.lowat()
	if err != nil {
		t.Fatal(err)
	}
	return max(v, 1)
}

// writeLater writes the chunks to w in order from another goroutine, pausing pause
// between them, and returns a channel that gets the first error once all are written; the
// caller waits for it before w writes again (a rawSock has one writer at a time).
func writeLater(w io.Writer, pause time.Duration, chunks ...[]byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		for i, c := range chunks {
			if i > 0 {
				time.Sleep(pause)
			}
			if _, err := w.Write(c); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

func waitWritten(t *testing.T, done <-chan error) {
	t.Helper()
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
}

// Bulk reading: once bulkAfter bytes of a streaming result are read, a read that has to
// wait raises the socket's low-water mark for at most bulkWait; a tail smaller than the mark
// (the end of a result) still arrives, after which the mark is back to the default; below
// bulkAfter, or with the hint off, nothing is raised; the hint going off lowers a raised
// mark at once.
func TestRawSockBulkReadsTheTail(t *testing.T) {
	a, b := tcpPair(t)
	w, r := rawOf(t, a), rawOf(t, b)
	r.enableBulk(b)
	r.bulk(true)

	// A small result, and a wait after it, as before: no mark.
	small := bytes.Repeat([]byte{'s'}, 1000)
	done := writeLater(w, 20*time.Millisecond, small, small)
	readN(t, r, 2000, 5*time.Second)
	waitWritten(t, done)
	if m, n := lowatOf(t, r), r.raises.Load(); m != 1 || n != 0 {
		t.Fatalf("mark %d after %d raises below bulkAfter, want 1 and none", m, n)
	}

	// A large one: past bulkAfter, the read that waits for the tail raises the mark, and
	// the tail (written well after bulkWait) is read all the same.
	r.bulk(false)
	r.bulk(true)
	big := make([]byte, bulkAfter)
	for i := range big {
		big[i] = byte(i)
	}
	tail := []byte("CommandComplete and ReadyForQuery")
	done = writeLater(w, 0, big)
	if got := readN(t, r, len(big), 10*time.Second); !bytes.Equal(got, big) {
		t.Fatal("bytes read differ from those written")
	}
	waitWritten(t, done)
	gotTail := make(chan []byte, 1)
	go func() {
		b := make([]byte, 64)
		n, err := r.Read(b)
		if err != nil {
			t.Errorf("read the tail: %v", err)
		}
		gotTail <- b[:n]
	}()
	eventually(t, 5*time.Second, "the read to raise the mark", func() bool { return r.raises.Load() == 1 })
	time.Sleep(10 * bulkWait)
	waitWritten(t, writeLater(w, 0, tail))
	select {
	case got := <-gotTail:
		if !bytes.Equal(got, tail) {
			t.Fatalf("tail read %q, want %q", got, tail)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a tail smaller than the low-water mark was not read")
	}
	if m, n := lowatOf(t, r), r.raises.Load(); m != 1 || n != 1 {
		t.Fatalf("after the tail: mark %d, %d raises; want 1 and 1", m, n)
	}

	// The hint going off puts a raised mark back at once.
	if err := r.rc.Control(func(fd uintptr) {
		if err := setLowat(fd, bulkLowat); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	r.raised = true
	r.bulk(false)
	if m := lowatOf(t, r); m != 1 || r.raised {
		t.Fatalf("mark %d (raised %v) once the hint is off, want 1", m, r.raised)
	}

	// With the hint off nothing is raised, however much is read.
	done = writeLater(w, 20*time.Millisecond, big, tail)
	readN(t, r, len(big)+len(tail), 10*time.Second)
	waitWritten(t, done)
	if m, n := lowatOf(t, r), r.raises.Load(); m != 1 || n != 1 {
		t.Fatalf("with the hint off: mark %d, %d raises; want 1 and still 1", m, n)
	}
}

// With the hint on, a deadline set on the connection below bulkAfter is honoured as before,
// and Close ends a read that waits after a bulk wait.
func TestRawSockBulkCloseAndDeadline(t *testing.T) {
	a, b := tcpPair(t)
	w, r := rawOf(t, a), rawOf(t, b)
	r.enableBulk(b)
	r.bulk(true)
	_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := r.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	_ = b.SetReadDeadline(time.Time{})

	big := make([]byte, bulkAfter)
	done := writeLater(w, 0, big)
	readN(t, r, len(big), 10*time.Second)
	waitWritten(t, done)
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		errc <- err
	}()
	eventually(t, 5*time.Second, "a bulk wait", func() bool { return r.raises.Load() == 1 })
	time.Sleep(20 * time.Millisecond)
	_ = b.Close()
	expectClosedRead(t, errc, "the read")
}
