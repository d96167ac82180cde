package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server"
)

// The files of an evidence pack. The manifest lists every other file with its hash; the
// signature covers the manifest's exact bytes.
const (
	evSummary     = "summary.md"
	evEvents      = "events.jsonl"
	evCheckpoints = "checkpoints.jsonl"
	evPubkey      = "pubkey.pem"
	evVerify      = "VERIFY.md"
	evManifest    = "manifest.json"
	evSignature   = "manifest.sig"
	// evidenceFormat versions the manifest, so a later checker knows what it reads.
	evidenceFormat = "gatehouse-evidence-v1"
)

// EvidenceFile is one file of a pack as the manifest records it.
type EvidenceFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// EvidenceChain is one instance's chain as the pack carries it: the slice of seqs exported
// for the period and the head the store had when the pack was made.
type EvidenceChain struct {
	Instance string `json:"instance"`
	// FirstSeq..LastSeq is the contiguous slice in events.jsonl (0, 0: no event in the period).
	FirstSeq int64  `json:"first_seq"`
	LastSeq  int64  `json:"last_seq"`
	LastHash string `json:"last_hash,omitempty"`
	Events   int64  `json:"events"`
	HeadSeq  int64  `json:"head_seq"`
	HeadHash string `json:"head_hash"`
	StoreOK  bool   `json:"store_verified"`
	Anchored bool   `json:"anchored"`
	InPeriod int64  `json:"events_in_period"`
}

// EvidenceManifest is manifest.json: what the pack covers and the hash of every file, signed
// (manifest.sig) with the ledger's checkpoint key so the pack is tamper-evident as a whole.
type EvidenceManifest struct {
	Format      string          `json:"format"`
	GeneratedAt time.Time       `json:"generated_at"`
	GeneratedBy string          `json:"generated_by"`
	From        time.Time       `json:"from"`
	To          time.Time       `json:"to"`
	PublicKey   string          `json:"public_key"`
	StoreOK     bool            `json:"store_verification_ok"`
	PackOK      bool            `json:"pack_verification_ok"`
	Chains      []EvidenceChain `json:"chains"`
	Files       []EvidenceFile  `json:"files"`
}

func newAuditEvidence(g *globals) *cobra.Command {
	var tf timeFlags
	var out, check, pubFile string
	var top int
	cmd := &cobra.Command{
		Use:   "evidence",
		Short: "Write a signed evidence pack for an audit period (summary, events, checkpoints, manifest), or --check one",
		Long: "Writes into a new directory (-o) a report an auditor can take as is (summary.md), the period's\n" +
			"events and checkpoints (verifiable offline with `gatehouse audit verify --file`), the public key,\n" +
			"and a manifest of every file's SHA-256 signed with the ledger's checkpoint key.\n" +
			"With --check DIR, verifies a pack: the manifest signature, every file's hash and the chain.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if check != "" {
				if out != "" || tf.since != "" || tf.from != "" || tf.to != "" {
					return errors.New("--check takes only the pack directory (and --pubkey)")
				}
				return checkEvidence(cmd.Context(), cmd.OutOrStdout(), check, pubFile)
			}
			if out == "" {
				return errors.New("-o DIR is required: the new directory to write the pack into")
			}
			if tf.since == "" && tf.from == "" {
				return errors.New("give the period: --since 90d, or --from DATE [--to DATE]")
			}
			var q ledger.Query
			if err := tf.apply(&q); err != nil {
				return err
			}
			if err := q.Validate(); err != nil {
				return err
			}
			r := q.Range(time.Now())
			if !r.To.IsZero() && !r.To.After(r.From) {
				return fmt.Errorf("the period %s..%s is empty", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
			}
			return g.writeEvidence(cmd, out, r, top)
		},
	}
	tf.add(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "new (or empty) directory to write the pack into")
	cmd.Flags().StringVar(&check, "check", "", "verify the evidence pack in this directory instead of writing one")
	cmd.Flags().StringVar(&pubFile, "pubkey", "", "with --check: the public key to trust (default: the pack's pubkey.pem)")
	cmd.Flags().IntVar(&top, "top", 20, "how many identities, tables and events each section lists")
	return cmd
}

// prepareDir creates dir, or accepts it when it exists and is empty: a pack never
// overwrites or mixes with other files.
func prepareDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create evidence directory: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("evidence directory %s: %w", dir, err)
	case len(ents) > 0:
		return fmt.Errorf("evidence directory %s is not empty; refusing to overwrite it (choose a new directory)", dir)
	}
	return nil
}

// recordEvidence records the making of a pack on the CLI's own chain, as the console API
// records every read of the ledger: who asked for which period.
func (g *globals) recordEvidence(ctx context.Context, cfg *config.Config, msg string) error {
	host, _ := os.Hostname()
	led, err := server.OpenLedgerInstance(ctx, cfg, host+"/cli")
	if err != nil {
		return err
	}
	ev := &ledger.Event{Type: ledger.EventAdmin, Subject: osUser(), IdentityKind: "human", AuthMethod: "os", Message: msg}
	recErr := led.Record(ctx, ev)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	closeErr := led.Close(cctx)
	if recErr != nil {
		return fmt.Errorf("record the evidence request in the ledger: %w", recErr)
	}
	return closeErr
}

// writeEvidence makes the pack for r; an open or future end becomes the moment after the
// request itself is recorded, so a pack up to now includes its own making.
func (g *globals) writeEvidence(cmd *cobra.Command, dir string, r ledger.TimeRange, top int) error {
	ctx := cmd.Context()
	cfg, err := g.load()
	if err != nil {
		return err
	}
	if err := prepareDir(dir); err != nil {
		return err
	}
	end := "now"
	if !r.To.IsZero() {
		end = r.To.UTC().Format(time.RFC3339Nano)
	}
	if err := g.recordEvidence(ctx, cfg, "audit evidence "+r.From.UTC().Format(time.RFC3339Nano)+" .. "+end+" -o "+dir); err != nil {
		return err
	}
	now := time.Now().UTC()
	if r.To.IsZero() || r.To.After(now) {
		r.To = now
	}
	r.From = r.From.UTC()
	period := r.From.Format(time.RFC3339) + " .. " + r.To.Format(time.RFC3339)
	key, err := ledger.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return err
	}
	pub := key.Public().(ed25519.PublicKey)
	pubPEM, err := ledger.PublicKeyPEM(pub)
	if err != nil {
		return err
	}
	st, err := server.OpenLedgerStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	// The whole store first: the summary says what verifying it found.
	var extra []ledger.Checkpoint
	if cfg.Ledger.CheckpointFile != "" {
		if extra, err = ledger.ReadCheckpointFile(ctx, cfg.Ledger.CheckpointFile); err != nil {
			return err
		}
	}
	storeRep, err := ledger.Verify(ctx, ledger.StoreSource{Store: st, Extra: extra}, pub)
	if err != nil {
		return err
	}
	badChain := map[string]bool{}
	for _, p := range storeRep.Problems {
		badChain[p.Instance] = true
	}

	agg := newEvidenceAgg(r)
	chains, cps, err := exportPeriod(ctx, st, r, filepath.Join(dir, evEvents), agg, func(inst string) bool { return !badChain[inst] }, key)
	if err != nil {
		return err
	}
	for i := range chains {
		chains[i].StoreOK = !badChain[chains[i].Instance]
	}
	if err := writeJSONLines(filepath.Join(dir, evCheckpoints), cps); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, evPubkey), pubPEM, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", evPubkey, err)
	}
	packRep, err := verifyPackChain(ctx, dir, pub)
	if err != nil {
		return err
	}
	ans, err := askAuditQuestions(ctx, st, r, agg)
	if err != nil {
		return err
	}
	sum := renderSummary(summaryInput{r: r, now: now, by: osUser(), chains: chains, storeRep: storeRep, packRep: packRep,
		agg: agg, ans: ans, top: top, checkpointFile: cfg.Ledger.CheckpointFile})
	if err := os.WriteFile(filepath.Join(dir, evSummary), []byte(sum), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", evSummary, err)
	}
	if err := os.WriteFile(filepath.Join(dir, evVerify), []byte(renderVerify(r)), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", evVerify, err)
	}
	m := EvidenceManifest{Format: evidenceFormat, GeneratedAt: now, GeneratedBy: osUser(), From: r.From.UTC(), To: r.To.UTC(),
		PublicKey: ledger.PublicKeyBase64(pub), StoreOK: storeRep.OK, PackOK: packRep.OK, Chains: chains}
	for _, name := range []string{evSummary, evEvents, evCheckpoints, evPubkey, evVerify} {
		f, err := hashFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		f.Name = name
		m.Files = append(m.Files, f)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	mb = append(mb, '\n')
	if err := os.WriteFile(filepath.Join(dir, evManifest), mb, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", evManifest, err)
	}
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, mb)) + "\n"
	if err := os.WriteFile(filepath.Join(dir, evSignature), []byte(sig), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", evSignature, err)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "evidence pack for %s written to %s\n", period, dir)
	var n int64
	for _, c := range chains {
		n += c.Events
	}
	fmt.Fprintf(w, "%d chain(s), %d events exported; store verification: %s; pack verification: %s\n",
		len(chains), n, okWord(storeRep.OK), okWord(packRep.OK))
	if !storeRep.OK {
		return fmt.Errorf("the pack was written, but ledger verification FAILED with %d problem(s); see %s", len(storeRep.Problems), filepath.Join(dir, evSummary))
	}
	return nil
}

func okWord(ok bool) string {
	if ok {
		return "OK"
	}
	return "FAILED"
}

// errStopScan ends a chain scan early once it passed the period.
var errStopScan = errors.New("stop scan")

// scanChain calls fn for instance's events with seq > after, in pages, until fn returns
// errStopScan or the chain ends.
func scanChain(ctx context.Context, st ledger.Store, inst string, after int64, fn func(ledger.StoredEvent) error) error {
	const page = 5000
	for {
		n := 0
		err := st.Scan(ctx, inst, after, page, func(se ledger.StoredEvent) error {
			n++
			after = se.RowSeq
			return fn(se)
		})
		if errors.Is(err, errStopScan) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read chain %s: %w", inst, err)
		}
		if n < page {
			return nil
		}
	}
}

// exportPeriod writes, for every chain, the contiguous slice of seqs from its first to its
// last event in the period (events are stamped when they start, so a slice by time alone
// could leave holes), and feeds the events inside the period to agg. It returns the chains
// and the checkpoints that make the slices verify on their own: the store's signed
// checkpoints inside each slice, plus, for chains whose store verification passed, a signed
// anchor before the slice and a seal at its end.
func exportPeriod(ctx context.Context, st ledger.Store, r ledger.TimeRange, path string, agg *evidenceAgg,
	mayVouch func(string) bool, key ed25519.PrivateKey) ([]EvidenceChain, []ledger.Checkpoint, error) {
	insts, err := st.Instances(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list ledger chains: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", evEvents, err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 256<<10)
	from, to := r.From.UnixNano(), r.To.UnixNano()
	var chains []EvidenceChain
	var cps []ledger.Checkpoint
	for _, inst := range insts {
		c := EvidenceChain{Instance: inst}
		lo, hi := int64(0), int64(0)
		err := scanChain(ctx, st, inst, -1<<62, func(se ledger.StoredEvent) error {
			c.HeadSeq = se.RowSeq
			if se.TimeNS >= from && se.TimeNS < to {
				if lo == 0 {
					lo = se.RowSeq
				}
				hi = se.RowSeq
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		head, headHash, err := st.Head(ctx, inst)
		if err != nil {
			return nil, nil, fmt.Errorf("read head of chain %s: %w", inst, err)
		}
		c.HeadSeq, c.HeadHash = head, headHash
		if lo == 0 {
			chains = append(chains, c)
			continue
		}
		c.FirstSeq, c.LastSeq = lo, hi
		var firstPrev string
		err = scanChain(ctx, st, inst, lo-1, func(se ledger.StoredEvent) error {
			if se.RowSeq > hi {
				return errStopScan
			}
			ev, err := decodeEvent(se.Body)
			if err != nil {
				return err
			}
			if c.Events == 0 {
				firstPrev = ev.PrevHash
			}
			c.Events++
			c.LastHash = ev.Hash
			if _, err := bw.Write(se.Body); err != nil {
				return err
			}
			if err := bw.WriteByte('\n'); err != nil {
				return err
			}
			if se.TimeNS >= from && se.TimeNS < to {
				c.InPeriod++
				agg.add(&ev)
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("export %s: %w", evEvents, err)
		}
		stored, err := st.Checkpoints(ctx, inst)
		if err != nil {
			return nil, nil, fmt.Errorf("read checkpoints of chain %s: %w", inst, err)
		}
		sealed := false
		for _, cp := range stored {
			if cp.Kind != ledger.CheckpointRetention && cp.Seq >= lo && cp.Seq <= hi {
				cps = append(cps, cp)
				sealed = sealed || cp.Seq == hi
			}
		}
		if mayVouch(inst) {
			if lo > 1 || firstPrev != "" {
				a := ledger.Checkpoint{Instance: inst, Seq: lo - 1, Hash: firstPrev, Time: time.Now(), Kind: ledger.CheckpointPeriodStart}
				a.Sign(key)
				cps = append(cps, a)
				c.Anchored = true
			}
			if !sealed {
				e := ledger.Checkpoint{Instance: inst, Seq: hi, Hash: c.LastHash, Time: time.Now(), Kind: ledger.CheckpointPeriodEnd}
				e.Sign(key)
				cps = append(cps, e)
			}
		}
		chains = append(chains, c)
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", evEvents, err)
	}
	if err := f.Sync(); err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", evEvents, err)
	}
	return chains, cps, f.Close()
}

func decodeEvent(b []byte) (ledger.Event, error) {
	var ev ledger.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return ev, fmt.Errorf("decode stored event: %w", err)
	}
	return ev, nil
}

func writeJSONLines[T any](path string, rows []T) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", filepath.Base(path), err)
	}
	enc := json.NewEncoder(f)
	for i := range rows {
		if err := enc.Encode(&rows[i]); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", filepath.Base(path), err)
		}
	}
	return f.Close()
}

// verifyPackChain runs the offline verification on a pack's events and checkpoints, exactly
// what `gatehouse audit verify --file events.jsonl --checkpoints checkpoints.jsonl` does.
func verifyPackChain(ctx context.Context, dir string, pub ed25519.PublicKey) (*ledger.Report, error) {
	cps, err := ledger.ReadCheckpointFile(ctx, filepath.Join(dir, evCheckpoints))
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, evEvents))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", evEvents, err)
	}
	defer f.Close()
	return ledger.Verify(ctx, ledger.JSONLSource{Reader: f, Extra: cps}, pub)
}

func hashFile(path string) (EvidenceFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return EvidenceFile{}, fmt.Errorf("hash %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return EvidenceFile{}, fmt.Errorf("hash %s: %w", filepath.Base(path), err)
	}
	return EvidenceFile{Name: filepath.Base(path), SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// checkEvidence verifies a pack: the manifest's signature with the trusted key, every listed
// file's size and SHA-256, that no file was added, and the chain slice offline. It names
// each file that fails.
func checkEvidence(ctx context.Context, w io.Writer, dir, pubFile string) error {
	mb, err := os.ReadFile(filepath.Join(dir, evManifest))
	if err != nil {
		return fmt.Errorf("%s: %w", evManifest, err)
	}
	sigText, err := os.ReadFile(filepath.Join(dir, evSignature))
	if err != nil {
		return fmt.Errorf("%s: %w", evSignature, err)
	}
	keyFile := filepath.Join(dir, evPubkey)
	if pubFile != "" {
		keyFile = pubFile
	}
	pubPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	pub, err := ledger.ParsePublicKey(pubPEM)
	if err != nil {
		return fmt.Errorf("public key %s: %w", keyFile, err)
	}
	var bad []string
	fail := func(name, format string, args ...any) {
		bad = append(bad, name)
		fmt.Fprintf(w, "FAILED %s: %s\n", name, fmt.Sprintf(format, args...))
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sigText)))
	if err != nil || !ed25519.Verify(pub, mb, sig) {
		fail(evSignature, "the signature of %s does not verify with the key in %s: the manifest was altered or signed by another key", evManifest, keyFile)
	} else {
		fmt.Fprintf(w, "ok     %s: signature of %s verifies (key %s)\n", evSignature, evManifest, ledger.PublicKeyBase64(pub))
	}
	var m EvidenceManifest
	if err := json.Unmarshal(mb, &m); err != nil {
		fail(evManifest, "not a manifest: %v", err)
		return fmt.Errorf("evidence pack check FAILED: %s", strings.Join(bad, ", "))
	}
	if m.Format != evidenceFormat {
		fail(evManifest, "format %q, want %q", m.Format, evidenceFormat)
	}
	if m.PublicKey != ledger.PublicKeyBase64(pub) {
		fail(evManifest, "names public key %s, but the trusted key is %s", m.PublicKey, ledger.PublicKeyBase64(pub))
	}
	listed := map[string]bool{evManifest: true, evSignature: true}
	for _, want := range m.Files {
		listed[want.Name] = true
		if want.Name != filepath.Base(want.Name) || want.Name == "." || want.Name == ".." {
			fail(evManifest, "lists a file outside the pack: %q", want.Name)
			continue
		}
		got, err := hashFile(filepath.Join(dir, want.Name))
		switch {
		case err != nil:
			fail(want.Name, "missing or unreadable: %v", err)
		case got.SHA256 != want.SHA256 || got.Size != want.Size:
			fail(want.Name, "SHA-256 %s (%d bytes) differs from the manifest's %s (%d bytes): the file was changed after the pack was made",
				got.SHA256, got.Size, want.SHA256, want.Size)
		default:
			fmt.Fprintf(w, "ok     %s: SHA-256 %s, %d bytes\n", want.Name, got.SHA256, got.Size)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read evidence directory: %w", err)
	}
	for _, e := range ents {
		if !listed[e.Name()] {
			fail(e.Name(), "not listed in the manifest: added after the pack was made")
		}
	}
	for _, need := range []string{evEvents, evCheckpoints} {
		if !listed[need] || slices.Contains(bad, need) {
			fail(need, "required for the chain verification")
		}
	}
	if !slices.Contains(bad, evEvents) && !slices.Contains(bad, evCheckpoints) {
		rep, err := verifyPackChain(ctx, dir, pub)
		if err != nil {
			return err
		}
		fmt.Fprint(w, indent(rep.String(), "       "))
		if !rep.OK {
			fail(evEvents, "the chain verification found %d problem(s)", len(rep.Problems))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("evidence pack check FAILED: %s", strings.Join(slices.Compact(bad), ", "))
	}
	fmt.Fprintf(w, "OK: evidence pack for %s .. %s verifies (manifest signature, %d file hashes, chain)\n",
		m.From.Format(time.RFC3339), m.To.Format(time.RFC3339), len(m.Files))
	return nil
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var sb strings.Builder
	for _, l := range lines {
		if l != "" {
			sb.WriteString(prefix + l)
		}
	}
	return sb.String()
}
