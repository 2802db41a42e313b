package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/mserve/mserve/core/allow"
	"github.com/mserve/mserve/core/script"
)

const checkUsage = `mserve check validates allowlist files and Lua scripts, and prints what
each allows or provides.

Usage:
  mserve check FILE...      an allowlist, or a .lua script, or a folder of scripts

Exit status: 0 when every file is valid, 1 when one is not (the error names
the file and line), 2 on bad usage.
`

func checkMain(args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, checkUsage)
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
			return exitOK
		}
		return exitUsage
	}
	status := exitOK
	for i, path := range args {
		if i > 0 {
			fmt.Println()
		}
		var code int
		if fi, err := os.Stat(path); err == nil && (fi.IsDir() || strings.HasSuffix(path, ".lua")) {
			code = checkScripts(path)
		} else {
			code = checkAllowlist(path)
		}
		status = max(status, code)
	}
	return status
}

// checkScripts compiles the Lua scripts at path (a file or a folder) as
// mserve would load them, and lists what each provides.
func checkScripts(path string) int {
	files, _, err := script.LuaFiles([]string{path}, true)
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("no .lua files in %s", path)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve check:", err)
		return exitError
	}
	h, err := script.NewHost(script.Config{Files: files})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve check:", err)
		return exitError
	}
	for _, sc := range h.Set().Scripts {
		names := make([]string, 0, len(sc.Provides))
		for name, kind := range sc.Provides {
			names = append(names, fmt.Sprintf("%s (%s)", name, kind))
		}
		sort.Strings(names)
		fmt.Printf("%s: valid; provides %s\n", sc.Path, strings.Join(names, ", "))
	}
	return exitOK
}

func checkAllowlist(path string) int {
	p, err := allow.LoadPath(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mserve check:", err)
		return exitError
	}
	fmt.Printf("%s: valid\n\nfunctions (%d):\n", path, len(p.Functions()))
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
