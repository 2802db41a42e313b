package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/mserve/mserve/core/allow"
)

const checkUsage = `mserve check validates an allowlist file and prints what it allows.

Usage:
  mserve check ALLOWLIST

Exit status: 0 when the file is valid, 1 when it is not (the error names the
line), 2 on bad usage.
`

func checkMain(args []string) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, checkUsage)
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
			return exitOK
		}
		return exitUsage
	}
	p, err := allow.LoadPath(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve check:", err)
		return exitError
	}
	fmt.Printf("%s: valid\n\nfunctions (%d):\n", args[0], len(p.Functions()))
	for _, name := range p.Functions() {
		fmt.Printf("  %s\n", p.Func(name).Decl)
	}
	if !p.HasUsers() && p.User(allow.Anonymous).May("") {
		fmt.Println("\nno users and no anonymous line: any caller may call every function")
		return exitOK
	}
	fmt.Println("\ncallers:")
	for _, u := range append(p.Users(), allow.Anonymous) {
		var may []string
		for _, name := range p.Functions() {
			if p.User(u).May(name) {
				may = append(may, name)
			}
		}
		label := u
		if u == allow.Anonymous {
			label = "(anonymous)"
		}
		if len(may) == 0 {
			may = []string{"nothing"}
		}
		fmt.Printf("  %-14s %s\n", label, strings.Join(may, " "))
	}
	return exitOK
}

func hashSecretMain(args []string) int {
	var secret string
	switch {
	case len(args) == 1 && !strings.HasPrefix(args[0], "-"):
		secret = args[0]
	case len(args) == 0:
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			fmt.Fprintln(os.Stderr, "mserve hash-secret: give the secret as the argument or on standard input")
			return exitUsage
		}
		secret = strings.TrimRight(line, "\r\n")
	default:
		fmt.Fprintln(os.Stderr, "usage: mserve hash-secret [SECRET]   (or the secret on standard input)")
		return exitUsage
	}
	fmt.Println(allow.HashSecret(secret))
	return exitOK
}

func newSecretMain(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "usage: mserve new-secret")
		return exitUsage
	}
	var b [24]byte
	rand.Read(b[:])
	secret := base64.RawURLEncoding.EncodeToString(b[:])
	fmt.Printf("secret: %s\nhash:   %s\n", secret, allow.HashSecret(secret))
	fmt.Println("Give the secret to the caller; put the hash in the allowlist: user NAME " + allow.HashSecret(secret) + ": FUNCTIONS")
	return exitOK
}
