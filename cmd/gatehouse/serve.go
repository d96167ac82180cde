package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/certs"
	"github.com/gatehouse/gatehouse/internal/server"
)

func newServeCmd(g *globals) *cobra.Command {
	var cpuProfile, instance string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy: PostgreSQL clients on listen.postgres, health and metrics on listen.http",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			log := g.logger()
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(serveGCPercent)
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			inst, err := server.Start(cmd.Context(), cfg, server.Options{Log: log, Instance: instance})
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			log.Info("shutting down")
			return inst.Close()
		},
	}
	cmd.Flags().StringVar(&instance, "instance", "", "name of this instance's ledger chain (default: the host name); instances sharing a PostgreSQL store need distinct names")
	// Profiling the proxy under a real load (scripts/bench.sh -cpuprofile) is how its hot
	// path is tuned; the flag is for engineers, so it stays out of the help text.
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile to this file until shutdown")
	_ = cmd.Flags().MarkHidden("cpuprofile")
	return cmd
}

// serveGCPercent is the garbage collector's target heap growth (GOGC) for `gatehouse serve`
// when the GOGC environment variable does not set one. The proxy keeps a small live heap
// (about 30–40 MiB under pgbench -S, mostly the ledger's and the catalog's) while every
// statement leaves a few KiB of garbage behind (the gate's check, the ledger's record and
// its indexing), so with Go's default of 100 it collects about once a second under load and
// the collector's own CPU is a tenth of the proxy's. Measured with /work/tools/pbcpu.sh
// -S (8 clients) and GODEBUG=gctrace=1, summing the collector's CPU over the run: 11.8 µs
// per transaction at GOGC=100, 7.1 at 200, 2.7 at 400, for a peak heap of about 70, 85 and
// 105 MiB; 1,000 idle sessions grow RSS by 54–55, 59 and 60 KiB each. Operators who must
// bound memory instead set GOGC and GOMEMLIMIT in the environment, which then win.
const serveGCPercent = 400

// startCPUProfile starts a CPU profile into path and returns what stops and writes it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create CPU profile %s: %w", path, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
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
