package server

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
)

// watchConfig reloads the configuration on SIGHUP and when the file changes. Only targets
// take effect without a restart (listeners, data directory and TLS need one); live sessions
// keep the target they were opened with, new sessions see the new one. A bad file keeps the
// old configuration and says why.
func (in *Instance) watchConfig(ctx context.Context) {
	if in.cfgPath == "" {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last := fileStamp(in.cfgPath)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			in.reloadConfig()
			last = fileStamp(in.cfgPath)
		case <-tick.C:
			if s := fileStamp(in.cfgPath); s != last {
				last = s
				in.reloadConfig()
			}
		}
	}
}

// reloadConfig reads the file again and swaps in its targets when it is valid.
func (in *Instance) reloadConfig() {
	cfg, err := config.Load(in.cfgPath)
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
