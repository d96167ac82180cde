// Package config reads gatehouse.yaml. Operators edit it by hand, so every mistake is reported
// with the file, line, field and what was expected, and secrets are never required inline.
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration of one Gatehouse instance.
type Config struct {
	// Path is the file the configuration came from; empty for built-in defaults.
	Path string `yaml:"-"`

	Listen  Listen   `yaml:"listen"`
	DataDir string   `yaml:"data_dir"`
	TLS     TLS      `yaml:"tls"`
	OIDC    []OIDC   `yaml:"oidc"`
	Policy  string   `yaml:"policy_file"`
	Targets []Target `yaml:"targets"`
	Ledger  Ledger   `yaml:"ledger"`
	// Approvals configures who may approve statements that policy holds for approval, and
	// how long requests and approvals stay good.
	Approvals Approvals `yaml:"approvals"`
	// Console configures the web console served on listen.http.
	Console Console `yaml:"console"`
	// Limits bound what clients may make Gatehouse hold in memory.
	Limits Limits `yaml:"limits"`
	// AllowInsecurePasswords permits cleartext tokens over non-TLS connections from
	// non-loopback addresses. Off by default; exists only for lab set-ups.
	AllowInsecurePasswords bool `yaml:"allow_insecure_passwords"`
	// Pool configures the reuse of upstream connections across client sessions.
	Pool Pool `yaml:"pool"`
	// MCP configures the MCP door (listen.mcp).
	MCP MCP `yaml:"mcp"`
}

// Console configures the web console.
type Console struct {
	// URL is where people reach the console (e.g. https://gatehouse.internal:8443/console/),
	// for the links in refusal messages and the OIDC redirect. Default: http://<listen.http>/console/.
	URL string `yaml:"url"`
}

// Pool configures how upstream connections are reused across client sessions, the way
// PgBouncer's session mode does: a connection whose session ended cleanly is reset (ROLLBACK,
// DISCARD ALL) and handed to a later session of the same target, database, upstream role and
// startup parameters, saving a login (a SCRAM exchange costs milliseconds of CPU on both
// sides). The settings apply from the next start.
type Pool struct {
	// Mode is "session" (default) or "off" (a new upstream login for every session).
	Mode string `yaml:"mode"`
	// MaxIdlePerKey bounds the idle connections kept for one target, database, role and set
	// of startup parameters (default 8).
	MaxIdlePerKey int `yaml:"max_idle_per_key"`
	// MaxIdle bounds the idle connections kept in total (default 64).
	MaxIdle int `yaml:"max_idle"`
	// IdleTimeout closes a connection left idle this long (default 5m).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxLifetime closes a connection this old when its session ends (default 1h).
	MaxLifetime Duration `yaml:"max_lifetime"`
	// Line locates the section for error messages.
	Line int `yaml:"-"`
}

// Default pool settings.
const (
	DefaultPoolMaxIdlePerKey = 8
	DefaultPoolMaxIdle       = 64
	DefaultPoolIdleTimeout   = 5 * time.Minute
	DefaultPoolMaxLifetime   = time.Hour
)

// Listen holds the addresses Gatehouse listens on.
type Listen struct {
	Postgres string `yaml:"postgres"`
	HTTP     string `yaml:"http"`
	// MCP is the Model Context Protocol door's address (streamable HTTP at /mcp), e.g.
	// 127.0.0.1:15433; empty leaves the door off. Plain HTTP only on loopback, else TLS.
	MCP string `yaml:"mcp"`
	// HTTPS, when set, serves everything listen.http serves (the web console, the APIs,
	// health and metrics) over TLS with Gatehouse's certificate (tls section), for people
	// reaching the console from other machines.
	HTTPS string `yaml:"https"`
}

// TLS configures the client-facing TLS of the doors.
type TLS struct {
	// Mode is "auto" (generate a CA and server certificate in the data directory),
	// "files" (use CertFile and KeyFile) or "off".
	Mode     string `yaml:"mode"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Hosts are extra DNS names or IPs the generated certificate covers.
	Hosts []string `yaml:"hosts"`
}

// OIDC declares one trusted identity provider.
type OIDC struct {
	Issuer   string   `yaml:"issuer"`
	Audience []string `yaml:"audience"`
	// SubjectClaim names the claim used as the identity's subject (default "email", falling
	// back to "sub").
	SubjectClaim string `yaml:"subject_claim"`
	// GroupsClaim names the claim holding group names (default "groups").
	GroupsClaim string `yaml:"groups_claim"`
	// CAFile lets Gatehouse trust a private IdP certificate.
	CAFile string `yaml:"ca_file"`
	// JWKSRefresh is how long the IdP's signing keys are cached before they are fetched
	// again, bounding how long a key the IdP withdrew keeps verifying (1m to 1h). Unset:
	// the JWKS response's Cache-Control max-age within those bounds, else 10m.
	JWKSRefresh Duration `yaml:"jwks_refresh"`
	// CLIClientID is the public client `gatehouse login` uses for the device authorization
	// grant against this issuer; it must also be in Audience, since the ID tokens it obtains
	// are issued for it.
	CLIClientID string `yaml:"cli_client_id"`
	// ConsoleClientID is the public client the web console signs people in with
	// (authorization code + PKCE, redirecting to the console's own /console/callback); it
	// must also be in Audience, since the ID tokens it obtains are issued for it.
	ConsoleClientID string `yaml:"console_client_id"`
	// Line is where this provider was declared, for error messages.
	Line int `yaml:"-"`
}

// Ledger configures where the audit ledger is kept.
type Ledger struct {
	// Store is "sqlite" (default, in the data directory) or "postgres".
	Store string `yaml:"store"`
	// DSN is the PostgreSQL connection string for Store "postgres"; DSNEnv names an
	// environment variable holding it instead.
	DSN    string `yaml:"dsn"`
	DSNEnv string `yaml:"dsn_env"`
	// CheckpointEvery and CheckpointInterval schedule signed checkpoints.
	CheckpointEvery    int      `yaml:"checkpoint_every"`
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// CheckpointFile receives a copy of every checkpoint, outside the store.
	CheckpointFile string `yaml:"checkpoint_file"`
	// Retention drops events older than this; zero keeps everything.
	Retention Duration `yaml:"retention"`
	// Sinks stream events out (JSON lines file/stdout, webhook).
	Sinks []Sink `yaml:"sinks"`
	// Durability names how durable a record is before the statement it records goes on
	// (DurabilitySensitive, the default, or DurabilityEvery), the way PostgreSQL's
	// synchronous_commit does for a commit; internal/ledger documents the contracts.
	Durability string `yaml:"durability"`
	// TrustedKeys pins the checkpoint-signing public key (base64, as `gatehouse audit
	// pubkey --base64` prints it) of each instance sharing the store, by instance name, so
	// `audit verify` checks every chain with its own instance's key, kept where someone who
	// can write the store cannot change it.
	TrustedKeys map[string]string `yaml:"trusted_keys"`
	// durabilityLine is where durability was set, for error messages.
	durabilityLine int
}

// The ledger durability contracts (ledger.durability).
const (
	// DurabilitySensitive fdatasyncs intents, refusals, security and admin events and
	// statements touching sensitive data before they take effect; other records are
	// written to the commit log (surviving a crash of Gatehouse) and synced within 10 ms.
	DurabilitySensitive = "sensitive"
	// DurabilityEvery fdatasyncs every record before its result is released.
	DurabilityEvery = "every"
)

// Sink declares one stream of ledger events leaving Gatehouse.
type Sink struct {
	Type string `yaml:"type"` // "jsonl" or "webhook"
	Path string `yaml:"path"` // jsonl: file path, "-" for stdout
	URL  string `yaml:"url"`  // webhook
}

// Approvals configures the approval workflow. Which statements need an approval is policy
// (require_approval rules); who may give one and for how long is operations, so it lives here.
type Approvals struct {
	// Approvers are the groups whose members may approve or deny requests (default: dba).
	// Nobody may decide their own request, whatever their groups.
	Approvers []string `yaml:"approvers"`
	// RequestTTL is how long a request waits for a decision before it lapses (default 24h).
	RequestTTL Duration `yaml:"request_ttl"`
	// ValidFor is how long after approval the requester may run the statement, once
	// (default 1h).
	ValidFor Duration `yaml:"valid_for"`
	// Notify lists who hears of requests: sent when a request is filed and again when it is
	// decided or lapses, with only the redacted statement and a link to the console.
	Notify []Notifier `yaml:"notify"`
	// Line and the field lines locate the section for error messages.
	Line           int `yaml:"-"`
	approversLine  int
	requestTTLLine int
	validForLine   int
}

// Notifier is one receiver of approval notifications.
type Notifier struct {
	// Type is slack (an incoming webhook; Block Kit message), teams (a Teams workflow
	// webhook; Adaptive Card) or webhook (generic JSON).
	Type string `yaml:"type"`
	// URL is the webhook address; URLEnv names an environment variable holding it instead
	// (chat webhook URLs are credentials: keep them out of the file).
	URL    string `yaml:"url"`
	URLEnv string `yaml:"url_env"`
}

// Default approval settings.
const (
	DefaultApprovalRequestTTL = 24 * time.Hour
	DefaultApprovalValidFor   = time.Hour
)

// DefaultApprovers is the approver group when the configuration names none.
var DefaultApprovers = []string{"dba"}

// Target is one upstream database that clients reach through Gatehouse.
type Target struct {
	Name        string            `yaml:"name"`
	Engine      string            `yaml:"engine"`
	Environment string            `yaml:"environment"`
	Labels      map[string]string `yaml:"labels"`
	Host        string            `yaml:"host"`
	Port        int               `yaml:"port"`
	Database    string            `yaml:"database"`
	User        string            `yaml:"user"`
	// PasswordEnv or PasswordFile give the upstream password; Password inline is accepted
	// but discouraged (and never printed).
	PasswordEnv  string    `yaml:"password_env"`
	PasswordFile string    `yaml:"password_file"`
	Password     string    `yaml:"password"`
	TLS          TargetTLS `yaml:"tls"`
	// Roles maps an access level (read, write, admin) to the upstream database role the
	// session runs as, so every session gets the least privilege that covers its grant.
	Roles map[string]string `yaml:"roles"`
	// Line is where the target was declared, for error messages.
	Line int `yaml:"-"`
}

// TargetTLS is how Gatehouse talks TLS to the upstream database.
type TargetTLS struct {
	Mode   string `yaml:"mode"` // disable, require, verify-full
	CAFile string `yaml:"ca_file"`
}

// Secret resolves the upstream password from where the target says it lives.
func (t *Target) Secret() (string, error) {
	switch {
	case t.PasswordEnv != "":
		v, ok := os.LookupEnv(t.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("target %q: environment variable %s (password_env) is not set", t.Name, t.PasswordEnv)
		}
		return v, nil
	case t.PasswordFile != "":
		b, err := os.ReadFile(t.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("target %q: read password_file: %w", t.Name, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	default:
		return t.Password, nil
	}
}

// Addr is host:port of the upstream.
func (t *Target) Addr() string { return net.JoinHostPort(t.Host, fmt.Sprint(t.Port)) }

// Duration accepts Go durations plus a "d" suffix for days ("30d"), the unit retention is
// usually thought in.
type Duration time.Duration

// UnmarshalYAML parses "90s", "15m", "720h" or "30d".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return &FieldError{Line: n.Line, Field: "", Msg: err.Error()}
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a Go duration or a whole number of days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	if strings.HasSuffix(s, "d") {
		var days int
		if _, err := fmt.Sscanf(s, "%dd", &days); err == nil && fmt.Sprintf("%dd", days) == s {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: expected e.g. 90s, 15m, 720h or 30d", s)
	}
	return v, nil
}

// FieldError is a configuration mistake located in the file.
type FieldError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Defaults returns the configuration used when a field is left out.
func Defaults() Config {
	return Config{
		Listen:  Listen{Postgres: "127.0.0.1:15432", HTTP: "127.0.0.1:8080"},
		DataDir: DefaultDataDir(),
		TLS:     TLS{Mode: "auto"},
		Ledger:  Ledger{Store: "sqlite", Durability: DurabilitySensitive, CheckpointEvery: 1000, CheckpointInterval: Duration(time.Minute)},
		Approvals: Approvals{Approvers: slices.Clone(DefaultApprovers), RequestTTL: Duration(DefaultApprovalRequestTTL),
			ValidFor: Duration(DefaultApprovalValidFor)},
	}
}

// DefaultDataDir is under the user's data home, as the XDG convention says.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "gatehouse")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "gatehouse")
	}
	return "gatehouse-data"
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes and validates configuration text; path is used in error messages.
func Parse(path string, data []byte) (*Config, error) {
	c := Defaults()
	c.Path = path
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, &FieldError{File: path, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(root.Content) > 0 {
		if err := checkKnownFields(path, root.Content[0], reflectFields(c)); err != nil {
			return nil, err
		}
		if err := root.Content[0].Decode(&c); err != nil {
			return nil, locate(path, err)
		}
		recordLines(&c, root.Content[0])
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func locate(path string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		fe.File = path
		return fe
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		// yaml.v3 says "line N: cannot unmarshal ..."; keep its line, add the file.
		msg := te.Errors[0]
		line := 0
		if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
			msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		}
		return &FieldError{File: path, Line: line, Msg: msg}
	}
	return &FieldError{File: path, Msg: err.Error()}
}

// recordLines stores the declaration line of targets and providers for later messages.
func recordLines(c *Config, root *yaml.Node) {
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, val := root.Content[i], root.Content[i+1]
		switch key.Value {
		case "targets":
			for j, item := range val.Content {
				if j < len(c.Targets) {
					c.Targets[j].Line = item.Line
				}
			}
		case "oidc":
			for j, item := range val.Content {
				if j < len(c.OIDC) {
					c.OIDC[j].Line = item.Line
				}
			}
		case "ledger":
			for j := 0; j+1 < len(val.Content); j += 2 {
				if val.Content[j].Value == "durability" {
					c.Ledger.durabilityLine = val.Content[j].Line
				}
			}
		case "pool":
			c.Pool.Line = key.Line
		case "mcp":
			c.MCP.Line = key.Line
		case "approvals":
			a := &c.Approvals
			a.Line = key.Line
			for j := 0; j+1 < len(val.Content); j += 2 {
				switch val.Content[j].Value {
				case "approvers":
					a.approversLine = val.Content[j].Line
				case "request_ttl":
					a.requestTTLLine = val.Content[j].Line
				case "valid_for":
					a.validForLine = val.Content[j].Line
				}
			}
		}
	}
}

// Validate checks the meaning of the configuration, not just its shape.
func (c *Config) Validate() error {
	errf := func(line int, field, format string, a ...any) error {
		return &FieldError{File: c.Path, Line: line, Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	if c.Listen.HTTPS != "" && c.TLS.Mode == "off" {
		return errf(0, "listen.https", "needs a certificate: set tls.mode to auto or files")
	}
	for _, a := range []struct{ name, v string }{{"listen.postgres", c.Listen.Postgres}, {"listen.http", c.Listen.HTTP}, {"listen.mcp", c.Listen.MCP}, {"listen.https", c.Listen.HTTPS}} {
		if a.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return errf(0, a.name, "%q is not host:port, expected e.g. 127.0.0.1:15432", a.v)
		}
	}
	switch c.TLS.Mode {
	case "", "auto", "off":
	case "files":
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			return errf(0, "tls", "mode files needs cert_file and key_file")
		}
	default:
		return errf(0, "tls.mode", "%q is not a TLS mode, expected auto, files or off", c.TLS.Mode)
	}
	for i := range c.OIDC {
		o := &c.OIDC[i]
		if o.Issuer == "" {
			return errf(o.Line, fmt.Sprintf("oidc[%d].issuer", i), "is required: the issuer URL of the identity provider")
		}
		if len(o.Audience) == 0 {
			return errf(o.Line, fmt.Sprintf("oidc[%d].audience", i), "is required: the client id(s) tokens must be issued for")
		}
		if o.CLIClientID != "" && !slices.Contains(o.Audience, o.CLIClientID) {
			return errf(o.Line, fmt.Sprintf("oidc[%d].cli_client_id", i),
				"%q must also be listed in audience: the ID tokens `gatehouse login` obtains are issued for it", o.CLIClientID)
		}
		if o.ConsoleClientID != "" && !slices.Contains(o.Audience, o.ConsoleClientID) {
			return errf(o.Line, fmt.Sprintf("oidc[%d].console_client_id", i),
				"%q must also be listed in audience: the ID tokens the console obtains are issued for it", o.ConsoleClientID)
		}
		if o.GroupsClaim == "" {
			o.GroupsClaim = "groups"
		}
		if o.SubjectClaim == "" {
			o.SubjectClaim = "email"
		}
	}
	seen := map[string]int{}
	for i := range c.Targets {
		t := &c.Targets[i]
		field := func(f string) string { return fmt.Sprintf("targets[%d].%s", i, f) }
		if t.Name == "" {
			return errf(t.Line, field("name"), "is required")
		}
		if strings.ContainsAny(t.Name, "@ /") {
			return errf(t.Line, field("name"), "%q may not contain '@', '/' or spaces", t.Name)
		}
		if prev, dup := seen[t.Name]; dup {
			return errf(t.Line, field("name"), "%q is already declared at line %d", t.Name, prev)
		}
		seen[t.Name] = t.Line
		if t.Engine == "" {
			t.Engine = "postgres"
		}
		if t.Engine != "postgres" && t.Engine != "mysql" {
			return errf(t.Line, field("engine"), "%q is not supported, expected postgres or mysql", t.Engine)
		}
		if t.Environment == "" {
			t.Environment = "dev"
		}
		if t.Host == "" {
			return errf(t.Line, field("host"), "is required: the upstream database host")
		}
		if t.Port == 0 {
			t.Port = 5432
		}
		if t.Port < 1 || t.Port > 65535 {
			return errf(t.Line, field("port"), "%d is not a TCP port", t.Port)
		}
		if t.Database == "" {
			t.Database = "postgres"
		}
		if t.User == "" {
			return errf(t.Line, field("user"), "is required: the upstream login Gatehouse uses")
		}
		if t.PasswordEnv != "" && t.PasswordFile != "" {
			return errf(t.Line, field("password_env"), "give either password_env or password_file, not both")
		}
		switch t.TLS.Mode {
		case "":
			t.TLS.Mode = "disable"
		case "disable", "require", "verify-full":
		default:
			return errf(t.Line, field("tls.mode"), "%q is not an upstream TLS mode, expected disable, require or verify-full", t.TLS.Mode)
		}
		if t.TLS.Mode == "verify-full" && t.TLS.CAFile == "" {
			return errf(t.Line, field("tls.ca_file"), "is required with tls.mode verify-full")
		}
		for level := range t.Roles {
			if level != "read" && level != "write" && level != "admin" {
				return errf(t.Line, field("roles"), "%q is not an access level, expected read, write or admin", level)
			}
		}
	}
	switch c.Ledger.Store {
	case "", "sqlite":
		c.Ledger.Store = "sqlite"
	case "postgres":
		if c.Ledger.DSN == "" && c.Ledger.DSNEnv == "" {
			return errf(0, "ledger.dsn", "store postgres needs dsn or dsn_env")
		}
	default:
		return errf(0, "ledger.store", "%q is not a ledger store, expected sqlite or postgres", c.Ledger.Store)
	}
	switch c.Ledger.Durability {
	case "":
		c.Ledger.Durability = DurabilitySensitive
	case DurabilitySensitive, DurabilityEvery:
	default:
		return errf(c.Ledger.durabilityLine, "ledger.durability", "%q is not a durability contract, expected sensitive or every", c.Ledger.Durability)
	}
	for inst, k := range c.Ledger.TrustedKeys {
		if raw, err := base64.StdEncoding.DecodeString(k); err != nil || len(raw) != 32 {
			return errf(0, "ledger.trusted_keys."+inst, "%q is not an Ed25519 public key in base64 (see `gatehouse audit pubkey --base64` on instance %s)", k, inst)
		}
	}
	if err := c.Approvals.validate(errf); err != nil {
		return err
	}
	if err := c.Limits.validate(errf); err != nil {
		return err
	}
	if err := c.Pool.validate(errf); err != nil {
		return err
	}
	if err := c.MCP.validate(errf, c.Listen.MCP); err != nil {
		return err
	}
	for i, s := range c.Ledger.Sinks {
		switch s.Type {
		case "jsonl":
			if s.Path == "" {
				return errf(0, fmt.Sprintf("ledger.sinks[%d].path", i), "is required for a jsonl sink (\"-\" for stdout)")
			}
		case "webhook":
			if s.URL == "" {
				return errf(0, fmt.Sprintf("ledger.sinks[%d].url", i), "is required for a webhook sink")
			}
		default:
			return errf(0, fmt.Sprintf("ledger.sinks[%d].type", i), "%q is not a sink type, expected jsonl or webhook", s.Type)
		}
	}
	return nil
}

// approverGroupRE is the shape of a group name (as for token groups).
var approverGroupRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$`)

// validate fills in the approval defaults and checks the bounds.
// Limits bound the memory and time one client can make Gatehouse spend on a message. Zero
// values take the defaults.
type Limits struct {
	// MaxMessageSize is the largest protocol message a client may send, in bytes (default
	// 64 MiB, at least 64 KiB).
	MaxMessageSize int `yaml:"max_message_size"`
	// MessageReadTimeout bounds how long a message that has started arriving may take to
	// arrive whole (default 30s).
	MessageReadTimeout Duration `yaml:"message_read_timeout"`
	// BufferedMessagesTotal bounds the bytes all client connections together may hold in
	// large messages at once (default 256 MiB, at least max_message_size).
	BufferedMessagesTotal int64 `yaml:"buffered_messages_total"`
}

func (l *Limits) validate(errf func(line int, field, format string, args ...any) error) error {
	if l.MaxMessageSize != 0 && (l.MaxMessageSize < 64<<10 || l.MaxMessageSize > 1<<30) {
		return errf(0, "limits.max_message_size", "%d is out of range: expected bytes between 65536 (64 KiB) and 1073741824 (1 GiB)", l.MaxMessageSize)
	}
	if d := time.Duration(l.MessageReadTimeout); d != 0 && (d < time.Second || d > time.Hour) {
		return errf(0, "limits.message_read_timeout", "%s is out of range: expected between 1s and 1h", d)
	}
	if l.BufferedMessagesTotal != 0 {
		least := int64(l.MaxMessageSize)
		if least == 0 {
			least = 64 << 20
		}
		if l.BufferedMessagesTotal < least {
			return errf(0, "limits.buffered_messages_total", "%d is less than the largest message (%d bytes): one such message could never be taken", l.BufferedMessagesTotal, least)
		}
	}
	return nil
}

func (a *Approvals) validate(errf func(line int, field, format string, args ...any) error) error {
	line := func(l int) int {
		if l == 0 {
			return a.Line
		}
		return l
	}
	switch {
	case a.Approvers == nil:
		a.Approvers = slices.Clone(DefaultApprovers)
	case len(a.Approvers) == 0:
		return errf(line(a.approversLine), "approvals.approvers", "is empty: name at least one group whose members may approve (default dba)")
	}
	for i, g := range a.Approvers {
		if !approverGroupRE.MatchString(g) {
			return errf(line(a.approversLine), fmt.Sprintf("approvals.approvers[%d]", i), "%q is not a group name: use 1-128 letters, digits or . _ : @ / - starting with a letter or digit", g)
		}
	}
	if a.RequestTTL == 0 {
		a.RequestTTL = Duration(DefaultApprovalRequestTTL)
	}
	if d := time.Duration(a.RequestTTL); d < time.Minute || d > 30*24*time.Hour {
		return errf(line(a.requestTTLLine), "approvals.request_ttl", "%s is out of range: a request must wait between 1m and 30d for a decision", d)
	}
	if a.ValidFor == 0 {
		a.ValidFor = Duration(DefaultApprovalValidFor)
	}
	if d := time.Duration(a.ValidFor); d < time.Second || d > 7*24*time.Hour {
		return errf(line(a.validForLine), "approvals.valid_for", "%s is out of range: an approval must stay usable between 1s and 7d", d)
	}
	for i, n := range a.Notify {
		field := fmt.Sprintf("approvals.notify[%d]", i)
		switch n.Type {
		case "slack", "teams", "webhook":
		default:
			return errf(a.Line, field+".type", "%q is not a notifier type, expected slack, teams or webhook", n.Type)
		}
		if (n.URL == "") == (n.URLEnv == "") {
			return errf(a.Line, field, "needs exactly one of url or url_env")
		}
		if n.URL != "" {
			u, err := url.Parse(n.URL)
			if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
				return errf(a.Line, field+".url", "%q is not an https URL (plain http only to loopback)", n.URL)
			}
		}
	}
	return nil
}

// isLoopbackHost reports whether host names this machine.
func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// validate fills in the pool defaults and checks the bounds.
func (p *Pool) validate(errf func(line int, field, format string, args ...any) error) error {
	switch p.Mode {
	case "":
		p.Mode = "session"
	case "session", "off":
	default:
		return errf(p.Line, "pool.mode", "%q is not a pool mode, expected session or off", p.Mode)
	}
	if p.MaxIdlePerKey == 0 {
		p.MaxIdlePerKey = DefaultPoolMaxIdlePerKey
	}
	if p.MaxIdle == 0 {
		p.MaxIdle = max(DefaultPoolMaxIdle, p.MaxIdlePerKey)
	}
	if p.MaxIdlePerKey < 0 || p.MaxIdlePerKey > 10000 {
		return errf(p.Line, "pool.max_idle_per_key", "%d is out of range: keep between 1 and 10000 idle connections per key", p.MaxIdlePerKey)
	}
	if p.MaxIdle < 0 || p.MaxIdle > 100000 {
		return errf(p.Line, "pool.max_idle", "%d is out of range: keep between 1 and 100000 idle connections", p.MaxIdle)
	}
	if p.MaxIdlePerKey > p.MaxIdle {
		return errf(p.Line, "pool.max_idle_per_key", "%d is more than pool.max_idle (%d): one key can never keep more than the whole pool", p.MaxIdlePerKey, p.MaxIdle)
	}
	if p.IdleTimeout == 0 {
		p.IdleTimeout = Duration(DefaultPoolIdleTimeout)
	}
	if d := time.Duration(p.IdleTimeout); d < time.Second || d > 24*time.Hour {
		return errf(p.Line, "pool.idle_timeout", "%s is out of range: an idle connection may stay between 1s and 24h", d)
	}
	if p.MaxLifetime == 0 {
		p.MaxLifetime = Duration(DefaultPoolMaxLifetime)
	}
	if d := time.Duration(p.MaxLifetime); d < time.Second || d > 7*24*time.Hour {
		return errf(p.Line, "pool.max_lifetime", "%s is out of range: a connection may live between 1s and 7d", d)
	}
	return nil
}

// Target finds a target by name.
func (c *Config) Target(name string) (*Target, bool) {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i], true
		}
	}
	return nil, false
}
