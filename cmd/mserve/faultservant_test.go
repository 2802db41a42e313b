package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/servant"
)

// runFaultServant is what the test binary runs when mserve starts it as a
// servant (MSERVE_TEST_SERVANT=1): a servant built with sdk/servant whose
// functions misbehave on request. It announces each call that the tests
// need to wait for on stderr, which mserve logs as "servant output".
//
//	echo(x any)   returns x
//	crash(x any)  exits the process (status 3) while the call runs
//	hang(x any)   answers only once the call is cancelled (rpc.cancel), with an error
//	stuck(x any)  never answers, ignoring cancellation
//	count(x any)  {"pid":…,"count":…,"name":…}: calls counted by this process
//	slow(ms int)  returns ms after ms milliseconds
//	work(id string, ms int) idempotent  records id in $FAULT_EXEC_LOG, sleeps ms, returns id
//	once(id string, ms int)             the same, not idempotent
func runFaultServant() {
	s := servant.New(servant.Slots(1))
	var calls atomic.Int64
	s.MustHandle("echo(x any)", func(_ context.Context, c *servant.Call) (any, error) {
		var x json.RawMessage
		if err := c.Bind(&x); err != nil {
			return nil, err
		}
		return x, nil
	})
	s.MustHandle("crash(x any)", func(context.Context, *servant.Call) (any, error) {
		fmt.Fprintln(os.Stderr, "fault: crash: exiting")
		os.Exit(3)
		return nil, nil
	})
	s.MustHandle("hang(x any)", func(ctx context.Context, _ *servant.Call) (any, error) {
		fmt.Fprintln(os.Stderr, "fault: hang: started")
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, "fault: hang: cancelled")
		return nil, jsonrpc.Errorf(jsonrpc.Cancelled, "hang: cancelled")
	})
	s.MustHandle("stuck(x any)", func(context.Context, *servant.Call) (any, error) {
		fmt.Fprintln(os.Stderr, "fault: stuck: started")
		select {}
	})
	s.MustHandle("count(x any)", func(context.Context, *servant.Call) (any, error) {
		return map[string]any{
			"pid": os.Getpid(), "count": calls.Add(1), "name": os.Getenv("MSERVE_SERVANT_NAME"),
		}, nil
	})
	s.MustHandle("slow(ms int)", func(ctx context.Context, c *servant.Call) (any, error) {
		var ms int
		if err := c.Bind(&ms); err != nil {
			return nil, err
		}
		fmt.Fprintln(os.Stderr, "fault: slow: started")
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return ms, nil
		case <-ctx.Done():
			return nil, jsonrpc.Errorf(jsonrpc.Cancelled, "slow: cancelled")
		}
	})
	execLog := os.Getenv("FAULT_EXEC_LOG")
	record := func(_ context.Context, c *servant.Call) (any, error) {
		var id string
		var ms int
		if err := c.Bind(&id, &ms); err != nil {
			return nil, err
		}
		if execLog != "" {
			// One write of one line with O_APPEND: lines from all servant
			// processes interleave whole.
			f, err := os.OpenFile(execLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return nil, err
			}
			f.WriteString(id + "\n")
			f.Close()
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return id, nil
	}
	s.MustHandle("work(id string, ms int) idempotent", record)
	s.MustHandle("once(id string, ms int)", record)
	servant.Main(s, servant.EnvAddr("127.0.0.1:7001"))
}
