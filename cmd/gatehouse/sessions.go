package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/live"
)

func init() { extraCommands = append(extraCommands, newSessionsCmd) }

// sessionsFlags are what both sessions subcommands need to reach the API as someone.
type sessionsFlags struct{ token, server string }

func (f *sessionsFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.token, "token", "", "your Gatehouse or OIDC token (default $GATEHOUSE_TOKEN)")
	cmd.Flags().StringVar(&f.server, "server", "", "the Gatehouse HTTP API, e.g. http://127.0.0.1:8080 (default: from listen.http)")
}

// resolve fills in the defaults: $GATEHOUSE_TOKEN and the configuration's listen.http.
func (f *sessionsFlags) resolve(g *globals) error {
	if f.token == "" {
		f.token = os.Getenv("GATEHOUSE_TOKEN")
	}
	if f.token == "" {
		return errors.New("give your own credential with --token or $GATEHOUSE_TOKEN (a Gatehouse token or an OIDC token)")
	}
	if f.server == "" {
		cfg, err := g.load()
		if err != nil {
			return err
		}
		f.server = httpURL(cfg.Listen.HTTP)
	}
	return nil
}

func newSessionsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List live sessions and end one",
		Long: "Who is connected right now, through the server's HTTP API (listen.http), as in the console.\n" +
			"Approvers and the groups auditors, compliance and security see every session; everyone else\n" +
			"sees their own. Approvers and group security may end a session: its client gets FATAL 57P01\n" +
			"naming who ended it, and the ledger records a session.kill event.",
	}
	cmd.AddCommand(newSessionsList(g), newSessionsKill(g))
	return cmd
}

func newSessionsList(g *globals) *cobra.Command {
	var (
		f      sessionsFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the live sessions you may see",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.resolve(g); err != nil {
				return err
			}
			var out struct {
				Results []live.Session `json:"results"`
			}
			if err := callAPI(cmd.Context(), http.MethodGet, f.server, "/api/v1/sessions", f.token, &out); err != nil {
				return fmt.Errorf("list sessions: %w", err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out.Results)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			// Instances sharing a store list each other's sessions: then say which has which.
			shared := slices.ContainsFunc(out.Results, func(s live.Session) bool { return s.Instance != "" })
			if shared {
				fmt.Fprint(tw, "INSTANCE\t")
			}
			fmt.Fprintln(tw, "ID\tWHO\tKIND\tTARGET\tENV\tCLIENT\tAPPLICATION\tSINCE\tSTATEMENTS\tROWS")
			for _, s := range out.Results {
				if shared {
					fmt.Fprintf(tw, "%s\t", s.Instance)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", s.ID, s.Subject, s.Kind, s.Target, s.Environment,
					s.ClientAddr, s.Application, s.Since.Local().Format(time.RFC3339), s.Statements, s.Rows)
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSessionsKill(g *globals) *cobra.Command {
	var f sessionsFlags
	cmd := &cobra.Command{
		Use:   "kill ID",
		Short: "End a live session (approvers and group security)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.resolve(g); err != nil {
				return err
			}
			var out struct {
				Session live.Session `json:"session"`
			}
			if err := callAPI(cmd.Context(), http.MethodPost, f.server, "/api/v1/sessions/"+args[0]+"/kill", f.token, &out); err != nil {
				return fmt.Errorf("kill session %s: %w", args[0], err)
			}
			s := out.Session
			where := ""
			if s.Instance != "" {
				where = " through instance " + s.Instance
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ended session %s of %s on %s (from %s)%s\n", s.ID, s.Subject, s.Target, s.ClientAddr, where)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// callAPI calls the server's JSON API with a bearer credential and decodes a 200 answer.
func callAPI(ctx context.Context, method, base, path, token string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach the Gatehouse API at %s: %w", base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("unexpected answer from %s (HTTP %d): %w", base, resp.StatusCode, err)
	}
	return nil
}
