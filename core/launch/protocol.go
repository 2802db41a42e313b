package launch

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// ProtocolVersion is the launcher protocol version this package speaks. An
// agent refuses a client announcing another one.
const ProtocolVersion = 1

// Methods of the launcher protocol (see the package documentation).
const (
	MethodChallenge = "launch.challenge" // agent → client notification: {"protocol","nonce"}
	MethodAuth      = "launch.auth"      // client → agent: {"protocol","mac","nonce"}
	MethodStart     = "launch.start"     // client → agent: {"session","argv","secret","servants"}
	MethodStop      = "launch.stop"      // client → agent: stop this connection's servants
)

// MaxServants is the most servants one launch.start may ask for.
const MaxServants = 1024

// maxFrame bounds every frame of the protocol: requests are small.
const maxFrame = 1 << 20

// writeTimeout bounds each frame written: a peer that does not read is gone.
const writeTimeout = 10 * time.Second

type challengeParams struct {
	Protocol int    `json:"protocol"`
	Nonce    string `json:"nonce"`
}

type authParams struct {
	Protocol int    `json:"protocol"`
	MAC      string `json:"mac"`   // hex HMAC-SHA256(secret, challenge nonce)
	Nonce    string `json:"nonce"` // the client's nonce, for the agent to prove itself
}

type authResult struct {
	MAC  string `json:"mac"`  // hex HMAC-SHA256(secret, "agent:"+client nonce)
	Host string `json:"host"` // the agent's host name, for logs
}

type servantRequest struct {
	Name string `json:"name"`
	Port int    `json:"port,omitempty"` // 0: any free port
}

type startParams struct {
	Session  string           `json:"session"`
	Argv     []string         `json:"argv"`
	Secret   string           `json:"secret"`
	Servants []servantRequest `json:"servants"`
}

// Servant is one servant an agent started: the name mserve knows it by and
// the host:port it listens on.
type Servant struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

type startResult struct {
	Servants []Servant `json:"servants"`
}

// request is a decoded request to the agent. Exactly the params field of
// its method is set.
type request struct {
	id     []byte // raw id; nil for a notification
	method string
	auth   *authParams
	start  *startParams
}

// decodeRequest parses and validates one frame sent to an agent. On failure
// the request's id is still set when one was read, so that the error can be
// addressed to it.
func decodeRequest(frame []byte) (request, *jsonrpc.Error) {
	var r jsonrpc.Request
	if e := jsonrpc.ParseRequest(frame, &r); e != nil {
		return request{id: clone(r.ID)}, e
	}
	req := request{id: clone(r.ID), method: r.Method}
	switch r.Method {
	case wire.MethodPing, MethodStop:
		return req, nil
	case MethodAuth:
		var p authParams
		if e := unmarshalParams(r, &p); e != nil {
			return req, e
		}
		if e := p.check(); e != nil {
			return req, e
		}
		req.auth = &p
	case MethodStart:
		var p startParams
		if e := unmarshalParams(r, &p); e != nil {
			return req, e
		}
		if e := p.check(); e != nil {
			return req, e
		}
		req.start = &p
	default:
		return req, jsonrpc.Errorf(jsonrpc.MethodNotFound, "method not found: a launcher knows %s, %s, %s and %s, not %q",
			MethodAuth, MethodStart, MethodStop, wire.MethodPing, r.Method)
	}
	return req, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func unmarshalParams(r jsonrpc.Request, v any) *jsonrpc.Error {
	if len(r.Params) == 0 || r.Params[0] != '{' {
		return jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: %s takes an object", r.Method)
	}
	if err := json.Unmarshal(r.Params, v); err != nil {
		return jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params for %s: %v", r.Method, err)
	}
	return nil
}

func (p *authParams) check() *jsonrpc.Error {
	switch {
	case p.Protocol != ProtocolVersion:
		return jsonrpc.Errorf(jsonrpc.InvalidParams, "launcher protocol %d is not supported: this launcher speaks %d", p.Protocol, ProtocolVersion)
	case !isHex(p.MAC, sha256.Size*2, sha256.Size*2):
		return jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: mac must be %d hex digits", sha256.Size*2)
	case !isHex(p.Nonce, 32, 128):
		return jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params: nonce must be 32 to 128 hex digits")
	}
	return nil
}

func (p *startParams) check() *jsonrpc.Error {
	bad := func(format string, args ...any) *jsonrpc.Error {
		return jsonrpc.Errorf(jsonrpc.InvalidParams, "invalid params for "+MethodStart+": "+format, args...)
	}
	switch {
	case p.Session == "" || len(p.Session) > 128 || !printable(p.Session):
		return bad("session must be 1 to 128 printable characters")
	case len(p.Argv) == 0 || len(p.Argv) > 256:
		return bad("argv must hold 1 to 256 words, got %d", len(p.Argv))
	case p.Secret == "" || len(p.Secret) > 1024 || !printable(p.Secret):
		return bad("secret must be 1 to 1024 printable characters: servants on a network address must require mserve's secret")
	case len(p.Servants) == 0 || len(p.Servants) > MaxServants:
		return bad("servants must name 1 to %d servants, got %d", MaxServants, len(p.Servants))
	}
	for i, w := range p.Argv {
		if w == "" || strings.IndexByte(w, 0) >= 0 {
			return bad("argv[%d] is empty or holds a NUL byte", i)
		}
	}
	names := map[string]bool{}
	ports := map[int]bool{}
	for _, s := range p.Servants {
		if !validName(s.Name) {
			return bad("servant name %q: want 1 to 64 letters, digits, '.', '_' or '-'", s.Name)
		}
		if names[s.Name] {
			return bad("servant %q is named twice", s.Name)
		}
		names[s.Name] = true
		if s.Port == 0 {
			continue
		}
		if s.Port < 1024 || s.Port > 65535 {
			return bad("servant %s: port %d is not from 1024 to 65535", s.Name, s.Port)
		}
		if ports[s.Port] {
			return bad("port %d is asked for twice", s.Port)
		}
		ports[s.Port] = true
	}
	return nil
}

func isHex(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen || len(s)%2 != 0 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// newNonce returns 32 random bytes in hex.
func newNonce() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// clientMAC is the client's answer to the challenge nonce.
func clientMAC(secret []byte, nonce string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(nonce))
	return hex.EncodeToString(m.Sum(nil))
}

// agentMAC is the agent's answer to the client's nonce; the prefix keeps
// it from ever equalling a client's answer.
func agentMAC(secret []byte, nonce string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("agent:"))
	m.Write([]byte(nonce))
	return hex.EncodeToString(m.Sum(nil))
}

// macEqual compares two hex MACs in constant time.
func macEqual(want, got string) bool {
	w, err1 := hex.DecodeString(want)
	g, err2 := hex.DecodeString(got)
	return err1 == nil && err2 == nil && hmac.Equal(w, g)
}

// Allowlist is the command lines an agent may start, each split into words
// as a shell splits simple words (strings.Fields): no quoting, no
// expansion, no shell ever runs.
type Allowlist [][]string

// ParseAllowlist splits each entry into words. It fails on an empty entry.
func ParseAllowlist(entries []string) (Allowlist, error) {
	var out Allowlist
	for _, e := range entries {
		words := strings.Fields(e)
		if len(words) == 0 {
			return nil, fmt.Errorf("empty command line in the allowlist")
		}
		out = append(out, words)
	}
	return out, nil
}

// Allows reports whether argv equals one of the entries word for word.
func (a Allowlist) Allows(argv []string) bool {
	for _, words := range a {
		if slices.Equal(words, argv) {
			return true
		}
	}
	return false
}

// String lists the entries, each quoted, for messages.
func (a Allowlist) String() string {
	parts := make([]string, len(a))
	for i, words := range a {
		parts[i] = strconv.Quote(strings.Join(words, " "))
	}
	return strings.Join(parts, ", ")
}
