package main

import (
	"fmt"
	"os"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/certs"
	"github.com/gatehouse/gatehouse/internal/server"
)

func newServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy: PostgreSQL clients on listen.postgres, health and metrics on listen.http",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			log := g.logger()
			inst, err := server.Start(cmd.Context(), cfg, server.Options{Log: log})
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			log.Info("shutting down")
			return inst.Close()
		},
	}
}

func newTargetsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "targets",
		Short: "List the databases clients can reach through Gatehouse (use the name as the database)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			ts := cfg.Targets
			sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tENGINE\tENVIRONMENT\tUPSTREAM\tDATABASE")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Engine, t.Environment, t.Addr(), t.Database)
			}
			return w.Flush()
		},
	}
}

func newCACmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ca",
		Short: "Print the CA certificate clients trust for sslmode=verify-full (sslrootcert)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			if cfg.TLS.Mode == "files" || cfg.TLS.Mode == "off" {
				return fmt.Errorf("tls.mode is %q: the CA is whatever issued %s", cfg.TLS.Mode, cfg.TLS.CertFile)
			}
			if _, err := certs.Auto(cfg.DataDir, cfg.TLS.Hosts); err != nil {
				return err
			}
			b, err := os.ReadFile(certs.CAPath(cfg.DataDir))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
}
