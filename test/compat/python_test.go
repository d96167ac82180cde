package compat

import (
	"path/filepath"
	"testing"
	"time"
)

// python is Debian's interpreter, which is where python3-psycopg2 and python3-psycopg are
// installed (a pyenv python3 earlier on PATH would not have them).
const python = "/usr/bin/python3"

// wantSSL is what a client reports about TLS on this fixture's connections.
func wantSSL(ep endpoint) string {
	if ep.SSLMode == "disable" {
		return "off"
	}
	return "on"
}

// testPsycopg2 runs test/clients/python/psycopg2_client.py and checks what it saw and what
// reached the upstream.
func testPsycopg2(t *testing.T, f *fixture) {
	py := need(t, python)
	const table = "compat_psycopg2"
	f.makeTable(t, table)
	ep := f.client(t, "compat-psycopg2")
	script := filepath.Join(repoRoot(t), "test", "clients", "python", "psycopg2_client.py")
	r := runClient(t, ep, []string{"COMPAT_TABLE=" + table, f.denyEnv()}, 90*time.Second, py, script)
	r.expect(t, "psycopg2", f.withDeny(map[string]string{
		"ssl":          wantSSL(ep),
		"simple":       wantSimple,
		"multi":        "b",
		"rows":         wantRows,
		"named_cursor": wantRows,
		"param_text":   wantParams,
		"prepared":     wantParams,
		"tx_inside":    "1",
		"copy_out":     wantCopyOut,
		"error":        "22012",
		"in_failed_tx": "25P02",
		"recovered":    "ok",
		"cancel":       "57014",
		"cancel_fast":  "true",
		"after_cancel": "ok",
	}, "deny", "after_deny"))
	if got := f.tableContents(t, table); got != wantTable {
		t.Errorf("upstream %s after psycopg2: got %q, want %q", table, got, wantTable)
	}
	f.sleepersGone(t, "psycopg2-cancel", 5*time.Second)
}

// testPsycopg3 runs test/clients/python/psycopg3_client.py: server-side and client-side
// binding, binary results, prepared statements, pipeline mode, text and binary COPY.
func testPsycopg3(t *testing.T, f *fixture) {
	py := need(t, python)
	const table = "compat_psycopg3"
	f.makeTable(t, table)
	ep := f.client(t, "compat-psycopg3")
	script := filepath.Join(repoRoot(t), "test", "clients", "python", "psycopg3_client.py")
	r := runClient(t, ep, []string{"COMPAT_TABLE=" + table, f.denyEnv()}, 90*time.Second, py, script)
	r.expect(t, "psycopg3", f.withDeny(map[string]string{
		"ssl":             wantSSL(ep),
		"simple":          wantSimple,
		"multi":           "a,b",
		"rows":            wantRows,
		"rows_binary":     wantRows,
		"named_cursor":    wantRows,
		"param_server":    wantParams,
		"param_binary":    wantParams,
		"param_client":    wantParams,
		"prepared":        wantParams,
		"pipeline":        "0,2,4,6,8,10,12,14,16,18",
		"tx_inside":       "1",
		"copy_out":        wantCopyOut,
		"copy_out_binary": "1:c1,2:c2,3:c3",
		"error_server":    "22012",
		"error_client":    "22012",
		"error_tx":        "22012",
		"recovered":       "ok",
		"cancel":          "57014",
		"cancel_fast":     "true",
		"after_cancel":    "ok",
	}, "deny_server", "deny_client", "deny_pipeline", "after_deny"))
	if got := f.tableContents(t, table); got != wantTable {
		t.Errorf("upstream %s after psycopg 3: got %q, want %q", table, got, wantTable)
	}
	f.sleepersGone(t, "psycopg3-cancel", 5*time.Second)
}
