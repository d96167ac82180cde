package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/oidclogin"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit/idp"
)

// syncBuffer is written by the command's goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// loginRun is `gatehouse login` running in process.
type loginRun struct {
	stdout, stderr syncBuffer
	done           chan error
}

func startLogin(t *testing.T, args ...string) *loginRun {
	t.Helper()
	r := &loginRun{done: make(chan error, 1)}
	root := newRoot()
	root.SetOut(&r.stdout)
	root.SetErr(&r.stderr)
	root.SetArgs(append([]string{"login"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	go func() {
		defer cancel()
		r.done <- root.ExecuteContext(ctx)
	}()
	return r
}

var userCodeRE = regexp.MustCompile(`enter the code ([A-Z]{4}-[A-Z]{4})\.`)

// userCode waits for the command to print the user code, and checks the verification URI
// with the code filled in was printed as well.
func (r *loginRun) userCode(t *testing.T, p *idp.Provider) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := userCodeRE.FindStringSubmatch(r.stderr.String()); m != nil {
			if !strings.Contains(r.stderr.String(), p.Issuer+"/device?user_code="+m[1]) {
				t.Fatalf("no verification_uri_complete in:\n%s", r.stderr.String())
			}
			return m[1]
		}
		select {
		case err := <-r.done:
			t.Fatalf("login ended before printing a code: %v\n%s", err, r.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("no user code printed:\n%s", r.stderr.String())
	return ""
}

func (r *loginRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("login did not end")
		return nil
	}
}

// login runs `gatehouse login` to its end without any device approval.
func login(t *testing.T, args ...string) (*loginRun, error) {
	t.Helper()
	r := startLogin(t, args...)
	return r, r.wait(t)
}

// psqlQuery runs one query with the real psql through Gatehouse, with only the given PG*
// variables set (so a password can come only from them or the .pgpass file).
func psqlQuery(t *testing.T, gh *servertest.Proxy, host, user string, env ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := "host=" + host + " port=" + strconv.Itoa(gh.Port) + " dbname=main user=" + user +
		" sslmode=verify-full sslrootcert=" + gh.CAFile + " connect_timeout=10"
	cmd := exec.CommandContext(ctx, "psql", dsn, "-X", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1",
		"-c", "SELECT 'answer:' || (6 * 7)")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGPASSFILE="+filepath.Join(t.TempDir(), "none"))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestLoginDeviceFlowThroughGatehouse: `gatehouse login` against the real IdP, the user
// approves the code, the .pgpass entry it writes lets psql log in through Gatehouse as the
// user; then reuse, --refresh, the automatic refresh of an expiring token and --print-env;
// a denied and an expired code end with clear messages and change nothing.
func TestLoginDeviceFlowThroughGatehouse(t *testing.T) {
	prov := idp.Start(t)
	gh := servertest.Start(t, servertest.Options{Configure: func(cfg *config.Config) {
		cfg.OIDC = []config.OIDC{{Issuer: prov.Issuer, Audience: []string{idp.CLIClientID}, CAFile: prov.CAFile,
			CLIClientID: idp.CLIClientID}}
	}})
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("HOME", home)
	t.Setenv("PGPASSFILE", "")
	credPath := filepath.Join(home, "config", "gatehouse", "credentials.json")
	pgpass := filepath.Join(home, ".pgpass")
	const user = "alice@corp.example"
	addr := "localhost:" + strconv.Itoa(gh.Port)
	flags := []string{"--issuer", prov.Issuer, "--client-id", idp.CLIClientID, "--ca-file", prov.CAFile}

	// Without a login, psql has no password.
	if out, err := psqlQuery(t, gh, "localhost", user, "PGPASSFILE="+pgpass); err == nil {
		t.Fatalf("psql without a login succeeded: %s", out)
	}

	r := startLogin(t, append(flags, "--pgpass", "--host", addr, "--target", "main")...)
	prov.ApproveDevice(t, r.userCode(t, prov), user, "dba")
	if err := r.wait(t); err != nil {
		t.Fatalf("login: %v\n%s", err, r.stderr.String())
	}
	creds, err := oidclogin.LoadCredentials(credPath)
	if err != nil || len(creds) != 1 || creds[0].Subject != user || creds[0].RefreshToken == "" {
		t.Fatalf("stored credentials %v: %v", len(creds), err)
	}
	token := creds[0].IDToken
	for _, f := range []string{credPath, pgpass} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	out := r.stdout.String() + r.stderr.String()
	if strings.Contains(out, token) || strings.Contains(out, creds[0].RefreshToken) {
		t.Fatalf("the token was printed without --print-env:\n%s", out)
	}
	if !strings.Contains(out, "Logged in as "+user+" (device login") || !strings.Contains(out, "user="+user) {
		t.Fatalf("output:\n%s", out)
	}
	b, _ := os.ReadFile(pgpass)
	if string(b) != "localhost:"+strconv.Itoa(gh.Port)+":main:"+user+":"+token+"\n" {
		t.Fatalf("pgpass: %q", b)
	}
	if out, err := psqlQuery(t, gh, "localhost", user, "PGPASSFILE="+pgpass); err != nil || strings.TrimSpace(out) != "answer:42" {
		t.Fatalf("psql with the written .pgpass: %v\n%s", err, out)
	}

	// A valid stored token is reused: no device code, no new token.
	polls, refreshes := len(prov.DevicePolls()), prov.Refreshes()
	r, err = login(t, flags...)
	if err != nil || !strings.Contains(r.stderr.String(), "Already logged in as "+user) || len(prov.DevicePolls()) != polls || prov.Refreshes() != refreshes {
		t.Fatalf("second login: %v\n%s", err, r.stderr.String())
	}

	// --refresh renews through the refresh_token grant and rewrites the .pgpass entry.
	r, err = login(t, append(flags, "--refresh", "--pgpass", "--host", addr, "--target", "main")...)
	if err != nil || !strings.Contains(r.stderr.String(), "renewed with the refresh token") || prov.Refreshes() != refreshes+1 {
		t.Fatalf("--refresh: %v\n%s", err, r.stderr.String())
	}
	creds, _ = oidclogin.LoadCredentials(credPath)
	if creds[0].IDToken == token {
		t.Fatal("--refresh stored the same token")
	}
	token = creds[0].IDToken
	if b, _ := os.ReadFile(pgpass); !strings.HasSuffix(string(b), ":"+token+"\n") || strings.Count(string(b), "\n") != 1 {
		t.Fatalf("pgpass after refresh: %q", b)
	}
	if out, err := psqlQuery(t, gh, "localhost", user, "PGPASSFILE="+pgpass); err != nil || strings.TrimSpace(out) != "answer:42" {
		t.Fatalf("psql after --refresh: %v\n%s", err, out)
	}

	// An ID token about to expire is renewed automatically by a plain login.
	prov.SetCLIIDTokenTTL(30 * time.Second)
	if _, err := login(t, append(flags, "--refresh")...); err != nil {
		t.Fatal(err)
	}
	prov.SetCLIIDTokenTTL(time.Hour)
	r, err = login(t, append(flags, "--print-env")...)
	if err != nil || !strings.Contains(r.stderr.String(), "expired token renewed with the refresh token") || prov.Refreshes() != refreshes+3 ||
		len(prov.DevicePolls()) != polls {
		t.Fatalf("automatic refresh: %v\n%s", err, r.stderr.String())
	}
	creds, _ = oidclogin.LoadCredentials(credPath)
	if time.Until(creds[0].Expiry) < 50*time.Minute {
		t.Fatalf("renewed token expires at %v", creds[0].Expiry)
	}
	env := r.stdout.String()
	if env != "export PGUSER='"+user+"'\nexport PGPASSWORD='"+creds[0].IDToken+"'\n" {
		t.Fatalf("--print-env: %q", env)
	}
	if out, err := psqlQuery(t, gh, "localhost", user, "PGPASSWORD="+creds[0].IDToken); err != nil || strings.TrimSpace(out) != "answer:42" {
		t.Fatalf("psql with PGPASSWORD from --print-env: %v\n%s", err, out)
	}

	// Denied and expired codes: a clear message, the stored login is untouched.
	before, _ := os.ReadFile(credPath)
	r = startLogin(t, append(flags, "--force")...)
	prov.DenyDevice(t, r.userCode(t, prov), user)
	if err := r.wait(t); err == nil || !strings.Contains(err.Error(), "denied") || !strings.Contains(err.Error(), "nothing was stored") {
		t.Fatalf("denied: %v", err)
	}
	r = startLogin(t, append(flags, "--force")...)
	prov.ExpireDevice(t, r.userCode(t, prov))
	if err := r.wait(t); err == nil || !strings.Contains(err.Error(), "expired before it was approved") {
		t.Fatalf("expired: %v", err)
	}
	if after, _ := os.ReadFile(credPath); !bytes.Equal(before, after) {
		t.Fatal("a failed login changed the stored credentials")
	}
}

// The configuration's first oidc entry (cli_client_id, ca_file) and listen.postgres are the
// defaults; an address Gatehouse listens on but one cannot connect to is refused for --pgpass.
func TestLoginDefaultsFromConfig(t *testing.T) {
	prov := idp.Start(t)
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	write := func(listen string) {
		yaml := "listen:\n  postgres: " + listen + "\noidc:\n  - issuer: " + prov.Issuer + "\n    audience: [" + idp.CLIClientID +
			"]\n    ca_file: " + prov.CAFile + "\n    cli_client_id: " + idp.CLIClientID + "\n"
		if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("0.0.0.0:15432")
	pgpass := filepath.Join(dir, "pgpass")
	if _, err := login(t, "--config", cfgPath, "--pgpass", "--pgpass-file", pgpass); err == nil || !strings.Contains(err.Error(), "--host") {
		t.Fatalf("unspecified listen address: %v", err)
	}
	write("127.0.0.1:15432")
	r := startLogin(t, "--config", cfgPath, "--pgpass", "--pgpass-file", pgpass)
	prov.ApproveDevice(t, r.userCode(t, prov), "bob@corp.example")
	if err := r.wait(t); err != nil {
		t.Fatalf("login: %v\n%s", err, r.stderr.String())
	}
	if b, _ := os.ReadFile(pgpass); !strings.HasPrefix(string(b), "127.0.0.1:15432:*:bob@corp.example:ey") {
		t.Fatalf("pgpass: %q", b)
	}
	if _, err := login(t, "--issuer", prov.Issuer); err == nil || !strings.Contains(err.Error(), "client id") {
		t.Fatalf("no client id: %v", err)
	}
}
