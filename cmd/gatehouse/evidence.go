package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/evidence"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server"
)

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
				return evidence.Check(cmd.Context(), cmd.OutOrStdout(), check, pubFile)
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
	if err := evidence.PrepareDir(dir); err != nil {
		return err
	}
	end := "now"
	if !r.To.IsZero() {
		end = r.To.UTC().Format(time.RFC3339Nano)
	}
	if err := g.recordEvidence(ctx, cfg, "audit evidence "+r.From.UTC().Format(time.RFC3339Nano)+" .. "+end+" -o "+dir); err != nil {
		return err
	}
	key, err := ledger.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return err
	}
	st, err := server.OpenLedgerStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := evidence.Write(ctx, dir, evidence.Options{Store: st, Key: key, Range: r, Top: top, By: osUser(),
		CheckpointFile: cfg.Ledger.CheckpointFile, TrustedKeys: cfg.Ledger.TrustedKeys})
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "evidence pack for %s .. %s written to %s\n", res.From.Format(time.RFC3339), res.To.Format(time.RFC3339), dir)
	fmt.Fprintf(w, "%d chain(s), %d events exported; store verification: %s; pack verification: %s\n",
		res.Chains, res.Events, evidence.OKWord(res.StoreOK), evidence.OKWord(res.PackOK))
	if !res.StoreOK {
		return fmt.Errorf("the pack was written, but ledger verification FAILED with %d problem(s); see %s", res.StoreProblems, filepath.Join(dir, "summary.md"))
	}
	return nil
}
