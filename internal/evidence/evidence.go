// Package evidence makes and checks signed evidence packs for an audit period: a summary an
// auditor can take as is, the period's slice of every ledger chain with the checkpoints that
// make it verify offline, the public key, and a manifest of every file's SHA-256 signed with
// the ledger's checkpoint key. `gatehouse audit evidence` and the console's download both
// make packs here, so they are the same packs.
package evidence

import (
	"archive/zip"
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

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// The files of an evidence pack. The manifest lists every other file with its hash; the
// signature covers the manifest's exact bytes.
const (
	evSummary     = "summary.md"
	evEvents      = "events.jsonl"
	evCheckpoints = "checkpoints.jsonl"
	evPubkey      = "pubkey.pem"
	evTrustedKeys = "trusted-keys.json"
	evVerify      = "VERIFY.md"
	evManifest    = "manifest.json"
	evSignature   = "manifest.sig"
	// evidenceFormat versions the manifest, so a later checker knows what it reads.
	evidenceFormat = "gatehouse-evidence-v1"
)

// File is one file of a pack as the manifest records it.
type File struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Chain is one instance's chain as the pack carries it: the slice of seqs exported
// for the period and the head the store had when the pack was made.
type Chain struct {
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

// Manifest is manifest.json: what the pack covers and the hash of every file, signed
// (manifest.sig) with the ledger's checkpoint key so the pack is tamper-evident as a whole.
type Manifest struct {
	Format      string    `json:"format"`
	GeneratedAt time.Time `json:"generated_at"`
	GeneratedBy string    `json:"generated_by"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	PublicKey   string    `json:"public_key"`
	StoreOK     bool      `json:"store_verification_ok"`
	PackOK      bool      `json:"pack_verification_ok"`
	Chains      []Chain   `json:"chains"`
	Files       []File    `json:"files"`
}

// PrepareDir creates dir, or accepts it when it exists and is empty: a pack never
// overwrites or mixes with other files.
func PrepareDir(dir string) error {
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

// Options say what pack to make.
type Options struct {
	// Store is the ledger's store; Key its checkpoint signing key (signs the period anchors
	// and the manifest).
	Store ledger.Store
	Key   ed25519.PrivateKey
	// Range is the audit period; an open or future end is now.
	Range ledger.TimeRange
	// Top is how many identities, tables and events each summary section lists.
	Top int
	// By names who asked for the pack.
	By string
	// CheckpointFile is ledger.checkpoint_file, whose copies catch a truncated tail (and
	// whose lines pin each instance's key).
	CheckpointFile string
	// TrustedKeys is ledger.trusted_keys: the checkpoint key of each instance sharing the
	// store, by instance name (base64).
	TrustedKeys map[string]string
}

// Result says what a pack holds and what verifying it found.
type Result struct {
	From, To      time.Time
	Chains        int
	Events        int64
	StoreOK       bool
	StoreProblems int
	PackOK        bool
}

// Write makes the pack for o.Range in dir (see PrepareDir). A store whose verification
// fails still gets its pack, whose summary says so; Result.StoreOK reports it.
func Write(ctx context.Context, dir string, o Options) (Result, error) {
	r := o.Range
	now := time.Now().UTC()
	if r.To.IsZero() || r.To.After(now) {
		r.To = now
	}
	r.From = r.From.UTC()
	res := Result{From: r.From, To: r.To}
	key := o.Key
	pub := key.Public().(ed25519.PublicKey)
	pubPEM, err := ledger.PublicKeyPEM(pub)
	if err != nil {
		return res, err
	}
	st := o.Store

	// The whole store first: the summary says what verifying it found.
	var extra []ledger.Checkpoint
	if o.CheckpointFile != "" {
		if extra, err = ledger.ReadCheckpointFile(ctx, o.CheckpointFile); err != nil {
			return res, err
		}
	}
	pinned, err := ledger.PinnedKeys(ctx, o.TrustedKeys, o.CheckpointFile)
	if err != nil {
		return res, err
	}
	storeRep, err := ledger.VerifyWith(ctx, ledger.StoreSource{Store: st, Extra: extra}, ledger.PublicKeys{Pinned: pinned, Fallback: pub})
	if err != nil {
		return res, err
	}
	badChain := map[string]bool{}
	for _, p := range storeRep.Problems {
		badChain[p.Instance] = true
	}

	agg := newEvidenceAgg(r)
	chains, cps, err := exportPeriod(ctx, st, r, filepath.Join(dir, evEvents), agg, func(inst string) bool { return !badChain[inst] }, key)
	if err != nil {
		return res, err
	}
	for i := range chains {
		chains[i].StoreOK = !badChain[chains[i].Instance]
	}
	if err := writeJSONLines(filepath.Join(dir, evCheckpoints), cps); err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(dir, evPubkey), pubPEM, 0o600); err != nil {
		return res, fmt.Errorf("write %s: %w", evPubkey, err)
	}
	// The keys of the other instances whose chains the pack holds, under the signed manifest.
	kb, err := ledger.EncodeKeys(pinned)
	if err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(dir, evTrustedKeys), kb, 0o600); err != nil {
		return res, fmt.Errorf("write %s: %w", evTrustedKeys, err)
	}
	packRep, err := verifyPackChain(ctx, dir, pub)
	if err != nil {
		return res, err
	}
	ans, err := askAuditQuestions(ctx, st, r, agg)
	if err != nil {
		return res, err
	}
	top := o.Top
	if top <= 0 {
		top = 20
	}
	sum := renderSummary(summaryInput{r: r, now: now, by: o.By, chains: chains, storeRep: storeRep, packRep: packRep,
		agg: agg, ans: ans, top: top, checkpointFile: o.CheckpointFile})
	if err := os.WriteFile(filepath.Join(dir, evSummary), []byte(sum), 0o600); err != nil {
		return res, fmt.Errorf("write %s: %w", evSummary, err)
	}
	if err := os.WriteFile(filepath.Join(dir, evVerify), []byte(renderVerify(r)), 0o600); err != nil {
		return res, fmt.Errorf("write %s: %w", evVerify, err)
	}
	m := Manifest{Format: evidenceFormat, GeneratedAt: now, GeneratedBy: o.By, From: r.From.UTC(), To: r.To.UTC(),
		PublicKey: ledger.PublicKeyBase64(pub), StoreOK: storeRep.OK, PackOK: packRep.OK, Chains: chains}
	for _, name := range []string{evSummary, evEvents, evCheckpoints, evPubkey, evTrustedKeys, evVerify} {
		f, err := HashFile(filepath.Join(dir, name))
		if err != nil {
			return res, err
		}
		f.Name = name
		m.Files = append(m.Files, f)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return res, fmt.Errorf("encode manifest: %w", err)
	}
	mb = append(mb, '\n')
	if err := os.WriteFile(filepath.Join(dir, evManifest), mb, 0o600); err != nil {
		return res, fmt.Errorf("write %s: %w", evManifest, err)
	}
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, mb)) + "\n"
	if err := os.WriteFile(filepath.Join(dir, evSignature), []byte(sig), 0o600); err != nil {
		return res, fmt.Errorf("write %s: %w", evSignature, err)
	}
	res.Chains, res.StoreOK, res.StoreProblems, res.PackOK = len(chains), storeRep.OK, len(storeRep.Problems), packRep.OK
	for _, c := range chains {
		res.Events += c.Events
	}
	return res, nil
}

// Files lists the files of a pack, in the order they are written.
func Files() []string {
	return []string{evSummary, evEvents, evCheckpoints, evPubkey, evTrustedKeys, evVerify, evManifest, evSignature}
}

// OKWord is OK or FAILED.
func OKWord(ok bool) string { return okWord(ok) }

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
	mayVouch func(string) bool, key ed25519.PrivateKey) ([]Chain, []ledger.Checkpoint, error) {
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
	var chains []Chain
	var cps []ledger.Checkpoint
	for _, inst := range insts {
		c := Chain{Instance: inst}
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
	keys := ledger.PublicKeys{Fallback: pub}
	if _, err := os.Stat(filepath.Join(dir, evTrustedKeys)); err == nil {
		// Packs made before trusted-keys.json verify with pubkey.pem alone.
		if keys.Pinned, err = ledger.ReadTrustedKeys(filepath.Join(dir, evTrustedKeys), nil); err != nil {
			return nil, err
		}
	}
	return ledger.VerifyWith(ctx, ledger.JSONLSource{Reader: f, Extra: cps}, keys)
}

// HashFile returns a file's SHA-256 and size, as a manifest records them.
func HashFile(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, fmt.Errorf("hash %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, fmt.Errorf("hash %s: %w", filepath.Base(path), err)
	}
	return File{Name: filepath.Base(path), SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// Check verifies a pack: the manifest's signature with the trusted key, every listed
// file's size and SHA-256, that no file was added, and the chain slice offline. It names
// each file that fails.
func Check(ctx context.Context, w io.Writer, dir, pubFile string) error {
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
	var m Manifest
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
		got, err := HashFile(filepath.Join(dir, want.Name))
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

// Zip writes the pack in dir as a zip archive: the files at the archive's root, so
// `unzip pack.zip -d pack && gatehouse audit evidence --check pack` verifies it.
func Zip(w io.Writer, dir string) error {
	zw := zip.NewWriter(w)
	for _, name := range Files() {
		if err := addToZip(zw, dir, name); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finish evidence zip: %w", err)
	}
	return nil
}

func addToZip(zw *zip.Writer, dir, name string) error {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return fmt.Errorf("evidence zip: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("evidence zip: %w", err)
	}
	hdr, err := zip.FileInfoHeader(st)
	if err != nil {
		return fmt.Errorf("evidence zip: %w", err)
	}
	hdr.Name, hdr.Method = name, zip.Deflate
	zf, err := zw.CreateHeader(hdr)
	if err != nil {
		return fmt.Errorf("evidence zip: %w", err)
	}
	if _, err := io.Copy(zf, f); err != nil {
		return fmt.Errorf("evidence zip %s: %w", name, err)
	}
	return nil
}
