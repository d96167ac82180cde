package compat

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// compatPolicy grants every identity admin (this suite is about the protocol) with one
// trivial rule, so every client also proves the deny path: the statement fails with 42501
// and the session stays usable, also inside pipelines and prepared statements.
const compatPolicy = `version: 1
grants:
  - name: everyone-admin
    kinds: [human, service, agent]
    level: admin
rules:
  - name: compat-forbidden-table
    when: 'statement.tables.exists(t, t == "compat_forbidden" || t.endsWith(".compat_forbidden"))'
    action: deny
    message: compat_forbidden is off limits
masking:
  default: none
`

// startProxy puts a complete Gatehouse between the clients and a throwaway upstream. Every
// client logs in with its own token over verified TLS, exactly as a user would.
func startProxy(t *testing.T) *fixture {
	p := servertest.Start(t, servertest.Options{PolicyYAML: compatPolicy})
	p.Upstream.Exec(t, "app", "CREATE TABLE compat_forbidden (id int); INSERT INTO compat_forbidden VALUES (1); GRANT ALL ON compat_forbidden TO PUBLIC")
	return &fixture{
		name:       "gatehouse",
		proxied:    true,
		upstream:   p.Upstream,
		upstreamDB: "app",
		client: func(t *testing.T, name string) endpoint {
			secret := p.Token(t, name, "service")
			return endpoint{Host: p.Host, Port: p.Port, User: name, Password: secret, DB: p.Target, SSLMode: "verify-full", RootCert: p.CAFile}
		},
	}
}
