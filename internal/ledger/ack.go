package ledger

import "sync"

// NewAck returns an unanswered Ack and the function that answers it (only its first call
// counts). It is for recorders that commit somewhere else than this package's writer, and
// for tests that decide by hand when a record becomes durable. Whoever answers must answer
// the Acks of one caller in the order they were handed out, as the ledger does.
func NewAck() (*Ack, func(error)) {
	a := &Ack{done: make(chan error, 1)}
	var once sync.Once
	return a, func(err error) { once.Do(func() { a.done <- err }) }
}

// Answered reports, without waiting, whether the Ack has been answered, so that Wait returns
// its result at once. A door polls it to release what an answered record held back without
// stopping to wait for the records still being committed.
func (a *Ack) Answered() bool {
	select {
	case err, ok := <-a.done:
		a.settle(err, ok)
		return true
	default:
		return false
	}
}
