package console

import (
	"crypto/ed25519"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"time"

	"github.com/gatehouse/gatehouse/internal/evidence"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// evidenceData is the evidence page's model.
type evidenceData struct {
	Form     auditForm
	Checked  bool
	From, To time.Time
	Report   *ledger.Report
	Download template.URL // the zip's query string (url.Values.Encode: safe in a URL)
}

// evidenceRange reads the period from the form: since, or from [to].
func evidenceRange(v *viewer, f auditForm) (ledger.TimeRange, error) {
	if f.Since == "" && f.From == "" {
		return ledger.TimeRange{}, fmt.Errorf("give the period: since (e.g. 90d), or from [and to]")
	}
	q, err := auditForm{Since: f.Since, From: f.From, To: f.To}.query(v)
	if err != nil {
		return ledger.TimeRange{}, err
	}
	r := q.Range(time.Now())
	if !r.To.IsZero() && !r.To.After(r.From) {
		return r, fmt.Errorf("the period is empty")
	}
	return r, nil
}

// evidencePage verifies the ledger (as `audit verify` does) and offers the signed pack for
// a period, with the commands that verify it offline. Evidence covers everyone's activity,
// so only the groups that see everything may make it.
func (c *Console) evidencePage(w http.ResponseWriter, v *viewer) {
	if !v.seesAll {
		c.fail(w, v, http.StatusForbidden, "Evidence packs cover everyone's activity: they need membership of auditors, compliance, security or an approver group.")
		return
	}
	vals := v.r.URL.Query()
	f := auditForm{Since: vals.Get("since"), From: vals.Get("from"), To: vals.Get("to")}
	d := evidenceData{Form: f}
	if f.Since == "" && f.From == "" {
		d.Form.Since = "90d"
		c.render(w, http.StatusOK, "evidence", page{Title: "Evidence", Nav: "evidence", Viewer: v, Data: d})
		return
	}
	r, err := evidenceRange(v, f)
	if err != nil {
		c.render(w, http.StatusBadRequest, "evidence", page{Title: "Evidence", Nav: "evidence", Viewer: v, Error: err.Error(), Data: d})
		return
	}
	if !c.record(w, v.r, v, c.event(v.r, v.id, EventView, "console evidence verification "+v.r.URL.RawQuery)) {
		return
	}
	rep, err := ledger.Verify(v.r.Context(), ledger.StoreSource{Store: c.opts.Events, Extra: c.checkpointCopies(v)}, c.opts.EvidenceKey.Public().(ed25519.PublicKey))
	if err != nil {
		c.opts.Log.Error("console: verify ledger", "err", err)
		c.fail(w, v, http.StatusInternalServerError, "Verifying the ledger failed; see the server log.")
		return
	}
	res := "ok"
	if !rep.OK {
		res = fmt.Sprintf("%d problems", len(rep.Problems))
	}
	done := c.event(v.r, v.id, EventVerified, "console ledger verification: "+res)
	done.Rows = int64(len(rep.Problems))
	if !rep.OK && done.Rows == 0 {
		done.Rows = 1 // not OK is never recorded as no problems
	}
	if !c.record(w, v.r, v, done) {
		return
	}
	c.mu.Lock()
	c.lastVerify, c.verifyAt = &verification{At: done.Time, OK: rep.OK, Problems: len(rep.Problems), By: v.id.Subject}, c.opts.Now()
	c.mu.Unlock()
	d.Checked, d.Report, d.From, d.To = true, rep, r.From, r.To
	d.Download = template.URL(f.values().Encode())
	c.render(w, http.StatusOK, "evidence", page{Title: "Evidence", Nav: "evidence", Viewer: v, Data: d})
}

// checkpointCopies reads ledger.checkpoint_file's copies, which catch a truncated tail.
func (c *Console) checkpointCopies(v *viewer) []ledger.Checkpoint {
	if c.opts.CheckpointFile == nil {
		return nil
	}
	path := c.opts.CheckpointFile()
	if path == "" {
		return nil
	}
	cps, err := ledger.ReadCheckpointFile(v.r.Context(), path)
	if err != nil {
		c.opts.Log.Warn("console: read checkpoint file", "err", err)
		return nil
	}
	return cps
}

// evidenceDownload makes the signed pack for the period and sends it as a zip.
func (c *Console) evidenceDownload(w http.ResponseWriter, v *viewer) {
	if !v.seesAll {
		c.fail(w, v, http.StatusForbidden, "Evidence packs cover everyone's activity: they need membership of auditors, compliance, security or an approver group.")
		return
	}
	vals := v.r.URL.Query()
	r, err := evidenceRange(v, auditForm{Since: vals.Get("since"), From: vals.Get("from"), To: vals.Get("to")})
	if err != nil {
		c.fail(w, v, http.StatusBadRequest, err.Error())
		return
	}
	if !c.record(w, v.r, v, c.event(v.r, v.id, EventDownload, "console evidence pack download "+v.r.URL.RawQuery)) {
		return
	}
	dir, err := os.MkdirTemp("", "gatehouse-evidence-")
	if err != nil {
		c.opts.Log.Error("console: evidence temp dir", "err", err)
		c.fail(w, v, http.StatusInternalServerError, "The evidence pack could not be made; see the server log.")
		return
	}
	defer os.RemoveAll(dir)
	cpFile := ""
	if c.opts.CheckpointFile != nil {
		cpFile = c.opts.CheckpointFile()
	}
	res, err := evidence.Write(v.r.Context(), dir, evidence.Options{Store: c.opts.Events, Key: c.opts.EvidenceKey, Range: r,
		By: v.id.Subject + " (console)", CheckpointFile: cpFile})
	if err != nil {
		c.opts.Log.Error("console: evidence pack", "err", err)
		c.fail(w, v, http.StatusInternalServerError, "The evidence pack could not be made; see the server log.")
		return
	}
	name := fmt.Sprintf("gatehouse-evidence-%s-%s.zip", res.From.Format("20060102T150405Z"), res.To.Format("20060102T150405Z"))
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	if err := evidence.Zip(w, dir); err != nil {
		c.opts.Log.Error("console: evidence zip", "err", err)
	}
}
