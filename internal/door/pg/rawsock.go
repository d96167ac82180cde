//go:build linux

package pg

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// rawSock reads and writes a connection's socket with raw system calls (syscall.RawSyscall
// inside syscall.RawConn's Read and Write), still waiting for readiness and honouring
// deadlines and Close through the runtime's network poller as net.Conn does.
//
// Why not net.Conn's own Read and Write: they enter the system call through the runtime's
// bookkeeping (entersyscall), and that is what keeps Go's monitor thread (sysmon) awake on a
// proxy. sysmon sleeps deeply while every P is idle — which a relay's Ps are between two
// socket events — and the first entersyscall after that wakes it (a futex wake-up of its
// thread), after which it polls every 20 µs for a while; a P whose system call outlasts one
// such tick is also handed off to another thread (retake, handoffp: another wake-up). On a
// pgbench -S run through `gatehouse serve` (8 clients), perf's sched_wakeup events showed
// those two as most of Gatehouse's wake-ups of its own threads: entersyscallWakeSysmon from
// the relay's socket reads (907 in 4 s) and sysmon's retake (490). The relay's socket calls
// never block (the socket is non-blocking; an empty read returns EAGAIN and the poller
// waits), so doing them without entersyscall costs the runtime nothing: the P stays with
// the goroutine for the microseconds the kernel takes.
type rawSock struct {
	rc   syscall.RawConn
	addr string // for error messages

	// The state of the read and of the write under way, and the functions RawConn calls
	// with the descriptor, bound once: a closure per call would cost allocations. A
	// rawSock has one reader and one writer at a time (a relay loop each).
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool
	wbuf   []byte
	wn     int
	werrno syscall.Errno
	wrFn   func(fd uintptr) bool

	// Bulk reading (enableBulk; the upstream socket only): dl sets the connection's read
	// deadline (nil: off); bulkOn is the reader's word that a result's rows are streaming
	// in, bulkRead the bytes read since; raised says SO_RCVLOWAT is bulkLowat, bounded that
	// the wait under way has the bulkWait deadline. Owned by the reading loop.
	dl       interface{ SetReadDeadline(time.Time) error }
	bulkOn   bool
	bulkRead int
	raised   bool
	bounded  bool
	lowerFn  func(fd uintptr)
	raises   atomic.Int64 // times the mark was raised, for tests
	waits    atomic.Int64 // reads that found nothing and waited, for benchmarks
}

// Bulk reading of a streaming result (see bulk). Woken for every chunk PostgreSQL sends
// (8 KiB), the relay of a 2M-row SELECT made ≈14,000 reads, ≈6,500 more that found nothing
// and as many waits in the poller (strace), a third of its CPU. While a large result
// streams in, the socket's receive low-water mark (SO_RCVLOWAT) is raised to bulkLowat, so
// the poller reports it readable once that much has arrived, not at every chunk; the wait is
// bounded by bulkWait, after which the mark goes back to 1 and the reader takes what there
// is (the end of the result, smaller than the mark, or a producer slower than the bound).
const (
	// bulkLowat is the raised low-water mark: two of the relay's large reads (readSize).
	bulkLowat = 64 << 10
	// bulkAfter is how much of a result must have streamed in before the mark is raised:
	// a result smaller than that is read as before, and only results that take several
	// milliseconds to stream can wait up to bulkWait at their end.
	bulkAfter = 1 << 20
	// bulkWait bounds a wait for bulkLowat bytes. PostgreSQL sends that much in about half
	// a millisecond when it streams at full speed on this class of machine.
	bulkWait = time.Millisecond
)

// maxRawIO bounds the bytes one raw system call reads or writes. A raw call keeps its P
// (and holds up a stop-the-world) until it returns; the kernel's copy of a few hundred KiB
// takes tens of microseconds, so a large write is made of several such calls.
const maxRawIO = 256 << 10

// newRawSock returns the raw reader and writer of c when c is a plain TCP or Unix socket
// (not TLS), and false otherwise.
func newRawSock(c net.Conn) (*rawSock, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	addr := ""
	if a := c.RemoteAddr(); a != nil {
		addr = a.String()
	}
	s := &rawSock{rc: rc, addr: addr}
	s.readFn, s.wrFn, s.lowerFn = s.readOnce, s.writeSome, lowerLowat
	return s, true
}

// enableBulk lets the reader's bulk hints raise the socket's receive low-water mark (see
// bulkLowat); dl is the connection, whose read deadline bounds the waits for it. Nothing
// else may set the connection's read deadline while a hint is on.
func (s *rawSock) enableBulk(dl interface{ SetReadDeadline(time.Time) error }) {
	s.dl = dl
}

// bulk is the reader's hint: on while the messages it hands out are the rows of a result
// (DataRow, CopyData), off at the first other message. Off puts the low-water mark back to
// 1 at once, so the socket is as it was whatever reads it next (the pool's reset of a
// parked connection, the next session).
func (s *rawSock) bulk(on bool) {
	if s.dl == nil {
		return
	}
	s.bulkOn, s.bulkRead = on, 0
	if !on && s.raised {
		s.lower()
	}
}

// lower puts the receive low-water mark back to 1 (the default).
func (s *rawSock) lower() {
	s.raised = false
	_ = s.rc.Control(s.lowerFn)
}

func lowerLowat(fd uintptr) { _ = setLowat(fd, 1) }

// setLowat sets the socket's SO_RCVLOWAT.
func setLowat(fd uintptr, n int) error {
	v := int32(n)
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, fd, syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, uintptr(unsafe.Pointer(&v)), 4, 0)
	if e != 0 {
		return e
	}
	return nil
}

// lowat returns the socket's SO_RCVLOWAT (for tests).
func (s *rawSock) lowat() (int, error) {
	var v int
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { v, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT) }); cerr != nil {
		return 0, cerr
	}
	return v, err
}

// readOnce reads into rbuf; false (EAGAIN) makes RawConn wait for readiness and call again.
func (s *rawSock) readOnce(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch e {
		case 0:
			s.rn = int(r)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			s.waits.Add(1)
			if s.bulkOn && !s.bounded && s.bulkRead >= bulkAfter {
				// A large result is streaming in: wait for bulkLowat bytes, not the next
				// chunk, for at most bulkWait.
				if !s.raised && setLowat(fd, bulkLowat) == nil {
					s.raised = true
					s.raises.Add(1)
				}
				if s.raised {
					s.bounded = true
					_ = s.dl.SetReadDeadline(time.Now().Add(bulkWait))
				}
			}
			return false
		default:
			s.rerrno = e
			return true
		}
	}
}

// writeSome writes what is left of wbuf; false (EAGAIN: the socket's buffer is full) makes
// RawConn wait for room and call again.
func (s *rawSock) writeSome(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&s.wbuf[s.wn])), uintptr(min(len(s.wbuf)-s.wn, maxRawIO)))
		switch e {
		case 0:
			s.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werrno = e
			return true
		}
	}
	return true
}

// Read reads what the socket has, waiting (through the poller) while it has nothing. At
// the end of the stream it returns io.EOF.
func (s *rawSock) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) > maxRawIO {
		b = b[:maxRawIO]
	}
	s.rbuf, s.rn, s.rerrno = b, 0, 0
	err := s.rc.Read(s.readFn)
	if s.bounded {
		s.bounded = false
		_ = s.dl.SetReadDeadline(time.Time{})
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			// Less than bulkLowat came within bulkWait: the end of the result, or a
			// slow producer. Back to waking at every byte until bulkAfter more arrive.
			s.lower()
			s.bulkRead = 0
			s.rn, s.rerrno = 0, 0
			err = s.rc.Read(s.readFn)
		}
	}
	n, errno := s.rn, s.rerrno
	if s.bulkOn {
		s.bulkRead += n
	}
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, fmt.Errorf("read from %s: %w", s.addr, err)
	case errno != 0:
		return 0, fmt.Errorf("read from %s: %w", s.addr, os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b, waiting (through the poller) while the socket's buffer is full.
func (s *rawSock) Write(b []byte) (int, error) {
	s.wbuf, s.wn, s.werrno = b, 0, 0
	err := s.rc.Write(s.wrFn)
	n, errno := s.wn, s.werrno
	s.wbuf = nil
	switch {
	case err != nil:
		return n, fmt.Errorf("write to %s: %w", s.addr, err)
	case errno != 0:
		return n, fmt.Errorf("write to %s: %w", s.addr, os.NewSyscallError("write", errno))
	}
	return n, nil
}
