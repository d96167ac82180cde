// Package uring makes fdatasync(2) asynchronous with Linux's io_uring, so that a goroutine
// waiting for its log to reach the disk parks in Go's network poller instead of holding an
// operating-system thread and its P in a blocking system call.
//
// Why: the ledger syncs its commit log hundreds of times a second (every COMMIT of a
// transaction that changed data waits for one, and the background syncer makes one every
// 10 ms). A blocking fdatasync through syscall.Fdatasync enters the runtime's system-call
// state; it outlasts the 20 µs tick of Go's monitor thread (sysmon), which then hands the P
// to another thread (a futex wake-up) and polls every 20 µs for the next millisecond. Under
// pgbench's TPC-B through `gatehouse serve` that monitor alone was 12.8% of Gatehouse's CPU
// (perf), and context switches were 14–17 per transaction. Submitted to io_uring, the sync
// runs in one of the kernel's io-wq worker threads; the ring's descriptor is in the poller,
// which wakes the waiting goroutine when the completion is posted. No P waits, nothing is
// retaken, sysmon sleeps.
//
// A Ring does one operation at a time (a sync takes the disk's time anyway; concurrent
// callers queue on its mutex, parked, not blocking threads). Where io_uring is unavailable
// (an old kernel, kernel.io_uring_disabled, a seccomp profile that refuses it) Open returns
// an error and the caller uses a nil *Ring, whose Fdatasync is the plain system call. Like
// the ledger that uses it, the package is Linux's only.
package uring
