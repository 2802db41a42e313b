package discover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/mserve/mserve/sdk/announce"
)

// maxTags bounds the tags one servant may declare.
const maxTags = 64

// Decode reads the value of the servant key for name: JSON as
// announce.Servant writes it ({"addr":"host:port","slots":N,"tags":[...]}).
// Unknown fields are ignored (a sidecar may add its own, as zc.resumelb's
// workers added their pid). It returns an error saying what is wrong with
// a name that cannot name a servant, a value that is not such an object,
// an address that is neither host:port nor an http(s):// URL, negative
// slots, or empty tags.
func Decode(name string, value []byte) (Servant, error) {
	var s Servant
	if err := announce.CheckName(name); err != nil {
		return s, err
	}
	var v announce.Servant
	value = bytes.TrimSpace(value)
	if len(value) == 0 || value[0] != '{' {
		return s, errors.New(`value is not a JSON object such as {"addr":"host:port"}`)
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return s, fmt.Errorf("value is not valid JSON: %v", err)
	}
	if err := checkAddr(v.Addr); err != nil {
		return s, err
	}
	if v.Slots < 0 {
		return s, fmt.Errorf("slots must not be negative, got %d", v.Slots)
	}
	if len(v.Tags) > maxTags {
		return s, fmt.Errorf("%d tags; at most %d", len(v.Tags), maxTags)
	}
	for _, t := range v.Tags {
		if strings.TrimSpace(t) == "" {
			return s, errors.New("an empty tag")
		}
	}
	return Servant{Name: name, Addr: v.Addr, Slots: v.Slots, Tags: v.Tags}, nil
}

// checkAddr accepts what mserve can dial: host:port with a port from 1 to
// 65535, or an http(s):// URL with a host. Neither may contain a blank, a
// control character, ',' or '?' (mserve's servant lists reserve them), nor
// host:port an '@' or '/'.
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New(`no "addr"`)
	}
	for _, r := range addr {
		if r <= ' ' || r == 0x7f || r == ',' || r == '?' {
			return fmt.Errorf("addr %q: contains a blank, a control character, ',' or '?'", addr)
		}
	}
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return fmt.Errorf("addr %q: want http://host:port/path", addr)
		}
		return nil
	}
	if strings.ContainsAny(addr, "@/") {
		return fmt.Errorf("addr %q: want host:port or an http:// URL", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("addr %q: want host:port or an http:// URL: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("addr %q: missing host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("addr %q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}
