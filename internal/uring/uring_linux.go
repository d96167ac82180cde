//go:build linux

package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The io_uring ABI (include/uapi/linux/io_uring.h), x86-64 and arm64 alike.
const (
	sysSetup = 425 // io_uring_setup
	sysEnter = 426 // io_uring_enter

	opFsync   = 3
	opTimeout = 11

	fsyncDatasync = 1 // IORING_FSYNC_DATASYNC

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	// entries is the ring's size: one operation is ever in flight.
	entries = 2
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is a submission queue entry (64 bytes).
type sqe struct {
	opcode, flags    uint8
	ioprio           uint16
	fd               int32
	off, addr        uint64
	len, opFlags     uint32
	userData         uint64
	bufIndex, person uint16
	spliceFdIn       int32
	addr3, pad       uint64
}

// cqe is a completion queue entry (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// Ring is an io_uring instance for fdatasync. The zero value is not usable; a nil *Ring is,
// and syncs with the plain system call.
type Ring struct {
	mu     sync.Mutex // one operation at a time; guards everything below
	closed bool
	broken bool     // out of step with the kernel: not used again (see do)
	fd     int      // the ring's descriptor (os.File.Fd would make it blocking again)
	file   *os.File // the same descriptor, non-blocking, in the poller
	rc     syscall.RawConn
	sq, cq []byte // the mapped rings
	sqes   []byte // the mapped submission entries
	p      params
	seq    uint64   // user data of the last operation submitted
	ts     [2]int64 // the probe's timeout (on the heap: the kernel reads it by address)

	// The operation waited for, and its result once reaped (reap runs inside rc.Read).
	want   uint64
	res    int32
	done   bool
	reapFn func(fd uintptr) bool

	synced atomic.Int64 // syncs completed through the ring, for tests
}

// Open sets up a ring and proves that its completions wake the poller (a 1 ms timeout
// operation, waited for as a sync is). It fails where io_uring is refused.
func Open() (*Ring, error) {
	var p params
	fd, _, e := syscall.Syscall(sysSetup, entries, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", e)
	}
	r := &Ring{p: p, fd: int(fd)}
	r.reapFn = r.reap
	if err := r.setUp(int(fd)); err != nil {
		r.release()
		if r.file == nil {
			syscall.Close(int(fd))
		}
		return nil, err
	}
	return r, nil
}

func (r *Ring) setUp(fd int) error {
	var err error
	mm := func(off int64, size uint32) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = syscall.Mmap(fd, off, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
		if err != nil {
			err = fmt.Errorf("map io_uring region %#x: %w", off, err)
		}
		return b
	}
	r.sq = mm(offSQRing, r.p.sqOff.array+r.p.sqEntries*4)
	r.cq = mm(offCQRing, r.p.cqOff.cqes+r.p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	r.sqes = mm(offSQEs, r.p.sqEntries*uint32(unsafe.Sizeof(sqe{})))
	if err != nil {
		return err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("io_uring descriptor non-blocking: %w", err)
	}
	r.file = os.NewFile(uintptr(fd), "io_uring")
	// A descriptor the poller could not take has no deadlines: waiting on it would block.
	if err := r.file.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("io_uring descriptor in the poller: %w", err)
	}
	if r.rc, err = r.file.SyscallConn(); err != nil {
		return fmt.Errorf("io_uring descriptor: %w", err)
	}
	r.ts = [2]int64{0, int64(time.Millisecond)}
	res, err := r.do(&sqe{opcode: opTimeout, fd: -1, addr: uint64(uintptr(unsafe.Pointer(&r.ts))), len: 1}, 2*time.Second)
	if err != nil {
		return fmt.Errorf("io_uring probe: %w", err)
	}
	if res != -int32(syscall.ETIME) {
		return fmt.Errorf("io_uring probe: timeout ended with %d", res)
	}
	return nil
}

// KernelAllows reports whether the kernel lets processes use io_uring
// (kernel.io_uring_disabled is 0, or absent on kernels from before it could be switched
// off). A seccomp profile can still refuse it: Open is the proof.
func KernelAllows() bool {
	b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

// Fdatasync flushes fd's written data to the disk (fdatasync(2)), waiting in the poller.
// On a nil Ring it is the plain system call.
func (r *Ring) Fdatasync(fd int) error {
	if r == nil {
		return fdatasync(fd)
	}
	res, err := r.do(&sqe{opcode: opFsync, fd: int32(fd), opFlags: fsyncDatasync}, 0)
	if err != nil {
		// The ring itself failed (not the sync): sync the plain way, so the caller's
		// answer is the disk's.
		return fdatasync(fd)
	}
	if res == -int32(syscall.ECANCELED) || res == -int32(syscall.EINTR) {
		// The kernel dropped the request (its submitting thread exited before a worker
		// took it): not the disk's answer.
		return fdatasync(fd)
	}
	if res < 0 {
		return syscall.Errno(-res)
	}
	r.synced.Add(1)
	return nil
}

func fdatasync(fd int) error {
	for {
		if err := syscall.Fdatasync(fd); err != syscall.EINTR {
			return err
		}
	}
}

// Syncs is how many syncs completed through the ring (0 for a nil Ring): the ledger's tests
// check with it that its syncs do not silently fall back to blocking a thread.
func (r *Ring) Syncs() int64 {
	if r == nil {
		return 0
	}
	return r.synced.Load()
}

// errClosed is returned for an operation on a closed or broken ring.
var errClosed = errors.New("io_uring closed")

// do submits one operation and waits for its completion (at most wait, when not zero),
// returning the completion's result.
func (r *Ring) do(op *sqe, wait time.Duration) (int32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.broken {
		return 0, errClosed
	}
	r.seq++
	op.userData = r.seq
	tail := r.u32(r.sq, r.p.sqOff.tail)
	t := atomic.LoadUint32(tail)
	idx := t & *r.u32(r.sq, r.p.sqOff.ringMask)
	*(*sqe)(unsafe.Pointer(&r.sqes[uintptr(idx)*unsafe.Sizeof(sqe{})])) = *op
	*r.u32(r.sq, r.p.sqOff.array+idx*4) = idx
	atomic.StoreUint32(tail, t+1)
	for {
		_, _, e := syscall.RawSyscall6(sysEnter, uintptr(r.fd), 1, 0, 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			// The entry may still sit in the submission ring, to be submitted by the
			// next call in place of that call's own: the ring is out of step, so it
			// is not used again (its callers sync the plain way).
			r.broken = true
			return 0, fmt.Errorf("io_uring_enter: %w", e)
		}
		break
	}
	r.want, r.done = r.seq, false
	if wait > 0 {
		_ = r.file.SetReadDeadline(time.Now().Add(wait))
		defer r.file.SetReadDeadline(time.Time{})
	}
	if err := r.rc.Read(r.reapFn); err != nil {
		if wait == 0 {
			r.broken = true // the completion will never be reaped: out of step too
		}
		return 0, fmt.Errorf("wait for io_uring completion: %w", err)
	}
	return r.res, nil
}

// reap consumes the completions posted; true once the one waited for is among them (false
// makes the poller wait for the ring's descriptor to become readable).
func (r *Ring) reap(uintptr) bool {
	headp := r.u32(r.cq, r.p.cqOff.head)
	head, tail := atomic.LoadUint32(headp), atomic.LoadUint32(r.u32(r.cq, r.p.cqOff.tail))
	mask := *r.u32(r.cq, r.p.cqOff.ringMask)
	for ; head != tail; head++ {
		c := (*cqe)(unsafe.Pointer(&r.cq[uintptr(r.p.cqOff.cqes)+uintptr(head&mask)*unsafe.Sizeof(cqe{})]))
		if c.userData == r.want {
			r.res, r.done = c.res, true
		}
	}
	atomic.StoreUint32(headp, head)
	return r.done
}

func (r *Ring) u32(region []byte, off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(&region[off]))
}

// Close waits for the operation under way and releases the ring. A nil Ring closes
// without error.
func (r *Ring) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.release()
}

func (r *Ring) release() error {
	var err error
	if r.file != nil {
		err = r.file.Close()
	}
	for _, m := range [][]byte{r.sq, r.cq, r.sqes} {
		if m != nil {
			_ = syscall.Munmap(m)
		}
	}
	r.sq, r.cq, r.sqes = nil, nil, nil
	return err
}
