package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/approval"
	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/console"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
	"github.com/gatehouse/gatehouse/internal/mask"
	"github.com/gatehouse/gatehouse/internal/notify"
	"github.com/gatehouse/gatehouse/internal/policy"
	"github.com/gatehouse/gatehouse/internal/store"
)

// inspectCacheEntries bounds the per-statement-text cache of inspection results: enough for
// the distinct statements of a busy fleet of applications, small next to the relay buffers.
const inspectCacheEntries = 50_000

// parts are the components an instance owns besides its listeners.
type parts struct {
	auth    *identity.Chain
	tokens  *identity.Tokens
	ledger  *ledger.Ledger
	policy  *policy.Engine
	catalog *classify.Catalog
	// describer tells the columns of COPY queries for masking; closed with the instance.
	describer *mask.Describer
	// approvals files and decides requests for statements policy holds for approval.
	approvals *approval.Store
	// listener hears other instances' revocations on a shared PostgreSQL store (nil for
	// the embedded store).
	listener *store.Listener
	// instance names the ledger chain ("" for the host name).
	instance string
	// live lists the sessions open now; console serves the web console over it all.
	live  *live.Registry
	fleet *live.Fleet
	// commits keeps the ledger's recent group-commit durations for the console's overview.
	commits *console.CommitWindow
	console *console.Console
	// notifier tells approval.notify receivers of filed, decided and lapsed requests.
	notifier *notify.Notifier
}

// assemble builds the gate's components from the configuration.
func (in *Instance) assemble(ctx context.Context, cfg *config.Config) error {
	led, err := ledger.Open(ctx, cfg, in.instance, in.log)
	if err != nil {
		return err
	}
	in.ledger = led
	in.gate.Recorder = led
	if pinned, ok := cfg.Ledger.TrustedKeys[led.Instance()]; ok && pinned != ledger.PublicKeyBase64(led.PublicKey()) {
		return fmt.Errorf("ledger.trusted_keys pins key %s for this instance (%s), but its signing key in %s is %s: copy the right ledger-signing.key or fix the pin",
			pinned, led.Instance(), cfg.DataDir, ledger.PublicKeyBase64(led.PublicKey()))
	}

	topts := identity.TokensOptions{Recorder: led, Logger: in.log}
	if in.listener != nil {
		topts.Invalidations = in.listener
	}
	if in.tokens, err = identity.NewTokens(ctx, in.db, topts); err != nil {
		return fmt.Errorf("open token store: %w", err)
	}
	in.auth = &identity.Chain{Tokens: in.tokens}
	if len(cfg.OIDC) > 0 {
		if in.auth.OIDC, err = identity.NewOIDC(cfg.OIDC, identity.OIDCOptions{Logger: in.log}); err != nil {
			return fmt.Errorf("set up OIDC: %w", err)
		}
	}
	in.gate.Validator = in.auth

	// Approvals live in the state database beside the tokens (SQLite for one instance, or
	// the PostgreSQL store instances share); the approvers and windows come from the
	// configuration in force, so a reload applies.
	akey, err := approval.LoadOrCreateKey(filepath.Join(cfg.DataDir, approval.KeyFile))
	if err != nil {
		return err
	}
	if in.notifier, err = notify.New(cfg.Approvals.Notify, notify.Options{Log: in.log.With("part", "notify"), ConsoleURL: in.consoleURL,
		Lookup: func(ctx context.Context, id string) (approval.Request, error) { return in.approvals.Get(ctx, id) }}); err != nil {
		return err
	}
	if in.approvals, err = approval.Open(ctx, in.db, approval.Options{Recorder: approvalRecorder{led, in.notifier}, Key: akey, Log: in.log,
		Settings: func() approval.Settings { return approval.SettingsFrom(in.cfg.Load().Approvals) }, ConsoleURL: in.consoleURL}); err != nil {
		return err
	}
	in.gate.Approvals = in.approvals

	if in.policy, err = policy.NewEngine(policy.Options{Log: in.log, Registerer: in.reg}); err != nil {
		return fmt.Errorf("set up policy: %w", err)
	}
	if cfg.Policy != "" {
		if err := in.policy.Load(cfg.Policy); err != nil {
			return err
		}
	}
	in.gate.Policy = in.policy
	in.gate.Inspector = inspect.New(inspectCacheEntries)

	// The policy's catalog overrides apply to every target (as loaded at start; a policy
	// reload that changes them takes effect at the next restart).
	overrides := map[string]map[string]string{}
	if o := in.policy.Overrides(); len(o) > 0 {
		for _, t := range cfg.Targets {
			overrides[t.Name] = o
		}
	}
	in.catalog = classify.NewCatalog(func(ctx context.Context, target string) (*pgx.Conn, error) {
		return classify.ConfigConnector(in.cfg.Load().Targets)(ctx, target)
	}, classify.ScanOptions{Log: in.log.With("part", "catalog")}, overrides)
	in.gate.Catalog = in.catalog

	keyPath := filepath.Join(cfg.DataDir, mask.KeyFile)
	key, err := mask.LoadOrCreateKey(keyPath)
	if err != nil {
		return fmt.Errorf("masking key: %w", err)
	}
	// Instances sharing a store must mask alike, or the same value gets different tokens
	// depending on the instance a client reached.
	if err := mask.CheckSharedKey(ctx, in.db, key, keyPath); err != nil {
		return err
	}
	masker, err := mask.NewMasker(key)
	if err != nil {
		return fmt.Errorf("set up masking: %w", err)
	}
	planner := mask.NewPlanner(in.catalog, masker, nil, in.log)
	// COPY's columns are described on the target, with the catalog's connections.
	in.describer = mask.NewDescriber(func(ctx context.Context, target string) (*pgx.Conn, error) {
		return classify.ConfigConnector(in.cfg.Load().Targets)(ctx, target)
	})
	planner.UseDescriber(in.describer)
	planner.UsePolicy(in.policy.MaskProfile) // the policy file's masking profiles drive masking
	in.gate.Masker = planner

	in.live = live.New()
	in.gate.Live = in.live
	if in.fleet, err = in.openFleet(ctx, led.Instance()); err != nil {
		return err
	}
	in.commits = &console.CommitWindow{}
	in.registerPartMetrics()
	ledgerKey, err := ledger.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return err
	}
	if in.console, err = console.New(console.Options{Auth: in.auth, Ledger: led, Events: led.Store(), Approvals: in.approvals,
		EvidenceKey: ledgerKey, CheckpointFile: func() string { return in.cfg.Load().Ledger.CheckpointFile },
		LedgerHealth: led.Healthy, Instance: led.Instance(), Commits: in.commits, IndexBacklog: indexBacklog(led),
		Catalog: in.catalog, Targets: in.targetNames,
		Policy: in.policy, Target: in.Target,
		MaskStrategy: func(class string) string {
			return string(planner.Profile(in.policy.Policy().DefaultMaskProfile()).For(class))
		},
		Live: in.live, Fleet: in.fleet, OIDC: func() []config.OIDC { return in.cfg.Load().OIDC }, URL: in.consoleURL, Log: in.log.With("part", "console")}); err != nil {
		return err
	}
	return nil
}

// Approvals is the instance's approval store, for tests and embedded tooling.
func (in *Instance) Approvals() *approval.Store { return in.approvals }

// startBackground runs the parts' periodic work until ctx ends.
func (in *Instance) startBackground(ctx context.Context) {
	if path := in.cfg.Load().Policy; path != "" {
		go in.policy.Watch(ctx, path, func(err error) {
			if err != nil {
				in.log.Error("policy reload refused; keeping the previous policy", "file", path, "err", err)
				return
			}
			// Watch calls back after putting the new policy in force and before it looks at
			// the file again, so the policy in force is the one this reload loaded.
			hash := in.policy.Policy().Hash
			in.log.Info("policy reloaded", "file", path, "hash", hash)
			ev := &ledger.Event{Type: ledger.EventPolicyReload, Time: time.Now(), Message: ledger.PolicyReloadMessage(path, hash)}
			if err := in.ledger.Record(ctx, ev); err != nil {
				in.log.Error("record policy reload", "err", err)
			}
		})
	}
	go in.catalog.Run(ctx, 10*time.Minute)
	// Session ends, failed logins and refused connections that happened while the ledger
	// could not write are recorded once it can.
	go in.gate.RunDeferred(ctx, time.Second)
	// Every instance sweeps lapsed approval requests onto the ledger; the store's claim
	// keeps it to one event per lapse when several share a store.
	go in.approvals.RunExpiry(ctx)
	go in.notifier.Run(ctx)
	if in.listener != nil {
		go in.listener.Run(ctx)
	}
	go in.fleet.Run(ctx)
	if in.auth.OIDC != nil {
		// Discover the identity providers now, so the first login does not wait for it.
		go in.auth.OIDC.Warm(ctx)
	}
}

func (in *Instance) readyParts() error {
	if in.ledger == nil {
		return errors.New("ledger not open")
	}
	if err := in.ledger.Healthy(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

func (in *Instance) closeParts() error {
	var errs []error
	if in.describer != nil {
		in.describer.Close()
	}
	if in.ledger != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, in.ledger.Close(ctx))
		cancel()
	}
	return errors.Join(errs...)
}

// OpenLedgerInstance opens the ledger writing the chain named instance ("" for the host
// name). Administrative commands use their own chain so they never fork a server's.
func OpenLedgerInstance(ctx context.Context, cfg *config.Config, instance string) (*ledger.Ledger, error) {
	l, err := ledger.Open(ctx, cfg, instance, slog.Default())
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	return l, nil
}

// The gate's collaborators, checked at compile time: a control whose signature drifts fails
// the build instead of turning itself off.
var (
	_ gate.MaskPlanner = (*mask.Planner)(nil)
	_ gate.Catalog     = (*classify.Catalog)(nil)
	_ gate.Recorder    = (*ledger.Ledger)(nil)
	_ gate.Approvals   = (*approval.Store)(nil)
)

// OpenLedgerStore opens just the ledger's store, for offline reading.
func OpenLedgerStore(ctx context.Context, cfg *config.Config) (ledger.Store, error) {
	return ledger.OpenStore(ctx, cfg.Ledger, cfg.DataDir)
}
