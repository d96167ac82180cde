package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/server"
)

func init() { extraCommands = append(extraCommands, newApprovalsCmd) }

func newApprovalsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List approval requests and approve or deny them",
		Long: "Statements that policy holds for approval (require_approval rules) are refused with the id of an\n" +
			"approval request. Someone else in an approver group approves or denies it; the requester then runs\n" +
			"the very same statement again, and it runs once.\n\n" +
			"list and show read the state store the server uses (the data directory, or the shared\n" +
			"PostgreSQL store with ledger.store postgres). approve and deny go through the server's HTTP API\n" +
			"(listen.http) with the approver's own credential (--token or $GATEHOUSE_TOKEN: a Gatehouse token or\n" +
			"an OIDC token), because who approves is decided by that identity and its groups.",
	}
	cmd.AddCommand(newApprovalsList(g), newApprovalsShow(g), newApprovalsDecide(g, "approve"), newApprovalsDecide(g, "deny"))
	return cmd
}

// openApprovals opens the approval requests in the server's state store for reading.
func (g *globals) openApprovals(ctx context.Context) (*approval.Store, func(), error) {
	cfg, err := g.load()
	if err != nil {
		return nil, nil, err
	}
	if err := needExisting(cfg, stateFile); err != nil {
		return nil, nil, err
	}
	db, err := server.OpenStateStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	s, err := approval.Open(ctx, db, approval.Options{Log: g.logger()})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return s, func() { db.Close() }, nil
}

func newApprovalsList(g *globals) *cobra.Command {
	var (
		status string
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List approval requests, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, done, err := g.openApprovals(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			list, err := s.List(cmd.Context(), approval.Filter{Status: approval.Status(status), Limit: limit})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				for _, r := range list {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
				return nil
			}
			if cfg, err := g.load(); err == nil {
				// Say where the answer comes from: an empty list from the wrong store
				// must not read as "nothing pending".
				fmt.Fprintf(cmd.ErrOrStderr(), "%d request(s) in %s\n", len(list), storeName(cfg, stateFile))
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSTATUS\tREQUESTER\tTARGET\tRULE\tCREATED\tSTATEMENT")
			for _, r := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, r.Requester, r.Target, r.Rule,
					r.CreatedAt.Local().Format("2006-01-02 15:04"), oneLine(r.Statement, 60))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only requests in this status: pending, approved, denied, expired or used")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many requests")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines instead of a table")
	return cmd
}

func newApprovalsShow(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one approval request in full",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, done, err := g.openApprovals(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			r, err := s.Get(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			printRequest(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printRequest(out io.Writer, r approval.Request) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s:\t%s\n", k, v)
		}
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format(time.RFC3339)
	}
	row("id", r.ID)
	row("status", string(r.Status))
	row("requester", r.Requester+" ("+r.RequesterKind+")")
	row("target", strings.TrimSuffix(r.Target+" ("+r.Environment+")", " ()"))
	row("database", r.Database)
	row("statement", r.Statement)
	row("rule", r.Rule)
	row("message", r.Message)
	row("reason", r.Reason)
	row("created", ts(r.CreatedAt))
	row("expires", ts(r.ExpiresAt))
	if r.DecidedBy != "" {
		row("decided by", r.DecidedBy+" ("+r.DecidedKind+") at "+ts(r.DecidedAt))
	}
	row("comment", r.Comment)
	row("valid until", ts(r.ValidUntil))
	if !r.UsedAt.IsZero() {
		row("used", ts(r.UsedAt)+" by session "+r.UsedSession)
	}
	w.Flush()
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

func newApprovalsDecide(g *globals, verb string) *cobra.Command {
	var comment, token, serverURL string
	short := "Approve a request: the requester may then run the statement once"
	if verb == "deny" {
		short = "Deny a request: running the statement again is refused, saying so"
	}
	cmd := &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, ok := approval.NormalizeID(args[0])
			if !ok {
				return fmt.Errorf("%q is not an approval request id (apr_ and 10 letters or digits)", args[0])
			}
			if token == "" {
				token = os.Getenv("GATEHOUSE_TOKEN")
			}
			if token == "" {
				return errors.New("give your own credential with --token or $GATEHOUSE_TOKEN (a Gatehouse token or an OIDC token): the approver is whoever it names")
			}
			if serverURL == "" {
				cfg, err := g.load()
				if err != nil {
					return err
				}
				serverURL = httpURL(cfg.Listen.HTTP)
			}
			r, err := decideRemote(cmd.Context(), serverURL, id, verb, token, comment)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch r.Status {
			case approval.Approved:
				fmt.Fprintf(out, "approved %s: %s may now run this statement once on %s, until %s:\n  %s\n",
					r.ID, r.Requester, r.Target, r.ValidUntil.Local().Format(time.RFC3339), r.Statement)
			default:
				fmt.Fprintf(out, "denied %s: %s's statement on %s will be refused:\n  %s\n", r.ID, r.Requester, r.Target, r.Statement)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "why, shown to the requester and kept in the ledger")
	cmd.Flags().StringVar(&token, "token", "", "your Gatehouse or OIDC token (default $GATEHOUSE_TOKEN)")
	cmd.Flags().StringVar(&serverURL, "server", "", "the Gatehouse HTTP API, e.g. http://127.0.0.1:8080 (default: from listen.http)")
	return cmd
}

// httpURL turns a listen address into the URL a local client reaches it at.
func httpURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// decideRemote asks the server to approve or deny id with the approver's credential.
func decideRemote(ctx context.Context, base, id, verb, token, comment string) (approval.Request, error) {
	body, _ := json.Marshal(map[string]string{"comment": comment})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := strings.TrimRight(base, "/") + "/api/v1/approvals/" + id + "/" + verb
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return approval.Request{}, fmt.Errorf("%s %s: %w", verb, id, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return approval.Request{}, fmt.Errorf("%s %s: reach the Gatehouse API at %s: %w", verb, id, base, err)
	}
	defer resp.Body.Close()
	var out struct {
		Approval approval.Request `json:"approval"`
		Error    string           `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return approval.Request{}, fmt.Errorf("%s %s: unexpected answer from %s (HTTP %d): %w", verb, id, base, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return approval.Request{}, fmt.Errorf("%s %s: %s (HTTP %d)", verb, id, out.Error, resp.StatusCode)
	}
	return out.Approval, nil
}
