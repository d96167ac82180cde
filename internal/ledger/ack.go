package ledger

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Ack is an event on its way into the ledger. Its Wait returns once the event is durable
// as the Durability contract promises (or could not be recorded). Acks of one caller
// complete in the order they were submitted, because commits are ordered: waiting for the
// newest Ack of a session covers all its older ones. An Ack is safe to wait on from
// several goroutines.
//
// An Ack is one allocation: the answer is kept in the Ack itself and a channel is made
// only when somebody has to block for it (Wait before the answer, or Ready). A plain
// read's record committed inline by its own Submit is answered before anyone waits, so its
// session never pays for a channel (it used to pay for two allocations of one).
type Ack struct {
	// answered is set, after err, once the Ack is answered; err is then final.
	answered atomic.Bool
	err      error
	// mu guards ready and orders answer against a waiter making ready.
	mu sync.Mutex
	// ready, made by the first waiter that must block, is closed by answer.
	ready chan struct{}
	// finished, when non-nil, is closed when the ledger's writer has stopped.
	finished <-chan struct{}
}

// NewAck returns an unanswered Ack and the function that answers it (only its first call
// counts). It is for recorders that commit somewhere else than this package's writer, and
// for tests that decide by hand when a record becomes durable. Whoever answers must answer
// the Acks of one caller in the order they were handed out, as the ledger does.
func NewAck() (*Ack, func(error)) {
	a := &Ack{}
	return a, a.answer
}

// AnsweredAck is an Ack that is already answered with err (nil: recorded), for recorders
// that write synchronously.
func AnsweredAck(err error) *Ack { return failedAck(err) }

// failedAck is an Ack that is already answered with err.
func failedAck(err error) *Ack {
	a := &Ack{err: err}
	a.answered.Store(true)
	return a
}

// answer settles the Ack with err and wakes its waiters; later calls change nothing.
func (a *Ack) answer(err error) {
	a.mu.Lock()
	if !a.answered.Load() {
		a.err = err
		a.answered.Store(true)
		if a.ready != nil {
			close(a.ready)
		}
	}
	a.mu.Unlock()
}

// Ready returns a channel that is closed once the Ack is answered, for select; Wait then
// returns the answer at once.
func (a *Ack) Ready() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ready == nil {
		a.ready = make(chan struct{})
		if a.answered.Load() {
			close(a.ready)
		}
	}
	return a.ready
}

// Answered reports, without waiting, whether the Ack has been answered, so that Wait returns
// its result at once. A door polls it to release what an answered record held back without
// stopping to wait for the records still being committed.
func (a *Ack) Answered() bool { return a.answered.Load() }

// Wait returns once the event is durable, or the error that kept it from being recorded.
// It returns early (with ctx's error) when ctx ends; the event may still be committed.
func (a *Ack) Wait(ctx context.Context) error {
	if a.answered.Load() {
		return a.err
	}
	select {
	case <-a.Ready():
		return a.err
	case <-a.finished:
		// The writer stopped; it answers every request it took before stopping.
		if a.answered.Load() {
			return a.err
		}
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("record event: %w", ctx.Err())
	}
}
