package approval

import (
	"context"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// Lapses are applied twice over. Whoever reads a request sees it as expired the moment its
// deadline passes (effectiveStatus, Request.lapse), so nothing depends on a sweep having run;
// and Expire, run on a schedule by every instance, moves lapsed rows to 'expired' and puts one
// approval.expired event per request on the ledger, so an auditor can ask which requests
// nobody answered and which approvals nobody used. The conditional UPDATE ... RETURNING is
// the claim: of instances sweeping one shared store at once, exactly one moves (and so
// records) each row.

// The deadlines a request can lapse by, named as the configuration names them.
const (
	// LapsedRequestTTL: a pending request waited request_ttl without a decision.
	LapsedRequestTTL = "request_ttl"
	// LapsedValidFor: an approval stayed unused for valid_for.
	LapsedValidFor = "valid_for"
)

// effectiveStatus is the status column as of a time given twice as a parameter: lapsed
// pending and approved rows read as expired whether or not a sweep has moved them yet.
const effectiveStatus = `CASE WHEN status = 'pending' AND expires_at <= ? THEN 'expired'
	WHEN status = 'approved' AND valid_until <= ? THEN 'expired' ELSE status END`

// lapse shows r as expired if one of its deadlines passed by now.
func (r *Request) lapse(now time.Time) {
	switch {
	case r.Status == Pending && !r.ExpiresAt.After(now):
		r.Status = Expired
	case r.Status == Approved && !r.ValidUntil.After(now):
		r.Status = Expired
	}
}

// lapsedBy names the deadline an expired request passed: only approved requests have a
// decision time, and only pending and approved ones expire.
func (r *Request) lapsedBy() string {
	if r.DecidedAt.IsZero() {
		return LapsedRequestTTL
	}
	return LapsedValidFor
}

// Expire moves every request whose deadline has passed to expired and records one
// approval.expired event for each, returning how many it recorded. Safe to run from several
// instances sharing a store at once: each lapse is claimed, and recorded, exactly once. A
// lapse whose event cannot be recorded is put back, so a later sweep records it.
func (s *Store) Expire(ctx context.Context) (int, error) {
	if s.rec == nil {
		return 0, fmt.Errorf("expire approval requests: %w", errNoRecorder)
	}
	now := s.now()
	rows, err := s.query(ctx, `UPDATE approval_requests SET status = 'expired'
		WHERE (status = 'pending' AND expires_at <= ?) OR (status = 'approved' AND valid_until <= ?)
		RETURNING `+requestColumns, now.UnixNano(), now.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("expire approval requests: %w", err)
	}
	var claimed []Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("read expired approval request: %w", err)
		}
		claimed = append(claimed, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("expire approval requests: %w", err)
	}
	n := 0
	var firstErr error
	for _, r := range claimed {
		if err := s.record(ctx, s.expiredEvent(r, now)); err != nil {
			// Not on record, not expired: give the row back for the next sweep.
			prev := Pending
			if r.lapsedBy() == LapsedValidFor {
				prev = Approved
			}
			if _, uerr := s.exec(context.WithoutCancel(ctx), `UPDATE approval_requests SET status = ? WHERE id = ? AND status = 'expired'`,
				string(prev), r.ID); uerr != nil {
				s.log.Error("undo unrecorded approval expiry", "approval", r.ID, "err", uerr)
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("expire approval request %s: %w", r.ID, err)
			}
			continue
		}
		n++
	}
	return n, firstErr
}

// expiredEvent describes the lapse of r, found at now.
func (s *Store) expiredEvent(r Request, now time.Time) *ledger.Event {
	ev := s.event(r, ledger.EventApprovalExpired, now)
	ev.Subject, ev.IdentityKind = r.Requester, r.RequesterKind
	switch r.lapsedBy() {
	case LapsedRequestTTL:
		ev.Message = fmt.Sprintf("%s lapsed at %s: nobody approved or denied the request", LapsedRequestTTL, r.ExpiresAt.Format(time.RFC3339))
	default:
		ev.Message = fmt.Sprintf("%s lapsed at %s: approved by %s (%s) at %s, never used", LapsedValidFor, r.ValidUntil.Format(time.RFC3339),
			r.DecidedBy, r.DecidedKind, r.DecidedAt.Format(time.RFC3339))
	}
	return ev
}

// sweepEvery is how often RunExpiry sweeps under settings set: a tenth of the shorter window,
// between a second and a minute, so a lapse is on record soon after it happens.
func sweepEvery(set Settings) time.Duration {
	return min(max(min(set.RequestTTL, set.ValidFor)/10, time.Second), time.Minute)
}

// RunExpiry sweeps lapsed requests (Expire) at once and then periodically until ctx ends.
// Every instance runs it; the claim keeps the events one per lapse.
func (s *Store) RunExpiry(ctx context.Context) {
	for {
		if n, err := s.Expire(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("record lapsed approval requests; retrying at the next sweep", "err", err)
		} else if n > 0 {
			s.log.Info("approval requests lapsed", "count", n)
		}
		t := time.NewTimer(sweepEvery(s.settings()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
