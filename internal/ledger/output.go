package ledger

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// SearchResponse is the console API's answer to a search: the query as understood and the
// events, in a shape that is stable for JSON clients.
type SearchResponse struct {
	Query  Query   `json:"query"`
	Count  int     `json:"count"`
	Events []Event `json:"events"`
}

// SearchResult wraps events for the JSON API (an empty result is [] rather than null).
func SearchResult(q Query, evs []Event) SearchResponse {
	if evs == nil {
		evs = []Event{}
	}
	return SearchResponse{Query: q, Count: len(evs), Events: evs}
}

// WriteTable prints events as an aligned table for `gatehouse audit search`.
func WriteTable(w io.Writer, evs []Event) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSEQ\tTYPE\tSUBJECT\tKIND\tTARGET\tDECISION\tSTATEMENT")
	for _, ev := range evs {
		text := ev.Message
		if len(ev.Statements) > 0 {
			text = ev.Statements[0].Redacted
			if len(ev.Statements) > 1 {
				text += fmt.Sprintf(" (+%d more)", len(ev.Statements)-1)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), ev.Seq, ev.Type,
			cell(ev.Subject, 32), ev.IdentityKind, cell(ev.Target, 20), ev.Decision, cell(text, 80))
	}
	return tw.Flush()
}

// WriteIdentityCounts prints an aggregation result as a table.
func WriteIdentityCounts(w io.Writer, rows []IdentityCount) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBJECT\tKIND\tSTATEMENTS\tFIRST\tLAST")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Subject, r.IdentityKind, r.Statements, r.First.Format(time.RFC3339), r.Last.Format(time.RFC3339))
	}
	return tw.Flush()
}

// WriteDrops prints "who dropped table X" as a table.
func WriteDrops(w io.Writer, rows []DropRecord) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSUBJECT\tKIND\tCLIENT\tAPPLICATION\tTARGET\tTABLE\tOUTCOME\tSTATEMENT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format(time.RFC3339), r.Subject, r.IdentityKind,
			r.ClientAddr, cell(r.ApplicationName, 24), r.Target, r.Table, r.Outcome, cell(r.Text, 60))
	}
	return tw.Flush()
}

// cell keeps a table cell on one line and bounded.
func cell(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
