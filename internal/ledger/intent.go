package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// EventStatementIntent is the type of the event the gate records, durably, before it
// forwards a statement that can change data; the statement's own event (EventStatement)
// follows when it completes. An intent without a completion is a statement that may have
// run while Gatehouse died: the auditor questions report it with OutcomeUnknown. (The gate
// declares the same value as gate.EventStatementIntent.)
const EventStatementIntent EventType = "statement.intent"

// Outcomes of a statement in the auditor answers.
const (
	// OutcomeCompleted: the statement's completion is recorded.
	OutcomeCompleted = "completed"
	// OutcomeUnknown: only the intent is recorded; the statement may or may not have run.
	OutcomeUnknown = "unknown (intent recorded, no completion)"
)

// statementSignature identifies a statement execution's facts: the intent and the
// completion of one execution are built from the same check, so they carry the same
// statements (kind, redacted text, fingerprint) and protocol path.
func statementSignature(ev *Event) string {
	var sb strings.Builder
	sb.WriteString(ev.Via)
	for _, st := range ev.Statements {
		sb.WriteString("\x00")
		sb.WriteString(st.Kind)
		sb.WriteString("\x01")
		sb.WriteString(st.Redacted)
		sb.WriteString("\x01")
		sb.WriteString(st.Fingerprint)
	}
	return sb.String()
}

// sessionEventsSQL lists, in chain order, the statement events and intents of one session
// from a seq on that also match {FILTER} (an EXISTS probe on a side table, which every event
// with the intents' signature matches). The (session, seq) index seeks to the first intent,
// and the caller stops reading once every intent it asked about is answered: a completion
// follows its intent closely, and an intent without one ends its session (Gatehouse died),
// so what is read is about the span of the intents asked about, whatever the session's size.
const sessionEventsSQL = `SELECT e.seq, e.type, e.body FROM ledger_events e
WHERE e.session = ? AND e.seq >= ? AND e.instance = ? AND e.type IN ('statement', 'statement.intent') AND {FILTER}
ORDER BY e.seq`

// Side-table probes for sessionEventsSQL, one argument each.
const (
	pairByKind  = `EXISTS (SELECT 1 FROM ledger_statements s WHERE s.instance = e.instance AND s.seq = e.seq AND s.kind = ?)`
	pairByTable = `EXISTS (SELECT 1 FROM ledger_tables t WHERE t.instance = e.instance AND t.seq = e.seq AND t.name = ?)`
	pairByClass = `EXISTS (SELECT 1 FROM ledger_classes c WHERE c.instance = e.instance AND c.seq = e.seq AND c.class = ?)`
	// pairByFacet probes the event's facets for a token (SQLite: facetToken).
	pairByFacet = `instr(e.facets, ?) > 0`
)

// errAllAnswered stops reading a session once every intent asked about is answered.
var errAllAnswered = errors.New("all intents answered")

// unmatchedIntents returns the intents that no completion answers, in their order. Intents
// and completions are paired per session in chain order by their statement signature: the
// n-th completion of a signature answers the n-th intent of it, so an execution counts once
// whether or not its completion was recorded. filter (one of the pairBy probes) with arg
// narrows the session's events to those that can share the intents' signatures.
func unmatchedIntents(ctx context.Context, r runner, filter string, arg any, intents []Event) ([]Event, error) {
	type key struct{ instance, session string }
	groups := map[key][]int{}
	var order []key
	for i := range intents {
		k := key{intents[i].Instance, intents[i].SessionID}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	if r.dialect() == sqliteSQL {
		// The SQLite session index holds the events with side-table rows only, which are
		// all that filter can match (the literal term lets SQLite use the partial index).
		filter = "e.aux = 1 AND " + filter
	}
	q := rebind(r.dialect(), strings.Replace(sessionEventsSQL, "{FILTER}", filter, 1))
	answered := map[key]map[int64]bool{}
	for _, k := range order {
		idx := groups[k]
		want := map[int64]bool{}
		first := intents[idx[0]].Seq
		for _, i := range idx {
			want[intents[i].Seq] = true
			first = min(first, intents[i].Seq)
		}
		open := map[string][]int64{}
		done := map[int64]bool{}
		err := r.queryRows(ctx, q, []any{k.session, first, k.instance, arg}, func(scan func(...any) error) error {
			var seq int64
			var typ string
			var body []byte
			if err := scan(&seq, &typ, &body); err != nil {
				return err
			}
			ev, err := decodeBody(body)
			if err != nil {
				return err
			}
			sig := statementSignature(&ev)
			if EventType(typ) == EventStatementIntent {
				open[sig] = append(open[sig], seq)
				return nil
			}
			if q := open[sig]; len(q) > 0 {
				if want[q[0]] {
					done[q[0]] = true
				}
				open[sig] = q[1:]
				if len(done) == len(want) {
					return errAllAnswered
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errAllAnswered) {
			return nil, fmt.Errorf("pair statement intents with their completions: %w", err)
		}
		answered[k] = done
	}
	var out []Event
	for _, ev := range intents {
		if !answered[key{ev.Instance, ev.SessionID}][ev.Seq] {
			out = append(out, ev)
		}
	}
	return out, nil
}

// The intents in a time range are found through one partial index per side table, which
// holds intent rows only (type = 'statement.intent'): few, next to the completions. {IX}
// names that index for SQLite (INDEXED BY), whose sampled statistics could otherwise pick
// a covering index of the aggregations and walk every completion in the range; it is empty
// for PostgreSQL. Only allowed statements have intents; the decision is checked anyway.

// intentDropsSQL finds the DROP intents in a time range: a seek to the DROP kinds of the
// (kind, time_ns) intents index of ledger_statements.
const intentDropsSQL = `SELECT e.body, s.kind FROM ledger_statements s {IX} JOIN ledger_events e ON e.instance = s.instance AND e.seq = s.seq
WHERE s.kind >= 'DROP ' AND s.kind < 'DROP~' AND s.type = 'statement.intent' AND s.time_ns >= ? AND s.time_ns < ? AND e.decision = 'allow'
ORDER BY s.time_ns, s.seq`

// intentAgentsSQL finds the agents' intents on a table (%s: tableMatch's condition, which
// leads with the bare name) through the (name, identity_kind, time_ns) intents index.
const intentAgentsSQL = `SELECT e.body FROM ledger_tables d {IX} JOIN ledger_events e ON e.instance = d.instance AND e.seq = d.seq
WHERE %s AND d.identity_kind = 'agent' AND d.type = 'statement.intent' AND d.time_ns >= ? AND d.time_ns < ?
ORDER BY d.time_ns, d.seq`

// intentReadersSQL finds the intents that read a class of sensitive data through the
// (class, category, time_ns) intents index.
const intentReadersSQL = `SELECT e.body FROM ledger_classes d {IX} JOIN ledger_events e ON e.instance = d.instance AND e.seq = d.seq
WHERE d.class = ? AND d.category = 'read' AND d.type = 'statement.intent' AND d.time_ns >= ? AND d.time_ns < ? AND d.decision = 'allow'
ORDER BY d.time_ns, d.seq`

// intentSQL fills in the dialect's index hint.
func intentSQL(d dialect, q, index string) string {
	ix := ""
	if d == sqliteSQL {
		ix = "INDEXED BY " + index
	}
	return rebind(d, strings.Replace(q, "{IX}", ix, 1))
}

// queryIntents runs an intents query and decodes the events it finds, each once (an event
// can have two rows that match, such as public.t and other.t for the bare name t).
func queryIntents(ctx context.Context, r runner, q string, args []any) ([]Event, error) {
	var out []Event
	seen := map[string]bool{}
	err := r.queryRows(ctx, q, args, func(scan func(...any) error) error {
		var body []byte
		if err := scan(&body); err != nil {
			return err
		}
		ev, err := decodeBody(body)
		if err != nil {
			return err
		}
		k := fmt.Sprintf("%s\x00%d", ev.Instance, ev.Seq)
		if seen[k] {
			return nil
		}
		seen[k] = true
		out = append(out, ev)
		return nil
	})
	return out, err
}

// droppedByIntent returns what "who dropped table" must add from intents: DROPs of table
// whose intent is recorded and whose completion is not.
func droppedByIntent(ctx context.Context, r runner, table string, tr TimeRange) ([]DropRecord, error) {
	col, val := tableKey(table)
	from, to := tr.bounds()
	byKind := map[string][]Event{}
	var kinds []string
	q := intentSQL(r.dialect(), intentDropsSQL, "ledger_statements_intents")
	err := r.queryRows(ctx, q, []any{from, to}, func(scan func(...any) error) error {
		var body []byte
		var kind string
		if err := scan(&body, &kind); err != nil {
			return err
		}
		ev, err := decodeBody(body)
		if err != nil {
			return err
		}
		if !dropsTable(&ev, kind, col, val) {
			return nil
		}
		if _, ok := byKind[kind]; !ok {
			kinds = append(kinds, kind)
		}
		byKind[kind] = append(byKind[kind], ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find intents to drop %s: %w", table, err)
	}
	var out []DropRecord
	for _, kind := range kinds {
		open, err := unmatchedIntents(ctx, r, pairByKind, kind, byKind[kind])
		if err != nil {
			return nil, err
		}
		for i := range open {
			ev := &open[i]
			rec := dropRecord(ev, kind)
			rec.Table = droppedTableName(ev, kind, col, val)
			rec.Outcome = OutcomeUnknown
			out = append(out, rec)
		}
	}
	return out, nil
}

// agentsByIntent returns the agents' intents on table (in the range) that no completion
// answers: writes that may have run while Gatehouse died.
func agentsByIntent(ctx context.Context, r runner, table string, tr TimeRange) ([]Event, error) {
	cond, args := tableMatch("d", table)
	name := args[0].(string) // the bare name, which the side-table rows pair on
	from, to := tr.bounds()
	q := intentSQL(r.dialect(), fmt.Sprintf(intentAgentsSQL, cond), "ledger_tables_intents")
	intents, err := queryIntents(ctx, r, q, append(args, from, to))
	if err != nil {
		return nil, fmt.Errorf("find agents' intents on %s: %w", table, err)
	}
	return unmatchedIntents(ctx, r, pairByTable, name, intents)
}

// readersByIntent returns the intents that read class (in the range) and that no
// completion answers.
func readersByIntent(ctx context.Context, r runner, class string, tr TimeRange) ([]Event, error) {
	from, to := tr.bounds()
	q := intentSQL(r.dialect(), intentReadersSQL, "ledger_classes_intents")
	intents, err := queryIntents(ctx, r, q, []any{class, from, to})
	if err != nil {
		return nil, fmt.Errorf("find intents that read %s data: %w", class, err)
	}
	if r.dialect() == sqliteSQL {
		// The SQLite store counts completed statements per second instead of keeping
		// their class rows (index_agg.go): their facets name the classes they read.
		return unmatchedIntents(ctx, r, pairByFacet, facetToken(tokClass, class), intents)
	}
	return unmatchedIntents(ctx, r, pairByClass, class, intents)
}

// addIntentCounts counts each unanswered intent once for its identity in an aggregation's
// answer and sorts it again (most statements first, then by subject).
func addIntentCounts(out []IdentityCount, intents []Event) []IdentityCount {
	if len(intents) == 0 {
		return out
	}
	ix := map[[2]string]int{}
	for i, ic := range out {
		ix[[2]string{ic.Subject, ic.IdentityKind}] = i
	}
	for _, ev := range intents {
		k := [2]string{ev.Subject, ev.IdentityKind}
		i, ok := ix[k]
		if !ok {
			i = len(out)
			ix[k] = i
			out = append(out, IdentityCount{Subject: ev.Subject, IdentityKind: ev.IdentityKind, First: ev.Time.UTC(), Last: ev.Time.UTC()})
		}
		ic := &out[i]
		ic.Statements++
		if t := ev.Time.UTC(); t.Before(ic.First) {
			ic.First = t
		} else if t.After(ic.Last) {
			ic.Last = t
		}
	}
	slices.SortStableFunc(out, func(a, b IdentityCount) int {
		if a.Statements != b.Statements {
			return cmp.Compare(b.Statements, a.Statements)
		}
		return strings.Compare(a.Subject, b.Subject)
	})
	return out
}

// dropsTable reports whether one of ev's statements of kind names the table (col is "tbl"
// for a schema-qualified name, "name" for a bare one, as in the side tables).
func dropsTable(ev *Event, kind, col, val string) bool {
	return droppedTableName(ev, kind, col, val) != ""
}

// droppedTableName is the table (lower case, as the side tables store it) that one of ev's
// statements of kind names and that matches, or "".
func droppedTableName(ev *Event, kind, col, val string) string {
	for _, st := range ev.Statements {
		if st.Kind != kind {
			continue
		}
		for _, ts := range [][]string{st.TablesWritten, st.TablesRead} {
			for _, t := range ts {
				lt := strings.ToLower(t)
				if (col == "tbl" && lt == val) || (col == "name" && bareName(lt) == val) {
					return lt
				}
			}
		}
	}
	return ""
}

// dropRecord is the answer row for a DROP statement of kind in ev.
func dropRecord(ev *Event, kind string) DropRecord {
	text := ""
	for _, st := range ev.Statements {
		if st.Kind == kind {
			text = st.Redacted
			break
		}
	}
	return DropRecord{
		Time: ev.Time, Instance: ev.Instance, Seq: ev.Seq, Subject: ev.Subject, IdentityKind: ev.IdentityKind,
		ClientAddr: ev.ClientAddr, ApplicationName: ev.ApplicationName, Target: ev.Target, Environment: ev.Environment,
		Decision: ev.Decision, SQLState: ev.SQLState, Kind: kind, Text: text,
	}
}
