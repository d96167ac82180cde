// Package server assembles one running Gatehouse instance from its configuration: the store,
// identities, the gate with its inspector, policy, masker and ledger, the doors, and the
// operational HTTP endpoints. The `serve` and `demo` commands and the integration tests all
// start Gatehouse through here, so what is tested is what runs.
package server

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gatehouse/gatehouse/internal/certs"
	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/door/mcp"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/upstream"
)

// Options are the things a caller may set that are not part of the configuration file.
type Options struct {
	Log *slog.Logger
	// Instance names this instance's ledger chain ("" for the host name). Instances sharing
	// a PostgreSQL store each need their own; on separate hosts the host name does.
	Instance string
}

// Instance is a running Gatehouse.
type Instance struct {
	cfgPath string
	cfg     atomic.Pointer[config.Config]
	log     *slog.Logger
	db      *sql.DB
	gate    *gate.Gate
	tlsConf *tls.Config
	metrics *metrics
	reg     *prometheus.Registry
	parts

	// doors are the protocols clients reach the gate through (PostgreSQL, and MCP when
	// listen.mcp is set), each started and stopped the same way (see Door).
	doors []*runningDoor
	// pool keeps upstream connections across sessions, for every door (nil with pool.mode
	// off).
	pool *upstream.Pool
	http *httpServer
	// mcpExchange issues MCP tokens for OIDC sign-ins (nil when the MCP door is off).
	mcpExchange *mcp.Exchange

	cancel context.CancelFunc
	closed atomic.Bool
}

type metrics struct {
	configReloads *prometheus.CounterVec
}

// Start opens everything the configuration asks for and starts serving. Close stops it.
func Start(ctx context.Context, cfg *config.Config, opts Options) (*Instance, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	in := &Instance{cfgPath: cfg.Path, log: log, reg: prometheus.NewRegistry()}
	in.cfg.Store(cfg)
	in.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	in.metrics = &metrics{configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_config_reloads_total", Help: "Configuration reloads by result (ok, error).",
	}, []string{"result"})}
	in.reg.MustRegister(in.metrics.configReloads)

	ok := false
	defer func() {
		if !ok {
			in.closeResources()
		}
	}()
	var err error
	if in.db, err = OpenStateStore(ctx, cfg); err != nil {
		return nil, err
	}
	if in.listener, err = openStateListener(cfg, log); err != nil {
		return nil, err
	}
	in.instance = opts.Instance
	switch cfg.TLS.Mode {
	case "off":
	case "files":
		if in.tlsConf, err = certs.Files(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return nil, err
		}
	default:
		if in.tlsConf, err = certs.Auto(cfg.DataDir, cfg.TLS.Hosts); err != nil {
			return nil, fmt.Errorf("set up TLS in %s: %w", cfg.DataDir, err)
		}
	}
	in.gate = &gate.Gate{Log: log}
	if err := in.assemble(ctx, cfg); err != nil {
		return nil, err
	}
	if err := in.gate.Complete(); err != nil {
		return nil, err
	}

	if cfg.Pool.Mode != "off" {
		in.pool = &upstream.Pool{MaxIdlePerKey: cfg.Pool.MaxIdlePerKey, MaxIdle: cfg.Pool.MaxIdle,
			IdleTimeout: time.Duration(cfg.Pool.IdleTimeout), MaxLifetime: time.Duration(cfg.Pool.MaxLifetime),
			Log: log.With("part", "upstream-pool")}
		in.reg.MustRegister(upstream.NewPoolCollector(in.pool))
	}
	doors, err := in.openDoors(ctx, cfg)
	defer func() {
		if !ok {
			for _, d := range doors {
				_ = d.ln.Close()
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	register := func(mux *http.ServeMux) {
		in.registerHTTP(mux)
		in.registerMCPAPI(mux)
	}
	if in.http, err = startHTTP(cfg.Listen.HTTP, in.reg, in.ready, register); err != nil {
		return nil, err
	}
	if err := in.startHTTPS(cfg.Listen.HTTPS); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go in.watchConfig(runCtx)
	if in.pool != nil {
		go in.pool.Run(runCtx)
	}
	in.startBackground(runCtx)
	for _, d := range doors {
		in.startDoor(runCtx, d.Door, d.ln)
	}
	ok = true
	log.Info("gatehouse serving", "postgres", in.PostgresAddr(), "mcp", in.MCPAddr(), "http", in.http.Addr(), "tls", in.tlsConf != nil, "data_dir", cfg.DataDir)
	return in, nil
}

// Config is the configuration currently in force.
func (in *Instance) Config() *config.Config { return in.cfg.Load() }

// Target looks a target up in the configuration currently in force.
func (in *Instance) Target(name string) (*config.Target, bool) { return in.cfg.Load().Target(name) }

// PostgresAddr is the address the PostgreSQL door listens on.
func (in *Instance) PostgresAddr() string {
	if d := in.door("postgres"); d != nil {
		return d.Addr()
	}
	return ""
}

// HTTPAddr is the address of the health and metrics endpoints.
func (in *Instance) HTTPAddr() string { return in.http.Addr() }

// Pool is the instance's upstream connection pool (nil with pool.mode off), for tests and
// metrics.
func (in *Instance) Pool() *upstream.Pool { return in.pool }

// Gate is the instance's gate, for tests and embedded tooling.
func (in *Instance) Gate() *gate.Gate { return in.gate }

func (in *Instance) ready() error {
	if in.closed.Load() {
		return errors.New("shutting down")
	}
	return in.readyParts()
}

// Close stops accepting connections, ends sessions and releases the store.
func (in *Instance) Close() error {
	if !in.closed.CompareAndSwap(false, true) {
		return nil
	}
	// The doors stop first, while the pool and the ledger still take back connections and
	// record the sessions' ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := in.stopDoors(ctx); err != nil {
		in.log.Warn("doors did not stop cleanly within 10s of shutdown", "err", err)
	}
	cancel()
	if in.cancel != nil {
		in.cancel()
	}
	return in.closeResources()
}

func (in *Instance) closeResources() error {
	var errs []error
	if in.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, in.http.Close(ctx))
		cancel()
	}
	errs = append(errs, in.closeParts())
	if in.db != nil {
		errs = append(errs, in.db.Close())
	}
	return errors.Join(errs...)
}

// Tokens is the instance's token store, for the CLI-less paths (demo, tests).
func (in *Instance) Tokens() *identity.Tokens { return in.tokens }

// Ledger is the instance's ledger.
func (in *Instance) Ledger() *ledger.Ledger { return in.ledger }

// Catalog is the instance's classification catalog.
func (in *Instance) Catalog() *classify.Catalog { return in.catalog }
