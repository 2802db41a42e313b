package servant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// Environment variables Main reads to register with a balancer instead of
// listening.
const (
	EnvBalancer       = "MSERVE_BALANCER"        // the balancer's registration address (its -register), host:port
	EnvRegisterSecret = "MSERVE_REGISTER_SECRET" // its registration secret (its -register-secret)
)

// RegisterName returns the name Register offers: the servant's name, or,
// when only the host name is known, the host name and process id, so that
// servants on one host differ.
func (s *Servant) RegisterName() string {
	if s.hostName {
		return fmt.Sprintf("%s-%d", s.name, os.Getpid())
	}
	return s.name
}

// Register offers s to the balancer at addr (mserve's -register address),
// the way auto-scaled workers join a dispatcher: it dials addr, sends
// rpc.register with secret and the servant's name (RegisterName), slots,
// tags and declarations, then serves the calls the balancer sends on that
// connection. When the connection drops it registers again, waiting 10ms
// at first and at most 2s between attempts, until ctx ends or Shutdown is
// called; it returns nil then. While another servant registered under the
// same name is connected and healthy, the balancer answers a conflict and
// Register keeps trying (logging each refusal). A refusal that trying again
// cannot fix (a wrong secret, another protocol version, a name that belongs
// to a servant configured at launch) is returned at once.
func (s *Servant) Register(ctx context.Context, addr, secret string) error {
	s.start()
	const minBackoff, maxBackoff = 10 * time.Millisecond, 2 * time.Second
	backoff := minBackoff
	failures := 0
	for ctx.Err() == nil && !s.isStopping() {
		c, err := s.registerOnce(ctx, addr, secret)
		if err != nil {
			var refused *jsonrpc.Error
			if errors.As(err, &refused) && refused.Code != jsonrpc.Conflict {
				return fmt.Errorf("registering at %s: %w", addr, refused)
			}
			switch failures++; {
			case refused != nil:
				s.log.Warn("registration refused for now; trying again", zap.String("balancer", addr), zap.Error(err))
			case failures == 10 || failures%100 == 0:
				s.log.Warn("balancer unreachable; still trying to register", zap.String("balancer", addr), zap.Int("attempts", failures), zap.Error(err))
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		failures, backoff = 0, minBackoff
		stop := context.AfterFunc(ctx, func() { c.nc.Close() })
		c.serve()
		stop()
	}
	return nil
}

func (s *Servant) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// registerOnce dials the balancer and registers. An error the balancer
// answered is a *jsonrpc.Error.
func (s *Servant) registerOnce(ctx context.Context, addr, secret string) (*conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	params, _ := json.Marshal(wire.RegisterParams{
		Protocol: wire.ProtocolVersion, Secret: secret, Name: s.RegisterName(),
		Slots: s.slots, Tags: s.tags, Functions: s.Declarations(),
	})
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(wire.AppendFrame(nil, jsonrpc.AppendRequest(nil, []byte("1"), wire.MethodRegister, params))); err != nil {
		nc.Close()
		return nil, err
	}
	r := wire.NewReader(nc, s.maxFrame)
	frame, err := r.ReadFrame(nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("no answer to %s: %w", wire.MethodRegister, err)
	}
	var resp jsonrpc.Response
	if err := jsonrpc.ParseResponse(frame, &resp); err != nil {
		nc.Close()
		return nil, fmt.Errorf("answer to %s: %w", wire.MethodRegister, err)
	}
	if resp.Error != nil {
		nc.Close()
		e, err := jsonrpc.DecodeError(resp.Error)
		if err != nil {
			return nil, fmt.Errorf("answer to %s: %w", wire.MethodRegister, err)
		}
		return nil, e
	}
	var res wire.RegisterResult
	json.Unmarshal(resp.Result, &res)
	nc.SetDeadline(time.Time{})
	s.log.Info("registered with the balancer", zap.String("balancer", addr), zap.String("as", res.Servant))
	c := &conn{s: s, nc: nc, r: r, w: wire.NewWriter(nc, 0), pending: map[string]*job{}, authed: true}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		nc.Close()
		return nil, errors.New("the servant is shutting down")
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return c, nil
}
