package ledgere2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// exportedLine is one line of an exported ledger with the members the test edits by.
type exportedLine struct {
	text     string
	instance string
	seq      int64
	typ      string
	subject  string
}

func readExport(t *testing.T, path string) []exportedLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []exportedLine
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		var ev ledger.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("exported line is not a JSON event: %v\n%s", err, l)
		}
		out = append(out, exportedLine{text: l, instance: ev.Instance, seq: ev.Seq, typ: string(ev.Type), subject: ev.Subject})
	}
	return out
}

func writeExport(t *testing.T, path string, lines []exportedLine) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// offlineVerify runs `gatehouse audit verify --file` the way an auditor would on another
// machine: no configuration, no data directory, only the export, the checkpoints and the key.
func offlineVerify(t *testing.T, dir, file, pub, cps string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "audit", "verify", "--file", file, "--pubkey", pub, "--checkpoints", cps)
	cmd.Dir = dir
	// A home without a gatehouse installation, so nothing but the flags can be used.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "xdg"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run audit verify: %v", err)
		}
	}
	return out.String(), err == nil
}

// TestExportVerifyOfflineAndTamper exports a ledger written by real sessions, verifies the
// export offline with only the public key and the checkpoints, and then shows that each kind
// of tampering with the export is caught and named.
func TestExportVerifyOfflineAndTamper(t *testing.T) {
	e := newEnv(t, envOptions{CheckpointEvery: 5, CheckpointInterval: "1s"})
	e.upstream.Exec(t, "app", "CREATE TABLE notes (id int PRIMARY KEY, body text)")
	secret := e.token("alice", "service")
	e.start()
	ctx := context.Background()
	c := e.mustConnect("alice", secret, "exporter")
	for i := 1; i <= 12; i++ {
		if _, err := c.Exec(ctx, "INSERT INTO notes VALUES ($1, $2)", i, fmt.Sprintf("note %d", i)); err != nil {
			t.Fatalf("insert: %v", err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil {
			t.Fatalf("select: %v", err)
		}
	}
	_ = c.Close(ctx)
	e.stop()

	work := t.TempDir()
	exported := filepath.Join(work, "ledger.jsonl")
	cps := filepath.Join(work, "cps.jsonl")
	pub := filepath.Join(work, "pub.pem")
	e.mustCLI("audit", "export", "-o", exported, "--checkpoints-out", cps)
	if err := os.WriteFile(pub, []byte(e.mustCLI("audit", "pubkey")), 0o600); err != nil {
		t.Fatal(err)
	}
	auditor := t.TempDir()
	out, ok := offlineVerify(t, auditor, exported, pub, cps)
	if !ok || !strings.Contains(out, "OK:") {
		t.Fatalf("offline verify of an untouched export failed:\n%s", out)
	}
	t.Logf("offline verify of the export:\n%s", out)

	lines := readExport(t, exported)
	// The server's chain is the one with the session's statements.
	server := ""
	for _, l := range lines {
		if l.typ == "statement" && l.subject == "alice" {
			server = l.instance
			break
		}
	}
	if server == "" {
		t.Fatalf("the export has no statement event of alice")
	}
	var chain []int // indexes into lines of the server's chain
	for i, l := range lines {
		if l.instance == server {
			chain = append(chain, i)
		}
	}
	if len(chain) < 30 {
		t.Fatalf("the server's chain has %d events; the workload should have written more", len(chain))
	}

	tamper := func(name string, edit func([]exportedLine) ([]exportedLine, string), wantInOutput ...string) {
		t.Run(name, func(t *testing.T) {
			cp := append([]exportedLine(nil), lines...)
			edited, why := edit(cp)
			path := filepath.Join(t.TempDir(), "ledger.jsonl")
			writeExport(t, path, edited)
			out, ok := offlineVerify(t, auditor, path, pub, cps)
			if ok {
				t.Fatalf("verify passed an export where %s:\n%s", why, out)
			}
			t.Logf("%s:\n%s", why, out)
			for _, w := range wantInOutput {
				if !strings.Contains(out, w) {
					t.Errorf("verify failed but its report does not say %q (%s):\n%s", w, why, out)
				}
			}
		})
	}

	// Edit one event's subject: the altered event is named by its seq.
	victim := lines[chain[len(chain)/2]]
	for i := len(chain) / 2; i < len(chain); i++ {
		if lines[chain[i]].typ == "statement" && lines[chain[i]].subject == "alice" {
			victim = lines[chain[i]]
			break
		}
	}
	tamper("edit subject", func(ls []exportedLine) ([]exportedLine, string) {
		for i := range ls {
			if ls[i].instance == victim.instance && ls[i].seq == victim.seq {
				edited := strings.Replace(ls[i].text, `"subject":"alice"`, `"subject":"mallory"`, 1)
				if edited == ls[i].text {
					t.Fatalf("the exported event has no \"subject\":\"alice\" member to edit: %s", ls[i].text)
				}
				ls[i].text = edited
			}
		}
		return ls, fmt.Sprintf("the subject of seq %d was changed", victim.seq)
	}, fmt.Sprintf("%s seq %d: %s", victim.instance, victim.seq, ledger.ProblemAltered))

	// Delete one line: the gap is named.
	gone := lines[chain[len(chain)/3]]
	tamper("delete a line", func(ls []exportedLine) ([]exportedLine, string) {
		out := ls[:0:0]
		for _, l := range ls {
			if !(l.instance == gone.instance && l.seq == gone.seq) {
				out = append(out, l)
			}
		}
		return out, fmt.Sprintf("seq %d was deleted", gone.seq)
	}, fmt.Sprintf("%s seq %d: %s", gone.instance, gone.seq, ledger.ProblemRemoved))

	// Cut off the tail of the server's chain: the signed checkpoint at its end names events
	// beyond what is left.
	cut := 3
	tamper("truncate the tail", func(ls []exportedLine) ([]exportedLine, string) {
		drop := map[int]bool{}
		for _, i := range chain[len(chain)-cut:] {
			drop[i] = true
		}
		out := ls[:0:0]
		for i, l := range ls {
			if !drop[i] {
				out = append(out, l)
			}
		}
		return out, fmt.Sprintf("the last %d events of %s were cut off", cut, server)
	}, fmt.Sprintf("%s seq %d..%d: %s", server, lines[chain[len(chain)-cut]].seq, lines[chain[len(chain)-1]].seq, ledger.ProblemTruncated))

	// Swap two neighbours: the chain's order is part of what is signed.
	a := len(chain) / 4
	tamper("reorder two events", func(ls []exportedLine) ([]exportedLine, string) {
		ls[chain[a]], ls[chain[a+1]] = ls[chain[a+1]], ls[chain[a]]
		return ls, fmt.Sprintf("seq %d and %d were swapped", lines[chain[a]].seq, lines[chain[a+1]].seq)
	}, fmt.Sprintf("%s seq %d: %s", server, lines[chain[a]].seq, ledger.ProblemReordered))

	// Insert a copy of an event: the duplicate is caught.
	dup := len(chain) / 5
	tamper("insert a duplicate", func(ls []exportedLine) ([]exportedLine, string) {
		i := chain[dup]
		out := append(append(append([]exportedLine(nil), ls[:i+1]...), ls[i]), ls[i+1:]...)
		return out, fmt.Sprintf("seq %d was duplicated", lines[i].seq)
	}, fmt.Sprintf("%s seq %d: %s", server, lines[chain[dup]].seq, ledger.ProblemInserted))

	// Checkpoints signed by someone else's key prove nothing.
	t.Run("wrong public key", func(t *testing.T) {
		other, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pem, err := ledger.PublicKeyPEM(other)
		if err != nil {
			t.Fatal(err)
		}
		wrong := filepath.Join(t.TempDir(), "other.pem")
		if err := os.WriteFile(wrong, pem, 0o600); err != nil {
			t.Fatal(err)
		}
		out, ok := offlineVerify(t, auditor, exported, wrong, cps)
		if ok {
			t.Fatalf("verify passed with a public key that did not sign the checkpoints:\n%s", out)
		}
		if !strings.Contains(out, ledger.ProblemCheckpoint) {
			t.Errorf("verify with the wrong key does not report a checkpoint problem:\n%s", out)
		}
	})

	// Tampering in the store itself, with the proxy stopped: an edited index column (what
	// searches see) and a cut-off tail whose store-side checkpoints were deleted too, which
	// only the external checkpoint file can reveal.
	t.Run("store", func(t *testing.T) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		st, err := ledger.OpenSQLite(sctx, e.dataDir)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		db := st.DB()
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.ExecContext(sctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		verifyStore := func() (string, bool) {
			out, _, err := e.cli(sctx, "audit", "verify")
			return out, err == nil
		}
		exec(`UPDATE ledger_events SET subject = 'mallory' WHERE instance = ? AND seq = ?`, victim.instance, victim.seq)
		out, ok := verifyStore()
		if ok || !strings.Contains(out, fmt.Sprintf("%s seq %d:", victim.instance, victim.seq)) {
			t.Errorf("verify of a store whose subject column of seq %d was edited: passed=%v, want a failure naming it:\n%s", victim.seq, ok, out)
		}
		exec(`UPDATE ledger_events SET subject = 'alice' WHERE instance = ? AND seq = ?`, victim.instance, victim.seq)
		if out, ok := verifyStore(); !ok {
			t.Fatalf("verify after undoing the edit fails:\n%s", out)
		}
		last := lines[chain[len(chain)-1]].seq
		keep := last - int64(cut)
		for _, tbl := range []string{"ledger_events", "ledger_tables", "ledger_classes", "ledger_statements", "ledger_checkpoints"} {
			exec(`DELETE FROM `+tbl+` WHERE instance = ? AND seq > ?`, server, keep)
		}
		out, ok = verifyStore()
		if ok || !strings.Contains(out, ledger.ProblemTruncated) {
			t.Errorf("verify of a store whose tail (seq %d..%d) and its checkpoints were deleted: passed=%v, want truncated (from the external checkpoint file):\n%s", keep+1, last, ok, out)
		}
	})
}
