package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/gatehouse/gatehouse/internal/door/pg"
)

// Door is one protocol an instance serves clients in: the PostgreSQL wire protocol, MCP.
// Every door is started and stopped the same way, so the instance keeps them in one list and
// a new door is one more entry in it, not another special case in Start and Close.
//
// A door owns its protocol and nothing else. It authenticates its clients with the instance's
// identity chain, opens a gate.Session per client session (gate.OpenSession decides access
// and records it; gate.Attach lists it live, with a function that ends it in the protocol's
// words), hands every statement text to gate.Check, renders a refusal in its protocol's error
// shape (the gate wrote the record), runs what is allowed on an upstream connection
// (internal/upstream: the pool and its reset rules are shared), masks results with
// gate.ResultMasker over gate.Column values built from its own result metadata, records the
// outcome with gate.Done before the client sees it, and ends with gate.CloseSession.
//
// What a third door (MySQL) needs besides that list: a listen address in config.Listen and an
// entry in Instance.openDoors; a gate.Via value for the ledger and policies; the gate's
// Inspector and Catalog for its dialect (the gate holds one of each today, PostgreSQL's: they
// become per-engine, chosen by the target's engine); an upstream connector for MySQL
// (internal/upstream speaks PostgreSQL only) with the pool keyed by engine; gate.Column's
// table identity generalised from PostgreSQL's table OID and attribute number to what MySQL
// result metadata carries (schema, table and column names), which the catalog must resolve;
// and its own cancel and TLS handling, which stay inside the door.
type Door interface {
	// Name names the door in logs, metrics and the live session list ("postgres", "mcp").
	Name() string
	// Serve accepts clients on ln until ln is closed, ctx ends or Shutdown is called, and
	// returns once the door stops accepting. A door that negotiates TLS itself (PostgreSQL's
	// SSLRequest) gets a plain listener; one that does not gets a TLS listener.
	Serve(ctx context.Context, ln net.Listener) error
	// Shutdown stops accepting, ends the sessions still open (each recorded as ended) and
	// returns once they have ended, or when ctx ends.
	Shutdown(ctx context.Context) error
}

// runningDoor is a door serving its listener.
type runningDoor struct {
	Door
	ln   net.Listener
	done chan struct{}
}

// Addr is the address the door listens on.
func (r *runningDoor) Addr() string { return r.ln.Addr().String() }

// startDoor serves d on ln until stopDoors.
func (in *Instance) startDoor(ctx context.Context, d Door, ln net.Listener) {
	r := &runningDoor{Door: d, ln: ln, done: make(chan struct{})}
	in.doors = append(in.doors, r)
	go func() {
		defer close(r.done)
		if err := d.Serve(ctx, ln); err != nil && ctx.Err() == nil {
			in.log.Error("door stopped", "door", d.Name(), "err", err)
		}
	}()
}

// door returns the running door named name (nil when it is off).
func (in *Instance) door(name string) *runningDoor {
	for _, d := range in.doors {
		if d.Name() == name {
			return d
		}
	}
	return nil
}

// stopDoors shuts every door down at once and waits for each (bounded by ctx).
func (in *Instance) stopDoors(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(in.doors))
	for i, d := range in.doors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("shut down the %s door: %w", d.Name(), err)
			}
			_ = d.ln.Close() // a door shut down before it began serving stops at once
			select {
			case <-d.done:
			case <-ctx.Done():
				errs[i] = errors.Join(errs[i], fmt.Errorf("the %s door's sessions did not end in time", d.Name()))
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pgDoor is the PostgreSQL door (door/pg.Server) as a Door: its Serve ends every session
// and returns once they have ended when its listener closes, so Shutdown closes the listener
// and waits for Serve.
type pgDoor struct {
	*pg.Server

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}
}

var _ Door = (*pgDoor)(nil)

func (d *pgDoor) Name() string { return "postgres" }

func (d *pgDoor) Serve(ctx context.Context, ln net.Listener) error {
	d.mu.Lock()
	d.ln, d.done = ln, make(chan struct{})
	d.mu.Unlock()
	defer close(d.done)
	return d.Server.Serve(ctx, ln)
}

func (d *pgDoor) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	ln, done := d.ln, d.done
	d.mu.Unlock()
	if ln == nil {
		return nil
	}
	_ = ln.Close()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres sessions still open: %w", ctx.Err())
	}
}
