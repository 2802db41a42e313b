// Package testkit holds the test fixtures that the tests of several core
// packages share: a dispatch algorithm, a fake engine transport, bounded
// waits, an observed logger and a small allowlist gate. It is for tests
// only; nothing outside _test.go files should import it.
//
// Every wait here gives up after Failsafe and fails the test: a wait that
// runs out means the code under test is broken, never that it was slow.
package testkit

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/core/engine"
	"github.com/mserve/mserve/sdk/dispatch"
	"github.com/mserve/mserve/sdk/wire"
)

// Failsafe bounds every wait in this package (Recv, WaitFor,
// Transport.Next): it only runs out when the code under test is broken.
const Failsafe = 10 * time.Second

// FirstFree is a dispatch algorithm that assigns each waiting call, in
// order, to the first servant that can take it (Plan.CanTake) and accepts
// it (Plan.Assign); a call no servant can take stays waiting.
var FirstFree dispatch.Algorithm = dispatch.AlgorithmFunc(func(calls []*dispatch.Call, servants []*dispatch.Servant, p *dispatch.Plan) {
	for i, c := range calls {
		for j, s := range servants {
			if p.CanTake(s, c) && p.Assign(i, j) {
				break
			}
		}
	}
})

// Recv returns the next value received from ch. If none comes within
// Failsafe it fails the test with t.Fatal(what) (and returns the zero
// value, which a test never sees since Fatal stops it).
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(Failsafe):
		t.Fatal(what)
		var zero T
		return zero
	}
}

// WaitFor polls cond every millisecond until it returns true. If it is
// still false after Failsafe it fails the test with "timed out waiting
// for " and what.
func WaitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.After(Failsafe)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Transport is a fake engine.Transport that never answers: Send hands
// every call to Sent for the test to take (and answer through the
// engine.Servant), and Cancel hands every cancelled call to Cancelled, or
// drops it when Cancelled is nil. Send and Cancel block while their channel
// is full, so make the channels as large as a test needs. Send never fails.
type Transport struct {
	Sent      chan *engine.Call
	Cancelled chan *engine.Call
}

// Send puts c on Sent and returns nil.
func (f *Transport) Send(c *engine.Call, _ *wire.Flusher) error {
	f.Sent <- c
	return nil
}

// Cancel puts c on Cancelled unless Cancelled is nil.
func (f *Transport) Cancel(c *engine.Call) {
	if f.Cancelled != nil {
		f.Cancelled <- c
	}
}

// Next returns the next call sent, failing the test if none is sent
// within Failsafe.
func (f *Transport) Next(t testing.TB) *engine.Call {
	t.Helper()
	return Recv(t, f.Sent, "nothing sent to the servant")
}

// Observed returns a logger that keeps every entry at level and above, and
// the entries it kept.
func Observed(level zapcore.Level) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(level)
	return zap.New(core), logs
}

// Gate writes src, an allowlist file's text, to a file of its own in a
// temporary folder of the test and returns the allow.Gate over it for a
// balancer with one servant, "s1". It fails the test if the file cannot be
// written or the gate refuses it.
func Gate(t testing.TB, src string) *allow.Gate {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mserve.allow")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := allow.NewGate(path, []string{"s1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// ErrCode returns the code of a decoded JSON-RPC response's error member,
// or 0 when it has none. It panics (failing the test) when the error
// member has no numeric code.
func ErrCode(m map[string]any) float64 {
	if e, ok := m["error"].(map[string]any); ok {
		return e["code"].(float64)
	}
	return 0
}
