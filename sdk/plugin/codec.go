package plugin

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/encoding"

	"github.com/mserve/mserve/sdk/dispatch"
)

// codecName is the gRPC content subtype of the dispatch service. The
// messages of every round (AssignRequest, AssignResponse) travel in a
// compact binary form written here, because reflection-driven encoding cost
// more than the decisions themselves; the rest is JSON. Either way the
// service needs no generated code.
const codecName = "mserve-dispatch"

type codec struct{}

func (codec) Name() string { return codecName }

func (codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *AssignRequest:
		return appendAssignRequest(make([]byte, 0, 256+64*(len(m.Calls)+len(m.Servants))), m), nil
	case *AssignResponse:
		return appendAssignResponse(make([]byte, 0, 16+8*len(m.Assignments)), m), nil
	}
	return json.Marshal(v)
}

func (codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *AssignRequest:
		d := decoder{b: data}
		d.assignRequest(m)
		return d.done()
	case *AssignResponse:
		d := decoder{b: data}
		d.assignResponse(m)
		return d.done()
	}
	return json.Unmarshal(data, v)
}

func init() { encoding.RegisterCodec(codec{}) }

// Writers.

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendCall(b []byte, c *dispatch.Call) []byte {
	b = appendString(b, c.Method)
	b = appendBytes(b, c.Params)
	b = appendString(b, c.Route)
	b = appendString(b, c.User)
	return appendTime(b, c.Arrived)
}

func appendServant(b []byte, s *dispatch.Servant) []byte {
	b = appendString(b, s.Name)
	b = appendString(b, s.Addr)
	b = appendString(b, s.Host)
	b = binary.AppendUvarint(b, uint64(len(s.Tags)))
	for _, t := range s.Tags {
		b = appendString(b, t)
	}
	b = binary.AppendVarint(b, int64(s.Slots))
	b = binary.AppendVarint(b, int64(s.InFlight))
	b = binary.AppendVarint(b, int64(s.Backlog))
	b = appendBool(b, s.Used)
	b = appendString(b, s.LastRoute)
	b = appendTime(b, s.LastUsed)
	b = appendBool(b, s.Functions != nil)
	b = binary.AppendUvarint(b, uint64(len(s.Functions)))
	for f := range s.Functions {
		b = appendString(b, f)
	}
	b = appendBool(b, s.Healthy)
	b = appendBool(b, s.Draining)
	b = appendBool(b, s.Ejected)
	b = binary.AppendVarint(b, int64(s.Latency))
	return binary.AppendUvarint(b, s.Served)
}

func appendAssignRequest(b []byte, m *AssignRequest) []byte {
	b = appendString(b, m.Algorithm)
	b = binary.AppendUvarint(b, m.Session)
	b = appendTime(b, m.Now)
	b = binary.AppendVarint(b, int64(m.MaxBacklog))
	b = binary.AppendUvarint(b, uint64(len(m.Calls)))
	for i := range m.Calls {
		b = appendCall(b, &m.Calls[i])
	}
	b = binary.AppendUvarint(b, uint64(len(m.Servants)))
	for i := range m.Servants {
		b = appendServant(b, &m.Servants[i])
	}
	b = binary.AppendUvarint(b, uint64(len(m.Observed)))
	for i := range m.Observed {
		o := &m.Observed[i]
		b = appendCall(b, &o.Call)
		b = appendString(b, o.Servant)
		b = binary.AppendVarint(b, int64(o.Execution))
		b = appendBool(b, o.OK)
	}
	return b
}

func appendAssignResponse(b []byte, m *AssignResponse) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Assignments)))
	for _, a := range m.Assignments {
		b = binary.AppendVarint(b, int64(a.Call))
		b = binary.AppendVarint(b, int64(a.Servant))
		b = appendBool(b, a.Backlog)
	}
	return appendTime(b, m.Wake)
}

// decoder reads what the writers wrote; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("message ends early")

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the message", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("plugin message: %w", d.err)
	}
	return nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and checks that at least min bytes per item are
// left, so that a corrupt length cannot make the decoder allocate wildly.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/max(min, 1)) {
		d.fail(fmt.Errorf("count %d exceeds what the message holds", n))
		return 0
	}
	return int(n)
}

// raw returns the next length-prefixed bytes, aliasing the message.
func (d *decoder) raw() []byte {
	n := d.count(1)
	if d.err != nil {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// bytes returns a copy: gRPC may reuse the message's buffer once
// Unmarshal returns.
func (d *decoder) bytes() []byte { return append([]byte(nil), d.raw()...) }

func (d *decoder) string() string { return string(d.raw()) }

func (d *decoder) time() time.Time {
	if ns := d.varint(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (d *decoder) bool() bool {
	if len(d.b) == 0 {
		d.fail(errShort)
		return false
	}
	v := d.b[0] != 0
	d.b = d.b[1:]
	return v
}

func (d *decoder) call(c *dispatch.Call) {
	c.Method = d.string()
	if p := d.bytes(); len(p) > 0 {
		c.Params = p
	}
	c.Route = d.string()
	c.User = d.string()
	c.Arrived = d.time()
}

func (d *decoder) servant(s *dispatch.Servant) {
	s.Name, s.Addr, s.Host = d.string(), d.string(), d.string()
	if n := d.count(1); n > 0 {
		s.Tags = make([]string, n)
		for i := range s.Tags {
			s.Tags[i] = d.string()
		}
	}
	s.Slots, s.InFlight, s.Backlog = int(d.varint()), int(d.varint()), int(d.varint())
	s.Used = d.bool()
	s.LastRoute = d.string()
	s.LastUsed = d.time()
	hasFunctions := d.bool()
	n := d.count(1)
	if hasFunctions {
		s.Functions = make(map[string]bool, n)
	}
	for range n {
		f := d.string()
		if s.Functions != nil {
			s.Functions[f] = true
		}
	}
	s.Healthy, s.Draining, s.Ejected = d.bool(), d.bool(), d.bool()
	s.Latency = time.Duration(d.varint())
	s.Served = d.uvarint()
}

// minServant is the fewest bytes a servant takes: 17 one-byte fields
// (empty strings, zero numbers and time, no tags or functions).
const minServant = 17

func (d *decoder) assignRequest(m *AssignRequest) {
	m.Algorithm = d.string()
	m.Session = d.uvarint()
	m.Now = d.time()
	m.MaxBacklog = int(d.varint())
	m.Calls = make([]dispatch.Call, d.count(5))
	for i := range m.Calls {
		d.call(&m.Calls[i])
	}
	m.Servants = make([]dispatch.Servant, d.count(minServant))
	for i := range m.Servants {
		d.servant(&m.Servants[i])
	}
	if n := d.count(8); n > 0 {
		m.Observed = make([]Observation, n)
		for i := range m.Observed {
			o := &m.Observed[i]
			d.call(&o.Call)
			o.Servant = d.string()
			o.Execution = time.Duration(d.varint())
			o.OK = d.bool()
		}
	}
}

func (d *decoder) assignResponse(m *AssignResponse) {
	if n := d.count(3); n > 0 {
		m.Assignments = make([]dispatch.Assignment, n)
		for i := range m.Assignments {
			a := &m.Assignments[i]
			a.Call, a.Servant = int(d.varint()), int(d.varint())
			a.Backlog = d.bool()
		}
	}
	m.Wake = d.time()
}
