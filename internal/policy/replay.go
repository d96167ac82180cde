package policy

import (
	"context"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// ReplayChange is one recorded statement that a replayed policy decides differently.
type ReplayChange struct {
	// Event is the recorded event the statement belongs to.
	Event *ledger.Event
	// SQL is the statement's recorded (redacted) text.
	SQL string
	// Would and Rule are the replayed policy's decision and the rule that made it.
	Would, Rule string
}

// Replay decides the statements of recorded statement events again with e's policy, as if
// each had been sent now by the identity, from the session, to the target that sent it then,
// and calls changed for every statement decided differently. target resolves a recorded
// target name and environment to a target (the target may have been renamed or removed
// since). A statement that ran on an approval was held then, so being held again is no
// change. It returns how many statements it decided. The CLI's `policy replay` and the
// console's replay page both use it, so they answer alike.
func (e *Engine) Replay(ctx context.Context, evs []ledger.Event, target func(name, env string) *config.Target, changed func(ReplayChange)) (statements int) {
	in := inspect.New(10_000)
	for i := range evs {
		ev := &evs[i]
		sess := &gate.Session{ID: ev.SessionID, ClientAddr: ev.ClientAddr, ApplicationName: ev.ApplicationName, Database: ev.Database, StartedAt: ev.Time,
			Identity: &identity.Identity{Subject: ev.Subject, Kind: identity.Kind(ev.IdentityKind), Groups: ev.Groups, AuthMethod: ev.AuthMethod},
			Target:   target(ev.Target, ev.Environment)}
		for _, ls := range ev.Statements {
			// The ledger keeps redacted text ($n for literals); it parses to the same facts.
			for _, st := range in.Inspect(ls.Redacted) {
				statements++
				x := e.Explain(ctx, sess, st)
				if string(x.Decision.Action) == ev.Decision || (ev.ApprovalID != "" && x.Decision.Action == gate.RequireApproval) {
					continue
				}
				changed(ReplayChange{Event: ev, SQL: ls.Redacted, Would: string(x.Decision.Action), Rule: x.Decision.Rule})
			}
		}
	}
	return statements
}
