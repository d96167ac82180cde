package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// crash leaves the store as a kill -9 would: the indexer stops where it is, the commit log
// keeps whatever was not stored in SQLite yet, and the log file's lock is released.
func (s *SQLiteStore) crash() {
	s.ix.stopOnce.Do(func() { close(s.ix.quit) })
	<-s.ix.done
	s.syncStop.Do(func() { close(s.syncQuit) })
	<-s.syncDone
	s.ix.mu.Lock()
	s.ix.resetConn()
	s.ix.mu.Unlock()
	s.wmu.Lock()
	if s.jr.f != nil {
		// The mapping holds the file (and its lock) as the descriptor does; a dead
		// process has neither.
		unmap(s.jr.m)
		s.jr.f.Close()
		s.jr.f, s.jr.m = nil, nil
	}
	if s.jr.next != nil {
		// The next file, prepared and locked but not written yet, is left as it is.
		if lf := <-s.jr.next; lf.err == nil {
			unmap(lf.m)
			lf.f.Close()
			closeAck(lf.ack, lf.ackM)
		}
		s.jr.next = nil
	}
	s.wmu.Unlock()
	s.db.Close()
}

// abandonedLedger is a ledger whose store will crash: it never checkpoints on its own, so
// nothing writes after the crash.
func abandonedLedger(t *testing.T, s *SQLiteStore, dir string) *Ledger {
	t.Helper()
	l, err := New(context.Background(), s, Options{Instance: "gh-1", DataDir: dir, CheckpointEvery: 1 << 30, CheckpointInterval: time.Hour, WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// openTestSQLite opens an embedded store in a new temporary directory, closed when the
// test ends, and returns it with that directory.
func openTestSQLite(t testing.TB) (*SQLiteStore, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func logFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(journalDir(filepath.Join(dir, SQLiteFile)), "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// awaitPrepared waits for the log file that s may be preparing in the background
// (prepareNext) and leaves it to be used as before: until it is ready, its header may not be
// written yet, and a test listing the log directory would read it as a file with none.
func awaitPrepared(s *SQLiteStore) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.jr.next != nil {
		lf := <-s.jr.next
		ch := make(chan logFile, 1)
		ch <- lf
		s.jr.next = ch
	}
}

func reopenVerified(t *testing.T, dir string, wantEvents int) *SQLiteStore {
	t.Helper()
	ctx := context.Background()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, StoreSource{Store: s}, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Chains) != 1 || rep.Chains[0].Events != int64(wantEvents) || rep.Chains[0].LastSeq != int64(wantEvents) {
		t.Fatalf("after the crash the store holds:\n%s\nwant one intact chain of %d events", rep, wantEvents)
	}
	if left := logFiles(t, dir); len(left) != 0 {
		t.Fatalf("recovered commit logs not deleted: %v", left)
	}
	return s
}

// TestCommitLogCrashRecovery: everything acknowledged before a crash is in the store after
// it, from the commit log when SQLite had not stored it yet; a batch whose sync failed is
// cut off the log and never reappears; a torn tail is ignored.
func TestCommitLogCrashRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	// Keep SQLite from storing anything, so every acknowledged event lives only in the log
	// (and let the indexer give up on the lock quickly, so the crash need not wait).
	s.ix.busyTimeout = 50 * time.Millisecond
	lock := lockSQLite(t, dir)
	l := abandonedLedger(t, s, dir)
	fill(t, l, 5)

	s.setSyncFault(errors.New("injected: the disk fails"))
	// A sensitive read: fdatasync'd before its Ack (a plain one would only be written).
	if err := l.Record(ctx, stmtEvent("mallory", "SELECT", "SELECT 'lost'", nil, map[string]string{"t.ssn": "ssn"})); err == nil {
		t.Fatal("an event whose sync failed was acknowledged")
	}
	s.setSyncFault(nil)
	for deadline := time.Now().Add(10 * time.Second); l.Healthy() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ledger did not recover after the disk healed: %v", l.Healthy())
		}
	}
	fill(t, l, 3)
	files := logFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("commit log files: %v", files)
	}
	s.crash()
	lock()

	// A crash in the middle of the next write leaves a torn frame after the last
	// acknowledged one.
	f, err := os.OpenFile(files[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	end := readAck(files[0])
	if end <= logHeaderLen {
		t.Fatalf("acknowledged end of the log: %d", end)
	}
	if _, err := f.WriteAt(appendEventFrame(nil, 0, &eventRow{instance: "gh-1", seq: 9, hash: "x", body: []byte(`{"torn":`)})[:23], end); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, _, torn, err := readLog(files[0]); err != nil || !torn {
		t.Fatalf("the torn frame is not seen as torn: %v %v", torn, err)
	}

	s2 := reopenVerified(t, dir, 8)
	evs, err := s2.Search(ctx, Query{Text: "lost", Limit: 10})
	if err != nil || len(evs) != 0 {
		t.Fatalf("the event whose sync failed is in the store: %d, %v", len(evs), err)
	}
	if evs, err := s2.Search(ctx, Query{Limit: 100}); err != nil || len(evs) != 8 {
		t.Fatalf("search after recovery: %d events, %v; want 8", len(evs), err)
	}
}

// TestCommitLogBackpressure: when SQLite cannot be written for long, the log stops taking
// records (the ledger fails closed) instead of queueing without end, and everything flows
// again when the database can be written.
func TestCommitLogBackpressure(t *testing.T) {
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	s.jr.maxPending = 20
	l, err := New(ctx, s, Options{Instance: "gh-1", DataDir: dir, WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	unlock := lockSQLite(t, dir)
	var refused error
	for i := 0; i < 100 && refused == nil; i++ {
		refused = l.Record(ctx, stmtEvent("alice", "SELECT", "SELECT 1", nil, nil))
	}
	if refused == nil || !strings.Contains(refused.Error(), "wait for the database") {
		t.Fatalf("a locked database never made the ledger refuse: %v", refused)
	}
	unlock()
	for deadline := time.Now().Add(20 * time.Second); l.Healthy() != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ledger did not recover: %v", l.Healthy())
		}
	}
	fill(t, l, 3)
	rep := verifyStore(t, l, s)
	if !rep.OK || rep.Chains[0].Events != 23 {
		t.Fatalf("after the database came back:\n%s", rep)
	}
}

// lockSQLite holds the ledger database's write lock from another connection until the
// returned function is called.
func lockSQLite(t *testing.T, dir string) func() {
	t.Helper()
	other, err := sql.Open("sqlite", "file:"+filepath.Join(dir, SQLiteFile)+"?_pragma=busy_timeout(100)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		conn.ExecContext(context.Background(), "ROLLBACK")
		conn.Close()
		other.Close()
	}
}

// TestCommitLogSeenByOtherProcesses: a reader with its own handle on the store (the CLI
// while `gatehouse serve` runs) sees every event the writer acknowledged, even those the
// writer has not stored in SQLite yet, and nothing is stored twice.
func TestCommitLogSeenByOtherProcesses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The writer's indexer stays idle, so its events live only in its log.
	w.ix.stopOnce.Do(func() { close(w.ix.quit) })
	<-w.ix.done
	l := abandonedLedger(t, w, dir)
	fill(t, l, 7)
	record(t, l, stmtEvent("dba@corp", "DROP TABLE", "DROP TABLE public.old", []string{"public.old"}, nil))

	r, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if evs, err := r.Search(ctx, Query{Limit: 100}); err != nil || len(evs) != 8 {
		t.Fatalf("another handle's search: %d events, %v; want the 8 acknowledged", len(evs), err)
	}
	if drops, err := r.WhoDropped(ctx, "old", TimeRange{}); err != nil || len(drops) != 1 {
		t.Fatalf("another handle's who-dropped: %v, %v", drops, err)
	}
	record(t, l, stmtEvent("dba@corp", "DROP TABLE", "DROP TABLE public.old2", []string{"public.old2"}, nil))
	if drops, err := r.WhoDropped(ctx, "old2", TimeRange{}); err != nil || len(drops) != 1 {
		t.Fatalf("who-dropped after one more event: %v, %v", drops, err)
	}
	// The writer stores its own log too: each event once, the chain intact.
	if _, err := w.Search(ctx, Query{Limit: 1}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := r.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_events`).Scan(&n); err != nil || n != 9 {
		t.Fatalf("events stored: %d, %v; want 9", n, err)
	}
	rep := verifyStore(t, l, r)
	if !rep.OK || rep.Chains[0].Events != 9 {
		t.Fatalf("chain:\n%s", rep)
	}
}

// TestCommitLogRotation: a writer moves on to new (prepared) log files as they fill; after
// a crash every file is replayed in order, and a clean close leaves no file behind.
func TestCommitLogRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	s.ix.busyTimeout = 50 * time.Millisecond
	lock := lockSQLite(t, dir)
	l := abandonedLedger(t, s, dir)
	pad := strings.Repeat("x", 900)
	const n = 2000 // about 2.5 MB of frames: the 1 MiB first file and part of the next
	for i := 1; i <= n; i++ {
		record(t, l, stmtEvent("etl", "SELECT", fmt.Sprintf("SELECT '%s' FROM t WHERE id = %d", pad, i), []string{"public.t"}, nil))
	}
	if files := logFiles(t, dir); len(files) < 2 {
		t.Fatalf("after %d events the log has %d files; want a rotation", n, len(files))
	}
	s.crash()
	lock()
	s2 := reopenVerified(t, dir, n)
	l2, err := New(ctx, s2, Options{Instance: "gh-1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l2, 5)
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if left := logFiles(t, dir); len(left) != 0 {
		t.Fatalf("log files left after a clean close: %v", left)
	}
	logDir := journalDir(filepath.Join(dir, SQLiteFile))
	if m, _ := filepath.Glob(filepath.Join(logDir, "*")); len(m) > 1 || len(m) == 1 && m[0] != spareDir(logDir) {
		t.Fatalf("files left in the log directory after a clean close: %v", m)
	}
	if sp := spares(logDir); len(sp) > journalSpares {
		t.Fatalf("spare log files kept: %v, at most %d", sp, journalSpares)
	}
}

// TestMappedLogFaultFailsClosed: the commit log is written through a shared mapping of the
// file; if a store into it faults (here the file is cut short under the mapping, as a full
// copy-on-write file system would fault it), the record is refused and the ledger turns
// unhealthy instead of the process dying.
func TestMappedLogFaultFailsClosed(t *testing.T) {
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{CheckpointEvery: 1 << 30})
	fill(t, l, 3)
	s.wmu.Lock()
	if s.jr.m == nil {
		s.wmu.Unlock()
		t.Fatal("the commit log is not mapped")
	}
	err := s.jr.f.Truncate(0)
	s.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, stmtEvent("alice", "SELECT", "SELECT 1", nil, nil)); err == nil || !strings.Contains(err.Error(), "fault") {
		t.Fatalf("a record written over a faulting mapping: %v", err)
	}
	if l.Healthy() == nil {
		t.Fatal("the ledger is healthy after a failed write")
	}
}

// TestSyncerSkipsWhenNothingWasWritten: the syncer fdatasyncs written records once, and not
// again while nothing more is written (an idle ledger costs no sync), nor after a record
// that was synced before its Ack.
func TestSyncerSkipsWhenNothingWasWritten(t *testing.T) {
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{CheckpointEvery: 1 << 30})
	syncs := func() int {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		return s.bgSyncs
	}
	fill(t, l, 3) // plain reads: written, left to the syncer
	s.syncWritten()
	after := syncs()
	if after == 0 {
		t.Fatal("written records were not synced")
	}
	for range 3 {
		s.syncWritten()
	}
	denied := stmtEvent("alice", "SELECT", "SELECT 1", nil, nil)
	denied.Decision = "deny"
	if err := l.Record(ctx, denied); err != nil { // synced before its Ack
		t.Fatal(err)
	}
	s.syncWritten()
	if n := syncs(); n != after {
		t.Fatalf("the syncer synced %d more times with nothing written since its last sync", n-after)
	}
	fill(t, l, 1)
	s.syncWritten()
	if syncs() == after {
		t.Fatal("a new written record was not synced")
	}
}

// TestSyncedLogPagesAreHandedBack: once the syncer has synced them, the pages of the mapped
// log before the last written frame leave the process's page tables (so the log does not
// grow Gatehouse's resident set), and what they hold is intact: the mapping reads back
// what the file holds.
func TestSyncedLogPagesAreHandedBack(t *testing.T) {
	s, dir := openTestSQLite(t)
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{CheckpointEvery: 1 << 30})
	// Plain reads (written, left to the syncer) until the log holds more than the least
	// that is handed back at once.
	n := 0
	written := func() int64 {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		return s.jr.off
	}
	for written() < dropChunk+int64(os.Getpagesize()) {
		fill(t, l, 40)
		n += 40
	}
	s.syncWritten()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	j := s.jr
	if j.dropped < dropChunk || j.dropped > j.off {
		t.Fatalf("handed back %d bytes of a log written to %d", j.dropped, j.off)
	}
	file, err := os.ReadFile(j.name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(j.m[:j.off], file[:j.off]) {
		t.Fatal("the mapping no longer reads what the file holds")
	}
	rows, _, torn, err := readLog(j.name)
	if err != nil || torn || len(rows) != n {
		t.Fatalf("log after handing pages back: %d events, torn %v, %v", len(rows), torn, err)
	}
}

// TestCatchUpStoresAPrefixOfAnotherWritersLog: a reader catching up another process's commit
// log (the CLI while `gatehouse serve` writes) stores a prefix of the writer's acknowledged
// events, also when the writer adds to the file the reader has just stored and moves on to
// its next file before the reader gets there. A reader that stored that next file's events
// past the ones it missed showed a hole in the chain (TestReadsWhileBusy under load: verify
// found events "removed"). The hole was the reader's: the writer stores everything it
// acknowledged, and the chain is whole once it has.
func TestCatchUpStoresAPrefixOfAnotherWritersLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The writer's indexer stays idle, so its events live only in its log until the end.
	w.ix.stopOnce.Do(func() { close(w.ix.quit) })
	<-w.ix.done
	l := abandonedLedger(t, w, dir)
	pad := strings.Repeat("x", 900)
	n := 0
	add := func() {
		n++
		record(t, l, stmtEvent("etl", "SELECT", fmt.Sprintf("SELECT '%s' FROM t WHERE id = %d", pad, n), []string{"public.t"}, nil))
	}
	state := func() (files int, preparing bool) {
		w.wmu.Lock()
		defer w.wmu.Unlock()
		return w.jr.files, w.jr.next != nil
	}
	// Past half of the first file the writer prepares its next one, which readers list too.
	for _, preparing := state(); !preparing; _, preparing = state() {
		add()
	}
	acks := filepath.Join(journalDir(filepath.Join(dir, SQLiteFile)), "*.log.ack")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m, _ := filepath.Glob(acks); len(m) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer's next log file was not prepared")
		}
	}
	before := n

	r, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Once the reader has stored the writer's first file, the writer fills that file up
	// and goes on in the next one.
	stored := 0
	r.ix.caughtUp = func(string) {
		stored++
		if stored > 1 {
			return
		}
		for files, _ := state(); files < 2; files, _ = state() {
			add()
		}
		add()
	}
	r.ix.mu.Lock()
	err = r.ix.catchUpOthers(ctx)
	r.ix.mu.Unlock()
	r.ix.caughtUp = nil
	if err != nil {
		t.Fatal(err)
	}
	if files, _ := state(); stored != 2 || files != 2 {
		t.Fatalf("the reader stored %d log files while the writer had %d; want the reader on both, the writer rotated", stored, files)
	}
	var count, top int64
	if err := r.DB().QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM ledger_events`).Scan(&count, &top); err != nil {
		t.Fatal(err)
	}
	if count != top || top < int64(before) {
		t.Fatalf("after one catch-up the reader holds %d events up to seq %d; want every seq up to at least %d, without a hole", count, top, before)
	}

	// The writer stores what it acknowledged: the chain is whole, every event once.
	if _, err := w.Search(ctx, Query{Limit: 1}); err != nil {
		t.Fatal(err)
	}
	rep := verifyStore(t, l, r)
	if !rep.OK || rep.Chains[0].Events != int64(n) {
		t.Fatalf("after the writer stored its log (%d events acknowledged):\n%s", n, rep)
	}
}

// TestSyncedLogWritesBackWhatChanged: after a sync, a record stored through the log's
// mapping makes the kernel write back about the pages it changed. The log file's zero fill
// decides the page cache's folio sizes, and a folio dirtied again after a sync is written
// back whole: filled in 1 MiB writes, this test wrote back 808 KiB (12.6 KiB a record), a
// pgbench -S statement through serve 20–24 KB; filled a page at a time, 296 KiB and 4–5 KB.
func TestSyncedLogWritesBackWhatChanged(t *testing.T) {
	writeBytes := func() int64 {
		b, err := os.ReadFile("/proc/self/io")
		if err != nil {
			t.Fatalf("read /proc/self/io: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
				var n int64
				if _, err := fmt.Sscan(v, &n); err != nil {
					t.Fatalf("parse %q: %v", line, err)
				}
				return n
			}
		}
		t.Fatal("no write_bytes in /proc/self/io")
		return 0
	}
	s, dir := openTestSQLite(t)
	l := newLedger(t, &testStore{Store: s, dir: dir}, Options{CheckpointEvery: 1 << 30})
	fill(t, l, 1) // the first record opens the log file
	s.syncWritten()
	const rounds = 64
	before := writeBytes()
	for range rounds {
		fill(t, l, 1) // a plain read: written through the mapping, left to the syncer
		s.syncWritten()
	}
	got := writeBytes() - before
	t.Logf("%d records, each synced: %d KiB written back", rounds, got>>10)
	// A record changes one or two pages; 8 KiB a round leaves room for that and for the
	// indexer storing a few of the records meanwhile.
	if got > rounds*8<<10 {
		t.Fatalf("wrote back %d KiB (%d KiB a record): the log's page cache folios are larger than the pages a record changes", got>>10, got/rounds>>10)
	}
}

// TestRecycledLogSegments: a log file whose records are all stored becomes a spare, the
// next segment is made from it instead of a new zero-filled file, and the frames it still
// holds from its first use never come back: not in a replay after a crash, not in the chain.
func TestRecycledLogSegments(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	s.jr.segmentMax = journalSmallestSegment // a few hundred events per segment
	s.ix.busyTimeout = 50 * time.Millisecond
	l := abandonedLedger(t, s, dir)
	fill(t, l, 600)
	if err := s.ix.sync(ctx); err != nil { // stores them all and retires their files
		t.Fatal(err)
	}
	logDir := journalDir(filepath.Join(dir, SQLiteFile))
	sp := spares(logDir)
	if len(sp) == 0 || len(sp) > journalSpares {
		t.Fatalf("spare log files after storing every record: %v, want 1 to %d", sp, journalSpares)
	}
	spared := map[string]bool{}
	for _, f := range sp {
		spared[filepath.Base(f.path)] = true
	}

	// From now on SQLite stores nothing: what follows lives in the log only, in segments
	// made from the spares.
	lock := lockSQLite(t, dir)
	fill(t, l, 300)
	awaitPrepared(s)
	files := logFiles(t, dir)
	recycled := 0
	for _, f := range files {
		if spared[filepath.Base(f)] {
			t.Fatalf("a spare was written under its old name: %s", f)
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		h, err := readLogHeader(fh)
		fh.Close()
		if err != nil || h.len != logHeaderLen {
			t.Fatalf("header of %s: %+v %v", f, h, err)
		}
		if h.recycled {
			recycled++
			rows, _, torn, err := readLog(f)
			if err != nil || torn {
				t.Fatalf("a recycled log's earlier frames read as a torn write: torn %v, %v", torn, err)
			}
			for _, r := range rows {
				if r.seq <= 600 {
					t.Fatalf("recycled log %s replays event %d of its first use", f, r.seq)
				}
			}
		}
	}
	if recycled == 0 {
		t.Fatalf("no segment was made from a spare (spares %v, logs %v)", sp, files)
	}
	if left := spares(logDir); len(left) >= len(sp) {
		t.Fatalf("spares were not taken: before %v, after %v", sp, left)
	}
	s.crash()
	lock()
	// The replay stores exactly the 900 acknowledged events: none of a recycled file's
	// first-use frames (already stored, then retired) is taken for a new one.
	reopenVerified(t, dir, 900)
}

// TestVersion1LogStillReads: a commit log written before segments were recycled (the
// version 1 header, frames checked without a salt) left by a crash is replayed as before.
func TestVersion1LogStillReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "00000000000000000001-1-old.log")
	data := append([]byte(nil), journalMagic...)
	for seq := int64(1); seq <= 3; seq++ {
		ev := stmtEvent("alice@corp.example", "SELECT", "SELECT 1", nil, nil)
		ev.Seq, ev.Instance, ev.Time = seq, "gh-old", time.Unix(1700000000+seq, 0).UTC()
		body, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		data = appendEventFrame(data, 0, &eventRow{instance: "gh-old", seq: seq, hash: fmt.Sprint("h", seq), body: body})
	}
	data = append(data, make([]byte, 4096)...) // its zero fill
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	rows, _, torn, err := readLog(path)
	if err != nil || torn || len(rows) != 3 || rows[2].seq != 3 || rows[2].hash != "h3" {
		t.Fatalf("version 1 log: %d rows, torn %v, %v", len(rows), torn, err)
	}
	// The same frames under a version 2 header with a salt do not check: a salt is what
	// tells one use of a recycled file from the next.
	h, _ := newLogHeader(false)
	if err := os.WriteFile(path, append(h, data[len(journalMagic):]...), 0o600); err != nil {
		t.Fatal(err)
	}
	if rows, _, torn, err := readLog(path); err != nil || len(rows) != 0 || !torn {
		t.Fatalf("unsalted frames under a salted header: %d rows, torn %v, %v", len(rows), torn, err)
	}
}
