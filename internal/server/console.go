package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/console"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
	"github.com/gatehouse/gatehouse/internal/notify"
	"github.com/gatehouse/gatehouse/internal/store"
)

// registerHTTP mounts everything served on listen.http besides the operational endpoints:
// the audit and approval APIs, the sessions API and the web console.
func (in *Instance) registerHTTP(mux *http.ServeMux) {
	in.registerAuditAPI(mux)
	in.registerSessionsAPI(mux)
	in.console.Register(mux)
}

// targetNames lists the targets in force, for the console's data map.
func (in *Instance) targetNames() []string {
	ts := in.cfg.Load().Targets
	out := make([]string, len(ts))
	for i := range ts {
		out[i] = ts[i].Name
	}
	return out
}

// openFleet is the live sessions view the console and the sessions API use: every instance's
// sessions when the state store is shared (PostgreSQL), else this instance's.
func (in *Instance) openFleet(ctx context.Context, instance string) (*live.Fleet, error) {
	var inval store.Invalidations
	if in.listener != nil {
		inval = in.listener
	}
	return live.NewFleet(ctx, in.live, instance, in.db, inval, in.log.With("part", "live"))
}

// indexBacklog is the embedded store's index lag in records, for the console's overview (nil
// for the PostgreSQL store, which indexes as it writes).
func indexBacklog(led *ledger.Ledger) func() int {
	if st, ok := led.Store().(*ledger.SQLiteStore); ok {
		return st.IndexBacklog
	}
	return nil
}

// Console is the instance's web console (for the demo's one-click sign-in links).
func (in *Instance) Console() *console.Console { return in.console }

// consoleURL is the console's external base URL: console.url, else the HTTPS listener's
// (by the name localhost, which the generated certificate covers, when it listens on every
// address or on loopback), else the HTTP listener's.
func (in *Instance) consoleURL() string {
	if u := in.cfg.Load().Console.URL; u != "" {
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		return u
	}
	if in.http == nil {
		return ""
	}
	if in.http.tlsLn != nil {
		host, port, _ := net.SplitHostPort(in.http.tlsLn.Addr().String())
		if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
			host = "localhost"
		}
		return "https://" + net.JoinHostPort(host, port) + console.Prefix
	}
	return httpBase(in.http.Addr()) + console.Prefix
}

// startHTTPS serves the HTTP listener's handler over TLS on addr ("" for none), with the
// instance's certificate, so the console can be used from other machines.
func (in *Instance) startHTTPS(addr string) error {
	if addr == "" {
		return nil
	}
	if in.tlsConf == nil {
		return errors.New("listen.https needs a certificate: set tls.mode to auto or files")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen https %s: %w", addr, err)
	}
	in.http.tlsLn = ln
	in.http.tlsSrv = &http.Server{Handler: in.http.srv.Handler, ReadHeaderTimeout: 10 * time.Second, TLSConfig: in.tlsConf.Clone()}
	go func() {
		// The certificate comes from TLSConfig (generated or from files).
		if err := in.http.tlsSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			in.log.Error("https listener stopped", "err", err)
		}
	}()
	return nil
}

// HTTPSAddr is the address of the TLS listener ("" when listen.https is not set).
func (in *Instance) HTTPSAddr() string {
	if in.http == nil || in.http.tlsLn == nil {
		return ""
	}
	return in.http.tlsLn.Addr().String()
}

// httpBase is the URL a browser on this machine reaches an HTTP listen address at.
func httpBase(addr string) string {
	switch {
	case strings.HasPrefix(addr, "0.0.0.0:"):
		addr = "127.0.0.1:" + strings.TrimPrefix(addr, "0.0.0.0:")
	case strings.HasPrefix(addr, "[::]:"):
		addr = "127.0.0.1:" + strings.TrimPrefix(addr, "[::]:")
	}
	return "http://" + addr
}

// registerSessionsAPI serves the live sessions to scripts and `gatehouse sessions`: a list
// (everyone's for approvers and the groups auditors, compliance and security, else one's own)
// and ending one (approvers and group security), with the same rules and ledger events as
// the console.
func (in *Instance) registerSessionsAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/sessions", in.approvalRead(func(r *http.Request, id *identityInfo) (int, any) {
		return http.StatusOK, map[string]any{"results": in.console.ListSessions(id.Identity)}
	}))
	mux.HandleFunc("POST /api/v1/sessions/{id}/kill", func(w http.ResponseWriter, r *http.Request) {
		id, ok := in.apiIdentity(w, r)
		if !ok {
			return
		}
		// As for approval decisions: a JSON content type cannot be sent cross-site without a
		// CORS preflight, so a page cannot ride on remembered Basic credentials.
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send Content-Type: application/json with a body of {}"})
			return
		}
		_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4096))
		s, err := in.console.EndSession(r.Context(), r, id.Identity, r.PathValue("id"))
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]any{"session": s})
		case errors.Is(err, console.ErrNotAllowed):
			ev := apiEvent(r, id.Identity, "api POST "+r.URL.Path+" refused: "+err.Error())
			ev.Decision = "deny"
			if err := in.ledger.Record(r.Context(), ev); err != nil {
				in.log.Error("sessions api: record refused kill", "err", err)
			}
			writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		case errors.Is(err, live.ErrNotEndable):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		case errors.Is(err, live.ErrNotFound):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		default:
			in.log.Error("sessions api: kill", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the audit ledger cannot record this action right now, so the session was not ended; try again shortly"})
		}
	})
}

// approvalRecorder records the approval store's events and then hands them to the notifier,
// which sends (without blocking) what a filed, decided or lapsed request needs said.
type approvalRecorder struct {
	led *ledger.Ledger
	n   *notify.Notifier
}

// Record implements approval.Recorder.
func (r approvalRecorder) Record(ctx context.Context, ev *ledger.Event) error {
	if err := r.led.Record(ctx, ev); err != nil {
		return err
	}
	r.n.Observe(ev)
	return nil
}

var _ approval.Recorder = approvalRecorder{}
