package compat

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// startProxy puts a complete Gatehouse (the permissive test policy: this suite is about the
// protocol) between the clients and a throwaway upstream. Every client logs in with its own
// token over verified TLS, exactly as a user would.
func startProxy(t *testing.T) *fixture {
	p := servertest.Start(t, servertest.Options{})
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
