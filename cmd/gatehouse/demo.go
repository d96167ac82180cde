package main

import (
	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/demo"
)

func newDemoCmd(g *globals) *cobra.Command {
	var opts demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a sample shop database behind Gatehouse with five identities and print how to connect",
		Long: `Start a throwaway PostgreSQL with a sample shop (customers with names, e-mails, phones,
cards, SSNs, API keys; orders; payments) as two targets, shop (prod) and shop-staging
(staging), and Gatehouse in front of it with five identities: an analyst, a DBA, an AI agent,
a second DBA who approves and a compliance officer who sees raw values. It prints a psql
command and a one-click console sign-in link per identity, things to try, and an
export GATEHOUSE_CONFIG=... line with which every other command (targets, catalog show,
approvals, policy test, audit ...) works against the running demo. Ctrl-C stops it and
removes everything it created.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Log = g.logger()
			d, err := demo.Start(cmd.Context(), opts)
			if err != nil {
				return err
			}
			defer d.Close()
			d.PrintWelcome(cmd.OutOrStdout())
			<-cmd.Context().Done()
			cmd.Println("\nstopping the demo and removing its files")
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Listen, "listen", "127.0.0.1:15432", "address of the PostgreSQL door")
	cmd.Flags().StringVar(&opts.HTTP, "http", "127.0.0.1:8080", "address of the health and metrics endpoints")
	cmd.Flags().StringVar(&opts.MCP, "mcp", "127.0.0.1:15433", "address of the MCP door (streamable HTTP at /mcp)")
	return cmd
}
