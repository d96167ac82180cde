package console

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// pageSize is how many events one page of search results shows.
const pageSize = 50

// exportCap bounds one export; a bigger result is refused rather than cut short.
const exportCap = 100_000

// exportBatch is how many events an export reads per search (Console.exportBatch: tests
// make it small), leaving room under ledger.MaxLimit for events sharing a timestamp.
const exportBatch = ledger.MaxLimit / 2

// auditForm is the search form: every `audit search` filter.
type auditForm struct {
	Identity, Kind, Target, Env, Statement, Category, Table, Class, Decision, Rule, Via, Type, Since, From, To, Text string
}

// auditData is the search page's model.
type auditData struct {
	Form   auditForm
	Events []ledger.Event
	// Query is the filters as a query string, for the export links; Older the next page's
	// ("" on the last page); Newest the first page's on a later page. They are built by
	// url.Values.Encode, so they are safe to place in a URL as they are.
	Query    template.URL
	Older    template.URL
	Newest   template.URL
	Searched bool
}

// formFrom reads the filters from the URL.
func formFrom(v url.Values) auditForm {
	return auditForm{Identity: v.Get("identity"), Kind: v.Get("kind"), Target: v.Get("target"), Env: v.Get("env"),
		Statement: v.Get("statement"), Category: v.Get("category"), Table: v.Get("table"), Class: v.Get("class"),
		Decision: v.Get("decision"), Rule: v.Get("rule"), Via: v.Get("via"), Type: v.Get("type"), Since: v.Get("since"), From: v.Get("from"), To: v.Get("to"),
		Text: v.Get("text")}
}

// values is the form as URL values (empty fields left out).
func (f auditForm) values() url.Values {
	v := url.Values{}
	for _, kv := range [][2]string{{"identity", f.Identity}, {"kind", f.Kind}, {"target", f.Target}, {"env", f.Env},
		{"statement", f.Statement}, {"category", f.Category}, {"table", f.Table}, {"class", f.Class},
		{"decision", f.Decision}, {"rule", f.Rule}, {"via", f.Via}, {"type", f.Type}, {"since", f.Since}, {"from", f.From}, {"to", f.To}, {"text", f.Text}} {
		if kv[1] != "" {
			v.Set(kv[0], kv[1])
		}
	}
	return v
}

// parseTime accepts RFC 3339 or the date and minute a datetime-local input sends (UTC).
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use 2026-01-31T00:00:00Z", s)
}

// query turns the form into a ledger query; the viewer outside the privileged groups is
// narrowed to their own events.
func (f auditForm) query(v *viewer) (ledger.Query, error) {
	q := ledger.Query{Identity: f.Identity, IdentityKind: f.Kind, Target: f.Target, Environment: f.Env,
		StatementKind: f.Statement, Category: f.Category, Table: f.Table, Class: f.Class, Decision: f.Decision,
		Rule: f.Rule, Via: f.Via, Type: ledger.EventType(f.Type), Text: f.Text}
	var err error
	if f.Since != "" {
		if q.Since, err = config.ParseDuration(f.Since); err != nil {
			return q, fmt.Errorf("since: %w", err)
		}
	}
	if f.From != "" {
		if q.From, err = parseTime(f.From); err != nil {
			return q, fmt.Errorf("from: %w", err)
		}
	}
	if f.To != "" {
		if q.To, err = parseTime(f.To); err != nil {
			return q, fmt.Errorf("to: %w", err)
		}
	}
	if !v.seesAll {
		q.Identity = v.id.Subject
	}
	return q, q.Validate()
}

// own drops events of other subjects for a viewer who sees only their own (the identity
// filter is a glob, so a subject holding * or ? could match others).
func own(v *viewer, evs []ledger.Event) []ledger.Event {
	if v.seesAll {
		return evs
	}
	out := evs[:0]
	for _, e := range evs {
		if v.owns(e.Subject) {
			out = append(out, e)
		}
	}
	return out
}

// cursor is where a newest-first walk through search results stands: the last event taken.
// Results are ordered by time, then seq, both descending, so what comes next is every event
// before Time, and those at Time with a lower seq: events can share a timestamp (instances
// sharing a store, a clock's coarse tick), and a bound on time alone would skip or repeat
// them at a page boundary. Seq 0 (a link from before cursors had one) bounds by time alone.
type cursor struct {
	Time time.Time
	Seq  int64
}

// searchAfter returns up to n events of q that come after cur (the zero cursor: from the
// newest). It asks for more when events the cursor has passed fill the answer, and fails
// rather than cut the result short when more than the store's limit share one timestamp.
func (c *Console) searchAfter(ctx context.Context, q ledger.Query, cur cursor, n int) ([]ledger.Event, error) {
	if !cur.Time.IsZero() {
		to := cur.Time
		if cur.Seq > 0 {
			to = to.Add(time.Nanosecond)
		}
		if q.To.IsZero() || to.Before(q.To) {
			q.To = to
		}
	}
	for skip := 0; ; {
		q.Limit = n + skip
		if q.Limit > ledger.MaxLimit {
			return nil, fmt.Errorf("search: more than %d events at %s", ledger.MaxLimit-n, cur.Time.Format(time.RFC3339Nano))
		}
		evs, err := c.opts.Events.Search(ctx, q)
		if err != nil {
			return nil, err
		}
		k := 0
		for k < len(evs) && cur.Seq > 0 && evs[k].Time.Equal(cur.Time) && evs[k].Seq >= cur.Seq {
			k++
		}
		if k <= skip || len(evs) < q.Limit {
			evs = evs[k:]
			return evs[:min(n, len(evs))], nil
		}
		skip = k
	}
}

// auditPage is the search form and one page of results, newest first. Paging goes back in
// time from the oldest event shown (time and seq), so no event is skipped or shown twice.
func (c *Console) auditPage(w http.ResponseWriter, v *viewer) {
	vals := v.r.URL.Query()
	f := formFrom(vals)
	d := auditData{Form: f, Query: template.URL(f.values().Encode())}
	if len(f.values()) == 0 && vals.Get("search") == "" {
		c.render(w, http.StatusOK, "audit", page{Title: "Activity and audit", Nav: "audit", Viewer: v, Data: d})
		return
	}
	d.Searched = true
	q, err := f.query(v)
	if err != nil {
		c.render(w, http.StatusBadRequest, "audit", page{Title: "Activity and audit", Nav: "audit", Viewer: v, Error: err.Error(), Data: d})
		return
	}
	var cur cursor
	if s := vals.Get("before"); s != "" {
		if cur.Time, err = parseTime(s); err == nil && vals.Get("before_seq") != "" {
			cur.Seq, err = strconv.ParseInt(vals.Get("before_seq"), 10, 64)
		}
		if err != nil {
			c.render(w, http.StatusBadRequest, "audit", page{Title: "Activity and audit", Nav: "audit", Viewer: v, Error: "before: " + err.Error(), Data: d})
			return
		}
		d.Newest = d.Query
	}
	if !c.record(w, v.r, v, c.event(v.r, v.id, EventSearch, "console search "+v.r.URL.RawQuery)) {
		return
	}
	evs, err := c.searchAfter(v.r.Context(), q, cur, pageSize+1)
	if err != nil {
		c.opts.Log.Error("console: search", "err", err)
		c.fail(w, v, http.StatusInternalServerError, "The search failed; see the server log.")
		return
	}
	if len(evs) > pageSize {
		evs = evs[:pageSize]
		next := f.values()
		last := &evs[len(evs)-1]
		next.Set("before", last.Time.UTC().Format(time.RFC3339Nano))
		next.Set("before_seq", strconv.FormatInt(last.Seq, 10))
		d.Older = template.URL(next.Encode())
	}
	d.Events = own(v, evs)
	c.render(w, http.StatusOK, "audit", page{Title: "Activity and audit", Nav: "audit", Viewer: v, Data: d})
}

// auditExport writes every event of the current search as CSV or JSON lines, newest first.
func (c *Console) auditExport(w http.ResponseWriter, v *viewer) {
	vals := v.r.URL.Query()
	format := vals.Get("format")
	if format != "csv" && format != "jsonl" {
		c.fail(w, v, http.StatusBadRequest, "format: expected csv or jsonl")
		return
	}
	q, err := formFrom(vals).query(v)
	if err != nil {
		c.fail(w, v, http.StatusBadRequest, err.Error())
		return
	}
	var (
		all []ledger.Event
		cur cursor
	)
	for {
		evs, err := c.searchAfter(v.r.Context(), q, cur, c.exportBatch)
		if err != nil {
			c.opts.Log.Error("console: export search", "err", err)
			c.fail(w, v, http.StatusInternalServerError, "The search failed; see the server log.")
			return
		}
		all = append(all, evs...)
		if len(all) > exportCap {
			c.fail(w, v, http.StatusRequestEntityTooLarge, fmt.Sprintf("The search matches more than %d events; narrow it (time range, identity, target) and export again.", exportCap))
			return
		}
		if len(evs) < c.exportBatch {
			break
		}
		cur = cursor{Time: evs[len(evs)-1].Time, Seq: evs[len(evs)-1].Seq}
	}
	all = own(v, all)
	if !c.record(w, v.r, v, c.event(v.r, v.id, EventExport, fmt.Sprintf("console export %s of %d events: %s", format, len(all), v.r.URL.RawQuery))) {
		return
	}
	name := "gatehouse-events-" + c.opts.Now().UTC().Format("20060102T150405Z") + "." + format
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	if format == "jsonl" {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for i := range all {
			if err := enc.Encode(&all[i]); err != nil {
				return
			}
		}
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.Write(CSVHeader)
	for i := range all {
		_ = cw.Write(CSVRow(&all[i]))
	}
	cw.Flush()
}

// CSVHeader names the columns of a CSV export.
var CSVHeader = []string{"instance", "seq", "time", "type", "subject", "identity_kind", "target", "environment",
	"session", "decision", "rule", "approval_id", "statement", "tables", "rows", "sqlstate", "purpose", "message", "hash"}

// CSVRow is one event as a CSV export writes it (statement texts are the redacted ones).
func CSVRow(e *ledger.Event) []string {
	var texts, tables []string
	for _, st := range e.Statements {
		texts = append(texts, st.Redacted)
		tables = append(tables, st.TablesRead...)
		tables = append(tables, st.TablesWritten...)
	}
	return []string{e.Instance, strconv.FormatInt(e.Seq, 10), e.Time.UTC().Format(time.RFC3339Nano), string(e.Type),
		e.Subject, e.IdentityKind, e.Target, e.Environment, e.SessionID, e.Decision, e.Rule, e.ApprovalID,
		strings.Join(texts, "; "), strings.Join(tables, " "), strconv.FormatInt(e.Rows, 10), e.SQLState, e.Purpose,
		e.Message, e.Hash}
}

// eventData is one event's page: the record and its place in the chain.
type eventData struct {
	Event      ledger.Event
	Prev, Next int64
}

// eventPage shows one event with its chain position and links to its neighbours.
func (c *Console) eventPage(w http.ResponseWriter, v *viewer) {
	instance := v.r.PathValue("instance")
	seq, err := strconv.ParseInt(v.r.PathValue("seq"), 10, 64)
	if err != nil || seq < 1 {
		c.fail(w, v, http.StatusNotFound, "no such event")
		return
	}
	var ev *ledger.Event
	err = c.opts.Events.Scan(v.r.Context(), instance, seq-1, 1, func(se ledger.StoredEvent) error {
		var e ledger.Event
		if err := json.Unmarshal(se.Body, &e); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		if e.Seq == seq {
			ev = &e
		}
		return nil
	})
	if err != nil {
		c.opts.Log.Error("console: read event", "err", err)
		c.fail(w, v, http.StatusInternalServerError, "Reading the event failed; see the server log.")
		return
	}
	if ev == nil || (!v.seesAll && !v.owns(ev.Subject)) {
		c.fail(w, v, http.StatusNotFound, "no such event")
		return
	}
	if !c.record(w, v.r, v, c.event(v.r, v.id, EventView, fmt.Sprintf("console viewed event %s/%d", instance, seq))) {
		return
	}
	c.render(w, http.StatusOK, "event", page{Title: fmt.Sprintf("Event %s/%d", instance, seq), Nav: "audit", Viewer: v,
		Data: eventData{Event: *ev, Prev: seq - 1, Next: seq + 1}})
}
