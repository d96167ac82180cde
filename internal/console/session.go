package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
)

// sessionData is one live session's page: who, and its statements as they finish.
type sessionData struct {
	Session    live.Session
	Statements []live.Statement
	Ended      bool
	// Remote: the session is on another instance sharing the store; its statements are read
	// from the shared ledger (as they are recorded) instead of this instance's live view.
	Remote bool
}

// remoteStatementsRead bounds the events read to find a remote session's recent statements
// (the same identity's other sessions on that instance and target share the search).
const remoteStatementsRead = 500

// remoteStatements reads the last statements of s, a session on another instance sharing the
// store, from the ledger: that instance's statement events of the session's identity and
// target since it started, kept when they are the session's. Newest first, at most as many as
// a live view keeps.
func (c *Console) remoteStatements(ctx context.Context, s live.Session) ([]live.Statement, error) {
	evs, err := c.opts.Events.Search(ctx, ledger.Query{Instance: s.Instance, Type: ledger.EventStatement, Identity: s.Subject,
		Target: s.Target, From: s.Since, Limit: remoteStatementsRead})
	if err != nil {
		return nil, fmt.Errorf("read the statements of session %s on instance %s: %w", s.ID, s.Instance, err)
	}
	var out []live.Statement
	for i := range evs {
		ev := &evs[i]
		if ev.SessionID != s.ID {
			continue
		}
		st := live.Statement{Time: ev.Time, Decision: ev.Decision, Rule: ev.Rule, Rows: ev.Rows, Duration: ev.Duration, SQLState: ev.SQLState}
		texts := make([]string, len(ev.Statements))
		for j := range ev.Statements {
			texts[j] = ev.Statements[j].Redacted
		}
		st.Text = strings.Join(texts, "; ")
		if out = append(out, st); len(out) == live.RecentStatements {
			break
		}
	}
	return out, nil
}

// visibleSession returns a live session the viewer may see.
func (c *Console) visibleSession(v *viewer, id string) (*live.Entry, bool) {
	e, ok := c.opts.Live.Entry(id)
	if !ok || (!v.seesAll && !v.owns(e.Session().Subject)) {
		return nil, false
	}
	return e, true
}

// sessionDataOf is the page's model for e now.
func (c *Console) sessionDataOf(e *live.Entry) sessionData {
	d := sessionData{Session: e.Session(), Statements: e.Recent(), Ended: e.Ended()}
	if c.opts.Fleet.Shared() {
		d.Session.Instance = c.opts.Fleet.Instance()
	}
	return d
}

// sessionPage shows one live session and its latest statements (redacted text, decision,
// rule, rows, duration), updated over server-sent events as they finish.
func (c *Console) sessionPage(w http.ResponseWriter, v *viewer) {
	id := v.r.PathValue("id")
	e, ok := c.visibleSession(v, id)
	if !ok {
		if s, ok := c.opts.Fleet.Get(id); ok && (v.seesAll || v.owns(s.Subject)) {
			d := sessionData{Session: s, Remote: true}
			var err error
			if d.Statements, err = c.remoteStatements(v.r.Context(), s); err != nil {
				c.opts.Log.Error("console: remote session", "err", err)
				c.fail(w, v, http.StatusInternalServerError, "Reading the session's statements failed; see the server log.")
				return
			}
			c.render(w, http.StatusOK, "session", page{Title: "Session " + s.ID, Nav: "sessions", Viewer: v, Data: d})
			return
		}
		c.fail(w, v, http.StatusNotFound, "No live session with this id (it may have ended; its statements are in Activity).")
		return
	}
	d := c.sessionDataOf(e)
	c.render(w, http.StatusOK, "session", page{Title: "Session " + d.Session.ID, Nav: "sessions", Viewer: v, Data: d})
}

// sessionStream pushes the session's statements (event "statements") when they change.
func (c *Console) sessionStream(w http.ResponseWriter, v *viewer) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	id := v.r.PathValue("id")
	e, ok := c.visibleSession(v, id)
	if !ok {
		if s, ok := c.opts.Fleet.Get(id); ok && (v.seesAll || v.owns(s.Subject)) {
			c.remoteSessionStream(w, fl, v, s)
			return
		}
		http.Error(w, "no such live session", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := c.pages["session"]
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	last, checked := ^uint64(0), time.Now()
	for {
		if ver := c.opts.Live.Version(); ver != last {
			last = ver
			d := c.sessionDataOf(e)
			var b strings.Builder
			if err := t.ExecuteTemplate(&b, "statements_table", page{Viewer: v, Data: d}); err != nil {
				c.opts.Log.Error("console: render statements", "err", err)
				return
			}
			if !writeSSE(w, "statements", b.String()) {
				return
			}
			fl.Flush()
			if d.Ended {
				return
			}
		}
		select {
		case <-v.r.Context().Done():
			return
		case <-tick.C:
		}
		if time.Since(checked) >= 2*time.Second {
			checked = time.Now()
			if !c.stillValid(v.r, v.session) {
				return
			}
		}
	}
}

// remoteSessionEvery is how often a remote session's statements are read from the ledger.
const remoteSessionEvery = 2 * time.Second

// remoteSessionStream pushes the statements of s, a session on another instance, as the
// shared ledger records them, until it ends (it leaves the fleet's list) or the viewer goes.
func (c *Console) remoteSessionStream(w http.ResponseWriter, fl http.Flusher, v *viewer, s live.Session) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := c.pages["session"]
	tick := time.NewTicker(remoteSessionEvery)
	defer tick.Stop()
	var shown string
	for {
		select {
		case <-v.r.Context().Done():
			return
		case <-tick.C:
		}
		if !c.stillValid(v.r, v.session) {
			return
		}
		_, stillLive := c.opts.Fleet.Get(s.ID)
		sts, err := c.remoteStatements(v.r.Context(), s)
		if err != nil {
			c.opts.Log.Warn("console: remote session", "err", err)
			continue
		}
		var b strings.Builder
		if err := t.ExecuteTemplate(&b, "statements_table", page{Viewer: v, Data: sessionData{Session: s, Statements: sts, Ended: !stillLive, Remote: true}}); err != nil {
			c.opts.Log.Error("console: render statements", "err", err)
			return
		}
		if b.String() != shown {
			shown = b.String()
			if !writeSSE(w, "statements", shown) {
				return
			}
			fl.Flush()
		}
		if !stillLive {
			return
		}
	}
}
