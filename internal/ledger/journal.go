package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gatehouse/gatehouse/internal/uring"
)

// The SQLite store's durable commit is an append to a commit log, not a SQLite transaction.
//
// A group commit used to be a SQLite transaction with synchronous=FULL: every event row
// touched the events table and its eight indexes, SQLite wrote each changed page to its WAL
// with its own pwrite and then fsync'd. Under pgbench that was most of the proxy's CPU and
// the latency every statement waited for. Now a group commit is one write of the batch's
// framed records to an append-only file (a copy into the file's shared mapping, which puts
// them in the page cache as write(2) would, without the system call: see journal.put) plus
// one fdatasync(2); the SQLite rows (chain and
// search indexes) are derived from the log right after, off the callers' path, in larger
// transactions that need no fsync of their own.
//
// The rules that keep this safe:
//   - A record is acknowledged (Append returns) only after its frame is fdatasync'd, or,
//     for a CommitWritten batch (ledger.durability sensitive: plain reads and the like),
//     once its frame is in the page cache (copied into the mapped file), where a crash or kill -9 of the process
//     cannot lose it; a syncer then fdatasyncs it within MaxSyncDelay.
//   - Each frame carries its length and a CRC-32C, so a frame torn by a crash (never
//     acknowledged) ends the replay of its file instead of being taken for data.
//   - A failed write or sync truncates the file back to the last acknowledged frame before
//     anything else is written, so a batch the ledger was told failed can never reappear.
//   - A log file is deleted only after its records are in SQLite and SQLite has synced
//     (a commit with synchronous=FULL syncs the WAL holding every earlier commit).
//   - Each writing process owns its files through an exclusive flock; at open, files no live
//     process holds (their writer crashed) are replayed into SQLite and deleted. Replay is
//     idempotent (a record already stored is skipped), so a crash at any point is safe.
//
// Readers in the writing process always see every acknowledged event: every read of the
// store first moves pending records into SQLite. Another process reading the same file (the
// CLI) sees them a few milliseconds later, once the writer's indexer has run.

// Log files are created zero-filled at their full size, so that a commit's fdatasync
// flushes data only: a write that grows a file also has to commit its new size to the file
// system's journal, which doubles the cost of every sync (measured here with dd: 274 µs per
// 4 KiB synced append, 129 µs per synced overwrite of a zero-filled file). A writer's first
// file is small (a CLI command records one event), later ones grow to journalSegmentMax;
// the next file is prepared in the background once the current one is half full. A new
// file per segment lets stored records be dropped without rewriting anything.
const (
	journalFirstSegment = 1 << 20
	// journalSmallestSegment is the least a segment is created with when a larger one does
	// not fit on the disk.
	journalSmallestSegment = 64 << 10
	journalSegmentMax      = 32 << 20
)

// journalMagic starts every log file; a file without it is not ours and is left alone.
// Version 1 files (written before segments were recycled) hold the magic and then frames
// whose CRC covers the frame alone. Version 2 files hold a logHeaderLen header: the magic,
// an 8-byte salt drawn when the file was created or recycled, and a flags byte
// (logRecycled); each frame's CRC then starts from the salt's, so the frames a recycled
// file still holds from its previous use fail their check and end a replay exactly as the
// zero fill of a new file does.
var (
	journalMagic  = []byte("GHLEDGER-LOG-1\n\x00")
	journalMagic2 = []byte("GHLEDGER-LOG-2\n\x00")
)

// logHeaderLen is the length of a version 2 header; frames start after it.
const logHeaderLen = 32

// logRecycled in a version 2 header's flags byte marks a file made from a spare (see
// removeLogs): what follows its last frame is an earlier use's frames, not zeros.
const logRecycled = 1

// logHeader is what a log file's header says about the frames after it.
type logHeader struct {
	len      int    // bytes before the first frame
	seed     uint32 // the CRC-32C every frame's checksum starts from
	recycled bool
}

// parseLogHeader reads the header at the start of data; ok is false when data does not
// start with a whole header of either version.
func parseLogHeader(data []byte) (h logHeader, ok bool) {
	switch {
	case len(data) >= logHeaderLen && string(data[:len(journalMagic2)]) == string(journalMagic2):
		return logHeader{
			len:      logHeaderLen,
			seed:     crc32.Checksum(data[len(journalMagic2):len(journalMagic2)+8], crcTable),
			recycled: data[len(journalMagic2)+8]&logRecycled != 0,
		}, true
	case len(data) >= len(journalMagic) && string(data[:len(journalMagic)]) == string(journalMagic):
		return logHeader{len: len(journalMagic)}, true
	}
	return logHeader{}, false
}

// newLogHeader returns a version 2 header with a fresh salt, and the seed its frames use.
func newLogHeader(recycled bool) ([]byte, uint32) {
	h := make([]byte, logHeaderLen)
	copy(h, journalMagic2)
	salt := h[len(journalMagic2) : len(journalMagic2)+8]
	if _, err := rand.Read(salt); err != nil {
		binary.LittleEndian.PutUint64(salt, uint64(time.Now().UnixNano()))
	}
	if recycled {
		h[len(journalMagic2)+8] = logRecycled
	}
	return h, crc32.Checksum(salt, crcTable)
}

// Frame kinds.
const (
	frameEvent      byte = 'E'
	frameCheckpoint byte = 'C'
	frameProbe      byte = 'P'
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// eventRow is an event as the events table stores it: the hashed record and the columns
// searches filter on, copied out of the event when it is sealed.
type eventRow struct {
	instance, typ, subject, identityKind, target, environment, decision, session, hash string
	seq, timeNS                                                                        int64
	body                                                                               []byte
	// ev is the sealed event when the row was appended in this process (nil when read
	// back from a log), so the indexer need not decode body again.
	ev *Event
}

func rowOf(ev *Event, body []byte) eventRow {
	return eventRow{
		instance: ev.Instance, seq: ev.Seq, timeNS: ev.Time.UnixNano(), typ: string(ev.Type), subject: ev.Subject,
		identityKind: ev.IdentityKind, target: ev.Target, environment: ev.Environment, decision: ev.Decision,
		session: ev.SessionID, hash: ev.Hash, body: body, ev: ev,
	}
}

// logBatch is what one Append made durable in the log and has not yet been stored in SQLite.
type logBatch struct {
	file string // the log file holding it
	rows []eventRow
	cps  []Checkpoint
}

// pendingLog is the queue between the log writer (Append) and the materializer (the
// indexer), plus the files the writer has finished with.
type pendingLog struct {
	mu      sync.Mutex
	batches []logBatch
	records int      // events and checkpoints in batches
	sealed  []string // log files no longer written to, oldest first
	// lastErr is why the last attempt to store batches failed (nil after a success).
	lastErr error
	// drained is signalled, without blocking, whenever stored records are dropped, for an
	// appender waiting for the backlog to shrink (SQLiteStore.awaitIndexer).
	drained chan struct{}
}

// maxPendingRecords bounds what the commit log may hold that SQLite does not: when the
// database cannot be written for long, appends are refused (the ledger fails closed)
// instead of the queue growing without end.
const maxPendingRecords = 100_000

func (p *pendingLog) push(b logBatch) {
	p.mu.Lock()
	p.batches = append(p.batches, b)
	p.records += len(b.rows) + len(b.cps)
	p.mu.Unlock()
}

// full reports, when too much is waiting for SQLite, why.
// waiting is how many records the commit log holds that the database does not yet.
func (p *pendingLog) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.records
}

// backlog is how many records wait for the database, and why the last attempt to store
// them failed (nil: it did not).
func (p *pendingLog) backlog() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.records, p.lastErr
}

func (p *pendingLog) full(limit int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.records < limit {
		return nil
	}
	return fmt.Errorf("%d ledger records wait for the database (%s): refusing more until it can be written", p.records, errOrUnknown(p.lastErr))
}

func (p *pendingLog) failed(err error) {
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
}

func errOrUnknown(err error) string {
	if err == nil {
		return "cause not known yet"
	}
	return err.Error()
}

func (p *pendingLog) seal(file string) {
	p.mu.Lock()
	p.sealed = append(p.sealed, file)
	p.mu.Unlock()
}

// peek returns up to max pending batches (oldest first) without removing them.
func (p *pendingLog) peek(max int) []logBatch {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for i, b := range p.batches {
		n += len(b.rows) + len(b.cps)
		if n >= max {
			return append([]logBatch(nil), p.batches[:i+1]...)
		}
	}
	return append([]logBatch(nil), p.batches...)
}

// drop removes the n oldest batches (stored in SQLite) and returns the sealed files none of
// whose batches is still pending, which may be deleted once SQLite has synced.
func (p *pendingLog) drop(n int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.batches[:n] {
		p.records -= len(b.rows) + len(b.cps)
	}
	if n > 0 {
		p.lastErr = nil
		select {
		case p.drained <- struct{}{}:
		default:
		}
	}
	clear(p.batches[:n])
	p.batches = p.batches[n:]
	if len(p.sealed) == 0 {
		return nil
	}
	busy := map[string]bool{}
	for _, b := range p.batches {
		busy[b.file] = true
	}
	var done, keep []string
	for _, f := range p.sealed {
		if busy[f] {
			keep = append(keep, f)
		} else {
			done = append(done, f)
		}
	}
	p.sealed = keep
	return done
}

// reseal puts back files whose deletion had to be abandoned, to be retried.
func (p *pendingLog) reseal(files []string) {
	p.mu.Lock()
	p.sealed = append(files, p.sealed...)
	p.mu.Unlock()
}

// journal is one process's writer of the commit log. Its methods are called with the
// store's writer mutex held.
type journal struct {
	dir     string
	pending *pendingLog
	log     *slog.Logger

	// token tells this writer's files from other writers' in the same directory.
	token string
	// maxPending is maxPendingRecords (tests lower it).
	maxPending int
	// segmentMax is the size log files grow to (0: journalSegmentMax; tests lower it).
	segmentMax int64
	// syncFault, when set (tests), fails every sync after the write reached the file, as a
	// failing disk does.
	syncFault error
	// ring makes the log's fdatasyncs wait in the network poller instead of in a blocking
	// system call (see package uring); nil where io_uring is unavailable.
	ring *uring.Ring

	f *os.File // the file being written, nil before the first append
	// fd is f's descriptor, taken once when f was created: os.File.Fd puts the descriptor
	// in blocking mode (an fcntl) every time it is called.
	fd int
	// syncing is the file a sync outside the writer mutex is using (beginSync to endSync),
	// nil when none: a rotation meanwhile leaves closing it to endSync, so the sync never
	// runs on a descriptor closed (and perhaps reused) under it.
	syncing *os.File
	m       []byte // f mapped shared, for writing frames without a write(2) (see put)
	// dropped is how much of m (whole pages from its start) was handed back after a sync
	// (see dropSynced).
	dropped int64
	ack     *os.File // its acknowledged-offset file (see writeAck)
	ackM    []byte   // ack mapped in memory, shared with the page cache
	name    string
	off     int64        // end of the last acknowledged frame in f
	seed    uint32       // f's frame checksum seed (see journalMagic)
	size    int64        // f's size as created
	files   int          // files this writer has opened
	next    chan logFile // the next file, being prepared (nil when none)
	// damaged is set when a failed write could not be cut back off f: nothing more is
	// written until repair succeeds.
	damaged    error
	damagedLen int
	buf        []byte

	// wgen counts writes to the log; sgen is the last of them known synced (every write of
	// a file before it was closed is synced). syncErr is why a background sync failed: the
	// log takes no more batches until a synced write (the ledger's probe) succeeds.
	wgen, sgen uint64
	syncErr    error
	// unsynced is when the oldest write not known synced (sgen < wgen) was made, or, after
	// a sync that covered only part of them, when that sync ended: the background syncer's
	// deadline counts from it (see syncDue).
	unsynced time.Time
}

// journalDir is where the log files of the ledger database at dbPath live.
func journalDir(dbPath string) string { return dbPath + ".log" }

// append makes rows and cps durable in the log, as c asks, and queues them for SQLite.
func (j *journal) append(rows []eventRow, cps []Checkpoint, c Commit) error {
	if j.syncErr != nil {
		return fmt.Errorf("ledger log not synced since a failed sync: %w", j.syncErr)
	}
	if err := j.pending.full(j.maxPending); err != nil {
		return err
	}
	seed := j.seed
	buf := j.frames(rows, cps)
	if err := j.ready(int64(len(buf))); err != nil {
		return err
	}
	if j.seed != seed {
		buf = j.frames(rows, cps) // a new file, with its own checksum seed
	}
	if err := j.write(buf, c == CommitSynced); err != nil {
		return err
	}
	j.pending.push(logBatch{file: j.name, rows: rows, cps: cps})
	return nil
}

// frames encodes rows and cps as frames of the current file (j.buf reused).
func (j *journal) frames(rows []eventRow, cps []Checkpoint) []byte {
	buf := j.buf[:0]
	for i := range rows {
		buf = appendEventFrame(buf, j.seed, &rows[i])
	}
	for i := range cps {
		buf = appendCheckpointFrame(buf, j.seed, &cps[i])
	}
	j.buf = buf
	return buf
}

// probe makes one durable write to the log (a frame replay ignores).
func (j *journal) probe() error {
	const probeLen = 9 // a frame's length, checksum and kind
	if err := j.ready(probeLen); err != nil {
		return err
	}
	buf := appendFrame(j.buf[:0], j.seed, frameProbe, nil)
	if err := j.write(buf, true); err != nil {
		return err
	}
	// Everything written before is synced with it: the log is whole again.
	j.syncErr = nil
	return nil
}

// write appends buf at the end of the acknowledged frames and, when sync is set, syncs it
// (and every write before it); on failure it cuts the file back so that nothing of buf can
// be replayed.
func (j *journal) write(buf []byte, sync bool) error {
	if err := j.put(buf); err != nil {
		return j.fail(fmt.Errorf("write ledger log %s: %w", j.name, err), len(buf))
	}
	if sync {
		err := j.syncFault
		if err == nil {
			err = j.ring.Fdatasync(j.fd)
		}
		if err != nil {
			return j.fail(fmt.Errorf("sync ledger log %s: %w", j.name, err), len(buf))
		}
	}
	j.off += int64(len(buf))
	if !sync && j.sgen == j.wgen {
		j.unsynced = time.Now()
	}
	j.wgen++
	if sync {
		j.sgen = j.wgen
	}
	j.writeAck()
	if j.next == nil && j.off > j.size/2 {
		j.prepareNext()
	}
	return nil
}

// put copies buf into the log at the end of the acknowledged frames.
//
// The log file is mapped shared and buf is copied into the mapping: the bytes are then in
// the file's pages in the page cache, exactly where write(2) would have put them, so a
// crash or kill -9 of the process cannot lose them and fdatasync flushes them (a store
// through a shared mapping marks its page dirty). A write(2) cost more CPU than all the
// rest of a plain read's commit (measured here: 6.7 µs of CPU per 700-byte pwrite into a
// zero-filled file, 0.22 µs per copy into its mapping, fdatasync every 3,000 included).
// The file's blocks were written (zero-filled) and synced when it was created, so a store
// needs no block allocation; should one fault all the same (a copy-on-write file system
// out of space, the file cut short by someone else), the fault is turned into an error
// (debug.SetPanicOnFault) and the log is cut back as after a failed write(2). A batch
// larger than what the mapping has left (only a segment's first batch can be) is written
// with write(2).
func (j *journal) put(buf []byte) (err error) {
	end := j.off + int64(len(buf))
	if j.m == nil || end > int64(len(j.m)) {
		_, err = j.f.WriteAt(buf, j.off)
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("memory fault writing the mapped log: %v", r)
		}
	}()
	copy(j.m[j.off:end], buf)
	return nil
}

// writeAck publishes how far f is acknowledged, for readers in other processes (the CLI):
// they store frames up to there, never a frame whose sync may still fail and be cut off.
// It is not synced (after a crash the log itself is the truth) and a failure only delays
// those readers, so it is logged, not returned.
//
// The file is mapped shared, so publishing is two stores into the page cache, not a
// write(2) per commit (a sixth of the commit path's syscalls). A reader that catches the
// stores half done sees a torn value and reads 0, as it would before the first commit.
//
// The stores are atomic, so another process never sees the offset before the frames it
// covers (put copies them with plain stores; write(2) used to be the barrier).
func (j *journal) writeAck() {
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&j.ackM[8])), nativeLE(^uint64(j.off)))
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&j.ackM[0])), nativeLE(uint64(j.off)))
}

// nativeLE returns the value whose in-memory form is v's little-endian encoding, the
// acknowledged-offset file's format, whatever the machine's byte order.
func nativeLE(v uint64) uint64 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return binary.NativeEndian.Uint64(b[:])
}

// ackSize is the length of an acknowledged-offset file: the offset and its complement.
const ackSize = 16

// openAck creates the acknowledged-offset file of the log name and maps it.
func openAck(name string) (*os.File, []byte, error) {
	ack, err := os.OpenFile(ackPath(name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if err := ack.Truncate(ackSize); err != nil {
		ack.Close()
		return nil, nil, err
	}
	m, err := syscall.Mmap(int(ack.Fd()), 0, ackSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		ack.Close()
		return nil, nil, fmt.Errorf("map %s: %w", ack.Name(), err)
	}
	return ack, m, nil
}

// unmap releases a log file's mapping (nil: none); what was copied into it stays in the
// page cache.
func unmap(m []byte) {
	if m != nil {
		syscall.Munmap(m) //nolint:errcheck // only fails for a bad mapping, which this is not
	}
}

// closeAck unmaps and closes an acknowledged-offset file.
func closeAck(f *os.File, m []byte) {
	if m != nil {
		syscall.Munmap(m) //nolint:errcheck // only fails for a bad mapping, which this is not
	}
	f.Close()
}

// readAck returns the acknowledged end of the log file path, as its writer published it
// (0 when it has published none). A value torn by a concurrent write (the offset and its
// complement disagree) is read again: the writer's two stores follow each other at once,
// and returning 0 would hide from a reader what was acknowledged before it asked.
func readAck(path string) int64 {
	f, err := os.Open(ackPath(path))
	if err != nil {
		return 0
	}
	defer f.Close()
	var b [ackSize]byte
	for range ackReads {
		if _, err := f.ReadAt(b[:], 0); err != nil {
			return 0
		}
		v, c := binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:])
		if v == ^c {
			return int64(v)
		}
		if v == 0 && c == 0 {
			return 0 // as created: nothing published yet (a prepared file)
		}
	}
	return 0
}

// ackReads bounds how often readAck reads a torn value again before it gives up (0).
const ackReads = 100

func ackPath(logPath string) string { return logPath + ".ack" }

// fail cuts the log back to its last acknowledged frame after a failed write of n bytes.
func (j *journal) fail(err error, n int) error {
	if rerr := j.cutBack(n); rerr != nil {
		j.damaged, j.damagedLen = rerr, n
		return errors.Join(err, rerr)
	}
	return err
}

// cutBack zeroes the n bytes after the acknowledged frames (as the file was made) and syncs,
// so that replay stops there.
func (j *journal) cutBack(n int) error {
	if _, err := j.f.WriteAt(make([]byte, n), j.off); err != nil {
		return fmt.Errorf("cut failed write off ledger log %s: %w", j.name, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("cut failed write off ledger log %s: %w", j.name, err)
	}
	return nil
}

// ready makes sure a log file with room for n more bytes is open (repairing a damaged one
// first).
func (j *journal) ready(n int64) error {
	if j.damaged != nil {
		if err := j.cutBack(j.damagedLen); err != nil {
			return fmt.Errorf("ledger log still damaged: %w", err)
		}
		j.damaged = nil
	}
	if j.f != nil && j.off+n > j.size && j.off > logHeaderLen {
		if err := j.rotate(); err != nil {
			return err
		}
	}
	if j.f != nil {
		return nil
	}
	var lf logFile
	size := j.maxSegment()
	if j.files == 0 {
		size = min(size, journalFirstSegment)
	}
	if j.next != nil {
		lf = <-j.next
		j.next = nil
	} else {
		lf = createLog(j.dir, j.token, size)
	}
	// A full disk must not keep the ledger down once a record fits again: a segment is
	// zero-filled to its size when created, so try smaller ones before giving up.
	for lf.err != nil && size > journalSmallestSegment {
		size = max(size/4, journalSmallestSegment)
		lf = createLog(j.dir, j.token, size)
	}
	if lf.err != nil {
		return lf.err
	}
	j.files++
	j.f, j.fd, j.m, j.ack, j.ackM, j.name, j.size, j.off, j.seed = lf.f, lf.fd, lf.m, lf.ack, lf.ackM, lf.name, lf.size, logHeaderLen, lf.seed
	j.dropped = 0
	j.writeAck()
	return nil
}

// maxSegment is the size log files grow to.
func (j *journal) maxSegment() int64 {
	if j.segmentMax > 0 {
		return j.segmentMax
	}
	return journalSegmentMax
}

// prepareNext creates the next log file in the background.
func (j *journal) prepareNext() {
	size := min(j.maxSegment(), j.size*4)
	ch := make(chan logFile, 1)
	j.next = ch
	dir, token := j.dir, j.token
	go func() { ch <- createLog(dir, token, size) }()
}

// logFile is a log file ready to be written: locked, header and zero fill synced, its name
// durable in the directory.
type logFile struct {
	f, ack *os.File
	fd     int    // f's descriptor
	m      []byte // f, mapped shared
	ackM   []byte // ack, mapped
	name   string
	size   int64
	seed   uint32 // its frames' checksum seed
	err    error
}

// createLog makes a new log file of size bytes owned by this process.
func createLog(dir, token string, size int64) logFile {
	fail := func(f *os.File, name string, err error) logFile {
		if f != nil {
			f.Close()
			os.Remove(name)
		}
		return logFile{err: fmt.Errorf("create ledger log: %w", err)}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(nil, "", err)
	}
	name := filepath.Join(dir, fmt.Sprintf("%020d-%d-%s.log", time.Now().UnixNano(), os.Getpid(), token))
	if lf, ok := recycleSpare(dir, name, size); ok {
		return lf
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(nil, "", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fail(f, name, err)
	}
	// Header and zero fill, then the file's name in its directory, durable before any
	// frame is acknowledged (fdatasync of the file alone does not persist its name).
	header, seed := newLogHeader(false)
	if _, err := f.Write(header); err != nil {
		return fail(f, name, err)
	}
	// The zero fill is written a page at a time: the page cache keeps what one write made
	// as one folio, and a folio that a store through the mapping dirties again after a
	// sync is written back whole. Filled in 1 MiB writes, every 10 ms sync of a few
	// plain-read records wrote a whole MiB to disk (20–24 KB per pgbench -S statement,
	// 370 KB per TPC-B transaction); page-sized folios write back what changed (4–5 KB and
	// 57 KB). TestSyncedLogWritesBackWhatChanged.
	page := int64(os.Getpagesize())
	zeros := make([]byte, page)
	for off := int64(logHeaderLen); off < size; {
		n := min(page-off%page, size-off) // to the next page boundary
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fail(f, name, err)
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		return fail(f, name, err)
	}
	if err := syncDir(dir); err != nil {
		return fail(f, name, err)
	}
	lf, err := mapLog(f, name, size, seed)
	if err != nil {
		return fail(f, name, err)
	}
	return lf
}

// mapLog maps the log file f (header and blocks synced) and opens its acknowledged-offset
// file, ready for writing.
func mapLog(f *os.File, name string, size int64, seed uint32) (logFile, error) {
	m, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return logFile{}, fmt.Errorf("map %s: %w", name, err)
	}
	ack, ackM, err := openAck(name)
	if err != nil {
		unmap(m)
		return logFile{}, err
	}
	return logFile{f: f, fd: int(f.Fd()), m: m, ack: ack, ackM: ackM, name: name, size: size, seed: seed}, nil
}

// Segments are recycled, as PostgreSQL recycles its WAL segments: a full-size log file
// whose records are all stored in SQLite is not deleted but moved into the spare directory
// (at most journalSpares of them), and the next segment is made from it instead of being
// created and zero-filled. Its blocks are allocated and written already, so a commit's
// fdatasync still flushes data only, and its pages are usually still in the page cache:
// the 8,192 page-sized writes of a 32 MiB zero fill, its sync and the page cache pages it
// allocates (6% of Gatehouse's CPU under pgbench -S, perf) are saved, and the disk is
// written once per record instead of twice. A recycled file gets a new header with a new
// salt before it is renamed into the log directory, so the frames it still holds fail
// their checksums (journalMagic); pages of it the kernel has evicted meanwhile are written
// with zeros first, so that no store through the mapping has to read the disk.
const journalSpares = 2

// spareDir is where the spare log files of the log directory dir wait to be recycled; no
// reader lists it, so nothing in it is ever replayed.
func spareDir(dir string) string { return filepath.Join(dir, "spare") }

// recycleSpare makes the log file name, of size bytes or more, from a spare (the largest),
// when one can be taken; ok is false when none could (the caller creates the file).
func recycleSpare(dir, name string, size int64) (lf logFile, ok bool) {
	for _, sp := range spares(dir) {
		if sp.size < size {
			break
		}
		path := sp.path
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		// The lock (kept while the file is written, as for a created one) makes sure no
		// other writer takes the same spare.
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		st, err := f.Stat()
		if err != nil || st.Size() < size {
			f.Close()
			continue
		}
		size := st.Size()
		if _, err := os.Stat(path); err != nil {
			f.Close() // taken and renamed by another writer before the lock was ours
			continue
		}
		lf, err := reuseSpare(f, path, dir, name, size)
		if err != nil {
			f.Close()
			os.Remove(path) // a spare that cannot be reused is not worth keeping
			continue
		}
		return lf, true
	}
	return logFile{}, false
}

// reuseSpare turns the locked spare f (at path) into the log file name: evicted pages
// zero-filled, a new header, synced, then renamed into dir and mapped.
func reuseSpare(f *os.File, path, dir, name string, size int64) (logFile, error) {
	m, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return logFile{}, err
	}
	err = fillEvicted(f, m)
	unmap(m)
	if err != nil {
		return logFile{}, err
	}
	header, seed := newLogHeader(true)
	if _, err := f.WriteAt(header, 0); err != nil {
		return logFile{}, err
	}
	if err := fdatasyncFD(int(f.Fd())); err != nil {
		return logFile{}, err
	}
	if err := os.Rename(path, name); err != nil {
		return logFile{}, err
	}
	if err := syncDir(dir); err != nil {
		return logFile{}, err
	}
	lf, err := mapLog(f, name, size, seed)
	if err != nil {
		os.Remove(name)
		return logFile{}, err
	}
	return lf, nil
}

// fillEvicted writes zeros over the pages of the mapped file m that are not in the page
// cache (mincore), a page at a time like a new file's fill: a store into such a page
// through the mapping would first read it from the disk, on a commit's path.
func fillEvicted(f *os.File, m []byte) error {
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return fmt.Errorf("mincore: %w", e)
	}
	var zeros []byte
	for i, v := range vec {
		if v&1 != 0 || i == 0 {
			continue // resident (the first page gets the new header)
		}
		if zeros == nil {
			zeros = make([]byte, page)
		}
		off := int64(i) * int64(page)
		if _, err := f.WriteAt(zeros[:min(int64(page), int64(len(m))-off)], off); err != nil {
			return err
		}
	}
	return nil
}

// rotate syncs and closes the current file (its records stay queued) so the next append
// starts a new one; the materializer deletes the old file once its records are in SQLite.
// A failed sync is kept in syncErr (the file is closed all the same: its written records
// are in the page cache and still reach SQLite).
func (j *journal) rotate() error {
	var err error
	if j.sgen != j.wgen {
		if err = j.ring.Fdatasync(j.fd); err != nil {
			err = fmt.Errorf("sync ledger log %s: %w", j.name, err)
			j.syncErr = err
		} else {
			j.sgen = j.wgen
		}
	}
	j.pending.seal(j.name)
	// The flock goes with the descriptor; the file stays until materialized. Another
	// process opening the store meanwhile would replay it, which is idempotent.
	unmap(j.m)
	if j.syncing != j.f {
		j.f.Close()
	} // else endSync closes it, once the sync using its descriptor is over
	closeAck(j.ack, j.ackM)
	j.f, j.fd, j.m, j.ack, j.ackM, j.name, j.off = nil, -1, nil, nil, nil, "", 0
	return err
}

// beginSync returns the descriptor of the file holding written but unsynced frames and
// the write generation it covers (fd -1: nothing to sync). The caller syncs it without the
// store's writer mutex, so appends go on meanwhile, and then calls endSync; until then a
// rotation does not close the file (see syncing). One sync at a time may be begun.
//
// It used to sync a dup(2) of the descriptor and close that after, and took the
// descriptor with os.File.Fd (an fcntl): three system calls per background sync besides
// the fdatasync.
func (j *journal) beginSync() (fd int, gen uint64, err error) {
	if j.f == nil || j.sgen == j.wgen {
		return -1, 0, nil
	}
	if j.syncFault != nil {
		return -1, j.wgen, j.syncFault
	}
	j.syncing = j.f
	return j.fd, j.wgen, nil
}

// syncDue reports whether written frames wait for a sync and, if so, when the background
// syncer should sync them: syncGather after the oldest of them was written (or after the
// last sync ended, when they were written during it; with the sync's own time that stays
// within MaxSyncDelay). A COMMIT
// barrier's sync (SyncWritten) meanwhile moves that deadline on, so under a write load the
// barriers' syncs carry the plain records too and the syncer rarely adds one of its own.
// Nothing is due while a failed sync keeps the log closed (the probe's synced write
// reopens it).
func (j *journal) syncDue() (time.Time, bool) {
	if j.syncErr != nil || j.sgen == j.wgen {
		return time.Time{}, false
	}
	return j.unsynced.Add(syncGather), true
}

// dropSynced hands back the mapping's pages that lie wholly before off in the log file
// name, once a sync covered them: they are clean and never written again (appends only go
// forward), so dropping them from this process's page tables costs nothing and keeps the
// log out of Gatehouse's resident set (its pages stay in the page cache; a read faults
// them back in with their data). Without it a segment's mapping would count up to 32 MiB
// of RSS. Called with the store's writer mutex held, after a successful sync.
func (j *journal) dropSynced(name string, off int64) {
	if j.m == nil || j.name != name {
		return // rotated since: the old mapping is gone already
	}
	end := off &^ int64(os.Getpagesize()-1)
	if end-j.dropped < dropChunk {
		return // not worth an madvise yet
	}
	if err := syscall.Madvise(j.m[j.dropped:end], syscall.MADV_DONTNEED); err != nil {
		return // only residency is at stake; the next sync tries again
	}
	j.dropped = end
}

// dropChunk is how much of the mapping at least a dropSynced hands back at once: once
// per sync (a few milliseconds under load) the madvise cost more than the pages it saved.
const dropChunk = 256 << 10

// endSync notes the result of a sync that beginSync started at gen.
func (j *journal) endSync(gen uint64, err error) {
	if j.syncing != nil && j.syncing != j.f {
		j.syncing.Close() // rotated during the sync
	}
	j.syncing = nil
	if err != nil {
		if j.syncErr == nil {
			j.log.Error("ledger commit log sync failed: records already released may be lost on a power failure; refusing statements until a sync succeeds", "file", j.name, "err", err)
		}
		j.syncErr = fmt.Errorf("sync ledger log %s: %w", j.name, err)
		return
	}
	if gen > j.sgen {
		j.sgen = gen
		// What the sync did not cover was written while it ran. Counting from its end
		// (not its start) keeps the syncer's pace under a read load at one sync per
		// syncGather plus the sync's own time, as before: counting from the start
		// synced back to back whenever a sync took longer than syncGather, each one
		// writing the log's tail page again.
		j.unsynced = time.Now()
	}
}

// close seals the current file (the store deletes it after its final materialization) and
// drops a prepared one that holds nothing.
func (j *journal) close() {
	if j.f != nil {
		if err := j.rotate(); err != nil {
			j.log.Error("sync ledger log at close", "err", err)
		}
	}
	if j.next != nil {
		if lf := <-j.next; lf.err == nil {
			unmap(lf.m)
			lf.f.Close()
			closeAck(lf.ack, lf.ackM)
			os.Remove(ackPath(lf.name))
			if !spareLog(lf.name) { // it holds no frame: the next writer can use it as it is
				os.Remove(lf.name)
			}
		}
		j.next = nil
	}
	if err := j.ring.Close(); err != nil {
		j.log.Error("close the ledger log's io_uring", "err", err)
	}
}

// appendFrame appends one frame: its length, its CRC-32C (started from seed, the file's:
// see journalMagic) and its kind and payload.
func appendFrame(buf []byte, seed uint32, kind byte, payload func([]byte) []byte) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0, kind)
	if payload != nil {
		buf = payload(buf)
	}
	body := buf[start+8:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Update(seed, crcTable, body))
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendEventFrame(buf []byte, seed uint32, r *eventRow) []byte {
	return appendFrame(buf, seed, frameEvent, func(b []byte) []byte {
		b = appendString(b, r.instance)
		b = binary.AppendVarint(b, r.seq)
		b = appendString(b, r.hash)
		b = binary.AppendUvarint(b, uint64(len(r.body)))
		return append(b, r.body...)
	})
}

func appendCheckpointFrame(buf []byte, seed uint32, cp *Checkpoint) []byte {
	return appendFrame(buf, seed, frameCheckpoint, func(b []byte) []byte {
		b = appendString(b, cp.Instance)
		b = binary.AppendVarint(b, cp.Seq)
		b = appendString(b, cp.Hash)
		b = binary.AppendVarint(b, cp.Time.UnixNano())
		b = appendString(b, cp.Kind)
		return appendString(b, cp.Signature)
	})
}

// frameDecoder reads the fields of one frame's payload.
type frameDecoder struct {
	b   []byte
	err error
}

func (d *frameDecoder) str() string { return string(d.bytes()) }

func (d *frameDecoder) bytes() []byte {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || uint64(len(d.b)-k) < n {
		d.err = errors.New("truncated field")
		d.b = nil
		return nil
	}
	v := d.b[k : k+int(n)]
	d.b = d.b[k+int(n):]
	return v
}

func (d *frameDecoder) int() int64 {
	v, k := binary.Varint(d.b)
	if k <= 0 {
		d.err = errors.New("truncated number")
		d.b = nil
		return 0
	}
	d.b = d.b[k:]
	return v
}

// readLog reads the acknowledged frames of one log file. It stops at the first frame that
// is incomplete or fails its checksum: the write that was torn there was never
// acknowledged. torn reports whether such a tail was found.
func readLog(path string) (rows []eventRow, cps []Checkpoint, torn bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, false, fmt.Errorf("read ledger log %s: %w", path, err)
	}
	return decodeLog(path, data)
}

// readLogFile is readLog through an open (locked) descriptor, which stays readable even if
// another process deletes the file's name meanwhile.
func readLogFile(f *os.File) (rows []eventRow, cps []Checkpoint, torn bool, err error) {
	st, err := f.Stat()
	if err != nil {
		return nil, nil, false, fmt.Errorf("read ledger log %s: %w", f.Name(), err)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, false, fmt.Errorf("read ledger log %s: %w", f.Name(), err)
	}
	return decodeLog(f.Name(), data)
}

// decodeLog checks a log's header and decodes its frames.
func decodeLog(path string, data []byte) (rows []eventRow, cps []Checkpoint, torn bool, err error) {
	h, ok := parseLogHeader(data)
	if !ok {
		// A crash between creating the file and syncing its header leaves an empty or
		// partial header; such a file never held an acknowledged frame.
		start := string(data[:min(len(data), len(journalMagic))])
		if len(data) < logHeaderLen && (strings.HasPrefix(string(journalMagic), start) || strings.HasPrefix(string(journalMagic2), start)) {
			return nil, nil, len(data) > 0, nil
		}
		return nil, nil, false, fmt.Errorf("ledger log %s: not a Gatehouse ledger log", path)
	}
	return parseFrames(path, data[h.len:], h)
}

// parseFrames decodes the frames in data (read from the log file path, whose header is h),
// stopping at a torn tail (see readLog). In a recycled file the frames of its previous use
// follow the last frame written since (they fail their checksum under the new seed): that
// is where its frames end, not a torn write.
func parseFrames(path string, rest []byte, h logHeader) (rows []eventRow, cps []Checkpoint, torn bool, err error) {
	for len(rest) > 0 {
		if len(rest) < 8 {
			return rows, cps, !h.recycled && !allZero(rest), nil
		}
		n := binary.LittleEndian.Uint32(rest)
		sum := binary.LittleEndian.Uint32(rest[4:])
		if n == 0 && sum == 0 {
			return rows, cps, false, nil // the zero fill: no frame was written here
		}
		if n == 0 || uint64(len(rest)-8) < uint64(n) {
			return rows, cps, !h.recycled, nil
		}
		body := rest[8 : 8+n]
		if crc32.Update(h.seed, crcTable, body) != sum {
			return rows, cps, !h.recycled, nil
		}
		rest = rest[8+n:]
		d := frameDecoder{b: body[1:]}
		switch body[0] {
		case frameEvent:
			r := eventRow{instance: d.str(), seq: d.int(), hash: d.str()}
			r.body = append([]byte(nil), d.bytes()...)
			if d.err != nil {
				return nil, nil, false, fmt.Errorf("ledger log %s: event frame: %w", path, d.err)
			}
			ev, err := decodeBody(r.body)
			if err != nil {
				return nil, nil, false, fmt.Errorf("ledger log %s: event %s/%d: %w", path, r.instance, r.seq, err)
			}
			full := rowOf(&ev, r.body)
			full.instance, full.seq, full.hash = r.instance, r.seq, r.hash
			ev.Instance, ev.Seq = r.instance, r.seq
			rows = append(rows, full)
		case frameCheckpoint:
			cp := Checkpoint{Instance: d.str(), Seq: d.int(), Hash: d.str()}
			cp.Time = time.Unix(0, d.int()).UTC()
			cp.Kind, cp.Signature = d.str(), d.str()
			if d.err != nil {
				return nil, nil, false, fmt.Errorf("ledger log %s: checkpoint frame: %w", path, d.err)
			}
			cps = append(cps, cp)
		case frameProbe:
		default:
			return nil, nil, false, fmt.Errorf("ledger log %s: unknown frame kind %q", path, body[0])
		}
	}
	return rows, cps, false, nil
}

// orphanLogs lists the log files in dir that no live process holds, oldest first, each
// returned open and locked (the caller closes them).
func orphanLogs(dir string) ([]*os.File, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list ledger logs: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".log") {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(a, b int) bool { return logOrder(names[a]) < logOrder(names[b]) })
	var out []*os.File
	for _, n := range names {
		if liveWriter(n) {
			continue // sealed by a running writer, which stores and deletes it itself
		}
		f, err := os.OpenFile(filepath.Join(dir, n), os.O_RDWR, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // its owner deleted it meanwhile
			}
			closeAll(out)
			return nil, fmt.Errorf("open ledger log: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close() // a live process writes it
			continue
		}
		// The owner may have deleted it between ReadDir and the lock.
		if _, err := os.Stat(f.Name()); err != nil {
			f.Close()
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// logOrder sorts log names by their creation time prefix.
// liveWriter reports whether the log file name belongs to another process that is still
// running (its PID is part of the name). A live writer unlocks a segment when it seals it
// and deletes it once its records are stored: such a file is the writer's business, never
// an orphan to recover, even though nobody holds its lock. Logs of this process fall back to
// the lock alone (a PID cannot tell this process's ledgers apart).
func liveWriter(name string) bool {
	_, rest, ok := strings.Cut(filepath.Base(name), "-")
	if !ok {
		return false
	}
	pidText, _, ok := strings.Cut(rest, "-")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func logOrder(name string) int64 {
	ts, _, _ := strings.Cut(name, "-")
	v, _ := strconv.ParseInt(ts, 10, 64)
	return v
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func fdatasyncFD(fd int) error {
	for {
		err := syscall.Fdatasync(fd)
		if err != syscall.EINTR {
			return err
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeLogs retires materialized log files: a full-size one becomes a spare while there
// are fewer than journalSpares (see journalSpares), the others are deleted.
func removeLogs(files []string, log *slog.Logger) {
	for _, f := range files {
		os.Remove(ackPath(f))
		if spareLog(f) {
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("remove materialized ledger log", "file", f, "err", err)
		}
	}
}

// spareLog moves the materialized log file f into the spare directory, and reports
// whether it did: when there are fewer than journalSpares there, or in place of the
// smallest of them if f is larger (a writer's first segments are small, the ones after
// full-size).
func spareLog(f string) bool {
	st, err := os.Stat(f)
	if err != nil || st.Size() < journalSmallestSegment {
		return false
	}
	logDir := filepath.Dir(f)
	if err := os.MkdirAll(spareDir(logDir), 0o700); err != nil {
		return false
	}
	if sp := spares(logDir); len(sp) >= journalSpares {
		smallest := sp[len(sp)-1]
		if smallest.size >= st.Size() || os.Remove(smallest.path) != nil {
			return false
		}
	}
	return os.Rename(f, filepath.Join(spareDir(logDir), filepath.Base(f))) == nil
}

// spareFile is a spare log file and its size.
type spareFile struct {
	path string
	size int64
}

// spares lists the spare log files of the log directory dir, largest first.
func spares(dir string) []spareFile {
	ents, err := os.ReadDir(spareDir(dir))
	if err != nil {
		return nil
	}
	var out []spareFile
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			out = append(out, spareFile{path: filepath.Join(spareDir(dir), e.Name()), size: info.Size()})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].size > out[b].size })
	return out
}

// randomToken names one writer's log files.
func randomToken() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}

// catchUpOthers stores what other processes' commit logs hold acknowledged and SQLite does
// not yet (a CLI search while `gatehouse serve` writes), and recovers the logs of writers
// that died meanwhile. Called with mu held.
//
// What it stores of a writer must be a prefix of that writer's frames: a reader that stored
// a newer file's frames without all of an older file's would show a hole in the chain (the
// writer fills it later, but a verify meanwhile reports events removed). A writer appends to
// one file at a time and moves to the next only once the current one is sealed, so the
// acknowledged ends are read newest file first: when a newer file already held a frame, the
// older one was sealed before its end was read, and that end is final. Reading them oldest
// first, as catch-up used to, let the writer add frames to a file after its end was read and
// then move on to the next file, whose frames were stored past the hole.
func (x *sqliteIndexer) catchUpOthers(ctx context.Context) error {
	if x.logDir == "" {
		return nil
	}
	ents, err := os.ReadDir(x.logDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list ledger logs: %w", err)
	}
	var logs []otherLog
	defer func() {
		for _, l := range logs {
			if l.f != nil {
				l.f.Close()
			}
		}
	}()
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".log") || strings.HasSuffix(name, "-"+x.ownToken+".log") {
			continue
		}
		logs = append(logs, otherLog{path: filepath.Join(x.logDir, name)})
	}
	// Oldest first, by the creation time each name starts with (os.ReadDir sorts by name,
	// which is the same order; sort anyway, so the order does not rest on that).
	sort.SliceStable(logs, func(a, b int) bool {
		return logOrder(filepath.Base(logs[a].path)) < logOrder(filepath.Base(logs[b].path))
	})
	// The acknowledged ends, newest first (see above).
	for i := len(logs) - 1; i >= 0; i-- {
		if err := logs[i].open(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i := range logs {
		l := &logs[i]
		if l.f == nil {
			continue // its writer stored and deleted it meanwhile
		}
		seen[l.path] = true
		if err := x.catchUpLog(ctx, l); err != nil {
			return err
		}
		if x.caughtUp != nil {
			x.caughtUp(l.path)
		}
	}
	for p := range x.others {
		if !seen[p] {
			delete(x.others, p)
		}
	}
	return nil
}

// otherLog is another writer's log file as one catch-up pass found it.
type otherLog struct {
	path string
	f    *os.File // open (nil: gone), and locked when orphan
	// orphan: no live process holds it (its writer died); it is stored whole and deleted.
	orphan bool
	// ack is the acknowledged end of its frames when the pass read it.
	ack int64
}

// open opens l and reads its acknowledged end, or finds it orphaned.
func (l *otherLog) open() error {
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // its writer stored and deleted it meanwhile
	}
	if err != nil {
		return fmt.Errorf("open ledger log: %w", err)
	}
	if !liveWriter(l.path) && syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		// Nobody holds it: its writer died. Store all of it and delete it, as at open.
		if _, err := os.Stat(l.path); err != nil {
			f.Close()
			return nil
		}
		l.f, l.orphan = f, true
		return nil
	}
	l.f, l.ack = f, readAck(l.path)
	return nil
}

// catchUpLog stores the acknowledged frames of another writer's log past what was stored
// from it before, up to the end catchUpOthers read. Called with mu held.
func (x *sqliteIndexer) catchUpLog(ctx context.Context, l *otherLog) error {
	path, f := l.path, l.f
	if l.orphan {
		return recoverLogFile(ctx, x.db, f, x.log)
	}
	h, err := readLogHeader(f)
	if err != nil || h.len == 0 {
		return err // no header yet: nothing acknowledged
	}
	from := x.others[path]
	if from == 0 {
		from = int64(h.len)
	}
	to := l.ack
	if to <= from {
		return nil
	}
	buf := make([]byte, to-from)
	if _, err := f.ReadAt(buf, from); err != nil {
		return fmt.Errorf("read ledger log %s: %w", path, err)
	}
	// Up to the acknowledged offset every frame is whole, recycled file or not.
	whole := h
	whole.recycled = false
	rows, cps, torn, err := parseFrames(path, buf, whole)
	if err != nil {
		return err
	}
	if torn {
		if now, herr := readLogHeader(f); herr == nil && now.seed != h.seed {
			// Its writer stored its records, then recycled the file for new ones
			// while this read was under way (removeLogs): nothing of it is left to read.
			return nil
		}
		return fmt.Errorf("ledger log %s: acknowledged frames before offset %d do not decode", path, to)
	}
	if err := x.connect(ctx); err != nil {
		return err
	}
	if _, err := x.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := storeLogged(ctx, func(q string) (*sql.Stmt, error) { return x.stmt(ctx, q) }, rows, cps); err != nil {
		x.conn.ExecContext(context.Background(), `ROLLBACK`)
		return fmt.Errorf("store events of ledger log %s: %w", path, err)
	}
	if _, err := x.conn.ExecContext(ctx, `COMMIT`); err != nil {
		x.conn.ExecContext(context.Background(), `ROLLBACK`)
		return fmt.Errorf("store events of ledger log %s: %w", path, err)
	}
	x.others[path] = to
	return nil
}

// readLogHeader reads the header of the open log f (len 0: not written yet).
func readLogHeader(f *os.File) (logHeader, error) {
	var b [logHeaderLen]byte
	n, err := f.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return logHeader{}, fmt.Errorf("read ledger log %s: %w", f.Name(), err)
	}
	h, ok := parseLogHeader(b[:n])
	if !ok {
		return logHeader{}, nil
	}
	return h, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
