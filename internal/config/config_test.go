package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	t.Setenv("PROD_PW", "s3cret")
	c, err := Parse("g.yaml", []byte(`
listen:
  postgres: 127.0.0.1:6000
data_dir: /tmp/gh
targets:
  - name: prod-db
    environment: prod
    labels: {team: payments}
    host: 10.0.0.5
    database: app
    user: gatehouse
    password_env: PROD_PW
    roles: {read: app_ro, write: app_rw}
  - name: dev
    host: localhost
    user: dev
ledger:
  retention: 90d
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.HTTP != "127.0.0.1:8080" {
		t.Errorf("default http listen lost: %q", c.Listen.HTTP)
	}
	p, ok := c.Target("prod-db")
	if !ok || p.Port != 5432 || p.Engine != "postgres" || p.Labels["team"] != "payments" || p.Line != 6 {
		t.Fatalf("target = %+v", p)
	}
	if pw, err := p.Secret(); err != nil || pw != "s3cret" {
		t.Fatalf("secret = %q, %v", pw, err)
	}
	d, _ := c.Target("dev")
	if d.Environment != "dev" || d.Database != "postgres" || d.TLS.Mode != "disable" {
		t.Fatalf("dev defaults = %+v", d)
	}
	if c.Ledger.Durability != DurabilitySensitive {
		t.Errorf("ledger.durability default = %q, want sensitive", c.Ledger.Durability)
	}
	if time.Duration(c.Ledger.Retention) != 90*24*time.Hour {
		t.Fatalf("retention = %v", time.Duration(c.Ledger.Retention))
	}
}

func TestParseErrorsNameFileLineAndField(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"targets:\n  - name: a\n    hots: x\n", "g.yaml:3: targets[0].hots: unknown field; expected one of"},
		{"targets:\n  - name: a\n    host: h\n    user: u\n    port: lots\n", "g.yaml:5: cannot unmarshal"},
		{"targets:\n  - name: a\n    host: h\n    user: u\n  - name: a\n    host: h\n    user: u\n", "g.yaml:5: targets[1].name: \"a\" is already declared at line 2"},
		{"targets:\n  - name: a\n    user: u\n", "g.yaml:2: targets[0].host: is required"},
		{"pool:\n  mode: transaction\n", "g.yaml:1: pool.mode: \"transaction\" is not a pool mode, expected session or off"},
		{"pool:\n  max_idle: 4\n  max_idle_per_key: 5\n", "g.yaml:1: pool.max_idle_per_key: 5 is more than pool.max_idle (4)"},
		{"pool:\n  idle_timeout: 10ms\n", "g.yaml:1: pool.idle_timeout: 10ms is out of range"},
		{"pool:\n  max_lifetime: 30d\n", "g.yaml:1: pool.max_lifetime: 720h0m0s is out of range"},
		{"pool:\n  max_idel: 3\n", "g.yaml:2: pool.max_idel: unknown field; expected one of idle_timeout, max_idle, max_idle_per_key, max_lifetime, mode"},
		{"targets:\n  - name: a\n    host: h\n    user: u\n    tls: {mode: maybe}\n", "targets[0].tls.mode: \"maybe\" is not an upstream TLS mode"},
		{"targets:\n  - name: a\n    host: h\n    user: u\n    roles: {owner: x}\n", "\"owner\" is not an access level"},
		{"listen: {postgres: nope}\n", "listen.postgres: \"nope\" is not host:port"},
		{"ledger: {retention: soon}\n", "g.yaml:1: \"soon\" is not a duration"},
		{"ledger:\n  store: sqlite\n  durability: always\n", "g.yaml:3: ledger.durability: \"always\" is not a durability contract, expected sensitive or every"},
		{"tls: {mode: files}\n", "tls: mode files needs cert_file and key_file"},
		{"targets: [\n", "g.yaml: not valid YAML"},
		{"oidc:\n  - issuer: https://idp\n", "g.yaml:2: oidc[0].audience: is required"},
		{"listen: {mcp: '127.0.0.1:15433'}\nmcp:\n  resource_url: gatehouse.example.com/mcp\n", "g.yaml:2: mcp.resource_url: \"gatehouse.example.com/mcp\" is not an absolute URL"},
		{"listen: {mcp: '127.0.0.1:15433'}\nmcp:\n  resource_url: http://gatehouse.example.com/mcp\n", "mcp.resource_url: \"http://gatehouse.example.com/mcp\" is plain http on a host other than loopback"},
		{"listen: {mcp: '127.0.0.1:15433'}\nmcp:\n  resource_url: https://gatehouse.example.com/mcp?x=1\n", "has a query, fragment or user info"},
		{"listen: {mcp: '127.0.0.1:15433'}\nmcp:\n  resource_url: https://gatehouse.example.com\n", "has no path"},
		{"listen: {mcp: ''}\nmcp:\n  resource_url: https://gatehouse.example.com/mcp\n", "mcp.resource_url: is set but listen.mcp is not"},
		{"listen: {mcp: '127.0.0.1:15433'}\nmcp:\n  token_ttl: 30s\n", "mcp.token_ttl: 30s is out of range"},
		{"oidc:\n  - issuer: https://idp\n    audience: [web]\n    cli_client_id: cli\n", "g.yaml:2: oidc[0].cli_client_id: \"cli\" must also be listed in audience"},
	}
	for _, c := range cases {
		_, err := Parse("g.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got  %v\n want %s", c.yaml, err, c.want)
		}
	}
}

func TestSecretFromFileAndMissingEnv(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(f, []byte("from-file\n"), 0o600)
	tg := Target{Name: "x", PasswordFile: f}
	if s, err := tg.Secret(); err != nil || s != "from-file" {
		t.Fatalf("%q %v", s, err)
	}
	tg = Target{Name: "x", PasswordEnv: "GATEHOUSE_TEST_UNSET_VAR"}
	if _, err := tg.Secret(); err == nil || !strings.Contains(err.Error(), "GATEHOUSE_TEST_UNSET_VAR") {
		t.Fatalf("missing env error = %v", err)
	}
}

// TestMCPResourceURL: a public resource URL behind a reverse proxy is accepted as written;
// the defaults of the MCP section are filled in.
func TestMCPResourceURL(t *testing.T) {
	c, err := Parse("g.yaml", []byte("listen: {mcp: '127.0.0.1:15433'}\nmcp:\n  resource_url: https://db-gateway.example.com/agents/mcp\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MCP.ResourceURL != "https://db-gateway.example.com/agents/mcp" || time.Duration(c.MCP.SessionIdleTimeout) != DefaultMCPSessionIdleTimeout || time.Duration(c.MCP.TokenTTL) != DefaultMCPTokenTTL {
		t.Fatalf("mcp section: %+v", c.MCP)
	}
}

func TestEmptyFileGivesDefaults(t *testing.T) {
	c, err := Parse("empty.yaml", nil)
	if err != nil || c.Listen.Postgres != "127.0.0.1:15432" || c.TLS.Mode != "auto" {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestApprovalsSection(t *testing.T) {
	c, err := Parse("g.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Approvals; len(a.Approvers) != 1 || a.Approvers[0] != "dba" || time.Duration(a.RequestTTL) != 24*time.Hour || time.Duration(a.ValidFor) != time.Hour {
		t.Fatalf("approval defaults = %+v", a)
	}
	c, err = Parse("g.yaml", []byte("approvals:\n  approvers: [dba, security]\n  request_ttl: 2d\n  valid_for: 15m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Approvals; len(a.Approvers) != 2 || a.Approvers[1] != "security" || time.Duration(a.RequestTTL) != 48*time.Hour || time.Duration(a.ValidFor) != 15*time.Minute {
		t.Fatalf("approvals = %+v", a)
	}
	c, err = Parse("g.yaml", []byte("approvals:\n  valid_for: 2s\n"))
	if err != nil || c.Approvals.Approvers[0] != "dba" || time.Duration(c.Approvals.ValidFor) != 2*time.Second {
		t.Fatalf("partial section: %+v %v", c.Approvals, err)
	}
	cases := []struct{ yaml, want string }{
		{"data_dir: /x\napprovals:\n  approvers: []\n", "g.yaml:3: approvals.approvers: is empty"},
		{"approvals:\n  approvers: [dba, \"no spaces\"]\n", "g.yaml:2: approvals.approvers[1]: \"no spaces\" is not a group name"},
		{"approvals:\n  approvers: [dba]\n  request_ttl: 10s\n", "g.yaml:3: approvals.request_ttl: 10s is out of range"},
		{"approvals:\n\n  valid_for: 30d\n", "g.yaml:3: approvals.valid_for: 720h0m0s is out of range"},
		{"approvals:\n  approver: [dba]\n", "g.yaml:2: approvals.approver: unknown field"},
	}
	for _, c := range cases {
		_, err := Parse("g.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got  %v\n want %s", c.yaml, err, c.want)
		}
	}
}

func TestLedgerDurability(t *testing.T) {
	for _, v := range []string{DurabilitySensitive, DurabilityEvery} {
		c, err := Parse("g.yaml", []byte("ledger:\n  durability: "+v+"\n"))
		if err != nil || c.Ledger.Durability != v {
			t.Errorf("durability %s: got %q, %v", v, c.Ledger.Durability, err)
		}
	}
}

func TestLimitsSection(t *testing.T) {
	c, err := Parse("g.yaml", []byte("limits:\n  max_message_size: 1048576\n  message_read_timeout: 10s\n  buffered_messages_total: 67108864\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Limits; l.MaxMessageSize != 1<<20 || time.Duration(l.MessageReadTimeout) != 10*time.Second || l.BufferedMessagesTotal != 64<<20 {
		t.Fatalf("limits = %+v", l)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"limits:\n  max_message_size: 100\n", "limits.max_message_size: 100 is out of range"},
		{"limits:\n  message_read_timeout: 10ms\n", "limits.message_read_timeout: 10ms is out of range"},
		{"limits:\n  buffered_messages_total: 1000\n", "limits.buffered_messages_total: 1000 is less than the largest message"},
		{"limits:\n  max_size: 1\n", "limits.max_size: unknown field"},
	} {
		if _, err := Parse("g.yaml", []byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got  %v\n want %s", tc.yaml, err, tc.want)
		}
	}
}

func TestPoolDefaults(t *testing.T) {
	c, err := Parse("g.yaml", []byte("targets: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Pool{Mode: "session", MaxIdlePerKey: DefaultPoolMaxIdlePerKey, MaxIdle: DefaultPoolMaxIdle,
		IdleTimeout: Duration(DefaultPoolIdleTimeout), MaxLifetime: Duration(DefaultPoolMaxLifetime)}
	if c.Pool != want {
		t.Fatalf("pool defaults %+v, want %+v", c.Pool, want)
	}
	c, err = Parse("g.yaml", []byte("pool:\n  mode: off\n  max_idle_per_key: 100\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Pool.Mode != "off" || c.Pool.MaxIdle != 100 {
		t.Fatalf("pool %+v: want mode off and max_idle raised to max_idle_per_key", c.Pool)
	}
}
