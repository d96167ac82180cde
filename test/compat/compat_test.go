package compat

import (
	"os"
	"testing"
)

// The contract every client program follows. Each prints key=value lines; these are the
// values a correct relay must produce, whatever the client.
const (
	// wantSimple is SELECT 1+1, 'héllo': arithmetic and a non-ASCII string.
	wantSimple = "2 héllo"
	// wantRows is the count and client-side sum of 20,000 streamed rows (1..20000).
	wantRows = "20000 200010000"
	// wantParams is $1::int + 1 and $2 || '!' with 41 and "hi".
	wantParams = "42 hi!"
	// wantCopyOut is the three rows copied in, copied back out.
	wantCopyOut = "1,c1|2,c2|3,c3"
	// wantTable is what the upstream must hold afterwards: the three copied rows and the
	// committed row, never the rolled-back row 11.
	wantTable = "1:c1,2:c2,3:c3,10:kept"
	// wantTableNoCopy is wantTable for clients without COPY support.
	wantTableNoCopy = "10:kept"
)

// fixtureFor picks what the clients talk to. GATEHOUSE_COMPAT_TARGET=direct runs the suite
// against a bare cluster, to tell a client-program bug from a proxy bug.
func fixtureFor(t *testing.T) *fixture {
	if os.Getenv("GATEHOUSE_COMPAT_TARGET") == "direct" {
		return startDirect(t)
	}
	return startProxy(t)
}

// TestClients runs every real client against one shared proxy (and upstream cluster), each
// client in its own subtest, own identity and own table, in parallel.
func TestClients(t *testing.T) {
	f := fixtureFor(t)
	t.Logf("clients connect to %s", f.name)
	clients := []struct {
		name string
		run  func(*testing.T, *fixture)
	}{
		{"psql", testPsql},
		{"pgx", testPgx},
		{"libpq-go", testLibPQ},
		{"psycopg2", testPsycopg2},
		{"psycopg3", testPsycopg3},
		{"pgjdbc", testJDBC},
		{"node-postgres", testNode},
		{"pgbench", testPgbench},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, f)
		})
	}
}
