package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/classify"
)

func init() { extraCommands = append(extraCommands, newCatalogCmd) }

func newCatalogCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "catalog", Short: "Show what Gatehouse found to be sensitive in a target"}
	var all bool
	show := &cobra.Command{
		Use:   "show [DATABASE@]TARGET",
		Short: "Scan a target (or another database on it) and list its sensitive columns with class, confidence and evidence",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			// DATABASE@TARGET is the catalog a dbname=DATABASE@TARGET session reads.
			target := args[0]
			if at := strings.LastIndexByte(target, '@'); at > 0 {
				target = target[at+1:]
			}
			if _, ok := cfg.Target(target); !ok {
				return fmt.Errorf("target %q is not in the configuration; `gatehouse targets` lists them", target)
			}
			overrides := map[string]map[string]string{}
			if e, _, err := policyEngine(g, ""); err == nil {
				overrides[target] = e.Overrides()
			}
			cat := classify.NewCatalog(classify.ConfigConnector(cfg.Targets), classify.ScanOptions{}, overrides)
			snap, err := cat.Snapshot(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			entries := snap.Sensitive()
			if all {
				entries = snap.Entries
			}
			return classify.FormatCatalog(cmd.OutOrStdout(), entries)
		},
	}
	show.Flags().BoolVar(&all, "all", false, "list every column, not only sensitive ones")
	cmd.AddCommand(show)
	return cmd
}
