package compat

import (
	"errors"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// jdbcJar is where Debian's libpostgresql-jdbc-java puts pgJDBC.
const jdbcJar = "/usr/share/java/postgresql.jar"

// testJDBC runs test/clients/java/Compat.java with the default pgJDBC settings, so its
// repeated prepared statements switch to named server-side statements with binary transfer.
func testJDBC(t *testing.T, f *fixture) {
	java := need(t, "java")
	jar := need(t, jdbcJar)
	const table = "compat_jdbc"
	f.makeTable(t, table)
	ep := f.client(t, "compat-jdbc")
	src := filepath.Join(repoRoot(t), "test", "clients", "java", "Compat.java")
	r := runClient(t, ep, []string{"COMPAT_TABLE=" + table, f.denyEnv()}, 120*time.Second, java,
		"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp", jar, src)
	r.expect(t, "pgJDBC", f.withDeny(map[string]string{
		"simple":            wantSimple,
		"multi":             "a,b",
		"rows":              wantRows,
		"metadata_table":    table,
		"metadata_columns":  "id:int4,name:text",
		"server_version":    "true",
		"prepared":          wantParams,
		"prepared_all_runs": "8",
		"server_prepared":   "true",
		"fetch_size_rows":   wantRows,
		"tx_inside":         "1",
		"batch":             "10",
		"copy_in":           "3",
		"copy_out":          wantCopyOut,
		"error":             "22012",
		"error_parse":       "42P01",
		"recovered":         "ok",
		"cancel":            "57014",
		"cancel_fast":       "true",
		"after_cancel":      "ok",
	}, "deny", "deny_prepared", "after_deny"))
	if got := f.tableContents(t, table); got != wantTable {
		t.Errorf("upstream %s after pgJDBC: got %q, want %q", table, got, wantTable)
	}
	f.sleepersGone(t, "jdbc-cancel", 5*time.Second)
}

// testNode runs test/clients/node/compat.js with the node-postgres that make deps installs.
func testNode(t *testing.T, f *fixture) {
	node := need(t, "node")
	dir := filepath.Join(repoRoot(t), "test", "clients", "node")
	need(t, filepath.Join(dir, "node_modules", "pg", "package.json"))
	const table = "compat_node"
	f.makeTable(t, table)
	ep := f.client(t, "compat-node")
	r := runClient(t, ep, []string{"COMPAT_TABLE=" + table, f.denyEnv()}, 60*time.Second, node, filepath.Join(dir, "compat.js"))
	r.expect(t, "node-postgres", f.withDeny(map[string]string{
		"ssl":            wantSSL(ep),
		"simple":         wantSimple,
		"multi":          "a,b",
		"rows":           wantRows,
		"param_text":     wantParams,
		"prepared":       wantParams,
		"binary_text":    "hi!",
		"tx_inside":      "1",
		"error":          "22012",
		"error_extended": "22012",
		"error_parse":    "42P01",
		"error_tx":       "22012",
		"in_failed_tx":   "25P02",
		"recovered":      "ok",
		"cancel_sent":    "true",
		"cancel":         "57014",
		"cancel_fast":    "true",
		"after_cancel":   "ok",
	}, "deny", "deny_extended", "after_deny"))
	if got := f.tableContents(t, table); got != wantTableNoCopy {
		t.Errorf("upstream %s after node-postgres: got %q, want %q", table, got, wantTableNoCopy)
	}
	f.sleepersGone(t, "node-cancel", 5*time.Second)
}

// testPgbench initializes pgbench tables on the upstream directly, then runs short
// select-only runs through the endpoint in each query mode and checks that transactions
// completed without failures.
func testPgbench(t *testing.T, f *fixture) {
	pgbench := need(t, "pgbench")
	up := endpoint{Host: f.upstream.Host, Port: f.upstream.Port, User: f.upstream.User, Password: f.upstream.Password, DB: f.upstreamDB, SSLMode: "disable"}
	runClient(t, up, nil, 60*time.Second, pgbench, "-i", "-s", "1", "-q")
	f.superExec(t, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC")
	ep := f.client(t, "compat-pgbench")
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			r := runClient(t, ep, nil, 30*time.Second, pgbench, "-n", "-S", "-T", "3", "-c", "2", "-j", "2", "-M", mode)
			res, err := parsePgbench(r.stdout)
			if err != nil {
				t.Fatalf("pgbench -M %s: %v\n%s\n%s", mode, err, r.stdout, r.stderr)
			}
			if res.processed < 100 || res.failed != 0 {
				t.Errorf("pgbench -M %s: %d transactions, %d failed; want at least 100 and none failed\n%s\n%s", mode, res.processed, res.failed, r.stdout, r.stderr)
			}
			t.Logf("pgbench -M %s through %s: %d transactions, %.0f tps", mode, f.name, res.processed, res.tps)
		})
	}
}

// pgbenchResult is what a pgbench run reports.
type pgbenchResult struct {
	processed int64
	failed    int64
	tps       float64
}

var (
	reProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	reFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	reTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
)

// parsePgbench reads pgbench's summary.
func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	m, tps := reProcessed.FindStringSubmatch(out), reTPS.FindStringSubmatch(out)
	if m == nil || tps == nil {
		return r, errors.New("pgbench printed no transaction count or tps")
	}
	r.processed, _ = strconv.ParseInt(m[1], 10, 64)
	r.tps, _ = strconv.ParseFloat(tps[1], 64)
	if f := reFailed.FindStringSubmatch(out); f != nil {
		r.failed, _ = strconv.ParseInt(f[1], 10, 64)
	}
	return r, nil
}
