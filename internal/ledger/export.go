package ledger

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ExportJSONL writes the events of instance (every instance when "") as JSON lines, each
// line the exact hashed record, in chain order, so `Verify` can check the file offline.
func ExportJSONL(ctx context.Context, st Store, instance string, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	err := eachStored(ctx, st, instance, func(se StoredEvent) error {
		if _, err := bw.Write(se.Body); err != nil {
			return err
		}
		return bw.WriteByte('\n')
	})
	if err != nil {
		return fmt.Errorf("export ledger as JSON lines: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export ledger as JSON lines: %w", err)
	}
	return nil
}

// ExportCheckpoints writes the store's checkpoints of instance ("" for all) as JSON lines,
// the format of the external checkpoint file.
func ExportCheckpoints(ctx context.Context, st Store, instance string, w io.Writer) error {
	cps, err := st.Checkpoints(ctx, instance)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	for _, cp := range cps {
		if err := enc.Encode(cp); err != nil {
			return fmt.Errorf("export checkpoints: %w", err)
		}
	}
	return nil
}

// CSVHeader is the column list of ExportCSV.
var CSVHeader = []string{"instance", "seq", "time", "type", "subject", "identity_kind", "auth_method", "client_addr",
	"application_name", "target", "environment", "database", "upstream_role", "via", "statement_kinds", "categories",
	"tables", "sensitive_classes", "text", "decision", "rule", "approval_id", "rows", "bytes", "values_masked",
	"sqlstate", "duration_ms", "purpose", "traceparent", "message", "hash"}

// ExportCSV writes the events as CSV (one row per event, multi-valued fields joined with
// ";"), for spreadsheets; it is not verifiable, the JSON lines export is.
func ExportCSV(ctx context.Context, st Store, instance string, w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return fmt.Errorf("export ledger as CSV: %w", err)
	}
	err := eachStored(ctx, st, instance, func(se StoredEvent) error {
		ev, err := decodeBody(se.Body)
		if err != nil {
			return err
		}
		return cw.Write(csvRow(&ev))
	})
	if err != nil {
		return fmt.Errorf("export ledger as CSV: %w", err)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("export ledger as CSV: %w", err)
	}
	return nil
}

func csvRow(ev *Event) []string {
	var kinds, cats, tables, classes, texts []string
	for _, st := range ev.Statements {
		kinds = append(kinds, st.Kind)
		cats = append(cats, st.Category)
		tables = append(tables, st.TablesRead...)
		tables = append(tables, st.TablesWritten...)
		for _, c := range st.Sensitive {
			classes = append(classes, c)
		}
		texts = append(texts, st.Redacted)
	}
	return []string{ev.Instance, strconv.FormatInt(ev.Seq, 10), ev.Time.UTC().Format(time.RFC3339Nano), string(ev.Type),
		ev.Subject, ev.IdentityKind, ev.AuthMethod, ev.ClientAddr, ev.ApplicationName, ev.Target, ev.Environment,
		ev.Database, ev.UpstreamRole, ev.Via, strings.Join(kinds, ";"), strings.Join(cats, ";"), strings.Join(uniq(tables), ";"),
		strings.Join(uniq(classes), ";"), strings.Join(texts, ";\n"), ev.Decision, ev.Rule, ev.ApprovalID,
		strconv.FormatInt(ev.Rows, 10), strconv.FormatInt(ev.Bytes, 10), strconv.FormatInt(ev.ValuesMasked, 10),
		ev.SQLState, strconv.FormatFloat(float64(ev.Duration)/1e6, 'f', 3, 64), ev.Purpose, ev.Traceparent, ev.Message, ev.Hash}
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	out := s[:0:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// eachStored scans the events of one instance (or all, one instance after another) in
// pages, so exports of millions of events run in constant memory.
func eachStored(ctx context.Context, st Store, instance string, fn func(StoredEvent) error) error {
	instances := []string{instance}
	if instance == "" {
		var err error
		if instances, err = st.Instances(ctx); err != nil {
			return err
		}
	}
	const page = 5000
	for _, inst := range instances {
		after := int64(-1 << 62)
		for {
			n := 0
			err := st.Scan(ctx, inst, after, page, func(se StoredEvent) error {
				n++
				after = se.RowSeq
				return fn(se)
			})
			if err != nil {
				return err
			}
			if n < page {
				break
			}
		}
	}
	return nil
}
