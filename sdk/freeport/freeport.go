// Package freeport picks TCP ports for listeners that another process (a
// servant, a test's mserve) will open: a port that was free a moment ago
// and that this process has not handed out before, since the kernel may
// give the same ephemeral port to two listeners opened and closed in turn.
// A port can still be taken by someone else between the pick and the
// listen; callers that start servants restart them when that happens.
package freeport

import (
	"errors"
	"net"
	"strconv"
	"sync"
)

// handedOut is every host:port Addr has returned.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// Addr returns host:port for a port on host (an IP address or name of this
// machine, such as "127.0.0.1") that was free a moment ago and that this
// process has not handed out before.
func Addr(host string) (string, error) {
	for range 100 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		ln.Close()
		handedOut.Lock()
		seen := handedOut.addrs[addr]
		handedOut.addrs[addr] = true
		handedOut.Unlock()
		if !seen {
			return addr, nil
		}
	}
	return "", errors.New("no port on " + host + " that this process has not used already")
}

// Port is Addr's port number.
func Port(host string) (int, error) {
	addr, err := Addr(host)
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}

// Loopback returns Addr("127.0.0.1").
func Loopback() (string, error) { return Addr("127.0.0.1") }

// TB is the part of testing.TB that Test uses.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// Test returns Loopback's address for a test, failing the test when there
// is none.
func Test(t TB) string {
	t.Helper()
	addr, err := Loopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
