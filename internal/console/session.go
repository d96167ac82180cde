package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/live"
)

// sessionData is one live session's page: who, and its statements as they finish.
type sessionData struct {
	Session    live.Session
	Statements []live.Statement
	Ended      bool
	// Remote: the session is on another instance sharing the store, whose statements this
	// instance does not see live.
	Remote bool
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
			c.render(w, http.StatusOK, "session", page{Title: "Session " + s.ID, Nav: "sessions", Viewer: v, Data: sessionData{Session: s, Remote: true}})
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
	e, ok := c.visibleSession(v, v.r.PathValue("id"))
	if !ok {
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
