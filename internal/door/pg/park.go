package pg

// Handing an upstream connection back to the pool when a client ends its session.
//
// A client's Terminate normally goes upstream and ends the backend. With a pool, when the
// backend is idle — everything the client sent has been answered and no extended-protocol
// exchange is open without its Sync — the relay sends a Sync in its place instead. An idle
// backend answers a Sync with nothing but ReadyForQuery, so the upstream loop stops right
// after that message, at a message boundary, and the connection goes to the pool (which
// resets it, or closes it when the reset fails). Without that certainty the Terminate goes
// upstream as before: a Sync after an open extended exchange would commit its implicit
// transaction, which the client's Terminate aborts; a backend in COPY ignores a Sync.

import (
	"errors"
	"time"
)

// parkFrame is the Sync sent in place of the client's Terminate.
var parkFrame = []byte{'S', 0, 0, 0, 4}

// parkTimeout bounds the wait for the backend's answer to the park Sync.
const parkTimeout = 5 * time.Second

// errParked stops the upstream loop at the ReadyForQuery that answers the park Sync.
var errParked = errors.New("session ended; upstream connection returned to the pool")

// noteFrontend tracks whether an extended-protocol exchange is open (client loop): from
// Parse, Bind, Describe, Execute or Close until the Sync that ends it.
func (r *relay) noteFrontend(typ byte) {
	switch typ {
	case 'P', 'B', 'D', 'E', 'C':
		r.extOpen = true
	case 'S':
		r.extOpen = false
	}
}

// parkOnTerminate is the client loop's handling of Terminate with a pool: when the backend is
// idle it queues the park Sync in place of the Terminate and reports true.
func (r *relay) parkOnTerminate() bool {
	if r.srv.Pool == nil || r.extOpen || r.inFlight() {
		return false
	}
	r.parking = true
	r.push(&pending{request: request{kind: pPark}})
	_ = r.up.SetReadDeadline(time.Now().Add(parkTimeout))
	r.write(parkFrame)
	return true
}

// parkedAt is the upstream loop's check at each ReadyForQuery (the whole frame): true when it answers the park
// Sync, and the loop must stop. The connection is the pool's from then on only if the
// session had not been ended meanwhile (end closes the upstream once; parking takes that
// once, so a late end — a revocation tick — cannot close a pooled connection).
func (r *relay) parkedAt(readyForQuery []byte) bool {
	p := r.peek()
	if p == nil || p.kind != pPark {
		return false
	}
	r.pop()
	if len(readyForQuery) != 6 {
		return true // malformed: stop, and the connection is closed
	}
	r.endOnce.Do(func() { r.parkStatus = readyForQuery[5] })
	return true
}

// upLeftover is what the upstream reader had buffered beyond the park ReadyForQuery
// (asynchronous messages that arrived meanwhile), for the pool's reset to consume.
func (r *relay) upLeftover() []byte {
	return r.ur.leftover()
}
