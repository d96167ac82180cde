package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpServer serves the operational endpoints (liveness, readiness, Prometheus metrics) and
// the audit API.
type httpServer struct {
	srv *http.Server
	ln  net.Listener
	// tlsSrv serves the same handler over TLS on listen.https (nil when not configured).
	tlsSrv *http.Server
	tlsLn  net.Listener
}

func startHTTP(addr string, reg *prometheus.Registry, ready func() error, register func(*http.ServeMux)) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen http %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if register != nil {
		register(mux)
	}
	h := &httpServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // Serve only fails when the listener dies; Close reports nothing more useful.
		}
	}()
	return h, nil
}

func (h *httpServer) Addr() string { return h.ln.Addr().String() }

func (h *httpServer) Close(ctx context.Context) error {
	var errs []error
	if h.tlsSrv != nil {
		errs = append(errs, h.tlsSrv.Shutdown(ctx))
	}
	return errors.Join(append(errs, h.srv.Shutdown(ctx))...)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
