package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Every answer carries the safety headers, and plain HTTP from another machine is refused
// before any handler runs.
func TestSecureHeadersAndLoopbackOnly(t *testing.T) {
	ran := false
	h := (&Console{}).secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran = true }))
	for _, tc := range []struct {
		remote string
		want   int
		ran    bool
	}{{"127.0.0.1:5000", http.StatusOK, true}, {"[::1]:5000", http.StatusOK, true}, {"10.1.2.3:5000", http.StatusForbidden, false}} {
		ran = false
		req := httptest.NewRequest(http.MethodGet, "/console/", nil)
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want || ran != tc.ran {
			t.Errorf("from %s: HTTP %d (handler ran %v), want %d (%v)", tc.remote, rec.Code, ran, tc.want, tc.ran)
		}
		hd := rec.Header()
		if !strings.Contains(hd.Get("Content-Security-Policy"), "script-src 'self'") || !strings.Contains(hd.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
			hd.Get("X-Frame-Options") != "DENY" || hd.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("from %s: headers %v", tc.remote, hd)
		}
	}
}

func TestWriteSSEPrefixesEveryLine(t *testing.T) {
	rec := httptest.NewRecorder()
	writeSSE(rec, "sessions", "<tr>\n<td>a</td>\r\n</tr>")
	if got, want := rec.Body.String(), "event: sessions\ndata: <tr>\ndata: <td>a</td>\ndata: </tr>\n\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
