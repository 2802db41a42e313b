// Command mserve is a load balancer for function calls.
//
//	mserve [flags] N COMMAND [ARGS...]     start N local servants and balance over them
//	mserve [flags] -servants host:port,…   balance over servants already running
//	mserve [flags] -launchers host:port,… N COMMAND [ARGS...]
//	                                       start the N servants on other hosts' launchers
//	mserve launcher [flags]                start servants on this host for mserve (allowlisted commands only)
//	mserve [flags] -etcd host:port,…       balance over the servants listed in etcd
//	mserve announce [flags]                list a servant in etcd while it answers (a sidecar)
//	mserve call [flags] METHOD [ARGS...]   make one call and print its result and info
//	mserve bench [flags] METHOD [ARGS...]  closed-loop load generator
//	mserve check FILE...                   validate allowlist files and Lua scripts
//	mserve status                          the running mserve's state, as tables
//	mserve drain|undrain|restart SERVANT   maintenance of one servant
//	mserve new-secret                      make a random secret and its hash for the allowlist
//	mserve hash-secret [SECRET]            hash a secret for the allowlist
//
// Every flag can also be set by an environment variable named after it
// (-route-expire → MSERVE_ROUTE_EXPIRE); flags win.
package main

import (
	"fmt"
	"os"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the call or run failed
	exitUsage = 2 // bad command line
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "call":
			return callMain(args[1:])
		case "bench":
			return benchMain(args[1:])
		case "check":
			return checkMain(args[1:])
		case "launcher":
			return launcherMain(args[1:])
		case "announce":
			return announceMain(args[1:])
		case "status":
			return statusMain(args[1:])
		case "drain":
			return maintenanceMain("drain", "stop sending new calls to a servant and wait for its running calls to finish", args[1:])
		case "undrain":
			return maintenanceMain("undrain", "put a drained servant back in dispatch", args[1:])
		case "restart":
			return maintenanceMain("restart", "drain a servant it started, wait for its calls, restart its process and put it back", args[1:])
		case "hash-secret":
			return hashSecretMain(args[1:])
		case "new-secret":
			return newSecretMain(args[1:])
		case "version", "-version", "--version":
			fmt.Println("mserve", version)
			return exitOK
		case "help":
			if len(args) > 1 && args[1] == "config" {
				writeConfigDoc(os.Stdout)
				return exitOK
			}
			return daemonMain([]string{"-h"})
		}
	}
	return daemonMain(args)
}

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"
