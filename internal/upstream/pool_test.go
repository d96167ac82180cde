package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

func TestKeySeparatesRolesAndParameters(t *testing.T) {
	tg := &config.Target{Name: "t", Host: "127.0.0.1", Port: 5432, User: "u", Database: "app"}
	key := func(db string, params map[string]string) string {
		k, err := Key(Request{Target: tg, Database: db, Params: params})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key("", map[string]string{"role": "app_ro", "application_name": "psql"})
	if key("app", map[string]string{"application_name": "psql", "role": "app_ro"}) != base {
		t.Error("the same request spelled differently gets another key")
	}
	for name, other := range map[string]string{
		"another role":             key("", map[string]string{"role": "app_rw", "application_name": "psql"}),
		"no role":                  key("", map[string]string{"application_name": "psql"}),
		"another application_name": key("", map[string]string{"role": "app_ro", "application_name": "pgx"}),
		"another database":         key("other", map[string]string{"role": "app_ro", "application_name": "psql"}),
		// A value that looks like a second parameter must not collide with two parameters.
		"quoted value": key("", map[string]string{"role": `app_ro" "application_name"="psql`}),
	} {
		if other == base {
			t.Errorf("%s shares the key of role app_ro", name)
		}
	}
}

// TestPoolBounds: the pool keeps at most MaxIdlePerKey per key and MaxIdle in total, closing
// the connections idle longest; idle connections age out; a connection returned inside a
// transaction block or after Close is closed. Every connection it lets go ends upstream.
func TestPoolBounds(t *testing.T) {
	pg := testkit.StartPostgres(t)
	tg := &config.Target{Name: "t", Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password, Database: "postgres", TLS: config.TargetTLS{Mode: "disable"}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	backends := func() int {
		var n int
		if err := admin.QueryRow(ctx, "select count(*) from pg_stat_activity where application_name like 'pool-%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitBackends := func(want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for backends() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d pooled backends upstream, want %d", backends(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	p := &Pool{MaxIdlePerKey: 2, MaxIdle: 3, IdleTimeout: time.Second}
	req := func(app string) Request {
		return Request{Target: tg, Params: map[string]string{"application_name": "pool-" + app}}
	}
	getN := func(app string, n int) []*Conn {
		var cs []*Conn
		for range n {
			c, err := p.Get(ctx, req(app))
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	for i, c := range getN("a", 3) {
		if err := p.Put(ctx, c, 'I'); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if s := p.Stats(); s.Idle != 2 || s.Opened != 3 || s.Kept != 3 || s.Discards != 1 {
		t.Fatalf("after three of one key: %+v, want 2 idle (max per key) and 1 discarded", s)
	}
	waitBackends(2)
	for _, c := range getN("b", 2) {
		if err := p.Put(ctx, c, 'I'); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.Stats(); s.Idle != 3 || s.Discards != 2 {
		t.Fatalf("after two of another key: %+v, want 3 idle (max in total)", s)
	}
	waitBackends(3)

	// Reuse hands out the newest of the key; inside a transaction it is not kept.
	c := getN("b", 1)[0]
	if !c.Reused {
		t.Fatal("an idle connection of the key was not reused")
	}
	if _, err := c.Write(appendQuery(nil, "BEGIN")); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(ctx, c, 'T'); err == nil {
		t.Fatal("a connection inside a transaction block was kept")
	}
	waitBackends(2)

	// Idle connections age out.
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); p.Run(rctx) }()
	waitBackends(0)
	if s := p.Stats(); s.Idle != 0 {
		t.Fatalf("idle after the timeout: %+v", s)
	}
	stop()
	<-done

	// After Close nothing is kept.
	c = getN("c", 1)[0]
	if err := p.Put(ctx, c, 'I'); err == nil {
		t.Fatal("a closed pool kept a connection")
	}
	waitBackends(0)
}

// TestPoolReusesTLSConnection: a connection to a TLS upstream is reset and reused through its
// TLS layer (the liveness check peeks at the socket beneath it).
func TestPoolReusesTLSConnection(t *testing.T) {
	pg := testkit.StartPostgresWith(t, testkit.PostgresOptions{TLS: true})
	tg := &config.Target{Name: "tls", Host: "127.0.0.1", Port: pg.Port, User: pg.User, Password: pg.Password, Database: "postgres",
		TLS: config.TargetTLS{Mode: "verify-full", CAFile: pg.CAFile}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := &Pool{}
	defer p.Close()
	req := Request{Target: tg}
	c, err := p.Get(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	pid := c.PID
	if err := p.Put(ctx, c, 'I'); err != nil {
		t.Fatalf("put: %v", err)
	}
	c, err = p.Get(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Reused || c.PID != pid {
		t.Fatalf("TLS connection not reused: reused %v, PID %d (was %d)", c.Reused, c.PID, pid)
	}
	// The reused connection still works: one more reset round trip through TLS.
	if err := p.Put(ctx, c, 'I'); err != nil {
		t.Fatalf("second put: %v", err)
	}
	if s := p.Stats(); s.Opened != 1 || s.Reused != 1 || s.Kept != 2 || s.Idle != 1 {
		t.Fatalf("stats %+v", s)
	}
}
