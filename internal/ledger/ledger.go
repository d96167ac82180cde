package ledger

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("ledger is closed")

// Options configure a Ledger.
type Options struct {
	// Instance names this Gatehouse instance's chain (default: the host name). Several
	// instances sharing a PostgreSQL store each keep their own chain.
	Instance string
	// Key signs checkpoints; when nil it is loaded from (or generated into) DataDir.
	Key     ed25519.PrivateKey
	DataDir string
	// CheckpointEvery and CheckpointInterval schedule signed checkpoints of the chain head
	// (defaults 1000 events, 1 minute).
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// CheckpointFile receives a copy of every checkpoint as a JSON line, outside the store.
	CheckpointFile string
	// MaxBatch caps how many events one group commit writes (default 512).
	MaxBatch int
	// WriteTimeout bounds one commit, so a hung store fails Record instead of hanging the
	// gate (default 5s).
	WriteTimeout time.Duration
	// Retention deletes events older than this, checked hourly (0 keeps everything).
	Retention time.Duration
	// Sinks receive committed events, in order, without slowing Record.
	Sinks []Sink
	Log   *slog.Logger
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// Durability is the contract for how durable a record is when its Ack answers
	// (default DurabilitySensitive).
	Durability Durability
}

// Durability is the ledger.durability contract: which records are fdatasync'd before
// their Ack answers. Like PostgreSQL's synchronous_commit, it trades the last few
// milliseconds of some records on a power loss for latency and CPU, never what a crash
// of Gatehouse alone could lose.
type Durability string

const (
	// DurabilitySensitive (the default) fdatasyncs, before the Ack answers, every record
	// that must survive a power loss: intents of statements that may change data, schema
	// or privileges, refusals, approval events, logins, admin events, and statements that
	// touch a sensitive class. Every other record (plain reads, completions of writes whose
	// intent is durable, session ends) is written to the commit log (write(2) done, so a
	// crash or kill -9 of Gatehouse loses nothing) before its Ack answers, and fdatasync'd
	// within MaxSyncDelay.
	DurabilitySensitive Durability = "sensitive"
	// DurabilityEvery fdatasyncs every record before its Ack answers.
	DurabilityEvery Durability = "every"
)

// ParseDurability checks a ledger.durability value ("" is the default).
func ParseDurability(s string) (Durability, error) {
	switch Durability(s) {
	case "":
		return DurabilitySensitive, nil
	case DurabilitySensitive, DurabilityEvery:
		return Durability(s), nil
	}
	return "", fmt.Errorf("ledger durability %q: expected sensitive or every", s)
}

// mustSync reports whether ev must be fdatasync'd before its Ack answers.
func (d Durability) mustSync(ev *Event) bool {
	if d == DurabilityEvery {
		return true
	}
	switch ev.Type {
	case EventStatement:
		// A refusal, a run under an approval, or sensitive data: synced. An allowed plain
		// statement (a read, or a write whose intent was synced before it ran) is not.
		return ev.Decision != "allow" || ev.ApprovalID != "" || touchesSensitive(ev)
	case EventSessionEnd:
		return false
	}
	// Intents, logins and failed logins, approvals, policy reloads, token and admin events,
	// and any type this list does not know.
	return true
}

func touchesSensitive(ev *Event) bool {
	for i := range ev.Statements {
		if len(ev.Statements[i].Sensitive) > 0 {
			return true
		}
	}
	return false
}

// request is one Record call waiting for its group commit.
type request struct {
	ev  *Event
	ack *Ack // answered when the record's commit ends
	// sync: the record must be fdatasync'd before done answers (see Durability).
	sync bool
}

// Ledger appends events to a Store with group commit, hash chaining and signed checkpoints.
// Record is safe for concurrent use. The group commit is led by whoever finds the log idle:
// a submitter of a record that needs only write(2) (a plain read under ledger.durability
// sensitive) commits the queue itself, its own record and any others, instead of waking a
// goroutine and waiting for it (a -S round trip used to wake the writer goroutine for every
// statement); every other record, and every record submitted while a commit is under way,
// is queued and committed by the leader at work or by the writer goroutine, which also
// runs the background work (checkpoints, recovery probes, retention).
type Ledger struct {
	store Store
	opts  Options
	key   ed25519.PrivateKey
	log   *slog.Logger
	cpf   checkpointFile

	calls    chan call
	quit     chan struct{}
	finished chan struct{}
	closeMu  sync.Once
	// wake (one slot) tells the writer goroutine that the queue needs a leader.
	wake chan struct{}

	// qmu guards the queue of records waiting for a commit. It is only ever held for a few
	// instructions, never across a commit.
	qmu   sync.Mutex
	queue []request // in submission order
	// leading is set while a holder of chainMu is committing what it took from the queue:
	// it takes the queue again before it lets go, so a submitter that finds it set leaves
	// its record to it (and wakes nobody).
	leading bool
	// room, when not nil, is closed once the queue is taken, for submitters waiting for
	// room in a full queue.
	room chan struct{}
	// closed is set by Close: nothing more is queued.
	closed bool

	// chainMu is held by whoever commits (a submitter leading inline, or the writer
	// goroutine) or otherwise touches the chain state below; one holder at a time keeps
	// one hash chain in order. It is held across a store commit (bounded by WriteTimeout),
	// never across a wait for a caller.
	chainMu sync.Mutex
	// soloLeads counts the inline leads in a row that found no record but their own to
	// commit (see leadInline), leads all of them; firstBatch is the size of the first batch
	// the last drain took.
	soloLeads, leads int
	firstBatch       int
	batch            []request // the batch being committed, reused
	recs             []Record  // the batch's sealed records, reused (stores do not keep it)
	// dueCPs are checkpoints that fell due and wait to be signed and stored by the writer
	// goroutine (storeDueCheckpoints); lastCPSeq already counts them.
	dueCPs     []Checkpoint
	hasher     chainHasher
	seq        int64
	hash       string
	stale      bool // head must be re-read from the store (after a failed commit)
	lastCPSeq  int64
	lastCPTime time.Time

	ownsStore bool // Close closes the store (set by Open)
	retDone   chan struct{}

	sinks     []*sinkRunner
	sinksOnce sync.Once
	sinksErr  error

	observer atomic.Pointer[CommitObserver]

	mu      sync.Mutex
	healthy error // last commit error, nil when healthy
}

// New starts a Ledger over store. It reads the chain head, so it fails when the store is
// unreachable at start.
func New(ctx context.Context, st Store, opts Options) (*Ledger, error) {
	if opts.Instance == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "gatehouse"
		}
		opts.Instance = h
	}
	if strings.ContainsAny(opts.Instance, "\n\r") {
		return nil, errors.New("ledger: instance name must not contain a line break")
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 1000
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Minute
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d, err := ParseDurability(string(opts.Durability))
	if err != nil {
		return nil, err
	}
	opts.Durability = d
	l := &Ledger{store: st, opts: opts, log: opts.Log, cpf: checkpointFile{path: opts.CheckpointFile},
		calls: make(chan call), quit: make(chan struct{}), finished: make(chan struct{}), wake: make(chan struct{}, 1)}
	if l.log == nil {
		l.log = slog.Default()
	}
	l.key = opts.Key
	if l.key == nil {
		if opts.DataDir == "" {
			return nil, errors.New("ledger: a data directory or a key is needed to sign checkpoints")
		}
		k, err := LoadOrCreateKey(opts.DataDir)
		if err != nil {
			return nil, err
		}
		l.key = k
	}
	l.cpf.key = PublicKeyBase64(l.key.Public().(ed25519.PublicKey))
	seq, hash, err := st.Head(ctx, opts.Instance)
	if err != nil {
		return nil, fmt.Errorf("start ledger: %w", err)
	}
	l.seq, l.hash = seq, hash
	cps, err := st.Checkpoints(ctx, opts.Instance)
	if err != nil {
		return nil, fmt.Errorf("start ledger: %w", err)
	}
	if n := len(cps); n > 0 {
		l.lastCPSeq = cps[n-1].Seq
	}
	l.lastCPTime = opts.Now()
	for _, s := range opts.Sinks {
		l.sinks = append(l.sinks, newSinkRunner(st, opts.Instance, seq, s, l.log))
	}
	go l.run()
	if opts.Retention > 0 {
		l.retDone = make(chan struct{})
		go l.retainLoop()
	}
	return l, nil
}

// retainLoop applies the retention setting at start and then hourly.
func (l *Ledger) retainLoop() {
	defer close(l.retDone)
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		if n, err := l.Retain(ctx, l.opts.Now().Add(-l.opts.Retention)); err != nil {
			l.log.Error("ledger retention", "err", err)
		} else if n > 0 {
			l.log.Info("ledger retention deleted old events", "events", n)
		}
		cancel()
		select {
		case <-t.C:
		case <-l.quit:
			return
		}
	}
}

// CommitObserver is told of every group commit: how durable it was, how many events it
// held, how long writing (and syncing) took, and whether it failed. A Sync is a synced
// commit of no events of its own.
type CommitObserver func(c Commit, events int, took time.Duration, err error)

// ObserveCommits sets the commit observer (for metrics); nil removes it.
func (l *Ledger) ObserveCommits(fn CommitObserver) {
	if fn == nil {
		l.observer.Store(nil)
		return
	}
	l.observer.Store(&fn)
}

// Queued is how many records wait for the group commit, for metrics.
func (l *Ledger) Queued() int {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	return len(l.queue)
}

// maxQueued bounds the queue: a submitter finding it full waits (as its ctx allows) for the
// leader to take it.
const maxQueued = 4096

// maxInlineRounds is how many batches a submitter leading inline commits before it hands
// what is still queued to the writer goroutine: its own record is in the first batch
// (unless more than MaxBatch were queued before it), and its session waits for it.
const maxInlineRounds = 2

// Store returns the ledger's store (for search, export and verify).
func (l *Ledger) Store() Store { return l.store }

// Instance is the name of this ledger's chain.
func (l *Ledger) Instance() string { return l.opts.Instance }

// PublicKey is the key that verifies this ledger's checkpoints.
func (l *Ledger) PublicKey() ed25519.PublicKey { return l.key.Public().(ed25519.PublicKey) }

// Healthy returns nil when the last commit (or recovery probe) succeeded, else its error,
// and ErrClosed after Close. The gate refuses statements while it is not nil; health checks
// and the console show it.
func (l *Ledger) Healthy() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.healthy
}

// Record appends ev and returns once it is durable as the ledger's Durability contract
// promises (fdatasync'd, or for a plain record under DurabilitySensitive, written to the
// commit log and synced within MaxSyncDelay). It fills in ev.Seq, Instance, PrevHash
// and Hash (and Time when zero). An error means the event is not known to be recorded: the
// gate must refuse the statement. Record never blocks longer than ctx allows; an event whose
// caller gave up may still be committed (the ledger then holds more than the client saw,
// never less). The ledger keeps ev (its store indexes it after the commit): the caller must
// not change it once Record is called.
//
// Since its caller waits anyway, Record commits the queue itself when no commit is under
// way, a record that must be fdatasync'd included (Submit leaves such a record to the
// writer goroutine): the intent of a write outside a transaction block, or any record
// under DurabilityEvery, then costs its session no hand-off to the writer goroutine and
// back.
func (l *Ledger) Record(ctx context.Context, ev *Event) error {
	return l.submit(ctx, ev, false, true).Wait(ctx)
}

// Submit hands ev to the group commit; the returned Ack says when it is durable.
// Everything said of Record holds for Submit + Ack.Wait, with one exception: a record that
// needs only write(2) (see Durability), submitted while no commit is under way, is
// committed by Submit itself (with any records queued before it) and its Ack returned
// already answered. That commit is bounded by Options.WriteTimeout, not by ctx, since it
// also carries other callers' records; Submit waits for ctx only before the commit starts.
func (l *Ledger) Submit(ctx context.Context, ev *Event) *Ack {
	return l.submit(ctx, ev, false, false)
}

// RecordWritten appends ev and returns once it is written to the commit log (write(2)
// done: a crash or kill -9 of Gatehouse cannot lose it), without the fdatasync the
// Durability contract may ask of it; under DurabilityEvery it is Record. It is for the
// intent of a statement inside a transaction block, whose change cannot take effect before
// the block ends: the gate calls Sync before it forwards whatever ends the block, so the
// intent is fdatasync'd before the change can take effect (see the README's durability
// rule). A store that cannot tell written from synced (PostgreSQL) syncs it anyway.
func (l *Ledger) RecordWritten(ctx context.Context, ev *Event) error {
	return l.submit(ctx, ev, true, true).Wait(ctx)
}

// Sync returns once every record whose Ack has answered is fdatasync'd: one fdatasync of
// the commit log (shared with every caller whose records it covers, and with the
// background syncer's), or nothing when all is synced. An error means records already
// answered may not be on stable storage: the caller must not let a change take effect that
// relies on them (the ledger is then unhealthy until a sync succeeds).
//
// Sync goes to the store directly, not through the commit queue: every record whose Ack has
// answered is already in the commit log, so the sync needs no place in the chain's order.
// As a barrier in the queue it woke the writer goroutine, which held the chain across the
// fdatasync (plain reads queued behind it meanwhile) and then woke the caller.
func (l *Ledger) Sync(ctx context.Context) error {
	select {
	case <-l.quit:
		return ErrClosed
	default:
	}
	start := time.Now()
	err := l.store.SyncWritten(ctx)
	if obs := l.observer.Load(); obs != nil {
		(*obs)(CommitSynced, 0, time.Since(start), err) // a synced commit of no events of its own
	}
	if err != nil {
		if ctx.Err() == nil {
			// The disk failed, not the caller's patience: fail closed until the probe finds
			// the store writing (and syncing) again.
			l.chainMu.Lock()
			l.stale = true
			l.chainMu.Unlock()
			l.setHealth(fmt.Errorf("ledger unavailable: %w", err))
		}
		return fmt.Errorf("sync ledger: %w", err)
	}
	return nil
}

// submit is Submit; written asks for write(2) only, whatever the event is (see
// RecordWritten); waits says that the caller waits for the Ack at once, so it may lead a
// commit that syncs (see Record).
func (l *Ledger) submit(ctx context.Context, ev *Event, written, waits bool) *Ack {
	if ev == nil {
		return failedAck(errors.New("record: nil event"))
	}
	if ev.Type == "" {
		return failedAck(errors.New("record: event has no type"))
	}
	if ev.Time.IsZero() {
		ev.Time = l.opts.Now()
	}
	ev.Time = ev.Time.UTC()
	select {
	case <-l.quit:
		return failedAck(ErrClosed)
	default:
	}
	if err := ctx.Err(); err != nil {
		return failedAck(fmt.Errorf("record %s event: %w", ev.Type, err))
	}
	a := &Ack{finished: l.finished}
	r := request{ev: ev, ack: a, sync: l.opts.Durability.mustSync(ev)}
	if written && l.opts.Durability != DurabilityEvery {
		r.sync = false
	}
	lead, err := l.enqueue(ctx, r, waits)
	if err != nil {
		return failedAck(fmt.Errorf("record %s event: %w", ev.Type, err))
	}
	if lead {
		l.leadInline(r.sync)
	}
	return a
}

// enqueue queues r for the group commit. It reports whether the caller should lead the
// commit itself: no commit is under way, and r needs only write(2) or its caller waits
// for it anyway (waits). A record that must be synced is otherwise left to a leader at
// work or to the writer goroutine, so that its submitter does not wait for an fdatasync
// inside Submit. It waits (as ctx allows) while the queue is full.
func (l *Ledger) enqueue(ctx context.Context, r request, waits bool) (lead bool, err error) {
	l.qmu.Lock()
	for len(l.queue) >= maxQueued && !l.closed {
		if l.room == nil {
			l.room = make(chan struct{})
		}
		room := l.room
		l.qmu.Unlock()
		l.wakeWriter()
		select {
		case <-room:
		case <-l.quit:
			return false, ErrClosed
		case <-ctx.Done():
			return false, ctx.Err()
		}
		l.qmu.Lock()
	}
	if l.closed {
		l.qmu.Unlock()
		return false, ErrClosed
	}
	l.queue = append(l.queue, r)
	leading := l.leading
	l.qmu.Unlock()
	if leading {
		return false, nil // the leader takes the queue again before it lets go
	}
	if !r.sync || waits {
		return true, nil
	}
	l.wakeWriter()
	return false, nil
}

// leadInline commits the queue on the submitter's goroutine when no commit is under way,
// so a plain read's record costs its session a write(2), not a hand-off to the writer
// goroutine and back. When another holder has the chain (a commit or background work under
// way), the writer goroutine is woken to take the queue after it.
//
// Before it takes the queue the leader yields once (runtime.Gosched) with the queue marked
// led: submitters that are ready to run at that moment (other sessions whose statements
// finished together) queue their records behind its own and leave them to it, so one
// write(2) and one pass through the store carry all of them (with 64 sessions recording on
// one core, BenchmarkSustained -cpu 1: 71–73k events/s under durability every with the
// yield, 34–39k without). A plain record's leader skips the yield while yielding gains
// nothing (see yieldFirst): the yield wakes an idle thread of the runtime to take the
// yielded processor, which costs a lone session's statement a futex wake and two context
// switches (pgbench -S, one client, quiet machine, alternated five times: p50 171–186 →
// 130–152 µs without the yield, CPU per statement 98–111 → 80–92 µs).
//
// The inline leader only ever writes: it commits the queue up to the first record that
// must be fdatasync'd and leaves that one and everything behind it to
// the writer goroutine, and a checkpoint that has fallen due is the writer's too, so no
// session waits inside Submit for an fdatasync or a signature.
//
// A leader whose own record must be synced (sync: Record and RecordWritten leading for
// their waiting caller) commits one batch, synced records included, and leaves what is
// queued behind it to the writer goroutine: its session waits for nothing but that batch.
func (l *Ledger) leadInline(sync bool) {
	if !l.chainMu.TryLock() {
		// A holder that is leading takes the queue again (or wakes the writer) after it
		// last looks at it under qmu, which is after this record was queued: waking the
		// writer too would only make it find the queue empty.
		l.qmu.Lock()
		led := l.leading
		l.qmu.Unlock()
		if !led {
			l.wakeWriter()
		}
		return
	}
	l.qmu.Lock()
	l.leading = true
	l.qmu.Unlock()
	if l.yieldFirst(sync) {
		runtime.Gosched()
	}
	var empty bool
	if sync {
		empty = l.drain(1, false, true)
	} else {
		empty = l.drain(maxInlineRounds, true, true)
	}
	l.noteLead()
	due := len(l.dueCPs) > 0
	l.chainMu.Unlock()
	if !empty || due {
		l.wakeWriter()
	}
}

// Leads in a row that committed only their own record before a plain record's leader stops
// yielding (soloYieldAfter), and how often it yields all the same then, to notice other
// submitters again (soloProbeEvery).
const (
	soloYieldAfter = 8
	soloProbeEvery = 32
)

// yieldFirst reports whether the inline leader yields before it takes the queue: always
// for a record that must be synced (an fdatasync dwarfs the yield, and the sync shared
// with the submitters that join is the saving), and for a plain record unless the last
// soloYieldAfter leads found nobody to join them, then once every soloProbeEvery leads.
// Called with chainMu held.
func (l *Ledger) yieldFirst(sync bool) bool {
	l.leads++
	return sync || l.soloLeads < soloYieldAfter || l.leads%soloProbeEvery == 0
}

// noteLead counts an inline lead whose first batch (drain) held its own record only.
// Called with chainMu held.
func (l *Ledger) noteLead() {
	if l.firstBatch > 1 {
		l.soloLeads = 0
	} else {
		l.soloLeads++
	}
}

// wakeWriter tells the writer goroutine that the queue needs a leader.
func (l *Ledger) wakeWriter() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// drain commits the queue, oldest first, batch by batch, until it is empty or rounds
// batches are done (rounds < 0: until empty), and reports whether it left the queue
// empty. When writeOnly (a submitter of a plain record leading, see leadInline), it stops
// before the first record that must be synced. A submitter leading (inline) leaves
// checkpoints to the writer goroutine; otherwise drain seals a checkpoint whenever one
// falls due. Called with chainMu held.
func (l *Ledger) drain(rounds int, writeOnly, inline bool) bool {
	for i := 0; rounds < 0 || i < rounds; i++ {
		l.qmu.Lock()
		n := min(len(l.queue), l.opts.MaxBatch)
		if writeOnly {
			for k, r := range l.queue[:n] {
				if r.sync {
					n = k
					break
				}
			}
		}
		if n == 0 {
			if i == 0 {
				l.firstBatch = 0
			}
			l.leading = false
			empty := len(l.queue) == 0
			l.qmu.Unlock()
			return empty
		}
		if i == 0 {
			l.firstBatch = n
		}
		if n == len(l.queue) {
			// Take the whole queue; the emptied batch slice becomes the queue.
			l.batch, l.queue = l.queue, l.batch[:0]
		} else {
			l.batch = append(l.batch[:0], l.queue[:n]...)
			k := copy(l.queue, l.queue[n:])
			clear(l.queue[k:])
			l.queue = l.queue[:k]
		}
		l.leading = true
		if l.room != nil {
			close(l.room)
			l.room = nil
		}
		l.qmu.Unlock()
		l.commit(l.batch)
		clear(l.batch)
		l.batch = l.batch[:0]
		if !l.stale && l.seq-l.lastCPSeq >= int64(l.opts.CheckpointEvery) {
			// The head after this batch is checkpointed, as if in the batch; signing and
			// storing it is the writer goroutine's (storeDueCheckpoints).
			l.dueCPs = append(l.dueCPs, Checkpoint{Instance: l.opts.Instance, Seq: l.seq, Hash: l.hash, Time: l.opts.Now(), Kind: CheckpointPeriodic})
			l.lastCPSeq = l.seq
		}
		if !inline {
			l.storeDueCheckpoints()
		}
	}
	l.qmu.Lock()
	l.leading = false
	empty := len(l.queue) == 0
	l.qmu.Unlock()
	return empty
}

// Close stops accepting events, commits those already queued, writes a final checkpoint and
// stops the sinks.
func (l *Ledger) Close(ctx context.Context) error {
	l.closeMu.Do(func() {
		l.qmu.Lock()
		l.closed = true
		l.qmu.Unlock()
		close(l.quit)
	})
	select {
	case <-l.finished:
	case <-ctx.Done():
		return fmt.Errorf("close ledger: %w", ctx.Err())
	}
	l.sinksOnce.Do(func() {
		var errs []error
		for _, s := range l.sinks {
			errs = append(errs, s.close(ctx))
		}
		if l.retDone != nil {
			<-l.retDone
		}
		if l.ownsStore {
			errs = append(errs, l.store.Close())
		}
		l.sinksErr = errors.Join(errs...)
	})
	return l.sinksErr
}

func (l *Ledger) run() {
	defer close(l.finished)
	// A closed ledger records nothing more: say so to health checks (the gate then refuses
	// statements instead of finding out at Record).
	defer func() {
		l.mu.Lock()
		l.healthy = ErrClosed
		l.mu.Unlock()
	}()
	tick := time.NewTicker(l.tickEvery())
	defer tick.Stop()
	for {
		select {
		case <-l.wake:
			l.chainMu.Lock()
			l.drain(-1, false, false)
			l.storeDueCheckpoints() // left by an inline leader
			l.chainMu.Unlock()
		case c := <-l.calls:
			l.chainMu.Lock()
			c.done <- c.fn()
			l.chainMu.Unlock()
		case <-tick.C:
			l.chainMu.Lock()
			if l.stale {
				// Recover without waiting for traffic: the gate refuses statements while
				// the ledger is unhealthy, so no Record may come to find out.
				l.probe()
			} else if l.opts.Now().Sub(l.lastCPTime) >= l.opts.CheckpointInterval {
				l.timedCheckpoint()
			}
			l.chainMu.Unlock()
		case <-l.quit:
			// Commit what is already queued (Close stopped the queue), then seal the head.
			l.chainMu.Lock()
			l.drain(-1, false, false)
			l.storeDueCheckpoints()
			l.timedCheckpoint()
			l.chainMu.Unlock()
			return
		}
	}
}

// probe checks whether a failed store writes again and, if so, continues the chain from
// what the store really holds.
func (l *Ledger) probe() {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.WriteTimeout)
	defer cancel()
	if err := l.store.Probe(ctx); err != nil {
		l.setHealth(fmt.Errorf("ledger unavailable: %w", err))
		return
	}
	seq, hash, err := l.store.Head(ctx, l.opts.Instance)
	if err != nil {
		l.setHealth(fmt.Errorf("ledger unavailable: %w", err))
		return
	}
	l.seq, l.hash, l.stale = seq, hash, false
	l.setHealth(nil)
}

func (l *Ledger) tickEvery() time.Duration {
	d := l.opts.CheckpointInterval / 4
	if d < 10*time.Millisecond {
		d = 10 * time.Millisecond
	}
	if d > 500*time.Millisecond {
		d = 500 * time.Millisecond
	}
	return d
}

func (l *Ledger) setHealth(err error) {
	l.mu.Lock()
	prev := l.healthy
	l.healthy = err
	l.mu.Unlock()
	if err != nil && prev == nil {
		l.log.Error("ledger cannot write; refusing statements until it can", "instance", l.opts.Instance, "err", err)
	}
	if err == nil && prev != nil {
		l.log.Info("ledger writes again", "instance", l.opts.Instance)
	}
}

// commit seals and writes one batch and answers its callers. The records before the first
// one that must be synced are only written (and answered as soon as write(2) is done); that
// one and every record after it are answered after the sync, since an Ack never answers
// before an earlier one.
func (l *Ledger) commit(batch []request) {
	k := len(batch)
	for i := range batch {
		if batch[i].sync {
			k = i
			break
		}
	}
	if k > 0 {
		l.commitPart(batch[:k], CommitWritten)
	}
	if k < len(batch) {
		l.commitPart(batch[k:], CommitSynced)
	}
}

// commitPart commits part of a batch as durably as c says and answers its callers.
func (l *Ledger) commitPart(batch []request, c Commit) {
	start := time.Now()
	ctx := &commitCtx{deadline: start.Add(l.opts.WriteTimeout)}
	err := l.commitBatch(ctx, batch, c)
	ctx.release()
	if obs := l.observer.Load(); obs != nil {
		(*obs)(c, len(batch), time.Since(start), err)
	}
	l.setHealth(err)
	for _, r := range batch {
		r.ack.answer(err)
	}
	if err == nil {
		for _, s := range l.sinks {
			s.notify(l.seq)
		}
	}
}

func (l *Ledger) commitBatch(ctx context.Context, batch []request, c Commit) error {
	if l.stale {
		// The last commit failed; whether it reached the disk is unknown (a lost COMMIT
		// reply), so continue from what the store really holds.
		seq, hash, err := l.store.Head(ctx, l.opts.Instance)
		if err != nil {
			return fmt.Errorf("ledger unavailable: %w", err)
		}
		l.seq, l.hash, l.stale = seq, hash, false
	}
	recs := l.recs[:0]
	defer func() { clear(recs); l.recs = recs[:0] }()
	seq, hash := l.seq, l.hash
	// One buffer holds the batch's records (they are stored and dropped together).
	buf := make([]byte, 0, sealedSizeHint*len(batch))
	for _, r := range batch {
		ev := r.ev
		seq++
		ev.Seq, ev.Instance, ev.PrevHash = seq, l.opts.Instance, hash
		var body []byte
		var err error
		body, buf, err = sealEventAppend(buf, ev, &l.hasher)
		if err != nil {
			// Only an unencodable event gets here; refuse the whole batch rather than
			// leave a hole in the chain.
			return fmt.Errorf("seal event: %w", err)
		}
		hash = ev.Hash
		recs = append(recs, Record{Event: ev, Body: body})
	}
	if err := l.store.Append(ctx, recs, nil, c); err != nil {
		l.stale = true
		return fmt.Errorf("ledger unavailable: %w", err)
	}
	l.seq, l.hash = seq, hash
	return nil
}

// sealedSizeHint is about the size of a sealed statement record, for sizing the buffer of
// a batch's records.
const sealedSizeHint = 768

func (l *Ledger) newCheckpoint(seq int64, hash, kind string) Checkpoint {
	cp := Checkpoint{Instance: l.opts.Instance, Seq: seq, Hash: hash, Time: l.opts.Now(), Kind: kind}
	cp.sign(l.key)
	return cp
}

// checkpointed notes a stored checkpoint and copies it to the external file.
func (l *Ledger) checkpointed(cp Checkpoint) {
	if cp.Kind == CheckpointPeriodic {
		l.lastCPSeq, l.lastCPTime = cp.Seq, l.opts.Now()
	}
	if err := l.cpf.append(cp); err != nil {
		// The checkpoint is in the store; the external copy is what catches a truncated
		// store, so an operator must hear about it, but statements need not stop.
		l.log.Error("write external checkpoint file", "path", l.cpf.path, "err", err)
	}
}

// storeDueCheckpoints signs and stores the checkpoints that fell due (every
// CheckpointEvery events, see drain), on the writer goroutine. Each names the head after
// the batch that made it due, as when checkpoints were stored in that batch, but no
// caller of that batch waits for its signature and sync. A store that cannot take them
// cannot be trusted with records either: the ledger turns unhealthy until the probe finds
// it writing again. Called with chainMu held.
func (l *Ledger) storeDueCheckpoints() {
	if len(l.dueCPs) == 0 {
		return
	}
	cps := l.dueCPs
	l.dueCPs = nil
	for i := range cps {
		cps[i].sign(l.key)
	}
	ctx := &commitCtx{deadline: time.Now().Add(l.opts.WriteTimeout)}
	defer ctx.release()
	if err := l.store.Append(ctx, nil, cps, CommitSynced); err != nil {
		l.stale = true
		l.setHealth(fmt.Errorf("ledger unavailable: store checkpoint at seq %d: %w", cps[len(cps)-1].Seq, err))
		return
	}
	for _, cp := range cps {
		l.checkpointed(cp)
	}
}

// timedCheckpoint seals the head when events arrived since the last checkpoint.
func (l *Ledger) timedCheckpoint() {
	if l.stale || l.seq == l.lastCPSeq || l.seq == 0 {
		l.lastCPTime = l.opts.Now()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.WriteTimeout)
	defer cancel()
	cp := l.newCheckpoint(l.seq, l.hash, CheckpointPeriodic)
	if err := l.store.AddCheckpoint(ctx, cp); err != nil {
		l.log.Error("store ledger checkpoint", "seq", cp.Seq, "err", err)
		l.lastCPTime = l.opts.Now()
		return
	}
	l.checkpointed(cp)
}

// Checkpoint seals the current head now (e.g. before an export or at shutdown).
func (l *Ledger) Checkpoint(ctx context.Context) error {
	return l.onWriter(ctx, func() error {
		if l.seq == 0 || l.seq == l.lastCPSeq {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, l.opts.WriteTimeout)
		defer cancel()
		cp := l.newCheckpoint(l.seq, l.hash, CheckpointPeriodic)
		if err := l.store.AddCheckpoint(wctx, cp); err != nil {
			return fmt.Errorf("checkpoint ledger: %w", err)
		}
		l.checkpointed(cp)
		return nil
	})
}

// Retain deletes this instance's events older than before. Deleting the start of a hash
// chain would make the new first event look like it lost its predecessor, so the deletion
// stores, in the same transaction, a signed retention anchor naming the last deleted event
// and its hash; Verify starts the chain from the newest anchor. The retention is itself
// recorded as an admin event.
func (l *Ledger) Retain(ctx context.Context, before time.Time) (int64, error) {
	var n, through int64
	err := l.onWriter(ctx, func() error {
		wctx, cancel := context.WithTimeout(ctx, 10*l.opts.WriteTimeout)
		defer cancel()
		seq, hash, err := l.store.LastBefore(wctx, l.opts.Instance, before)
		if err != nil {
			return err
		}
		if seq == 0 {
			return nil
		}
		anchor := l.newCheckpoint(seq, hash, CheckpointRetention)
		n, err = l.store.DeleteThrough(wctx, l.opts.Instance, seq, anchor)
		if err != nil {
			return err
		}
		through = seq
		if err := l.cpf.append(anchor); err != nil {
			l.log.Error("write external checkpoint file", "path", l.cpf.path, "err", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("apply ledger retention: %w", err)
	}
	if n > 0 {
		ev := &Event{Type: EventAdmin, Subject: "gatehouse", Message: fmt.Sprintf("retention deleted %d events through seq %d (older than %s)", n, through, before.UTC().Format(time.RFC3339))}
		if err := l.Record(ctx, ev); err != nil {
			return n, err
		}
	}
	return n, nil
}

// onWriter runs fn on the writer goroutine, holding the chain (chainMu).
func (l *Ledger) onWriter(ctx context.Context, fn func() error) error {
	c := call{fn: fn, done: make(chan error, 1)}
	select {
	case l.calls <- c:
	case <-l.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-l.finished:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call is work other than appending that must run on the writer goroutine.
type call struct {
	fn   func() error
	done chan error
}

// commitCtx is the context of one group commit: it ends at the commit's deadline
// (Options.WriteTimeout) or when the commit is over. context.WithTimeout costs four
// allocations and a runtime timer per commit, yet a commit to the embedded store never
// waits on its context (write(2) to the commit log is not interruptible); so the timed
// context is made only when something asks for Done, as a PostgreSQL store's driver does.
// Until then Err compares the clock with the deadline.
type commitCtx struct {
	deadline time.Time
	mu       sync.Mutex
	ctx      context.Context // the context behind Done, nil until asked for
	cancel   context.CancelFunc
	released bool // the commit is over
}

// Deadline implements context.Context.
func (c *commitCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Done implements context.Context: the channel of a context with the same deadline.
func (c *commitCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithDeadline(context.Background(), c.deadline)
		if c.released {
			c.cancel()
		}
	}
	return c.ctx.Done()
}

// Err implements context.Context.
func (c *commitCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.ctx != nil:
		return c.ctx.Err()
	case c.released:
		return context.Canceled
	case !time.Now().Before(c.deadline):
		return context.DeadlineExceeded
	}
	return nil
}

// Value implements context.Context. Once Done was asked for, it answers for the timed
// context, so that contexts derived from this one attach to it directly instead of each
// starting a goroutine to watch Done.
func (c *commitCtx) Value(key any) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx != nil {
		return c.ctx.Value(key)
	}
	return nil
}

// release ends the commit's context, as the cancel function of context.WithTimeout does.
func (c *commitCtx) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = true
	if c.cancel != nil {
		c.cancel()
	}
}
