package gate

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// ReusablePolicy is a Policy that can say when a decision may be reused. Applications send
// the same few statement shapes over and over; evaluating every condition of the policy for
// each of them is most of what a check costs, and a string of 10,000 statements would
// evaluate it 10,000 times.
type ReusablePolicy interface {
	Policy
	// DecideReusable decides like Decide. It also returns the epoch of the policy that
	// decided (a comparable value that changes whenever another policy is put in force) and
	// whether the decision may be reused: true only when it depends on nothing but the
	// session's attributes, the statement's policy facts (what samePolicyFacts compares),
	// the via and the sensitive classes — not on the time, and not on a condition that failed
	// at run time (failures are counted per call).
	DecideReusable(ctx context.Context, in Input) (d Decision, epoch any, reusable bool)
	// Epoch returns the epoch of the policy in force and whether any of its decisions may be
	// reused.
	Epoch() (epoch any, reusable bool)
}

// maxMemo bounds the decisions one session remembers; a session that sends more distinct
// statements starts again (the decisions are recomputed, never wrong).
const maxMemo = 512

// decisionMemo is a session's memory of the policy's reusable decisions. It is keyed by the
// statement's fingerprint, kind and via, and an entry is used only when every fact the
// policy can read, the sensitive classes, the policy in force and the session's attributes
// are equal to those it was decided with: a remembered decision is the one the policy would
// make now (TestMemoAgreesWithPolicy compares both over the policy corpora).
type decisionMemo struct {
	mu      sync.Mutex
	epoch   any
	stamp   sessionStamp
	n       int
	entries map[memoKey][]memoEntry
}

type memoKey struct {
	fingerprint, kind string
	via               Via
}

type memoEntry struct {
	st      *inspect.Statement // the facts decided; shared and read-only, like the inspector's
	classes []string
	d       Decision
}

// sessionStamp is what a session's decisions were made for: the attributes a policy can
// read. The doors set them before the session opens and nothing changes them afterwards;
// the memo checks anyway, and starts again when one differs. An identity's claims are
// compared by their number only (a deep comparison of arbitrary claim values would cost
// more than the decision): identities are built once by authentication and never changed.
type sessionStamp struct {
	identity                               *identity.Identity
	subject, kind, auth, issuer            string
	groups                                 []string
	claims                                 int
	target                                 *config.Target
	name, env, engine                      string
	labels                                 map[string]string
	id, level, role, database, app, client string
	tls                                    bool
	options                                map[string]string
}

func (st *sessionStamp) matches(s *Session) bool {
	if st.identity != s.Identity || st.target != s.Target || st.id != s.ID || st.level != s.AccessLevel ||
		st.role != s.UpstreamRole || st.database != s.Database || st.app != s.ApplicationName ||
		st.client != s.ClientAddr || st.tls != s.TLS || !maps.Equal(st.options, s.Options) {
		return false
	}
	if id := s.Identity; id != nil && (st.subject != id.Subject || st.kind != string(id.Kind) || st.auth != id.AuthMethod ||
		st.issuer != id.Issuer || !slices.Equal(st.groups, id.Groups) || st.claims != len(id.Claims)) {
		return false
	}
	if t := s.Target; t != nil && (st.name != t.Name || st.env != t.Environment || st.engine != t.Engine || !maps.Equal(st.labels, t.Labels)) {
		return false
	}
	return true
}

func stampOf(s *Session) sessionStamp {
	st := sessionStamp{identity: s.Identity, target: s.Target, id: s.ID, level: s.AccessLevel, role: s.UpstreamRole,
		database: s.Database, app: s.ApplicationName, client: s.ClientAddr, tls: s.TLS, options: maps.Clone(s.Options)}
	if id := s.Identity; id != nil {
		st.subject, st.kind, st.auth, st.issuer = id.Subject, string(id.Kind), id.AuthMethod, id.Issuer
		st.groups, st.claims = slices.Clone(id.Groups), len(id.Claims)
	}
	if t := s.Target; t != nil {
		st.name, st.env, st.engine, st.labels = t.Name, t.Environment, t.Engine, maps.Clone(t.Labels)
	}
	return st
}

// decide is the policy's decision on in, remembered per session when the policy says the
// decision may be reused.
func (g *Gate) decide(ctx context.Context, s *Session, in Input) Decision {
	rp, ok := g.Policy.(ReusablePolicy)
	if !ok || s == nil {
		return g.Policy.Decide(ctx, in)
	}
	epoch, reusable := rp.Epoch()
	if !reusable {
		return g.Policy.Decide(ctx, in)
	}
	if d, ok := s.memo.get(epoch, s, in); ok {
		return d
	}
	d, epoch, reusable := rp.DecideReusable(ctx, in)
	if reusable {
		s.memo.put(epoch, s, in, d)
	}
	return d
}

func (m *decisionMemo) get(epoch any, s *Session, in Input) (Decision, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil || m.epoch != epoch || !m.stamp.matches(s) {
		return Decision{}, false
	}
	for _, e := range m.entries[memoKey{in.Statement.Fingerprint, in.Statement.Kind, in.Via}] {
		if samePolicyFacts(e.st, in.Statement) && slices.Equal(e.classes, in.SensitiveClasses) {
			return e.d, true
		}
	}
	return Decision{}, false
}

func (m *decisionMemo) put(epoch any, s *Session, in Input, d Decision) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil || m.epoch != epoch || !m.stamp.matches(s) || m.n >= maxMemo {
		m.entries = make(map[memoKey][]memoEntry)
		m.epoch, m.stamp, m.n = epoch, stampOf(s), 0
	}
	k := memoKey{in.Statement.Fingerprint, in.Statement.Kind, in.Via}
	m.entries[k] = append(m.entries[k], memoEntry{st: in.Statement, classes: slices.Clone(in.SensitiveClasses), d: d})
	m.n++
}

// samePolicyFacts reports whether a policy sees the same statement in a and b: every fact a
// condition or the engine reads. Left out, because no policy reads them: Shape, Notes and
// Writes (the gate's own checks after the decision read Writes, per call); the syntax error
// and non-standard strings, refused before any policy is asked; WhereTrivialIfNotNull, which
// the gate has already turned into WhereTrivial; and Text, except for DISCARD, whose text
// says whether it resets the role, and for text that did not parse (TestPolicyFactsCover
// makes every new field of inspect.Statement choose a side).
func samePolicyFacts(a, b *inspect.Statement) bool {
	if a == b {
		return true
	}
	if a.Kind != b.Kind || a.Category != b.Category || a.ObjectType != b.ObjectType ||
		a.Fingerprint != b.Fingerprint || a.Redacted != b.Redacted || a.ParseError != b.ParseError ||
		a.Setting != b.Setting || a.PreparedName != b.PreparedName ||
		a.HasWhere != b.HasWhere || a.WhereTrivial != b.WhereTrivial || a.HasLimit != b.HasLimit ||
		a.Export != b.Export || a.Privileged != b.Privileged || a.Program != b.Program ||
		a.ServerFile != b.ServerFile || a.Locking != b.Locking ||
		!slices.Equal(a.TablesRead, b.TablesRead) || !slices.Equal(a.TablesWritten, b.TablesWritten) ||
		!slices.Equal(a.Columns, b.Columns) || !slices.Equal(a.Functions, b.Functions) {
		return false
	}
	if strings.EqualFold(a.Kind, "DISCARD") || a.ParseError != "" {
		return a.Text == b.Text
	}
	return true
}
