package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/server"
)

func init() { extraCommands = append(extraCommands, newTokenCmd) }

// adminSession opens the store and a CLI ledger chain for an administrative command. The CLI
// writes to its own chain ("<host>/cli") so it never forks the chain of a running server.
type adminSession struct {
	cfg    *config.Config
	tokens *identity.Tokens
	ledger *ledger.Ledger
	close  func()
}

func (g *globals) openAdmin(ctx context.Context) (*adminSession, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	db, err := server.OpenStateStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	led, err := server.OpenLedgerInstance(ctx, cfg, host+"/cli")
	if err != nil {
		db.Close()
		return nil, err
	}
	tokens, err := identity.NewTokens(ctx, db, identity.TokensOptions{Recorder: led, Logger: g.logger()})
	if err != nil {
		led.Close(ctx)
		db.Close()
		return nil, err
	}
	return &adminSession{cfg: cfg, tokens: tokens, ledger: led, close: func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		led.Close(c)
		db.Close()
	}}, nil
}

func osUser() string {
	if u, err := user.Current(); err == nil {
		return "os:" + u.Username
	}
	return "os:unknown"
}

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke Gatehouse tokens (for services, agents and people)"}
	var (
		name, kind string
		groups     []string
		ttl        time.Duration
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token and print its secret once (only a hash is kept)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return fmt.Errorf("--name is required: the identity the token stands for (also the login user name)")
			}
			a, err := g.openAdmin(cmd.Context())
			if err != nil {
				return err
			}
			defer a.close()
			secret, tok, err := a.tokens.Create(cmd.Context(), identity.CreateRequest{
				Name: name, Kind: identity.Kind(kind), Groups: groups, TTL: ttl, CreatedBy: osUser(),
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %q (%s, groups %s) expires %s; the secret above is shown only once.\nConnect with user=%s password=<secret>.\n",
				tok.Name, tok.Kind, strings.Join(tok.Groups, ","), tok.ExpiresAt.Format(time.RFC3339), tok.Name)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "identity name, e.g. support-bot (the login user name)")
	create.Flags().StringVar(&kind, "kind", "service", "human, service or agent")
	create.Flags().StringSliceVar(&groups, "group", nil, "group for policies (repeatable)")
	create.Flags().DurationVar(&ttl, "ttl", identity.DefaultTokenTTL, "lifetime, e.g. 720h")

	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := g.openAdmin(cmd.Context())
			if err != nil {
				return err
			}
			defer a.close()
			toks, err := a.tokens.List(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tGROUPS\tSTATE\tEXPIRES\tLAST USED")
			now := time.Now()
			for _, t := range toks {
				last := "never"
				if !t.LastUsedAt.IsZero() {
					last = t.LastUsedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Kind, strings.Join(t.Groups, ","), t.State(now), t.ExpiresAt.Format(time.RFC3339), last)
			}
			return w.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: refused at once, its live sessions end within seconds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.openAdmin(cmd.Context())
			if err != nil {
				return err
			}
			defer a.close()
			if err := a.tokens.RevokeBy(cmd.Context(), args[0], osUser()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
