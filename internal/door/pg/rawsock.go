//go:build linux

package pg

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
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
}

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
	s.readFn, s.wrFn = s.readOnce, s.writeSome
	return s, true
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
	n, errno := s.rn, s.rerrno
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
