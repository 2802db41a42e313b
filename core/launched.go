package core

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/core/launch"
)

// LaunchError is returned by Start when a launcher (Config.Launchers)
// cannot be reached, does not authenticate, or refuses to start the
// servants: mserve cannot run as configured.
type LaunchError struct {
	Launcher string // the launcher's host:port
	Err      error  // what went wrong, with the launcher's own message when it refused
}

// Error names the launcher and the reason.
func (e *LaunchError) Error() string { return "launcher " + e.Launcher + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *LaunchError) Unwrap() error { return e.Err }

// checkLaunchers validates the launcher settings.
func checkLaunchers(cfg Config) error {
	if len(cfg.Launchers) == 0 {
		return nil
	}
	if cfg.Spawn == 0 {
		return errors.New("-launchers needs servants to start: mserve -launchers host:port,... N COMMAND [ARGS...]")
	}
	if cfg.LauncherSecret == "" {
		return errors.New("-launchers needs the launchers' secret: set -launcher-secret-file")
	}
	seen := map[string]bool{}
	for _, a := range cfg.Launchers {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			return fmt.Errorf("launcher %q: want host:port", a)
		}
		if seen[a] {
			return fmt.Errorf("launcher %s is listed twice", a)
		}
		seen[a] = true
	}
	return nil
}

// startLaunched has the launchers start the N servants, s1 on the first,
// s2 on the second, … round-robin, and links to them as to local ones. It
// fails, having stopped whatever it started, when any launcher cannot be
// reached or refuses. Afterwards each launcher's connection is kept (and
// restored after a failure) until the balancer stops.
func (b *Balancer) startLaunched(secret string) error {
	n := len(b.cfg.Launchers)
	shares := make([][]string, n)
	for i := range b.cfg.Spawn {
		shares[i%n] = append(shares[i%n], spawnName(i))
	}
	links := map[string]servantLink{} // filled before any client's Run, which alone reads it
	clients := make([]*launch.Client, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, addr := range b.cfg.Launchers {
		if len(shares[i]) == 0 {
			b.log.Warn("launcher not used: fewer servants than launchers", zap.String("launcher", addr))
			continue
		}
		wg.Go(func() {
			clients[i], errs[i] = launch.Dial(b.ctx, launch.ClientConfig{
				Addr: addr, Secret: []byte(b.cfg.LauncherSecret), Argv: b.cfg.Command, Names: shares[i],
				ServantSecret: secret, StopTimeout: b.cfg.Grace + 5*time.Second, Log: b.log,
				OnRestart: func(ss []launch.Servant) {
					for _, s := range ss {
						if l := links[s.Name]; l != nil {
							l.Kick()
						}
					}
				},
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			var stop sync.WaitGroup
			for _, c := range clients {
				if c != nil {
					stop.Go(func() { c.Close() })
				}
			}
			stop.Wait()
			return &LaunchError{Launcher: b.cfg.Launchers[i], Err: err}
		}
	}
	addrs := map[string]string{}
	for i, c := range clients {
		if c == nil {
			continue
		}
		for _, s := range c.Servants() {
			addrs[s.Name] = s.Addr
		}
		b.log.Info("servants launched", zap.String("launcher", b.cfg.Launchers[i]), zap.Any("servants", c.Servants()))
	}
	for i := range b.cfg.Spawn {
		name := spawnName(i)
		// Remote, but starting now: dial as often as for a local servant
		// (addLink's local only shortens the redial backoff).
		links[name] = b.addLink(engine.ServantSpec{Name: name, Addr: addrs[name], Slots: b.cfg.SpawnSlots, Tags: b.cfg.SpawnTags}, secret, true, 0)
	}
	for _, c := range clients {
		if c != nil {
			b.wg.Add(1)
			go func() { defer b.wg.Done(); c.Run(b.ctx) }()
		}
	}
	return nil
}
