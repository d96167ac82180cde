package main

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server"
)

func init() { extraCommands = append(extraCommands, newAuditCmd) }

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Search, verify and export the tamper-evident ledger"}
	cmd.AddCommand(newAuditSearch(g), newAuditVerify(g), newAuditExport(g), newAuditPubkey(g),
		newAuditWhoDropped(g), newAuditPIIReaders(g), newAuditAgents(g), newAuditEvidence(g))
	return cmd
}

// timeFlags are the --since/--from/--to flags every audit question takes.
type timeFlags struct{ since, from, to string }

func (tf *timeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&tf.since, "since", "", "window ending now, e.g. 7d, 24h")
	cmd.Flags().StringVar(&tf.from, "from", "", "start (RFC 3339 or YYYY-MM-DD), inclusive")
	cmd.Flags().StringVar(&tf.to, "to", "", "end (RFC 3339 or YYYY-MM-DD), exclusive")
}

func (tf *timeFlags) apply(q *ledger.Query) error {
	var err error
	if tf.since != "" {
		if q.Since, err = config.ParseDuration(tf.since); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
	}
	if q.From, err = parseTime("--from", tf.from); err != nil {
		return err
	}
	q.To, err = parseTime("--to", tf.to)
	return err
}

func parseTime(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q: expected RFC 3339 (2026-01-31T12:00:00Z) or a date (2026-01-31)", flag, s)
}

func (g *globals) openLedgerStore(cmd *cobra.Command) (ledger.Store, *config.Config, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, nil, err
	}
	if err := needExisting(cfg, ledgerFile); err != nil {
		return nil, nil, err
	}
	st, err := server.OpenLedgerStore(cmd.Context(), cfg)
	return st, cfg, err
}

func newAuditSearch(g *globals) *cobra.Command {
	var q ledger.Query
	var tf timeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "search [TEXT]",
		Short: "Find events by identity, kind, target, environment, table, column class, decision, door (via), time and text",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				q.Text = args[0]
			}
			if err := tf.apply(&q); err != nil {
				return err
			}
			if err := q.Validate(); err != nil {
				return err
			}
			st, _, err := g.openLedgerStore(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			evs, err := st.Search(cmd.Context(), q)
			if err != nil {
				return err
			}
			if limit := q.Limit; limit > 0 && len(evs) >= limit {
				// Never let a limit pass for the whole answer.
				defer fmt.Fprintf(cmd.ErrOrStderr(), "showing the newest %d events: there may be more; narrow the search (--since, --from/--to, --identity, ...) or raise --limit\n", limit)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for i := range evs {
					if err := enc.Encode(&evs[i]); err != nil {
						return err
					}
				}
				return nil
			}
			return ledger.WriteTable(cmd.OutOrStdout(), evs)
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Identity, "identity", "", "identity subject glob, e.g. '*@corp.example'")
	f.StringVar(&q.IdentityKind, "kind", "", "identity kind: human, service or agent")
	f.StringVar(&q.Target, "target", "", "target name")
	f.StringVar(&q.Environment, "env", "", "environment, e.g. prod")
	f.StringVar(&q.StatementKind, "statement", "", "statement kind, e.g. 'DROP TABLE', SELECT")
	f.StringVar(&q.Category, "category", "", "read, write, ddl, admin, transaction, session, unknown")
	f.StringVar(&q.Table, "table", "", "table read or written")
	f.StringVar(&q.Class, "class", "", "sensitive column class, e.g. email, ssn, or pii for any personal data")
	f.StringVar(&q.Decision, "decision", "", "allow, deny or require_approval")
	f.StringVar(&q.Rule, "rule", "", "name of the policy rule that decided, e.g. no-drop-or-truncate-in-production")
	f.StringVar(&q.Via, "via", "", "door and message: mcp, or query, parse, execute, function (PostgreSQL wire protocol)")
	f.StringVar((*string)(&q.Type), "type", "", "event type, e.g. statement, session.start, login.failed")
	f.IntVar(&q.Limit, "limit", 100, "at most this many events, newest first")
	f.BoolVar(&asJSON, "json", false, "print JSON lines instead of a table")
	tf.add(cmd)
	return cmd
}

func newAuditVerify(g *globals) *cobra.Command {
	var file, pubFile, cpFile, trustedFile string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove the ledger is complete and unaltered: checks the hash chain and every signed checkpoint",
		Long: "Without --file, verifies the configured store with the key in the data directory.\n" +
			"With --file (an export from `gatehouse audit export`), works offline with only --pubkey.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			var extra []ledger.Checkpoint
			if cpFile == "" && file == "" {
				cpFile = cfg.Ledger.CheckpointFile
			}
			if cpFile != "" {
				if extra, err = ledger.ReadCheckpointFile(cmd.Context(), cpFile); err != nil {
					return err
				}
			}
			var pubPEM []byte
			if pubFile != "" {
				if pubPEM, err = os.ReadFile(pubFile); err != nil {
					return err
				}
			} else {
				if file == "" {
					// Never create a key (or a store) where there is no ledger to verify.
					if err := needExisting(cfg, ledgerFile); err != nil {
						return err
					}
				}
				key, err := ledger.LoadOrCreateKey(cfg.DataDir)
				if err != nil {
					return err
				}
				if pubPEM, err = ledger.PublicKeyPEM(key.Public().(ed25519.PublicKey)); err != nil {
					return err
				}
			}
			pub, err := ledger.ParsePublicKey(pubPEM)
			if err != nil {
				return err
			}
			keys := ledger.PublicKeys{Fallback: pub}
			if keys.Pinned, err = ledger.PinnedKeys(cmd.Context(), cfg.Ledger.TrustedKeys, cpFile); err != nil {
				return err
			}
			if trustedFile != "" {
				if keys.Pinned, err = ledger.ReadTrustedKeys(trustedFile, keys.Pinned); err != nil {
					return err
				}
			}
			var src ledger.Source
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				src = ledger.JSONLSource{Reader: f, Extra: extra}
			} else {
				st, err := server.OpenLedgerStore(cmd.Context(), cfg)
				if err != nil {
					return err
				}
				defer st.Close()
				src = ledger.StoreSource{Store: st, Extra: extra}
			}
			rep, err := ledger.VerifyWith(cmd.Context(), src, keys)
			if err != nil {
				return err
			}
			if rep.OK && len(rep.Chains) == 0 {
				what := file
				if what == "" {
					what = storeName(cfg, ledgerFile)
				}
				return fmt.Errorf("nothing to verify: %s holds no events", what)
			}
			fmt.Fprint(cmd.OutOrStdout(), rep.String())
			if !rep.OK {
				return fmt.Errorf("ledger verification FAILED: %d problem(s)", len(rep.Problems))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "verify an exported JSON-lines ledger instead of the store")
	cmd.Flags().StringVar(&pubFile, "pubkey", "", "public key PEM (from `gatehouse audit pubkey`); default: the data directory's key")
	cmd.Flags().StringVar(&cpFile, "checkpoints", "", "external checkpoint file (default: ledger.checkpoint_file); the keys its lines name are pinned per instance")
	cmd.Flags().StringVar(&trustedFile, "trusted-keys", "", "JSON file of {instance: base64 public key} to pin (an evidence pack's trusted-keys.json)")
	return cmd
}

func newAuditExport(g *globals) *cobra.Command {
	var format, out, cpOut string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export the ledger as JSON lines (verifiable offline) or CSV",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := g.openLedgerStore(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			w := cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			switch format {
			case "jsonl", "json":
				err = ledger.ExportJSONL(cmd.Context(), st, "", w)
			case "csv":
				err = ledger.ExportCSV(cmd.Context(), st, "", w)
			default:
				return fmt.Errorf("--format %q: expected jsonl or csv", format)
			}
			if err != nil || cpOut == "" {
				return err
			}
			f, err := os.Create(filepath.Clean(cpOut))
			if err != nil {
				return err
			}
			defer f.Close()
			return ledger.ExportCheckpoints(cmd.Context(), st, "", f)
		},
	}
	cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	cmd.Flags().StringVarP(&out, "output", "o", "-", "output file")
	cmd.Flags().StringVar(&cpOut, "checkpoints-out", "", "also write the signed checkpoints to this file")
	return cmd
}

func newAuditPubkey(g *globals) *cobra.Command {
	var b64 bool
	cmd := &cobra.Command{
		Use:   "pubkey",
		Short: "Print the public key that verifies this installation's checkpoints (PEM, or --base64 for ledger.trusted_keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			key, err := ledger.LoadOrCreateKey(cfg.DataDir)
			if err != nil {
				return err
			}
			if b64 {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), ledger.PublicKeyBase64(key.Public().(ed25519.PublicKey)))
				return err
			}
			b, err := ledger.PublicKeyPEM(key.Public().(ed25519.PublicKey))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().BoolVar(&b64, "base64", false, "print the raw key in base64, as ledger.trusted_keys takes it")
	return cmd
}

// questionCmd builds one of the auditor's standing questions: a time range, the store, and
// a function that asks and returns the answer rows and how to print them as a table (--json
// prints the rows as a JSON array instead, for scripts).
func questionCmd(g *globals, use, short string, args cobra.PositionalArgs, setup func(*cobra.Command),
	ask func(cmd *cobra.Command, st ledger.Store, args []string, r ledger.TimeRange) (any, func(io.Writer) error, error)) *cobra.Command {
	var tf timeFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			var q ledger.Query
			if err := tf.apply(&q); err != nil {
				return err
			}
			st, _, err := g.openLedgerStore(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			rows, table, err := ask(cmd, st, args, q.Range(time.Now()))
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				return enc.Encode(rows)
			}
			return table(cmd.OutOrStdout())
		},
	}
	tf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the answer as a JSON array instead of a table")
	if setup != nil {
		setup(cmd)
	}
	return cmd
}

func newAuditWhoDropped(g *globals) *cobra.Command {
	return questionCmd(g, "who-dropped TABLE", "Who dropped a table, when, and from which client", cobra.ExactArgs(1), nil,
		func(cmd *cobra.Command, st ledger.Store, args []string, r ledger.TimeRange) (any, func(io.Writer) error, error) {
			recs, err := st.WhoDropped(cmd.Context(), args[0], r)
			if recs == nil {
				recs = []ledger.DropRecord{}
			}
			return recs, func(w io.Writer) error { return ledger.WriteDrops(w, recs) }, err
		})
}

func newAuditPIIReaders(g *globals) *cobra.Command {
	var class string
	return questionCmd(g, "pii-readers", "Which identities read personal data (or one class of it) in a time range, with counts", cobra.NoArgs,
		func(cmd *cobra.Command) {
			cmd.Flags().StringVar(&class, "class", "pii", "class of sensitive data; pii means any personal data")
		},
		func(cmd *cobra.Command, st ledger.Store, _ []string, r ledger.TimeRange) (any, func(io.Writer) error, error) {
			rows, err := st.PIIReaders(cmd.Context(), class, r)
			if rows == nil {
				rows = []ledger.IdentityCount{}
			}
			return rows, func(w io.Writer) error { return ledger.WriteIdentityCounts(w, rows) }, err
		})
}

func newAuditAgents(g *globals) *cobra.Command {
	return questionCmd(g, "agents TABLE", "Which AI agents queried a table in a time range, with counts", cobra.ExactArgs(1), nil,
		func(cmd *cobra.Command, st ledger.Store, args []string, r ledger.TimeRange) (any, func(io.Writer) error, error) {
			rows, err := st.AgentsQueried(cmd.Context(), args[0], r)
			if rows == nil {
				rows = []ledger.IdentityCount{}
			}
			return rows, func(w io.Writer) error {
				fmt.Fprintf(w, "%d agent(s) queried %s\n", len(rows), args[0])
				return ledger.WriteIdentityCounts(w, rows)
			}, err
		})
}
