package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/classify"
)

func init() { extraCommands = append(extraCommands, newCatalogCmd) }

func newCatalogCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "catalog", Short: "Show what Gatehouse found to be sensitive in a target"}
	var all bool
	show := &cobra.Command{
		Use:   "show TARGET",
		Short: "Scan a target and list its sensitive columns with class, confidence and evidence",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			if _, ok := cfg.Target(args[0]); !ok {
				return fmt.Errorf("target %q is not in the configuration; `gatehouse targets` lists them", args[0])
			}
			overrides := map[string]map[string]string{}
			if e, _, err := policyEngine(g, ""); err == nil {
				overrides[args[0]] = e.Overrides()
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
