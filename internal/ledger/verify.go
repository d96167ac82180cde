package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Problem kinds a verification reports.
const (
	ProblemAltered    = "altered"    // an event's content no longer matches its hash or its successor's link
	ProblemRemoved    = "removed"    // events are missing (a gap in seq)
	ProblemInserted   = "inserted"   // an event that is not part of the chain
	ProblemReordered  = "reordered"  // an event found out of its place
	ProblemTruncated  = "truncated"  // a signed checkpoint names events beyond the end
	ProblemCheckpoint = "checkpoint" // a checkpoint is forged or contradicts the chain
	ProblemUnreadable = "unreadable" // a record that is not a JSON event
)

// Problem is one finding, naming the event (instance and seq) it concerns and, where it
// helps, the position (1-based line of an export, row of a store scan) it was found at.
type Problem struct {
	Kind     string `json:"kind"`
	Instance string `json:"instance"`
	Seq      int64  `json:"seq"`
	// LastSeq is the end of a range (removed or truncated events), else equal to Seq.
	LastSeq  int64  `json:"last_seq"`
	Position int64  `json:"position,omitempty"`
	Detail   string `json:"detail"`
}

// String renders one problem on one line, the way `gatehouse audit verify` prints it.
func (p Problem) String() string {
	where := fmt.Sprintf("seq %d", p.Seq)
	if p.LastSeq != p.Seq {
		where = fmt.Sprintf("seq %d..%d", p.Seq, p.LastSeq)
	}
	return fmt.Sprintf("%s %s: %s: %s", p.Instance, where, p.Kind, p.Detail)
}

// ChainSummary describes one instance's verified chain.
type ChainSummary struct {
	Instance    string `json:"instance"`
	Events      int64  `json:"events"`
	FirstSeq    int64  `json:"first_seq"`
	LastSeq     int64  `json:"last_seq"`
	Checkpoints int    `json:"checkpoints"`
	// Unsealed counts events after the last signed checkpoint: their chain is intact but
	// nothing signed yet vouches that the chain ended there.
	Unsealed int64 `json:"unsealed"`
	// AnchorSeq is the retention anchor the chain starts after (0: none).
	AnchorSeq int64 `json:"anchor_seq,omitempty"`
}

// Report is the result of Verify. OK is true when no problem was found.
type Report struct {
	OK       bool           `json:"ok"`
	Chains   []ChainSummary `json:"chains"`
	Problems []Problem      `json:"problems"`
}

// String renders the report for a terminal.
func (r *Report) String() string {
	var sb strings.Builder
	for _, c := range r.Chains {
		fmt.Fprintf(&sb, "chain %s: %d events (seq %d..%d), %d checkpoints, %d events after the last checkpoint\n",
			c.Instance, c.Events, c.FirstSeq, c.LastSeq, c.Checkpoints, c.Unsealed)
	}
	for _, p := range r.Problems {
		sb.WriteString("PROBLEM " + p.String() + "\n")
	}
	if r.OK {
		sb.WriteString("OK: every event and checkpoint verifies\n")
	} else {
		fmt.Fprintf(&sb, "FAILED: %d problems\n", len(r.Problems))
	}
	return sb.String()
}

// Source is a ledger to verify: a store, or an exported JSON lines file.
type Source interface {
	// Events calls fn with each record in stored order; se is non-nil when the source is a
	// store and carries its index columns.
	Events(ctx context.Context, fn func(raw []byte, se *StoredEvent) error) error
	// Checkpoints returns every checkpoint the source knows.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
}

// StoreSource verifies a store. Extra adds checkpoints from outside it (the external
// checkpoint file), which is what detects a truncated store.
type StoreSource struct {
	Store    Store
	Instance string // "" for every instance
	Extra    []Checkpoint
}

// Events implements Source.
func (s StoreSource) Events(ctx context.Context, fn func([]byte, *StoredEvent) error) error {
	return eachStored(ctx, s.Store, s.Instance, func(se StoredEvent) error { return fn(se.Body, &se) })
}

// Checkpoints implements Source.
func (s StoreSource) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	cps, err := s.Store.Checkpoints(ctx, s.Instance)
	if err != nil {
		return nil, err
	}
	for _, cp := range s.Extra {
		if s.Instance == "" || cp.Instance == s.Instance {
			cps = append(cps, cp)
		}
	}
	return cps, nil
}

// JSONLSource verifies an exported ledger offline.
type JSONLSource struct {
	Reader io.Reader
	Extra  []Checkpoint
}

// Events implements Source.
func (s JSONLSource) Events(ctx context.Context, fn func([]byte, *StoredEvent) error) error {
	sc := bufio.NewScanner(s.Reader)
	sc.Buffer(make([]byte, 256<<10), 64<<20)
	n := 0
	for sc.Scan() {
		n++
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(line, nil); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read exported ledger: %w", err)
	}
	return nil
}

// Checkpoints implements Source.
func (s JSONLSource) Checkpoints(context.Context) ([]Checkpoint, error) { return s.Extra, nil }

// chainState is the verifier's memory of one instance's chain. It is bounded: a window of
// recent hashes, the missing seqs not yet explained, checkpoints by seq.
type chainState struct {
	sum       ChainSummary
	started   bool
	prevSeq   int64
	prevHash  string
	recent    map[int64]string // seq → hash, recent window
	dups      map[int64]string // seq → hash of a second event claiming seq
	dupProb   map[int64]int    // seq → index of the inserted-problem
	missing   map[int64]bool
	cps       map[int64][]Checkpoint
	anchor    *Checkpoint
	lastGood  int64 // highest checkpoint seq that matched
	maxCP     int64
	maxCPHash string
}

const recentWindow = 8192

// PublicKeys says which key verifies each instance's checkpoints (an evidence pack's period
// checkpoints verify with Fallback, the key of the installation that made the pack). Several instances sharing
// a store each sign with their own key, so each chain is verified with its own instance's
// key: Pinned (from the configuration's ledger.trusted_keys, or the external checkpoint
// file, both out of reach of someone who can write the store), else Fallback (the local data
// directory's key, or --pubkey), which is the only key of a single-instance installation.
type PublicKeys struct {
	Pinned   map[string]ed25519.PublicKey
	Fallback ed25519.PublicKey
}

// verifies reports whether cp's signature verifies with the key for its instance, and when
// not, why in words for the report.
func (k PublicKeys) verifies(cp *Checkpoint) (bool, string) {
	if cp.Kind == CheckpointPeriodStart || cp.Kind == CheckpointPeriodEnd {
		// An evidence pack's period anchors and seals are signed by the installation that
		// made the pack, for every chain it exported: they verify with its key.
		if k.Fallback != nil && cp.VerifySignature(k.Fallback) {
			return true, ""
		}
		return false, "period checkpoint signature does not verify with the key of the installation that made the pack (forged or altered checkpoint)"
	}
	if pub, ok := k.Pinned[cp.Instance]; ok {
		if cp.VerifySignature(pub) {
			return true, ""
		}
		return false, "checkpoint signature does not verify with the key pinned for instance " + cp.Instance + " (forged or altered checkpoint)"
	}
	if k.Fallback != nil && cp.VerifySignature(k.Fallback) {
		return true, ""
	}
	return false, "checkpoint signature does not verify with the given public key, and no key is pinned for instance " + cp.Instance +
		": a forged or altered checkpoint, or one of another instance sharing the store (pin its key — `gatehouse audit pubkey --base64` on that instance — in ledger.trusted_keys)"
}

// Verify checks every chain in src with one public key for every instance: VerifyWith with
// pub as the fallback key.
func Verify(ctx context.Context, src Source, pub ed25519.PublicKey) (*Report, error) {
	return VerifyWith(ctx, src, PublicKeys{Fallback: pub})
}

// VerifyWith checks every chain in src: each record's hash, each link to its predecessor,
// the order of seqs, and every checkpoint's signature (with its own instance's key) and hash,
// and names each problem found. The error is for failures to read the source, not findings.
func VerifyWith(ctx context.Context, src Source, keys PublicKeys) (*Report, error) {
	rep := &Report{}
	chains := map[string]*chainState{}
	get := func(inst string) *chainState {
		c := chains[inst]
		if c == nil {
			c = &chainState{sum: ChainSummary{Instance: inst}, recent: map[int64]string{}, dups: map[int64]string{},
				dupProb: map[int64]int{}, missing: map[int64]bool{}, cps: map[int64][]Checkpoint{}}
			chains[inst] = c
		}
		return c
	}
	add := func(p Problem) int {
		if p.LastSeq == 0 {
			p.LastSeq = p.Seq
		}
		rep.Problems = append(rep.Problems, p)
		return len(rep.Problems) - 1
	}

	cps, err := src.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify: read checkpoints: %w", err)
	}
	seenCP := map[string]bool{}
	for _, cp := range cps {
		key := cp.Instance + "\x00" + fmt.Sprint(cp.Seq) + "\x00" + cp.Kind + "\x00" + cp.Hash + "\x00" + cp.Signature
		if seenCP[key] {
			continue // the same checkpoint from the store and from the external file
		}
		seenCP[key] = true
		c := get(cp.Instance)
		if ok, why := keys.verifies(&cp); !ok {
			add(Problem{Kind: ProblemCheckpoint, Instance: cp.Instance, Seq: cp.Seq, Detail: why})
			continue
		}
		c.sum.Checkpoints++
		if cp.Kind == CheckpointRetention || cp.Kind == CheckpointPeriodStart {
			if c.anchor == nil || cp.Seq > c.anchor.Seq {
				a := cp
				c.anchor = &a
			}
			continue
		}
		c.cps[cp.Seq] = append(c.cps[cp.Seq], cp)
		if cp.Seq > c.maxCP {
			c.maxCP, c.maxCPHash = cp.Seq, cp.Hash
		}
	}

	var pos int64
	err = src.Events(ctx, func(raw []byte, se *StoredEvent) error {
		pos++
		var ev Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			add(Problem{Kind: ProblemUnreadable, Position: pos, Detail: fmt.Sprintf("record is not a JSON event: %v", err)})
			return nil
		}
		c := get(ev.Instance)
		c.sum.Events++
		computed, err := HashRecord(raw)
		if err != nil {
			add(Problem{Kind: ProblemUnreadable, Instance: ev.Instance, Seq: ev.Seq, Position: pos, Detail: err.Error()})
			return nil
		}
		if computed != ev.Hash {
			add(Problem{Kind: ProblemAltered, Instance: ev.Instance, Seq: ev.Seq, Position: pos,
				Detail: "hash mismatch: the record was changed after it was written"})
		} else if se != nil {
			if m := se.indexMismatch(&ev); m != "" && se.RowSeq == ev.Seq {
				add(Problem{Kind: ProblemAltered, Instance: ev.Instance, Seq: ev.Seq, Position: pos,
					Detail: "index columns edited in the store (" + m + "); searches would show values the record does not hold"})
			}
		}
		c.step(&ev, pos, add, rep)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify: read events: %w", err)
	}

	names := make([]string, 0, len(chains))
	for n := range chains {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		c := chains[n]
		c.finish(add)
		if c.anchor != nil {
			c.sum.AnchorSeq = c.anchor.Seq
		}
		rep.Chains = append(rep.Chains, c.sum)
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int {
		if a.Instance != b.Instance {
			return strings.Compare(a.Instance, b.Instance)
		}
		return int(a.Seq - b.Seq)
	})
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

// step takes the next event of this chain in stored order.
func (c *chainState) step(ev *Event, pos int64, add func(Problem) int, rep *Report) {
	inst := ev.Instance
	if !c.started {
		c.started = true
		wantSeq, wantPrev := int64(1), ""
		if c.anchor != nil {
			wantSeq, wantPrev = c.anchor.Seq+1, c.anchor.Hash
		}
		c.sum.FirstSeq = ev.Seq
		switch {
		case ev.Seq > wantSeq:
			add(Problem{Kind: ProblemRemoved, Instance: inst, Seq: wantSeq, LastSeq: ev.Seq - 1, Position: pos,
				Detail: "events missing from the start of the chain (no signed retention anchor covers them)"})
		case ev.Seq == wantSeq && ev.PrevHash != wantPrev:
			what := "the first event does not start a chain"
			if c.anchor != nil {
				what = "the first event does not link to the signed retention anchor"
			}
			add(Problem{Kind: ProblemAltered, Instance: inst, Seq: ev.Seq, Position: pos, Detail: what})
		case ev.Seq < wantSeq:
			add(Problem{Kind: ProblemInserted, Instance: inst, Seq: ev.Seq, Position: pos,
				Detail: fmt.Sprintf("event precedes the retention anchor at seq %d", wantSeq-1)})
		}
		c.accept(ev, pos, add)
		return
	}
	exp := c.prevSeq + 1
	switch {
	case ev.Seq == exp:
		if ev.PrevHash != c.prevHash {
			if h, ok := c.dups[c.prevSeq]; ok && h == ev.PrevHash {
				// The event we followed at prevSeq was the inserted one; the chain goes on
				// from its twin. Say which was which.
				i := c.dupProb[c.prevSeq]
				rep.Problems[i].Detail += fmt.Sprintf("; seq %d links to the other one, so the first is the inserted event", ev.Seq)
			} else if _, gap := c.missing[c.prevSeq]; !gap {
				add(Problem{Kind: ProblemAltered, Instance: inst, Seq: c.prevSeq, Position: pos - 1,
					Detail: fmt.Sprintf("seq %d commits to a different version of this event: it was altered and re-hashed, or replaced", ev.Seq)})
			}
		}
		c.accept(ev, pos, add)
	case ev.Seq > exp:
		for s := exp; s < ev.Seq && s < exp+1_000_000; s++ {
			c.missing[s] = true
		}
		c.accept(ev, pos, add)
	default: // ev.Seq <= prevSeq
		if c.missing[ev.Seq] {
			delete(c.missing, ev.Seq)
			add(Problem{Kind: ProblemReordered, Instance: inst, Seq: ev.Seq, Position: pos,
				Detail: fmt.Sprintf("found after seq %d", c.prevSeq)})
			if h, ok := c.recent[ev.Seq-1]; ok && h != ev.PrevHash {
				add(Problem{Kind: ProblemAltered, Instance: inst, Seq: ev.Seq, Position: pos, Detail: "does not link to its predecessor"})
			}
			c.recent[ev.Seq] = ev.Hash
			c.checkpointAt(ev, pos, add)
			return
		}
		detail := fmt.Sprintf("a second event claims seq %d (out of order after seq %d)", ev.Seq, c.prevSeq)
		if h, ok := c.recent[ev.Seq]; ok && h == ev.Hash {
			detail = fmt.Sprintf("duplicate copy of seq %d", ev.Seq)
		}
		c.dups[ev.Seq] = ev.Hash
		c.dupProb[ev.Seq] = add(Problem{Kind: ProblemInserted, Instance: inst, Seq: ev.Seq, Position: pos, Detail: detail})
	}
}

// accept advances the chain to ev.
func (c *chainState) accept(ev *Event, pos int64, add func(Problem) int) {
	c.prevSeq, c.prevHash = ev.Seq, ev.Hash
	c.sum.LastSeq = ev.Seq
	c.recent[ev.Seq] = ev.Hash
	if len(c.recent) > recentWindow {
		for s := range c.recent {
			if s < ev.Seq-recentWindow/2 {
				delete(c.recent, s)
			}
		}
	}
	c.checkpointAt(ev, pos, add)
}

// checkpointAt compares the signed checkpoints at ev.Seq with ev.
func (c *chainState) checkpointAt(ev *Event, pos int64, add func(Problem) int) {
	for _, cp := range c.cps[ev.Seq] {
		if cp.Hash != ev.Hash {
			from := c.lastGood + 1
			add(Problem{Kind: ProblemAltered, Instance: ev.Instance, Seq: from, LastSeq: ev.Seq, Position: pos,
				Detail: fmt.Sprintf("the chain was rewritten: the checkpoint signed at seq %d names hash %.12s…, the ledger has %.12s…; the altered event lies in this range",
					ev.Seq, cp.Hash, ev.Hash)})
		} else if ev.Seq > c.lastGood {
			c.lastGood = ev.Seq
		}
	}
}

// finish reports what is only known at the end: seqs never found, a tail cut off.
func (c *chainState) finish(add func(Problem) int) {
	inst := c.sum.Instance
	var miss []int64
	for s := range c.missing {
		miss = append(miss, s)
	}
	slices.Sort(miss)
	for i := 0; i < len(miss); {
		j := i
		for j+1 < len(miss) && miss[j+1] == miss[j]+1 {
			j++
		}
		add(Problem{Kind: ProblemRemoved, Instance: inst, Seq: miss[i], LastSeq: miss[j], Detail: "events missing from the chain (gap in seq)"})
		i = j + 1
	}
	end := c.sum.LastSeq
	if !c.started && c.anchor != nil {
		end = c.anchor.Seq
	}
	if c.maxCP > end {
		add(Problem{Kind: ProblemTruncated, Instance: inst, Seq: end + 1, LastSeq: c.maxCP,
			Detail: fmt.Sprintf("a signed checkpoint names seq %d but the ledger ends at seq %d: its tail was cut off", c.maxCP, end)})
	}
	if c.sum.LastSeq > c.maxCP && c.sum.LastSeq > 0 {
		c.sum.Unsealed = c.sum.LastSeq - max(c.maxCP, c.sum.FirstSeq-1)
	}
}
