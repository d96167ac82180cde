package console

import (
	"context"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// Policy is what the policy page needs from internal/policy: the policy in force and the
// explanation `gatehouse policy test` prints.
type Policy interface {
	Policy() *policy.Policy
	Explain(ctx context.Context, sess *gate.Session, st *inspect.Statement) policy.Explanation
}

var _ Policy = (*policy.Engine)(nil)

// tryForm is the "try a statement" form.
type tryForm struct {
	As, Kind, Groups, Target, SQL string
}

// policyData is the policy page's model. Text is the policy in force, exactly as loaded
// (Hash identifies it, as the server log's reload lines do); FileChanged says the file now holds
// something else (an edit not yet reloaded, or one the reload refused as invalid).
// Reloads are the newest reloads (ReloadsMore: there are older ones; ReloadsErr: they could
// not be read).
type policyData struct {
	Source      string
	Hash        string
	Text        string
	FileChanged bool
	Reloads     []policyReload
	ReloadsMore bool
	ReloadsErr  bool
	Form        tryForm
	Targets     []string
	Results     []string
}

// policyReload is one reload of the policy page's history: when, the file, and the hash
// of the policy it put in force (empty for reloads recorded before events carried it).
type policyReload struct {
	Time    time.Time
	File    string
	Hash    string
	InForce bool // the policy in force now has this hash
}

// reloadsShown is how many reloads the policy page lists.
const reloadsShown = 20

// policyPage shows the policy in force (read-only), its reloads, and decides a statement for
// an identity on a target as `gatehouse policy test` does.
func (c *Console) policyPage(w http.ResponseWriter, v *viewer) {
	if !v.seesAll {
		c.fail(w, v, http.StatusForbidden, "The policy page needs membership of auditors, compliance, security or an approver group.")
		return
	}
	if c.opts.Policy == nil {
		c.fail(w, v, http.StatusNotFound, "No policy engine is configured.")
		return
	}
	ctx := v.r.Context()
	q := v.r.URL.Query()
	inForce := c.opts.Policy.Policy()
	d := policyData{Source: inForce.Source, Hash: inForce.Hash, Text: string(inForce.Text()), Form: tryForm{As: q.Get("as"), Kind: q.Get("kind"), Groups: q.Get("groups"),
		Target: q.Get("target"), SQL: q.Get("sql")}}
	if d.Form.Kind == "" {
		d.Form.Kind = "human"
	}
	if c.opts.Targets != nil {
		d.Targets = c.opts.Targets()
	}
	if d.Source != policy.DefaultSource {
		b, err := os.ReadFile(d.Source)
		d.FileChanged = err != nil || string(b) != d.Text
	}
	evs, err := c.opts.Events.Search(ctx, ledger.Query{Type: ledger.EventPolicyReload, Limit: reloadsShown + 1})
	if err != nil {
		c.opts.Log.Error("console: read policy reloads", "err", err)
		d.ReloadsErr = true
	}
	if len(evs) > reloadsShown {
		evs, d.ReloadsMore = evs[:reloadsShown], true
	}
	for _, ev := range evs {
		file, hash := ledger.ParsePolicyReload(ev.Message)
		d.Reloads = append(d.Reloads, policyReload{Time: ev.Time, File: file, Hash: hash, InForce: hash != "" && hash == inForce.Hash})
	}
	if d.Form.SQL != "" {
		if !identity.Kind(d.Form.Kind).Valid() || d.Form.As == "" {
			c.render(w, http.StatusBadRequest, "policy", page{Title: "Policy", Nav: "policy", Viewer: v, Error: "Name the identity and its kind (human, service or agent).", Data: d})
			return
		}
		if !c.record(w, v.r, v, c.event(v.r, v.id, EventView, "console policy test as "+d.Form.As+" on "+d.Form.Target)) {
			return
		}
		var groups []string
		for _, g := range strings.Split(d.Form.Groups, ",") {
			if g = strings.TrimSpace(g); g != "" {
				groups = append(groups, g)
			}
		}
		sess := &gate.Session{ID: "console-policy-test", ClientAddr: v.r.RemoteAddr, StartedAt: time.Now(),
			Identity: &identity.Identity{Subject: d.Form.As, Kind: identity.Kind(d.Form.Kind), Groups: groups, AuthMethod: "test"},
			Target:   c.targetFor(d.Form.Target)}
		for _, st := range inspect.New(0).Inspect(d.Form.SQL) {
			var b strings.Builder
			if err := policy.FormatExplanation(&b, c.opts.Policy.Explain(ctx, sess, st)); err != nil {
				b.WriteString("explanation failed: " + err.Error())
			}
			d.Results = append(d.Results, b.String())
		}
	}
	c.render(w, http.StatusOK, "policy", page{Title: "Policy", Nav: "policy", Viewer: v, Data: d})
}

// targetFor is the configured target of that name, else one made up for trying (prod when
// the name says so), as `policy test` does.
func (c *Console) targetFor(name string) *config.Target {
	if c.opts.Target != nil {
		if t, ok := c.opts.Target(name); ok {
			return t
		}
	}
	env := "dev"
	if strings.Contains(name, "prod") {
		env = "prod"
	}
	return &config.Target{Name: name, Engine: "postgres", Environment: env}
}
