package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
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
	Columns   []dataMapColumn
	Error     string
	// Tables is who read each of the target's sensitive tables, per class, in the window.
	Tables []tableReaders
}

// dataMapColumn is one sensitive column with the way its values are masked for viewers
// the policy does not show raw values.
type dataMapColumn struct {
	classify.Entry
	Strategy string
}

// tableReaders is who read one class of one table in the window, by identity kind:
// distinct identities and statements.
type tableReaders struct {
	Table, Class string
	People       map[string]int
	Statements   map[string]int64
}

// classReaders is who read one class in the last 30 days, by identity kind.
type classReaders struct {
	Class  string
	ByKind map[string]int64
	People int
}

type dataMapData struct {
	// Profile is the masking profile of viewers the policy does not show raw values.
	Profile string
	Targets []dataMapTarget
	Readers []classReaders
	// ReadersAt is when the readers were counted (they are reused for dataMapTTL).
	ReadersAt time.Time
	MayScan   bool
	Rescanned string
}

// dataMapWindow is the period the data map counts readers over.
const dataMapWindow = 30 * 24 * time.Hour

// dataMapTTL is how long the data map's counts of readers are reused: they aggregate a month
// of the ledger (the readers of each class, from its running totals, and of each table,
// from its hourly rollup), tens of milliseconds at ten million events, more than a
// month-long picture needs redoing for every view.
const dataMapTTL = time.Minute

// dataMapReaders are the data map's counts of readers, as last computed.
type dataMapReaders struct {
	// key names the targets' sensitive tables and classes they cover: a rescan that finds
	// other columns needs them counted again.
	key     string
	at      time.Time
	tables  map[string][]tableReaders // by target
	classes []classReaders
}

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
	if c.opts.Policy != nil {
		d.Profile = c.opts.Policy.Policy().DefaultMaskProfile()
	}
	classes := map[string]bool{}
	for _, name := range c.opts.Targets() {
		t := dataMapTarget{Name: name}
		snap, err := c.opts.Catalog.Snapshot(ctx, name)
		if err != nil {
			t.Error = "the catalog could not scan this target: " + err.Error()
		} else {
			t.ScannedAt = snap.ScannedAt
			for _, e := range snap.Sensitive() {
				col := dataMapColumn{Entry: e}
				if c.opts.MaskStrategy != nil {
					col.Strategy = c.opts.MaskStrategy(string(e.Class))
				}
				t.Columns = append(t.Columns, col)
				classes[string(e.Class)] = true
			}
		}
		d.Targets = append(d.Targets, t)
	}
	r := c.monthOfReaders(ctx, d.Targets, classes)
	for i := range d.Targets {
		d.Targets[i].Tables = r.tables[d.Targets[i].Name]
	}
	d.Readers, d.ReadersAt = r.classes, r.at
	c.render(w, http.StatusOK, "datamap", page{Title: "Data map", Nav: "datamap", Viewer: v, Data: d})
}

// monthOfReaders returns who read the targets' sensitive tables and each class in the last
// dataMapWindow: the counts computed less than dataMapTTL ago for the same tables and
// classes, else new ones (the per-table and the per-class counts read concurrently). A
// viewer arriving while they are being counted waits for them rather than count again.
func (c *Console) monthOfReaders(ctx context.Context, targets []dataMapTarget, classes map[string]bool) *dataMapReaders {
	var kb strings.Builder
	for _, t := range targets {
		for _, col := range t.Columns {
			fmt.Fprintf(&kb, "%s\x00%s.%s\x00%s\n", t.Name, col.Schema, col.Table, col.Class)
		}
	}
	key := kb.String()
	c.dataMapMu.Lock()
	defer c.dataMapMu.Unlock()
	now := c.opts.Now()
	if r := c.dataMapCache; r != nil && r.key == key && !now.Before(r.at) && now.Sub(r.at) < dataMapTTL {
		return r
	}
	window := ledger.TimeRange{From: now.Add(-dataMapWindow), To: now}
	counted := slices.Clone(targets)
	tablesOK := make(chan bool, 1)
	go func() { tablesOK <- c.tableReaders(ctx, counted, window) }()
	perClass, classesOK := c.classReaders(ctx, classes, window)
	tablesDone := <-tablesOK
	r := &dataMapReaders{key: key, at: now, tables: map[string][]tableReaders{}, classes: perClass}
	for _, t := range counted {
		r.tables[t.Name] = t.Tables
	}
	if tablesDone && classesOK {
		c.dataMapCache = r
	}
	return r
}

// classReaders counts who read each class in window, by identity kind. ok is false when a
// class could not be counted (it is left out).
func (c *Console) classReaders(ctx context.Context, classes map[string]bool, window ledger.TimeRange) (out []classReaders, ok bool) {
	names := make([]string, 0, len(classes))
	for k := range classes {
		names = append(names, k)
	}
	slices.Sort(names)
	ok = true
	for _, class := range names {
		rows, err := c.opts.Events.PIIReaders(ctx, class, window)
		if err != nil {
			c.opts.Log.Error("console: data map readers", "class", class, "err", err)
			ok = false
			continue
		}
		cr := classReaders{Class: class, ByKind: map[string]int64{}, People: len(rows)}
		for _, r := range rows {
			cr.ByKind[r.IdentityKind] += r.Statements
		}
		out = append(out, cr)
	}
	return out, ok
}

// tableReaders fills in, for each target's sensitive tables and classes, who read them in r
// by identity kind: distinct identities and statements, each statement counting once per
// column of that table and class it recorded (the ledger's rollup, TableReaders). It
// reports whether they could be counted.
func (c *Console) tableReaders(ctx context.Context, targets []dataMapTarget, r ledger.TimeRange) bool {
	var keys []ledger.TableClass
	for _, t := range targets {
		for _, col := range t.Columns {
			keys = append(keys, ledger.TableClass{Target: t.Name, Table: col.Schema + "." + col.Table, Class: string(col.Class)})
		}
	}
	ok := true
	acc := map[ledger.TableClass]*tableReaders{}
	if len(keys) > 0 {
		readers, err := c.opts.Events.TableReaders(ctx, keys, r)
		if err != nil {
			c.opts.Log.Error("console: data map table readers", "err", err)
			ok = false
		}
		for _, rd := range readers {
			tr := acc[rd.TableClass]
			if tr == nil {
				tr = &tableReaders{Table: rd.Table, Class: rd.Class, People: map[string]int{}, Statements: map[string]int64{}}
				acc[rd.TableClass] = tr
			}
			tr.People[rd.IdentityKind]++
			tr.Statements[rd.IdentityKind] += rd.Statements
		}
	}
	for i := range targets {
		t := &targets[i]
		done := map[ledger.TableClass]bool{}
		for _, col := range t.Columns {
			k := ledger.TableClass{Target: t.Name, Table: col.Schema + "." + col.Table, Class: string(col.Class)}
			if done[k] {
				continue
			}
			done[k] = true
			tr := acc[k]
			if tr == nil {
				tr = &tableReaders{Table: k.Table, Class: k.Class}
			}
			t.Tables = append(t.Tables, *tr)
		}
		slices.SortFunc(t.Tables, func(a, b tableReaders) int {
			if c := strings.Compare(a.Table, b.Table); c != 0 {
				return c
			}
			return strings.Compare(a.Class, b.Class)
		})
	}
	return ok
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
