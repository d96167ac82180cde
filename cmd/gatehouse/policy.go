package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/server"
)

func init() { extraCommands = append(extraCommands, newPolicyCmd) }

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Test policies against statements and against the recorded ledger"}
	cmd.AddCommand(newPolicyTest(g), newPolicyReplay(g), &cobra.Command{
		Use:   "default",
		Short: "Print the built-in default policy, to start your own from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(policy.DefaultText())
			return err
		},
	})
	return cmd
}

// policyEngine loads the policy file named by --policy, else the configured one, else the
// built-in default.
func policyEngine(g *globals, file string) (*policy.Engine, *config.Config, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, nil, err
	}
	e, err := policy.NewEngine(policy.Options{Log: g.logger()})
	if err != nil {
		return nil, nil, err
	}
	if file == "" {
		file = cfg.Policy
	}
	if file != "" {
		if err := e.Load(file); err != nil {
			return nil, nil, err
		}
	}
	return e, cfg, nil
}

// targetFor finds the target by name in the configuration, or makes one up for an
// environment so policies can be tried without a configuration.
func targetFor(cfg *config.Config, name, env string) *config.Target {
	if t, ok := cfg.Target(name); ok {
		return t
	}
	if env == "" {
		env = "dev"
		if strings.Contains(name, "prod") {
			env = "prod"
		}
	}
	return &config.Target{Name: name, Engine: "postgres", Environment: env}
}

func newPolicyTest(g *globals) *cobra.Command {
	var file, as, kind, target, env string
	var groups []string
	cmd := &cobra.Command{
		Use:   "test [flags] SQL",
		Short: "Show the facts of a statement and what the policy decides for an identity on a target",
		Long: "Shows the facts of each statement and the decision with its deciding rule; exits 3 when refused.\n" +
			"The identity's kind and groups come from the token store when --as names a Gatehouse token\n" +
			"(--kind/--group override them); any other identity (an OIDC user) needs --kind and its --group flags.",
		Example: `  gatehouse policy test --policy p.yaml --as alice@corp.example --kind human --group analysts --target prod-db "DELETE FROM users"
  gatehouse policy test --as support-bot --target prod-db "SELECT email FROM customers"   # a token: kind and groups from the store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if as == "" {
				return errors.New("--as is required: the identity whose statement is decided")
			}
			e, cfg, err := policyEngine(g, file)
			if err != nil {
				return err
			}
			flags := cmd.Flags()
			if !flags.Changed("kind") || !flags.Changed("group") {
				tok, found, err := lookupToken(cmd.Context(), cfg, as)
				if err != nil {
					return err
				}
				switch {
				case found:
					if !flags.Changed("kind") {
						kind = string(tok.Kind)
					}
					if !flags.Changed("group") {
						groups = tok.Groups
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "identity %s: kind %s, groups %v (from the token store)\n", as, kind, groups)
				case !flags.Changed("kind"):
					return fmt.Errorf("--as %q is not a Gatehouse token in %s: say what the identity is with --kind (human, service or agent) and its --group flags", as, storeName(cfg, stateFile))
				}
			}
			if !identity.Kind(kind).Valid() {
				return fmt.Errorf("--kind %q: expected human, service or agent", kind)
			}
			sess := &gate.Session{
				ID:       "policy-test",
				Identity: &identity.Identity{Subject: as, Kind: identity.Kind(kind), Groups: groups, AuthMethod: "test"},
				Target:   targetFor(cfg, target, env), ClientAddr: "127.0.0.1", StartedAt: time.Now(),
			}
			sts := inspect.New(0).Inspect(args[0])
			if len(sts) == 0 {
				return fmt.Errorf("no statement in %q", args[0])
			}
			refused := false
			for i, st := range sts {
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				x := e.Explain(cmd.Context(), sess, st)
				if err := policy.FormatExplanation(cmd.OutOrStdout(), x); err != nil {
					return err
				}
				refused = refused || x.Decision.Action != gate.Allow
			}
			if refused {
				os.Exit(3) // scripts can tell "refused" from "error" (1) and "allowed" (0)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "policy", "", "policy file (default: the configured one, else the built-in default)")
	f.StringVar(&as, "as", "", "identity subject (a token name, an OIDC subject or e-mail)")
	f.StringVar(&kind, "kind", "human", "identity kind: human, service or agent")
	f.StringSliceVar(&groups, "group", nil, "identity group (repeatable)")
	f.StringVar(&target, "target", "dev-db", "target name (from the configuration, or any name with --env)")
	f.StringVar(&env, "env", "", "environment of a target not in the configuration (default: prod when the name says so, else dev)")
	return cmd
}

// lookupToken finds the Gatehouse token named name in the configured state store; found is
// false when there is no such token or no state store at all (nothing to look up).
func lookupToken(ctx context.Context, cfg *config.Config, name string) (identity.Token, bool, error) {
	if needExisting(cfg, stateFile) != nil {
		return identity.Token{}, false, nil
	}
	db, err := server.OpenStateStore(ctx, cfg)
	if err != nil {
		return identity.Token{}, false, err
	}
	defer db.Close()
	tokens, err := identity.NewTokens(ctx, db, identity.TokensOptions{})
	if err != nil {
		return identity.Token{}, false, fmt.Errorf("open token store: %w", err)
	}
	list, err := tokens.List(ctx)
	if err != nil {
		return identity.Token{}, false, fmt.Errorf("list tokens: %w", err)
	}
	for _, t := range list {
		if t.Name == name {
			return t, true, nil
		}
	}
	return identity.Token{}, false, nil
}

func newPolicyReplay(g *globals) *cobra.Command {
	var file string
	var tf timeFlags
	var limit int
	cmd := &cobra.Command{
		Use:     "replay",
		Short:   "What would this policy have decided for the statements recorded in the ledger?",
		Example: `  gatehouse policy replay --policy new-policy.yaml --since 7d`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, cfg, err := policyEngine(g, file)
			if err != nil {
				return err
			}
			// The newest events of the period, as the console's replay page: a policy change
			// is about what happens now.
			q := ledger.Query{Type: ledger.EventStatement, Limit: limit}
			if err := tf.apply(&q); err != nil {
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
			slices.Reverse(evs) // print oldest first
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tIDENTITY\tTARGET\tWAS\tWOULD BE\tRULE\tSTATEMENT")
			changed := 0
			e.Replay(cmd.Context(), evs, func(name, env string) *config.Target { return targetFor(cfg, name, env) }, func(ch policy.ReplayChange) {
				changed++
				ev := ch.Event
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format("2006-01-02 15:04"), ev.Subject, ev.Target,
					ev.Decision, ch.Would, ch.Rule, ch.SQL)
			})
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(evs) == limit {
				fmt.Fprintf(cmd.OutOrStdout(), "the period holds more than %d statement events: the newest %d were replayed (--limit)\n", limit, limit)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d of %d recorded statement events would be decided differently\n", changed, len(evs))
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "policy", "", "policy file to try (default: the configured one)")
	cmd.Flags().IntVar(&limit, "limit", 10000, "at most this many events")
	tf.add(cmd)
	return cmd
}
