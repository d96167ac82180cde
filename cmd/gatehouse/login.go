package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/oidclogin"
)

func init() { extraCommands = append(extraCommands, newLoginCmd) }

// loginOpts are the flags of `gatehouse login`.
type loginOpts struct {
	issuer, clientID, caFile string
	target, host             string
	credentials, pgpassFile  string
	pgpass, printEnv         bool
	refresh, force           bool
}

// reuseMargin is how long a stored ID token must still be valid to be used as it is.
const reuseMargin = time.Minute

func newLoginCmd(g *globals) *cobra.Command {
	o := &loginOpts{}
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Get an ID token from the identity provider (device login) to use as your database password",
		Long: `login obtains an OIDC ID token for you through the OAuth 2.0 device authorization grant:
it prints a URL and a code to confirm in a browser (any device), waits for your approval and
stores the token (and a refresh token, when the IdP grants one) in
$XDG_CONFIG_HOME/gatehouse/credentials.json, readable only by you. Connect with your email as
user and the token as password: --pgpass writes a ~/.pgpass entry ($PGPASSFILE if set) for the
Gatehouse address, --print-env prints export lines for PGUSER and PGPASSWORD.

A stored token still valid is reused; an expired one is renewed with the refresh token when
there is one; --refresh forces a renewal, --force a new device login.

Without --issuer and --client-id the first oidc entry of the configuration file supplies the
issuer, ca_file and cli_client_id.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLogin(cmd.Context(), g, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.issuer, "issuer", "", "OIDC issuer URL (default: the configuration's first oidc entry)")
	f.StringVar(&o.clientID, "client-id", "", "public OAuth client for the device grant (default: the oidc entry's cli_client_id)")
	f.StringVar(&o.caFile, "ca-file", "", "PEM CA certificate to trust for the issuer (default: the oidc entry's ca_file)")
	f.StringVar(&o.target, "target", "", "Gatehouse target (database name) for the .pgpass entry and the example (default: any)")
	f.StringVar(&o.host, "host", "", "Gatehouse PostgreSQL address host:port (default: listen.postgres of the configuration)")
	f.BoolVar(&o.pgpass, "pgpass", false, "write the token into ~/.pgpass ($PGPASSFILE) for the Gatehouse address and your user")
	f.StringVar(&o.pgpassFile, "pgpass-file", "", "the .pgpass file --pgpass writes (default $PGPASSFILE, else ~/.pgpass)")
	f.BoolVar(&o.printEnv, "print-env", false, "print `export PGUSER=... PGPASSWORD=<token>` lines on standard output (shows the token)")
	f.BoolVar(&o.refresh, "refresh", false, "renew the stored token with its refresh token")
	f.BoolVar(&o.force, "force", false, "run a new device login even if a valid token is stored")
	f.StringVar(&o.credentials, "credentials", "", "credentials file (default $XDG_CONFIG_HOME/gatehouse/credentials.json)")
	return cmd
}

// loginDefaults fills what the flags left out from the configuration's oidc entry for the
// issuer (or the first one) and from listen.postgres.
func loginDefaults(g *globals, o *loginOpts) (subjectClaim string, err error) {
	needCfg := o.issuer == "" || o.clientID == "" || (o.pgpass && o.host == "")
	var cfg *config.Config
	if needCfg || g.configPath != "" || os.Getenv(envConfig) != "" {
		if cfg, err = g.load(); err != nil {
			return "", fmt.Errorf("read configuration for login defaults: %w", err)
		}
	}
	if cfg != nil {
		var entry *config.OIDC
		for i := range cfg.OIDC {
			if o.issuer == "" || strings.TrimSuffix(cfg.OIDC[i].Issuer, "/") == strings.TrimSuffix(o.issuer, "/") {
				entry = &cfg.OIDC[i]
				break
			}
		}
		if entry != nil {
			if o.issuer == "" {
				o.issuer = entry.Issuer
			}
			if o.clientID == "" {
				o.clientID = entry.CLIClientID
			}
			if o.caFile == "" {
				o.caFile = entry.CAFile
			}
			subjectClaim = entry.SubjectClaim
		}
		if o.host == "" {
			o.host = cfg.Listen.Postgres
		}
	}
	if o.issuer == "" {
		return "", errors.New("no issuer: pass --issuer, or configure an oidc entry (--config)")
	}
	if o.clientID == "" {
		return "", errors.New("no client id: pass --client-id, or set cli_client_id in the oidc entry")
	}
	return subjectClaim, nil
}

func runLogin(ctx context.Context, g *globals, o *loginOpts, stdout, stderr io.Writer) error {
	if o.refresh && o.force {
		return errors.New("--refresh and --force exclude each other")
	}
	subjectClaim, err := loginDefaults(g, o)
	if err != nil {
		return err
	}
	var host, port string
	if o.pgpass {
		if host, port, err = net.SplitHostPort(o.host); err != nil {
			return fmt.Errorf("gatehouse address %q: %w (pass --host host:port)", o.host, err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return fmt.Errorf("gatehouse listens on %q, which is not an address to connect to: pass --host host:port", o.host)
		}
	}
	credPath := o.credentials
	if credPath == "" {
		if credPath, err = oidclogin.DefaultCredentialsPath(); err != nil {
			return err
		}
	}
	hc, err := oidclogin.HTTPClient(o.caFile)
	if err != nil {
		return err
	}
	meta, err := oidclogin.Discover(ctx, hc, o.issuer)
	if err != nil {
		return err
	}
	c := &oidclogin.Client{ClientID: o.clientID, Meta: meta, HTTP: hc}
	creds, err := oidclogin.LoadCredentials(credPath)
	if err != nil {
		return err
	}
	stored := oidclogin.FindCredential(creds, meta.Issuer, o.clientID)

	var tok *oidclogin.Tokens
	how, reuse := "", false
	switch {
	case o.refresh:
		if stored == nil || stored.RefreshToken == "" {
			return fmt.Errorf("no refresh token stored for %s: run `gatehouse login` without --refresh", meta.Issuer)
		}
		if tok, err = c.Refresh(ctx, stored.RefreshToken, nil); err != nil {
			return fmt.Errorf("%w; run `gatehouse login --force` to log in again", err)
		}
		how = "renewed with the refresh token"
	case o.force:
	case stored != nil && stored.IDToken != "" && time.Until(expiryOf(stored)) > reuseMargin:
		reuse = true
		fmt.Fprintf(stderr, "Already logged in as %s (token valid until %s); --force logs in again.\n",
			stored.Subject, expiryOf(stored).Local().Format(time.RFC3339))
	case stored != nil && stored.RefreshToken != "":
		if tok, err = c.Refresh(ctx, stored.RefreshToken, nil); err != nil {
			fmt.Fprintf(stderr, "The stored token expired and could not be renewed (%v); starting a new login.\n", err)
			tok = nil
		} else {
			how = "expired token renewed with the refresh token"
		}
	}
	if tok == nil && !reuse {
		if tok, err = deviceLogin(ctx, c, meta, stderr); err != nil {
			return err
		}
		how = "device login"
	}

	cred := stored
	if tok != nil {
		claims, err := oidclogin.Verify(ctx, hc, meta, o.clientID, subjectClaim, tok.IDToken)
		if err != nil {
			return err
		}
		nc := oidclogin.Credential{Issuer: meta.Issuer, ClientID: o.clientID, Subject: claims.Subject,
			IDToken: tok.IDToken, RefreshToken: tok.RefreshToken, Expiry: claims.Expiry, Obtained: time.Now().UTC()}
		if nc.RefreshToken == "" && stored != nil && how != "device login" {
			nc.RefreshToken = stored.RefreshToken // the IdP did not rotate it
		}
		if err := oidclogin.SaveCredential(credPath, nc); err != nil {
			return err
		}
		cred = &nc
		refreshNote := "no refresh token (the IdP did not grant offline_access)"
		if nc.RefreshToken != "" {
			refreshNote = "refresh token stored"
		}
		fmt.Fprintf(stderr, "Logged in as %s (%s; ID token valid until %s; %s).\nCredentials: %s\n",
			nc.Subject, how, nc.Expiry.Local().Format(time.RFC3339), refreshNote, credPath)
	}
	return printConnect(o, cred, host, port, stdout, stderr)
}

// expiryOf is the stored token's expiry, from the token itself when it can be read.
func expiryOf(c *oidclogin.Credential) time.Time {
	if exp, err := oidclogin.UnverifiedExpiry(c.IDToken); err == nil {
		return exp
	}
	return c.Expiry
}

// deviceLogin runs the device authorization grant, telling the user where to go.
func deviceLogin(ctx context.Context, c *oidclogin.Client, meta *oidclogin.Metadata, stderr io.Writer) (*oidclogin.Tokens, error) {
	da, err := c.StartDevice(ctx, meta.Scopes())
	if err != nil {
		return nil, err
	}
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(stderr, "To log in, open this URL in a browser and confirm the code %s:\n  %s\n", da.UserCode, da.VerificationURIComplete)
		fmt.Fprintf(stderr, "or open %s and enter the code %s.\n", da.VerificationURI, da.UserCode)
	} else {
		fmt.Fprintf(stderr, "To log in, open %s in a browser and enter the code %s.\n", da.VerificationURI, da.UserCode)
	}
	fmt.Fprintf(stderr, "Waiting for approval (the code expires in %s)...\n", time.Until(da.Expires).Round(time.Second))
	tok, err := c.PollDevice(ctx, da)
	switch {
	case errors.Is(err, oidclogin.ErrAccessDenied):
		return nil, fmt.Errorf("%w: nothing was stored; run `gatehouse login` again if that was a mistake", err)
	case errors.Is(err, oidclogin.ErrExpired):
		return nil, fmt.Errorf("%w: run `gatehouse login` again and confirm the new code within its lifetime", err)
	case err != nil:
		return nil, err
	}
	return tok, nil
}

// printConnect tells how to connect, writing the .pgpass entry or printing export lines
// when asked; the token itself goes only where the user asked for it.
func printConnect(o *loginOpts, cred *oidclogin.Credential, host, port string, stdout, stderr io.Writer) error {
	db := o.target
	if db == "" {
		db = "TARGET"
	}
	if o.pgpass {
		path := o.pgpassFile
		if path == "" {
			var err error
			if path, err = oidclogin.DefaultPgpassPath(); err != nil {
				return err
			}
		}
		if err := oidclogin.WritePgpass(path, host, port, o.target, cred.Subject, cred.IDToken); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "Wrote the token to %s for %s:%s, user %s.\n", path, host, port, cred.Subject)
		fmt.Fprintf(stderr, "Connect with:\n  psql \"host=%s port=%s dbname=%s user=%s sslmode=verify-full sslrootcert=gatehouse-ca.pem\"\n",
			host, port, db, cred.Subject)
	}
	if o.printEnv {
		fmt.Fprintf(stdout, "export PGUSER=%s\nexport PGPASSWORD=%s\n", shellQuote(cred.Subject), shellQuote(cred.IDToken))
	}
	if !o.pgpass && !o.printEnv {
		fmt.Fprintf(stderr, "Connect as user %s with the stored ID token as password: rerun with --pgpass to write a ~/.pgpass entry, or eval \"$(gatehouse login --print-env)\".\n",
			cred.Subject)
	}
	return nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
