// Command gatehouse is the one binary: the proxy (serve), the demo, and the administration
// commands for tokens, targets, the ledger and policies.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gatehouse:", err)
		os.Exit(1)
	}
}

// globals are the flags every command shares.
type globals struct {
	configPath string
	dataDir    string
	logLevel   string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "gatehouse",
		Short:         "Identity-aware database access proxy with guardrails, masking and a tamper-evident ledger",
		SilenceUsage:  true,
		SilenceErrors: true,
		// One structured log format everywhere: parts that fall back to slog.Default() (and
		// anything still writing through the standard log package) log as the command does.
		PersistentPreRun: func(*cobra.Command, []string) { slog.SetDefault(g.logger()) },
	}
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", "", "configuration file (default: $GATEHOUSE_CONFIG, else ./gatehouse.yaml when it exists)")
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", "", "data directory (default: $GATEHOUSE_DATA_DIR; overrides data_dir in the configuration)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		newServeCmd(g),
		newTargetsCmd(g),
		newCACmd(g),
		newDemoCmd(g),
	)
	for _, add := range extraCommands {
		root.AddCommand(add(g))
	}
	return root
}

// extraCommands lets command files register themselves without editing newRoot.
var extraCommands []func(*globals) *cobra.Command

// Environment variables every command honours, below its flags: the configuration file and
// the data directory (the demo prints an export line for the first).
const (
	envConfig  = "GATEHOUSE_CONFIG"
	envDataDir = "GATEHOUSE_DATA_DIR"
)

// load reads the configuration the flags (or GATEHOUSE_CONFIG / GATEHOUSE_DATA_DIR) point
// at; without a file it uses the defaults.
func (g *globals) load() (*config.Config, error) {
	path := g.configPath
	if path == "" {
		path = os.Getenv(envConfig)
	}
	if path == "" {
		if _, err := os.Stat("gatehouse.yaml"); err == nil {
			path = "gatehouse.yaml"
		}
	}
	var cfg *config.Config
	if path == "" {
		d := config.Defaults()
		cfg = &d
	} else {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return nil, err
		}
	}
	if g.dataDir != "" {
		cfg.DataDir = g.dataDir
	} else if d := os.Getenv(envDataDir); d != "" {
		cfg.DataDir = d
	}
	return cfg, nil
}

func (g *globals) logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
