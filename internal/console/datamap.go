package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// Catalog is what the data map needs from internal/classify: a target's classified columns
// (cached between scans) and a rescan.
type Catalog interface {
	Snapshot(ctx context.Context, target string) (*classify.Snapshot, error)
	Refresh(ctx context.Context, target string) (*classify.Snapshot, error)
}

var _ Catalog = (*classify.Catalog)(nil)

// dataMapTarget is one target's part of the data map.
type dataMapTarget struct {
	Name      string
	ScannedAt time.Time
	Columns   []classify.Entry
	Error     string
}

// classReaders is who read one class in the last 30 days, by identity kind.
type classReaders struct {
	Class  string
	ByKind map[string]int64
	People int
}

type dataMapData struct {
	Targets   []dataMapTarget
	Readers   []classReaders
	MayScan   bool
	Rescanned string
}

// dataMapWindow is the period the data map counts readers over.
const dataMapWindow = 30 * 24 * time.Hour

// dataMapPage shows, per target, the sensitive columns the catalog found (class, confidence,
// evidence, whether the policy file overrides it) and, per class, who read it in the last
// 30 days by identity kind. It covers everyone's data, so it is for the privileged groups.
func (c *Console) dataMapPage(w http.ResponseWriter, v *viewer) {
	if !v.seesAll {
		c.fail(w, v, http.StatusForbidden, "The data map covers every target: it needs membership of auditors, compliance, security or an approver group.")
		return
	}
	if c.opts.Catalog == nil || c.opts.Targets == nil {
		c.fail(w, v, http.StatusNotFound, "No catalog is configured.")
		return
	}
	if !c.record(w, v.r, v, c.event(v.r, v.id, EventView, "console data map")) {
		return
	}
	ctx := v.r.Context()
	d := dataMapData{MayScan: c.opts.Approvals.MayDecide(v.id), Rescanned: v.r.URL.Query().Get("rescanned")}
	classes := map[string]bool{}
	for _, name := range c.opts.Targets() {
		t := dataMapTarget{Name: name}
		snap, err := c.opts.Catalog.Snapshot(ctx, name)
		if err != nil {
			t.Error = "the catalog could not scan this target: " + err.Error()
		} else {
			t.ScannedAt, t.Columns = snap.ScannedAt, snap.Sensitive()
			for _, e := range t.Columns {
				classes[string(e.Class)] = true
			}
		}
		d.Targets = append(d.Targets, t)
	}
	now := c.opts.Now()
	names := make([]string, 0, len(classes))
	for k := range classes {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, class := range names {
		rows, err := c.opts.Events.PIIReaders(ctx, class, ledger.TimeRange{From: now.Add(-dataMapWindow), To: now})
		if err != nil {
			c.opts.Log.Error("console: data map readers", "class", class, "err", err)
			continue
		}
		cr := classReaders{Class: class, ByKind: map[string]int64{}, People: len(rows)}
		for _, r := range rows {
			cr.ByKind[r.IdentityKind] += r.Statements
		}
		d.Readers = append(d.Readers, cr)
	}
	c.render(w, http.StatusOK, "datamap", page{Title: "Data map", Nav: "datamap", Viewer: v, Data: d})
}

// rescan scans a target's catalog again now (approvers).
func (c *Console) rescan(w http.ResponseWriter, v *viewer) {
	target := v.r.PathValue("target")
	if !c.opts.Approvals.MayDecide(v.id) {
		c.fail(w, v, http.StatusForbidden, "Rescanning needs membership of an approver group.")
		return
	}
	if c.opts.Catalog == nil || c.opts.Targets == nil || !slices.Contains(c.opts.Targets(), target) {
		c.fail(w, v, http.StatusNotFound, "no such target")
		return
	}
	ev := c.event(v.r, v.id, EventRescan, "console rescan of target "+target)
	ev.Target = target
	if !c.record(w, v.r, v, ev) {
		return
	}
	snap, err := c.opts.Catalog.Refresh(v.r.Context(), target)
	if err != nil {
		c.opts.Log.Warn("console: rescan", "target", target, "err", err)
		c.fail(w, v, http.StatusBadGateway, fmt.Sprintf("Scanning %s failed: %v", target, err))
		return
	}
	http.Redirect(w, v.r, Prefix+"datamap?rescanned="+target+"+"+snap.ScannedAt.UTC().Format(time.RFC3339), http.StatusSeeOther)
}
