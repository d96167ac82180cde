package console

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// EventPolicyReplay records that someone replayed a candidate policy over the ledger.
const EventPolicyReplay ledger.EventType = "console.policy_replay"

// Bounds of one replay: the newest replayEvents statement events of the period are decided
// again (the page says when there were more), the first replayShown changes are listed, and
// a pasted policy may be up to maxPolicyBytes.
const (
	replayEvents   = 10_000
	replayShown    = 500
	maxPolicyBytes = 1 << 20
)

// replayForm is the "what would this policy have decided" form.
type replayForm struct {
	Policy, Since string
}

// replayChange is one statement the candidate policy would decide differently.
type replayChange struct {
	Time                                   time.Time
	Instance                               string
	Seq                                    int64
	Subject, Target, Was, Would, Rule, SQL string
}

// replayData is the replay page's model.
type replayData struct {
	Form replayForm
	// Errors are the candidate policy's validation errors, each naming its line.
	Errors []string
	Ran    bool
	// Events and Statements are what was replayed; Truncated: the period held more events
	// than one replay decides (the newest were replayed).
	Events, Statements, Changed int
	Truncated                   bool
	Changes                     []replayChange
	Hash                        string
}

// replayPage shows the replay form (approvers and group security).
func (c *Console) replayPage(w http.ResponseWriter, v *viewer) {
	if !c.mayReplay(w, v) {
		return
	}
	c.render(w, http.StatusOK, "replay", page{Title: "Policy replay", Nav: "policy", Viewer: v, Data: replayData{Form: replayForm{Since: "7d"}}})
}

// mayReplay: replaying a policy shows every identity's statements, and trying out rules is
// the policy owners' job: approvers and group security.
func (c *Console) mayReplay(w http.ResponseWriter, v *viewer) bool {
	if c.opts.Policy == nil {
		c.fail(w, v, http.StatusNotFound, "No policy engine is configured.")
		return false
	}
	if !c.mayEnd(v.id) {
		c.fail(w, v, http.StatusForbidden, "Replaying a policy needs membership of an approver group or of group security.")
		return false
	}
	return true
}

// replay decides the statements recorded in the period again with a pasted candidate policy
// and lists those it would decide differently, as `gatehouse policy replay` does. Nothing
// changes: the candidate is never put in force.
func (c *Console) replay(w http.ResponseWriter, v *viewer) {
	if !c.mayReplay(w, v) {
		return
	}
	v.r.Body = http.MaxBytesReader(w, v.r.Body, maxPolicyBytes+4096)
	d := replayData{Form: replayForm{Policy: v.r.PostFormValue("policy"), Since: strings.TrimSpace(v.r.PostFormValue("since"))}}
	if d.Form.Since == "" {
		d.Form.Since = "7d"
	}
	bad := func(msg string) {
		c.render(w, http.StatusBadRequest, "replay", page{Title: "Policy replay", Nav: "policy", Viewer: v, Error: msg, Data: d})
	}
	since, err := config.ParseDuration(d.Form.Since)
	if err != nil || since <= 0 {
		bad("Period: give a duration such as 7d or 12h.")
		return
	}
	if strings.TrimSpace(d.Form.Policy) == "" {
		bad("Paste the candidate policy (YAML) to replay.")
		return
	}
	cand, err := policy.Parse("candidate policy", []byte(d.Form.Policy))
	if err != nil {
		d.Errors = policyErrors(err)
		bad("The candidate policy is not valid; nothing was replayed.")
		return
	}
	d.Hash = cand.Hash
	ev := c.event(v.r, v.id, EventPolicyReplay, fmt.Sprintf("console policy replay of candidate policy %s over the last %s", cand.Hash, d.Form.Since))
	if !c.record(w, v.r, v, ev) {
		return
	}
	eng, err := policy.NewEngine(policy.Options{Log: c.opts.Log})
	if err != nil {
		c.fail(w, v, http.StatusInternalServerError, "The policy engine could not be set up: "+err.Error())
		return
	}
	eng.Set(cand)
	ctx := v.r.Context()
	evs, err := c.opts.Events.Search(ctx, ledger.Query{Type: ledger.EventStatement, Since: since, Limit: replayEvents})
	if err != nil {
		c.opts.Log.Error("console: replay search", "err", err)
		c.fail(w, v, http.StatusInternalServerError, "Reading the ledger failed; see the server log.")
		return
	}
	d.Ran, d.Events, d.Truncated = true, len(evs), len(evs) == replayEvents
	d.Statements = eng.Replay(ctx, evs, c.replayTarget, func(ch policy.ReplayChange) {
		d.Changed++
		if len(d.Changes) < replayShown {
			e := ch.Event
			d.Changes = append(d.Changes, replayChange{Time: e.Time, Instance: e.Instance, Seq: e.Seq, Subject: e.Subject, Target: e.Target,
				Was: e.Decision, Would: ch.Would, Rule: ch.Rule, SQL: ch.SQL})
		}
	})
	c.render(w, http.StatusOK, "replay", page{Title: "Policy replay", Nav: "policy", Viewer: v, Data: d})
}

// replayTarget is the configured target, else one standing in for it in its recorded
// environment (the target may have been renamed or removed since).
func (c *Console) replayTarget(name, env string) *config.Target {
	if c.opts.Target != nil {
		if t, ok := c.opts.Target(name); ok {
			return t
		}
	}
	if env == "" {
		return c.targetFor(name)
	}
	return &config.Target{Name: name, Engine: "postgres", Environment: env}
}

// policyErrors lists a policy's validation errors one by one, each with its line.
func policyErrors(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *config.FieldError
		if errors.As(err, &fe) {
			out = append(out, fe.Error())
			return
		}
		out = append(out, err.Error())
	}
	walk(err)
	return out
}
