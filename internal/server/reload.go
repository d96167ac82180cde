package server

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
)

// settleFor is how long a changed configuration file must stay unchanged before the watcher
// loads it, so an editor or a deploy tool that writes it in several steps is never caught
// half-way through.
const settleFor = 500 * time.Millisecond

// watchConfig reloads the configuration on SIGHUP and when the file changes. Only targets
// take effect without a restart (listeners, data directory and TLS need one); live sessions
// keep the target they were opened with, new sessions see the new one. A bad file keeps the
// old configuration and says why. A changed file is loaded once it has settled (same size
// and modification time for settleFor).
func (in *Instance) watchConfig(ctx context.Context) {
	if in.cfgPath == "" {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last := fileStamp(in.cfgPath)
	var seen stamp       // the newest stamp observed while waiting for the file to settle
	var seenAt time.Time // when seen was first observed
	tick := time.NewTicker(settleFor / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			in.reloadConfig()
			last = fileStamp(in.cfgPath)
			seenAt = time.Time{}
		case now := <-tick.C:
			s := fileStamp(in.cfgPath)
			switch {
			case s == last:
				seenAt = time.Time{}
			case seenAt.IsZero() || s != seen:
				seen, seenAt = s, now
			case now.Sub(seenAt) >= settleFor:
				last, seenAt = s, time.Time{}
				in.reloadConfig()
			}
		}
	}
}

// reloadConfig reads the file again and swaps in its targets when it is valid. A file
// without targets is refused too: every new login would fail with it (an emptied or
// truncated file is far more often a mistake than an intent to serve nothing).
func (in *Instance) reloadConfig() {
	cfg, err := config.Load(in.cfgPath)
	if err == nil && len(cfg.Targets) == 0 {
		err = fmt.Errorf("%s: the file defines no targets; a reload that leaves no targets would refuse every new session", in.cfgPath)
	}
	if err != nil {
		in.log.Error("configuration reload refused; keeping the previous configuration", "err", err)
		in.metrics.configReloads.WithLabelValues("error").Inc()
		return
	}
	in.cfg.Store(cfg)
	in.metrics.configReloads.WithLabelValues("ok").Inc()
	in.log.Info("configuration reloaded", "file", in.cfgPath, "targets", len(cfg.Targets))
}

type stamp struct {
	mod  time.Time
	size int64
}

func fileStamp(path string) stamp {
	st, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{st.ModTime(), st.Size()}
}
