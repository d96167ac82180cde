package evidence

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// counter counts occurrences of keys and lists them most frequent first.
type counter map[string]int64

type countRow struct {
	key string
	n   int64
}

func (c counter) sorted() []countRow {
	out := make([]countRow, 0, len(c))
	for k, n := range c {
		out = append(out, countRow{k, n})
	}
	slices.SortFunc(out, func(a, b countRow) int {
		if a.n != b.n {
			return cmp.Compare(b.n, a.n)
		}
		return strings.Compare(a.key, b.key)
	})
	return out
}

// evidenceAgg gathers, from one pass over the period's events, the facts the summary
// counts and the keys (classes, tables, statement kinds) the ledger's own auditor questions
// are then asked about.
type evidenceAgg struct {
	r            ledger.TimeRange
	byType       counter
	sessKind     counter
	sessSubject  counter
	subjectKind  map[string]string
	targets      counter
	decisions    counter
	rules        counter // "decision\x00rule"
	failedSubj   counter
	failedAddr   counter
	approvals    []ledger.Event
	approvalType counter
	classes      map[string]bool
	destructive  map[string]bool // statement kinds
	agentStmts   counter
	agentTables  map[string]map[string]bool
	admin        []ledger.Event // policy reloads, token changes, administrative actions and ledger reads
}

func newEvidenceAgg(r ledger.TimeRange) *evidenceAgg {
	return &evidenceAgg{r: r, byType: counter{}, sessKind: counter{}, sessSubject: counter{}, subjectKind: map[string]string{},
		targets: counter{}, decisions: counter{}, rules: counter{}, failedSubj: counter{}, failedAddr: counter{},
		approvalType: counter{}, classes: map[string]bool{}, destructive: map[string]bool{}, agentStmts: counter{},
		agentTables: map[string]map[string]bool{}}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func clientHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func (a *evidenceAgg) add(ev *ledger.Event) {
	a.byType[string(ev.Type)]++
	switch {
	case ev.Type == ledger.EventSessionStart:
		a.sessKind[orNone(ev.IdentityKind)]++
		a.sessSubject[ev.Subject]++
		a.subjectKind[ev.Subject] = ev.IdentityKind
		if ev.Target != "" {
			a.targets[ev.Target+" ("+orNone(ev.Environment)+")"]++
		}
	case ev.Type == ledger.EventLoginFailed:
		a.failedSubj[orNone(ev.Subject)]++
		a.failedAddr[orNone(clientHost(ev.ClientAddr))]++
	case ev.Type == ledger.EventStatement:
		a.decisions[orNone(ev.Decision)]++
		a.rules[orNone(ev.Decision)+"\x00"+orNone(ev.Rule)]++
		for _, st := range ev.Statements {
			for _, class := range st.Sensitive {
				a.classes[strings.ToLower(class)] = true
			}
			if strings.HasPrefix(st.Kind, "DROP") || st.Kind == "TRUNCATE" {
				a.destructive[st.Kind] = true
			}
		}
		if ev.IdentityKind == "agent" {
			a.agentStmts[ev.Subject]++
			ts := a.agentTables[ev.Subject]
			if ts == nil {
				ts = map[string]bool{}
				a.agentTables[ev.Subject] = ts
			}
			for _, st := range ev.Statements {
				for _, t := range slices.Concat(st.TablesRead, st.TablesWritten) {
					ts[strings.ToLower(t)] = true
				}
			}
		}
	case strings.HasPrefix(string(ev.Type), string(ledger.EventApproval)):
		a.approvals = append(a.approvals, *ev)
		a.approvalType[string(ev.Type)]++
	case ev.Type == ledger.EventPolicyReload || ev.Type == ledger.EventTokenCreate || ev.Type == ledger.EventTokenRevoke ||
		ev.Type == ledger.EventAdmin:
		a.admin = append(a.admin, *ev)
	}
}

// auditAnswers are the ledger's own auditor questions, asked for what the period holds.
type auditAnswers struct {
	pii         []classReaders
	destructive []ledger.Event
	destrCapped bool
	drops       map[string][]ledger.DropRecord
	agentsByTbl map[string][]ledger.IdentityCount
}

type classReaders struct {
	class   string
	readers []ledger.IdentityCount
}

func askAuditQuestions(ctx context.Context, st ledger.Store, r ledger.TimeRange, a *evidenceAgg) (*auditAnswers, error) {
	ans := &auditAnswers{drops: map[string][]ledger.DropRecord{}, agentsByTbl: map[string][]ledger.IdentityCount{}}
	classes := []string{"pii"}
	for c := range a.classes {
		if c != "pii" {
			classes = append(classes, c)
		}
	}
	slices.Sort(classes[1:])
	for _, c := range classes {
		rows, err := st.PIIReaders(ctx, c, r)
		if err != nil {
			return nil, fmt.Errorf("who read %s data: %w", c, err)
		}
		ans.pii = append(ans.pii, classReaders{class: c, readers: rows})
	}
	kinds := make([]string, 0, len(a.destructive))
	for k := range a.destructive {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	tables := map[string]bool{}
	for _, k := range kinds {
		evs, err := st.Search(ctx, ledger.Query{Type: ledger.EventStatement, StatementKind: k, From: r.From, To: r.To,
			Limit: ledger.MaxLimit, Ascending: true})
		if err != nil {
			return nil, fmt.Errorf("search %s statements: %w", k, err)
		}
		if len(evs) == ledger.MaxLimit {
			ans.destrCapped = true
		}
		ans.destructive = append(ans.destructive, evs...)
		for _, ev := range evs {
			for _, s := range ev.Statements {
				if s.Kind == k {
					for _, t := range slices.Concat(s.TablesWritten, s.TablesRead) {
						tables[strings.ToLower(t)] = true
					}
				}
			}
		}
	}
	slices.SortFunc(ans.destructive, func(x, y ledger.Event) int { return x.Time.Compare(y.Time) })
	for t := range tables {
		recs, err := st.WhoDropped(ctx, t, r)
		if err != nil {
			return nil, fmt.Errorf("who dropped %s: %w", t, err)
		}
		ans.drops[t] = recs
	}
	agentTables := map[string]bool{}
	for _, ts := range a.agentTables {
		for t := range ts {
			agentTables[t] = true
		}
	}
	for t := range agentTables {
		rows, err := st.AgentsQueried(ctx, t, r)
		if err != nil {
			return nil, fmt.Errorf("which agents queried %s: %w", t, err)
		}
		ans.agentsByTbl[t] = rows
	}
	return ans, nil
}

type summaryInput struct {
	r                 ledger.TimeRange
	now               time.Time
	by                string
	chains            []Chain
	storeRep, packRep *ledger.Report
	agg               *evidenceAgg
	ans               *auditAnswers
	top               int
	checkpointFile    string
}

// md makes a value safe for one Markdown table cell: one line, bounded, pipes escaped.
func md(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 160 {
		s = string(r[:159]) + "…"
	}
	s = strings.ReplaceAll(s, "|", `\|`)
	if s == "" {
		return "–"
	}
	return s
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

type mdTable struct {
	sb   *strings.Builder
	rows int
}

func table(sb *strings.Builder, cols ...string) *mdTable {
	sb.WriteString("\n| " + strings.Join(cols, " | ") + " |\n|")
	for range cols {
		sb.WriteString("---|")
	}
	sb.WriteString("\n")
	return &mdTable{sb: sb}
}

func (t *mdTable) row(cells ...string) {
	t.rows++
	for i := range cells {
		cells[i] = md(cells[i])
	}
	t.sb.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

// counts writes a two-column table of the top rows of c and says how many were left out.
func counts(sb *strings.Builder, c counter, top int, what, unit string) {
	rows := c.sorted()
	if len(rows) == 0 {
		sb.WriteString("\nNone in the period.\n")
		return
	}
	t := table(sb, what, unit)
	for i, r := range rows {
		if i == top {
			break
		}
		t.row(r.key, fmt.Sprint(r.n))
	}
	if len(rows) > top {
		fmt.Fprintf(sb, "\n… and %d more (see events.jsonl).\n", len(rows)-top)
	}
}

func stmtText(ev *ledger.Event, kind string) string {
	for _, s := range ev.Statements {
		if kind == "" || s.Kind == kind {
			return s.Redacted
		}
	}
	return ev.Message
}

// renderSummary writes summary.md. Statement texts come from the ledger, which holds them
// redacted (no literals, no parameters); nothing here adds a raw value.
func renderSummary(in summaryInput) string {
	a, ans := in.agg, in.ans
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("# Gatehouse access evidence\n\n")
	w("- **Period:** %s to %s (start inclusive, end exclusive, UTC)\n", ts(in.r.From), ts(in.r.To))
	w("- **Generated at:** %s by %s\n", ts(in.now), md(in.by))
	w("- **Chains (instances) covered:** %d\n", len(in.chains))
	var inPeriod int64
	for _, c := range in.chains {
		inPeriod += c.InPeriod
	}
	w("- **Events in the period:** %d\n\n", inPeriod)
	w("Statement texts below are as the ledger keeps them: redacted, without literals or parameters.\n")

	w("\n## 1. Integrity of the record\n\n")
	if in.storeRep.OK {
		w("**Ledger verification: PASSED.** Every event's hash, every link of every chain and every signed checkpoint in the ledger store")
		if in.checkpointFile != "" {
			w(" and the external checkpoint file (%s)", md(in.checkpointFile))
		}
		w(" verified when this pack was made.\n")
	} else {
		w("**Ledger verification: FAILED — %d problem(s) found.** The record may have been altered, cut or extended; the findings are:\n\n", len(in.storeRep.Problems))
		for _, p := range in.storeRep.Problems {
			w("- `%s`\n", strings.ReplaceAll(p.String(), "`", "'"))
		}
		w("\nThe chains with problems are exported as they are, without the pack's signed start and end checkpoints, so the offline verification below shows the same failure.\n")
	}
	t := table(&sb, "Chain", "Events exported (seq)", "In period", "Store head (seq, hash)", "Signed checkpoints", "Store verification")
	for _, c := range in.chains {
		rng := "none"
		if c.Events > 0 {
			rng = fmt.Sprintf("%d (%d..%d)", c.Events, c.FirstSeq, c.LastSeq)
		}
		cps := "–"
		for _, s := range in.storeRep.Chains {
			if s.Instance == c.Instance {
				cps = fmt.Sprintf("%d (%d events after the last)", s.Checkpoints, s.Unsealed)
			}
		}
		t.row(c.Instance, rng, fmt.Sprint(c.InPeriod), fmt.Sprintf("%d, %.16s…", c.HeadSeq, c.HeadHash), cps, okWord(c.StoreOK))
	}
	if in.packRep.OK {
		w("\n**Offline verification of this pack: PASSED** (`events.jsonl` with `checkpoints.jsonl` and `pubkey.pem`; see VERIFY.md).\n")
	} else {
		w("\n**Offline verification of this pack: FAILED** — %d problem(s):\n\n", len(in.packRep.Problems))
		for _, p := range in.packRep.Problems {
			w("- `%s`\n", strings.ReplaceAll(p.String(), "`", "'"))
		}
	}

	w("\n## 2. Access overview\n\n")
	var sessions int64
	for _, n := range a.sessKind {
		sessions += n
	}
	w("%d session(s) opened in the period.\n\n### Sessions by identity kind\n", sessions)
	counts(&sb, a.sessKind, in.top, "Identity kind", "Sessions")
	w("\n### Sessions by identity (top %d)\n", in.top)
	bySubj := counter{}
	for s, n := range a.sessSubject {
		bySubj[s+" ("+orNone(a.subjectKind[s])+")"] = n
	}
	counts(&sb, bySubj, in.top, "Identity (kind)", "Sessions")
	w("\n### Targets and environments touched\n")
	counts(&sb, a.targets, in.top, "Target (environment)", "Sessions")

	w("\n## 3. Statements and policy decisions\n\n")
	w("- Allowed: %d\n- Denied: %d\n- Held for approval: %d\n", a.decisions["allow"], a.decisions["deny"], a.decisions["require_approval"])
	for _, r := range a.decisions.sorted() {
		if r.key != "allow" && r.key != "deny" && r.key != "require_approval" {
			w("- %s: %d\n", md(r.key), r.n)
		}
	}
	w("\n### Deciding rules\n")
	rules := a.rules.sorted()
	if len(rules) == 0 {
		w("\nNo statements in the period.\n")
	} else {
		t := table(&sb, "Decision", "Rule", "Statements")
		for _, r := range rules {
			d, rule, _ := strings.Cut(r.key, "\x00")
			t.row(d, rule, fmt.Sprint(r.n))
		}
	}

	w("\n## 4. Failed logins\n\n%d failed login(s).\n\n### By subject (user name given)\n", a.byType[string(ledger.EventLoginFailed)])
	counts(&sb, a.failedSubj, in.top, "Subject", "Failed logins")
	w("\n### By client address\n")
	counts(&sb, a.failedAddr, in.top, "Client address", "Failed logins")

	w("\n## 5. Approvals\n\n")
	for _, typ := range []ledger.EventType{ledger.EventApprovalRequested, ledger.EventApprovalApproved, ledger.EventApprovalDenied,
		ledger.EventApprovalExpired, ledger.EventApprovalUsed} {
		w("- %s: %d\n", strings.TrimPrefix(string(typ), "approval."), a.approvalType[string(typ)])
	}
	if len(a.approvals) > 0 {
		w("\nFor requested and used, the subject is the requester; for approved and denied, the approver; for expired, the requester.\n")
		t := table(&sb, "Time", "Event", "Request", "Subject", "Rule", "Target", "Statement", "Note")
		for i, ev := range a.approvals {
			if i == in.top*5 {
				w("\n… and %d more (see events.jsonl).\n", len(a.approvals)-i)
				break
			}
			t.row(ts(ev.Time), strings.TrimPrefix(string(ev.Type), "approval."), ev.ApprovalID, ev.Subject, ev.Rule, ev.Target, stmtText(&ev, ""), ev.Message)
		}
	}

	w("\n## 6. Who read sensitive data\n\nAnswered by the ledger's `pii-readers` question for personal data as a whole (`pii`) and for each class of sensitive column touched in the period.\n")
	for _, cr := range ans.pii {
		w("\n### Class `%s`\n", cr.class)
		if len(cr.readers) == 0 {
			w("\nNo identity read this class in the period.\n")
			continue
		}
		t := table(&sb, "Identity", "Kind", "Statements", "First", "Last")
		for _, r := range cr.readers {
			t.row(r.Subject, r.IdentityKind, fmt.Sprint(r.Statements), ts(r.First), ts(r.Last))
		}
	}

	w("\n## 7. Destructive statements (DROP, TRUNCATE)\n\n")
	if len(ans.destructive) == 0 {
		w("No DROP or TRUNCATE statement was attempted in the period.\n")
	} else {
		w("Every DROP and TRUNCATE attempted in the period, whatever the decision:\n")
		t := table(&sb, "Time", "Identity", "Kind", "Client", "Target (env)", "Decision", "Rule", "SQLSTATE", "Statement")
		for _, ev := range ans.destructive {
			t.row(ts(ev.Time), ev.Subject, ev.IdentityKind, ev.ClientAddr, ev.Target+" ("+orNone(ev.Environment)+")", ev.Decision, ev.Rule, ev.SQLState, stmtText(&ev, ""))
		}
		if ans.destrCapped {
			w("\nThe search stopped at %d statements of one kind; the full list is in events.jsonl.\n", ledger.MaxLimit)
		}
		w("\n### Who dropped each table (statements that ran)\n")
		tables := make([]string, 0, len(ans.drops))
		for tb := range ans.drops {
			tables = append(tables, tb)
		}
		slices.Sort(tables)
		for _, tb := range tables {
			recs := ans.drops[tb]
			if len(recs) == 0 {
				w("\n- `%s`: not dropped (every attempt was refused or failed).\n", md(tb))
				continue
			}
			w("\n- `%s`:\n", md(tb))
			for _, d := range recs {
				w("  - %s by %s (%s) from %s, application %s, on %s (%s): %s — outcome %s\n", ts(d.Time), md(d.Subject), md(d.IdentityKind),
					md(d.ClientAddr), md(d.ApplicationName), md(d.Target), md(d.Environment), md(d.Text), md(d.Outcome))
			}
		}
	}

	w("\n## 8. AI agents\n\n")
	if len(a.agentStmts) == 0 {
		w("No agent ran a statement in the period.\n")
	} else {
		t := table(&sb, "Agent", "Statements", "Tables touched")
		for _, r := range a.agentStmts.sorted() {
			tbls := make([]string, 0, len(a.agentTables[r.key]))
			for tb := range a.agentTables[r.key] {
				tbls = append(tbls, tb)
			}
			slices.Sort(tbls)
			t.row(r.key, fmt.Sprint(r.n), strings.Join(tbls, ", "))
		}
		w("\n### Agents per table (the ledger's `agents` question)\n")
		tables := make([]string, 0, len(ans.agentsByTbl))
		for tb := range ans.agentsByTbl {
			tables = append(tables, tb)
		}
		slices.Sort(tables)
		t = table(&sb, "Table", "Agents", "Statements by each")
		for _, tb := range tables {
			var names []string
			for _, r := range ans.agentsByTbl[tb] {
				names = append(names, fmt.Sprintf("%s: %d", r.Subject, r.Statements))
			}
			t.row(tb, fmt.Sprint(len(ans.agentsByTbl[tb])), strings.Join(names, ", "))
		}
	}

	w("\n## 9. Policy reloads, token changes and administrative actions\n\n")
	w("- Policy reloads: %d\n- Tokens created: %d\n- Tokens revoked: %d\n- Administrative actions and ledger reads (admin): %d\n",
		a.byType[string(ledger.EventPolicyReload)], a.byType[string(ledger.EventTokenCreate)], a.byType[string(ledger.EventTokenRevoke)],
		a.byType[string(ledger.EventAdmin)])
	if len(a.admin) > 0 {
		t := table(&sb, "Time", "Event", "By", "Detail")
		for i, ev := range a.admin {
			if i == in.top*5 {
				w("\n… and %d more (see events.jsonl).\n", len(a.admin)-i)
				break
			}
			t.row(ts(ev.Time), string(ev.Type), ev.Subject, ev.Message)
		}
	}

	w("\n## 10. Events by type\n")
	counts(&sb, a.byType, 100, "Event type", "Events")
	w("\n---\nThis summary is listed with its SHA-256 in manifest.json, which is signed (manifest.sig) with the ledger's checkpoint key. Check the pack with `gatehouse audit evidence --check DIR`; see VERIFY.md.\n")
	return sb.String()
}

// renderVerify writes VERIFY.md: how anyone verifies the pack, with Gatehouse or without.
func renderVerify(r ledger.TimeRange) string {
	return fmt.Sprintf(`# Verifying this evidence pack

Period: %s to %s.

First make sure pubkey.pem is the installation's key: compare it with the output of
`+"`gatehouse audit pubkey`"+` on the Gatehouse host (or a copy held by the auditor).

## The whole pack (manifest signature, file hashes, chain)

    gatehouse audit evidence --check . --pubkey pubkey.pem

## The chain alone, offline

    gatehouse audit verify --file events.jsonl --checkpoints checkpoints.jsonl --pubkey pubkey.pem --trusted-keys trusted-keys.json

It checks every event's hash, every link to the previous event and every signed checkpoint,
each chain's own checkpoints with its instance's key (trusted-keys.json: the keys pinned in
ledger.trusted_keys and the external checkpoint file, for instances sharing one store).
checkpoints.jsonl holds the ledger's own signed checkpoints inside the exported range plus,
per chain, a signed "period-start" anchor (the hash the first exported event links to) and a
"period-end" seal of the last exported event.

## Without Gatehouse

    sha256sum summary.md events.jsonl checkpoints.jsonl pubkey.pem trusted-keys.json VERIFY.md   # compare with manifest.json
    base64 -d manifest.sig > /tmp/manifest.sig.bin
    openssl pkeyutl -verify -pubin -inkey pubkey.pem -rawin -in manifest.json -sigfile /tmp/manifest.sig.bin

(Keep the pack directory as it is: `+"`--check`"+` also fails on a file the manifest does not list.)
`, ts(r.From), ts(r.To))
}
