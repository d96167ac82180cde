package live

import (
	"sync"
	"time"
)

// Activity is how busy one instance is (or, summed, the fleet): what the overview shows as
// statements per second, refusals and held statements. Counts are since each instance
// started, so a restarted instance starts again from zero.
type Activity struct {
	// Instance names the instance ("" in a sum over the fleet).
	Instance string `json:"instance,omitempty"`
	// Sessions is how many sessions the instance has open.
	Sessions int `json:"sessions"`
	// Statements, Refused and Held count its statements since it started: all of them,
	// those policy refused, those held for approval.
	Statements int64 `json:"statements"`
	Refused    int64 `json:"refused"`
	Held       int64 `json:"held"`
	// Rate is its statements per second over the last second or two; negative while not
	// yet known (a single sample so far).
	Rate float64 `json:"rate"`
	// At is when these numbers were taken (for another instance: its last publish).
	At time.Time `json:"at"`
}

// add sums a into s (rates only when known).
func (s *Activity) add(a Activity) {
	s.Sessions += a.Sessions
	s.Statements += a.Statements
	s.Refused += a.Refused
	s.Held += a.Held
	if a.Rate >= 0 {
		s.Rate = max(s.Rate, 0) + a.Rate
	}
	if a.At.After(s.At) {
		s.At = a.At
	}
}

// rateMeter turns a running count into a rate: it keeps two samples at least rateEvery
// apart and reports the rate between them. Whoever asks (the shared view's publish loop,
// every overview stream) takes the samples, so no goroutine of its own is needed; samples
// older than rateStale are dropped, so a rate is never an average over a long quiet spell
// in which nobody asked. Safe for concurrent use; the zero value is ready.
type rateMeter struct {
	mu        sync.Mutex
	prev, cur rateSample
}

type rateSample struct {
	at time.Time
	n  int64
}

const (
	// rateEvery is the shortest interval a rate is measured over.
	rateEvery = time.Second
	// rateStale is how old the newer sample may be before the meter starts again.
	rateStale = 10 * time.Second
)

// rate records n (the running count at now) and returns the rate over the last completed
// interval, or -1 when there is none yet.
func (m *rateMeter) rate(now time.Time, n int64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch age := now.Sub(m.cur.at); {
	case m.cur.at.IsZero() || age > rateStale || age < 0:
		m.prev, m.cur = rateSample{}, rateSample{at: now, n: n}
	case age >= rateEvery:
		m.prev, m.cur = m.cur, rateSample{at: now, n: n}
	}
	if m.prev.at.IsZero() {
		return -1
	}
	return float64(m.cur.n-m.prev.n) / m.cur.at.Sub(m.prev.at).Seconds()
}

// localActivity is this instance's activity now.
func (f *Fleet) localActivity(now time.Time, sessions int) Activity {
	t := f.reg.Totals()
	return Activity{Instance: f.instance, Sessions: sessions, Statements: t.Statements, Refused: t.Refused, Held: t.Held,
		Rate: f.meter.rate(now, t.Statements), At: now}
}

// Activity returns the fleet's activity (the sum over every live instance sharing the store;
// this instance alone with the embedded store) and, on a shared store, each instance's,
// this one first and the others by name. Other instances' numbers are as of their last
// publish, at most a heartbeat plus a poll old.
func (f *Fleet) Activity() (sum Activity, each []Activity) {
	local := f.localActivity(time.Now(), f.reg.Len())
	if f.db == nil {
		local.Instance = ""
		return local, nil
	}
	f.mu.Lock()
	each = make([]Activity, 0, 1+len(f.remoteAct))
	each = append(each, local)
	each = append(each, f.remoteAct...)
	f.mu.Unlock()
	sum.Rate = -1
	for _, a := range each {
		sum.add(a)
	}
	return sum, each
}
