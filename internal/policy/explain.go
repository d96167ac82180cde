package policy

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/gatehouse/gatehouse/internal/gate"
)

// FormatExplanation prints what `gatehouse policy test` shows: the statement facts, the
// decision, the rule that decided and the rules evaluated on the way. It prints the redacted
// text only, never literal values.
func FormatExplanation(w io.Writer, x Explanation) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, v string) { fmt.Fprintf(tw, "  %s:\t%s\n", k, v) }
	list := func(l []string) string {
		if len(l) == 0 {
			return "-"
		}
		return strings.Join(l, ", ")
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintln(tw, "statement:")
	if st := x.Statement; st != nil {
		p("text (redacted)", st.Redacted)
		p("kind", st.Kind)
		p("category", string(st.Category))
		if st.ObjectType != "" {
			p("object type", st.ObjectType)
		}
		p("tables read", list(st.TablesRead))
		p("tables written", list(st.TablesWritten))
		p("columns", list(st.Columns))
		p("functions", list(st.Functions))
		p("has where", yes(st.HasWhere))
		p("where trivial", yes(st.WhereTrivial))
		p("has limit", yes(st.HasLimit))
		p("export", yes(st.Export))
		p("changes role", yes(ChangesRole(st)))
		if st.Program || st.ServerFile {
			p("server program/file", fmt.Sprintf("program=%s file=%s", yes(st.Program), yes(st.ServerFile)))
		}
		if st.Setting != "" {
			p("setting", st.Setting)
		}
		for _, n := range st.Notes {
			p("note", n)
		}
		if st.ParseError != "" {
			p("parse error", st.ParseError)
		}
	} else {
		p("text", "(none)")
	}
	fmt.Fprintln(tw, "access:")
	p("grant", orDash(x.Grant))
	p("level", orDash(x.Level))
	if x.Category != "" {
		p("checked as", x.Category)
	}
	fmt.Fprintln(tw, "rules evaluated:")
	if len(x.Evaluated) == 0 {
		fmt.Fprintln(tw, "  (none)")
	}
	for _, r := range x.Evaluated {
		m := "no match"
		if r.Matched {
			m = "MATCH"
		}
		if r.Error != "" {
			m += " (condition failed: " + r.Error + ")"
		}
		fmt.Fprintf(tw, "  %s\tline %d\t%s\n", r.Name, r.Line, m)
	}
	d := x.Decision
	fmt.Fprintln(tw, "decision:")
	p("action", strings.ToUpper(string(d.Action)))
	p("rule", d.Rule)
	p("decided at", x.Stage)
	if d.Message != "" {
		p("message", d.Message)
	}
	if d.Action == gate.Allow {
		if d.MaxRows > 0 {
			p("max rows", fmt.Sprint(d.MaxRows))
		}
		if d.MaxAffectedRows > 0 {
			p("max affected rows", fmt.Sprint(d.MaxAffectedRows))
		}
		mp := d.MaskProfile
		if mp == "" {
			mp = ProfileDefault + " (sensitive values masked)"
		}
		p("masking", mp)
	}
	p("policy", x.Policy)
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
