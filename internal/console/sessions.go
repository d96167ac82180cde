package console

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/live"
)

// sessionsData is the sessions page's model.
type sessionsData struct {
	Sessions []live.Session
	Now      time.Time
	// Shared: several instances share the store, so the table says which one has a session.
	Shared bool
}

func (c *Console) sessionsPage(w http.ResponseWriter, v *viewer) {
	c.render(w, http.StatusOK, "sessions", page{Title: "Live sessions", Nav: "sessions", Viewer: v,
		Data: sessionsData{Sessions: c.ListSessions(v.id), Now: c.opts.Now(), Shared: c.opts.Fleet.Shared()}})
}

// sessionsStream pushes the sessions table (server-sent events, event "sessions") whenever
// the live registry changes, so the page updates itself without a reload. The stream ends
// when the viewer's console session does (revocation included).
func (c *Console) sessionsStream(w http.ResponseWriter, v *viewer) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := c.pages["sessions"]
	ctx := v.r.Context()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	last, checked := ^uint64(0), time.Now()
	for {
		if ver := c.opts.Fleet.Version(); ver != last {
			last = ver
			var b strings.Builder
			if err := t.ExecuteTemplate(&b, "sessions_table", page{Viewer: v, Data: sessionsData{Sessions: c.ListSessions(v.id), Now: c.opts.Now(), Shared: c.opts.Fleet.Shared()}}); err != nil {
				c.opts.Log.Error("console: render sessions", "err", err)
				return
			}
			if !writeSSE(w, "sessions", b.String()) {
				return
			}
			fl.Flush()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(checked) >= 2*time.Second {
			checked = time.Now()
			if !c.stillValid(v.r, v.session) {
				_ = writeSSE(w, "ended", "")
				fl.Flush()
				return
			}
		}
	}
}

// writeSSE writes one server-sent event; every line of data gets its own data: field.
func writeSSE(w http.ResponseWriter, event, data string) bool {
	var b strings.Builder
	b.WriteString("event: ")
	b.WriteString(event)
	b.WriteByte('\n')
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: ")
		b.WriteString(strings.TrimSuffix(line, "\r"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	_, err := w.Write([]byte(b.String()))
	return err == nil
}

// endSession ends a live session from the browser.
func (c *Console) endSession(w http.ResponseWriter, v *viewer) {
	_, err := c.EndSession(v.r.Context(), v.r, v.id, v.r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNotAllowed):
		ev := c.event(v.r, v.id, EventRefused, fmt.Sprintf("console: end session %s refused: %v", v.r.PathValue("id"), err))
		ev.Decision = "deny"
		_ = c.opts.Ledger.Record(v.r.Context(), ev)
		c.fail(w, v, http.StatusForbidden, err.Error())
	case errors.Is(err, live.ErrNotEndable):
		c.fail(w, v, http.StatusConflict, "This session's door cannot end it on request.")
	case errors.Is(err, live.ErrNotFound):
		c.fail(w, v, http.StatusNotFound, "That session has already ended.")
	case err != nil:
		c.opts.Log.Error("console: end session", "err", err)
		c.fail(w, v, http.StatusServiceUnavailable, "The audit ledger cannot record this action right now, so the session was not ended; try again shortly.")
	default:
		http.Redirect(w, v.r, Prefix+"sessions", http.StatusSeeOther)
	}
}
