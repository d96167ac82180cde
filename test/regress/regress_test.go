// Package regress runs a slice of PostgreSQL's own regression SQL (vendored in sql/, under
// the PostgreSQL licence, see COPYRIGHT) directly against a throwaway PostgreSQL and through
// Gatehouse, and compares what psql prints, value by value (issue 13 item 1, issue 12 item
// 2). SQL nobody here wrote finds what hand-written tests miss: a value changed on the way,
// a statement refused that ordinary work needs.
//
// Each file runs in a fresh database per run, after the small tables of test_setup.sql,
// exactly as pg_regress runs it (psql -X -a -q, errors do not stop the file), four times:
// directly, and through Gatehouse as three identities:
//
//   - allow-all: an identity with admin access and no masking, under a policy without
//     rules: its output must be identical to the direct one;
//   - dba: group dba on a dev target under the built-in policy: every difference must be
//     listed in dbaDiffs with its reason (a refusal by a named rule, a value masked
//     because the catalog classes its column as sensitive, or a known bug owned elsewhere);
//   - dev: an ordinary engineer (kind human, no group) on a dev target under the built-in
//     policy: the same, in devDiffs, where refusals may only be role changes, server files
//     and programs, the other dangerous functions and copies of masked values.
package regress

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// slice is the part of the suite this test runs, in this order. It is sized so the test
// takes well under two minutes on the 2-core CI machine (about 45 s quiet, 60-70 s with
// other suites running; insert.sql, which adds a quarter, is left out for that); every file needs only the small
// tables of test_setup.sql.
var slice = []string{"boolean", "char", "varchar", "text", "int2", "int4", "int8", "case",
	"delete", "returning", "with", "enum", "name", "md5", "select_into"}

// reason says why a statement's output may differ through Gatehouse.
type reason struct {
	// rule, when set, is the rule that refuses the statement: its output through Gatehouse
	// must name it.
	rule string
	// why explains any other difference: a value masked because the catalog classes its
	// column as sensitive, a consequence of an earlier refusal, or a known bug with its
	// owner ("TODO(mask): ...").
	why string
}

// diffKey names a statement of a file by the last line psql echoed for it.
type diffKey struct{ file, stmt string }

// run is one way of running the files.
type run struct {
	name  string
	dsn   func(db string) string
	env   []string
	diffs map[diffKey]reason // nil: the output must be identical to the direct one
}

func TestRegressionDifferential(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	allowAll := servertest.Start(t, servertest.Options{Upstream: pg, Environment: "dev"})
	builtin := servertest.Start(t, servertest.Options{Upstream: pg, PolicyYAML: "default", Environment: "dev"})
	allSecret := allowAll.Token(t, "regress-all", "service")
	dbaSecret := builtin.Token(t, "regress-dba", "human", "dba")
	devSecret := builtin.Token(t, "regress-dev", "human")

	setup := setupScript(t)
	through := func(p *servertest.Proxy, user string) func(db string) string {
		return func(db string) string {
			return "host=localhost port=" + strconv.Itoa(p.Port) + " user=" + user + " dbname=" + db + "@" + p.Target +
				" sslmode=verify-full sslrootcert=" + p.CAFile
		}
	}
	runs := []run{
		{name: "direct", dsn: func(db string) string {
			return "host=" + pg.Host + " port=" + strconv.Itoa(pg.Port) + " user=" + pg.User + " dbname=" + db + " sslmode=disable"
		}, env: []string{"PGPASSWORD=" + pg.Password}},
		{name: "allow-all", dsn: through(allowAll, "regress-all"), env: []string{"PGPASSWORD=" + allSecret}},
		{name: "dba", dsn: through(builtin, "regress-dba"), env: []string{"PGPASSWORD=" + dbaSecret}, diffs: dbaDiffs},
		{name: "dev", dsn: through(builtin, "regress-dev"), env: []string{"PGPASSWORD=" + devSecret}, diffs: devDiffs},
	}
	used := map[string]map[diffKey]bool{}
	var files []string
	input := setup
	for _, file := range slice {
		files = append(files, filepath.Join("sql", file+".sql"))
		b, err := os.ReadFile(files[len(files)-1])
		if err != nil {
			t.Fatal(err)
		}
		input += "\n" + string(b)
	}
	echoed := statementEnds(input)
	var direct string
	for ri, r := range runs {
		start := time.Now()
		out := runFiles(t, pg, fmt.Sprintf("regress_%d", ri), r, setup, files)
		t.Logf("%s: %d lines of output in %v", r.name, strings.Count(out, "\n"), time.Since(start).Round(time.Millisecond))
		if ri == 0 {
			direct = out
			continue
		}
		for _, h := range diffLines(direct, out) {
			key := diffKey{h.file(), h.stmt(echoed)}
			why, listed := r.diffs[key]
			switch {
			case r.diffs == nil || !listed:
				t.Errorf("%s as %s: output differs after %q, and no reason is listed:\n%s", key.file, r.name, key.stmt, h)
			case why.rule != "" && !strings.Contains(h.got(), `denied by rule "`+why.rule+`"`):
				t.Errorf("%s as %s: after %q the difference is not the refusal by %q:\n%s", key.file, r.name, key.stmt, why.rule, h)
			default:
				if used[r.name] == nil {
					used[r.name] = map[diffKey]bool{}
				}
				used[r.name][key] = true
			}
		}
	}
	for _, r := range runs {
		var stale []string
		for k := range r.diffs {
			if !used[r.name][k] {
				stale = append(stale, k.file+": "+k.stmt)
			}
		}
		sort.Strings(stale)
		for _, s := range stale {
			// Not a failure: a difference another engineer fixed leaves its entry behind.
			t.Logf("%s: listed difference no longer seen (remove it): %s", r.name, s)
		}
	}
}

// setupScript is the part of test_setup.sql the slice needs: the small tables (CHAR_TBL to
// VARCHAR_TBL) and the public schema open to all, without the tablespace (a cluster-wide
// object every run would fight over) and without the large tables loaded from data files.
func setupScript(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join("sql", "test_setup.sql"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	end := strings.Index(text, "CREATE TABLE onek (")
	if end < 0 {
		t.Fatal("test_setup.sql: no CREATE TABLE onek to stop at")
	}
	var keep []string
	for _, l := range strings.Split(text[:end], "\n") {
		if strings.Contains(l, "tablespace") || strings.Contains(l, "TABLESPACE") || strings.HasPrefix(l, `\`) {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// fileMarker is what psql prints (\echo) before each file, so a difference can be named by
// its file.
const fileMarker = "regress-file: "

// runFiles creates db and runs the setup and the files in it with one psql, as pg_regress
// runs a file (psql -X -a -q; errors do not stop it), returning what psql printed (stdout
// and stderr interleaved) with the database name replaced by REGRESSDB. The files share the
// database as they share the regression database in a pg_regress schedule.
func runFiles(t *testing.T, pg *testkit.Postgres, db string, r run, setup string, files []string) string {
	t.Helper()
	pg.Exec(t, "postgres", "CREATE DATABASE "+db+" TEMPLATE template0")
	pg.Exec(t, "postgres", "ALTER DATABASE "+db+" SET timezone = 'PST8PDT'; ALTER DATABASE "+db+" SET datestyle = 'Postgres, MDY'")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"-X", "-a", "-q", "-v", "HIDE_TABLEAM=on", "-v", "HIDE_TOAST_COMPRESSION=on", "-d", r.dsn(db), "-f", "-"}
	for _, f := range files {
		args = append(args, "-c", `\echo `+fileMarker+strings.TrimSuffix(filepath.Base(f), ".sql"), "-f", f)
	}
	cmd := exec.CommandContext(ctx, "psql", args...)
	cmd.Env = append(append(os.Environ(), "PGCONNECT_TIMEOUT=10", "PGAPPNAME=pg_regress", "LC_ALL=C"), r.env...)
	cmd.Stdin = strings.NewReader(setup)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil && ctx.Err() != nil {
		t.Fatalf("psql as %s: %v\n%s", r.name, err, out.String())
	}
	return strings.ReplaceAll(out.String(), db, "REGRESSDB")
}

// statementEnds are the input lines psql echoes at the end of a statement: the lines that
// end with a semicolon. A difference is named by the last one before it.
func statementEnds(input string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(input, "\n") {
		if strings.HasSuffix(strings.TrimSpace(l), ";") {
			out[l] = true
		}
	}
	return out
}

// hunk is one run of differing lines: before holds the direct output's lines, after
// Gatehouse's, and context the common lines that precede them.
type hunk struct {
	context       []string
	before, after []string
}

// stmt is the statement the difference belongs to: the last echoed statement end before it.
func (h hunk) stmt(ends map[string]bool) string {
	for i := len(h.context) - 1; i >= 0; i-- {
		if ends[h.context[i]] {
			return h.context[i]
		}
	}
	return "(start of file)"
}

// file is the file the difference belongs to: the last file marker before it.
func (h hunk) file() string {
	for i := len(h.context) - 1; i >= 0; i-- {
		if f, ok := strings.CutPrefix(h.context[i], fileMarker); ok {
			return f
		}
	}
	return "test_setup"
}

func (h hunk) got() string { return strings.Join(h.after, "\n") }

func (h hunk) String() string {
	var b strings.Builder
	for _, l := range h.before {
		b.WriteString("  direct:    " + l + "\n")
	}
	for _, l := range h.after {
		b.WriteString("  gatehouse: " + l + "\n")
	}
	if len(h.before) == len(h.after) {
		for i := range h.before {
			if d := valueDiff(h.before[i], h.after[i]); d != "" {
				b.WriteString("  values:    " + d + "\n")
			}
		}
	}
	return b.String()
}

var cellSplit = regexp.MustCompile(`\s*\|\s*`)

// valueDiff names the cells in which two lines of psql's aligned output differ.
func valueDiff(a, b string) string {
	ca, cb := cellSplit.Split(strings.TrimSpace(a), -1), cellSplit.Split(strings.TrimSpace(b), -1)
	if len(ca) != len(cb) {
		return ""
	}
	var d []string
	for i := range ca {
		if ca[i] != cb[i] {
			d = append(d, fmt.Sprintf("column %d: %q -> %q", i+1, ca[i], cb[i]))
		}
	}
	return strings.Join(d, "; ")
}

// maxEdits bounds the diff's work and memory: outputs that differ in more lines than this
// are reported as one hunk.
const maxEdits = 3000

// diffLines compares two outputs line by line (Myers' O(ND) algorithm: the outputs are long
// and mostly equal) and returns the hunks where they differ.
func diffLines(a, b string) []hunk {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	n, m := len(x), len(y)
	max := n + m
	v := make([]int, 2*max+2)
	var trace [][]int
	found := false
	for d := 0; d <= max && !found; d++ {
		if d > maxEdits {
			return []hunk{{before: x, after: y}}
		}
		trace = append(trace, append([]int(nil), v...))
		for k := -d; k <= d; k += 2 {
			var i int
			if k == -d || (k != d && v[max+k-1] < v[max+k+1]) {
				i = v[max+k+1]
			} else {
				i = v[max+k-1] + 1
			}
			j := i - k
			for i < n && j < m && x[i] == y[j] {
				i, j = i+1, j+1
			}
			v[max+k] = i
			if i >= n && j >= m {
				found = true
				break
			}
		}
	}
	// Walk back through the trace to mark which lines of each side are common.
	commonX, commonY := make([]bool, n), make([]bool, m)
	i, j := n, m
	for d := len(trace) - 1; d >= 0 && (i > 0 || j > 0); d-- {
		vv := trace[d]
		k := i - j
		var pk int
		if k == -d || (k != d && vv[max+k-1] < vv[max+k+1]) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		pi := vv[max+pk]
		pj := pi - pk
		for i > pi && j > pj {
			i, j = i-1, j-1
			commonX[i], commonY[j] = true, true
		}
		if d > 0 {
			i, j = pi, pj
		}
	}
	var out []hunk
	i, j = 0, 0
	var ctx []string
	for i < n || j < m {
		if i < n && j < m && commonX[i] && commonY[j] {
			ctx = append(ctx, x[i])
			i, j = i+1, j+1
			continue
		}
		h := hunk{context: append([]string(nil), ctx...)}
		for i < n && !commonX[i] {
			h.before = append(h.before, x[i])
			i++
		}
		for j < m && !commonY[j] {
			h.after = append(h.after, y[j])
			j++
		}
		out = append(out, h)
	}
	return out
}
