package launch

import (
	"encoding/json"
	"net"
	"time"

	"github.com/mserve/mserve/sdk/jsonrpc"
	"github.com/mserve/mserve/sdk/wire"
)

// frameConn reads and writes the protocol's frames on one connection.
type frameConn struct {
	nc net.Conn
	r  *wire.Reader
}

func newFrameConn(nc net.Conn) *frameConn {
	return &frameConn{nc: nc, r: wire.NewReader(nc, maxFrame)}
}

// write sends body as one frame, bounded by writeTimeout.
func (c *frameConn) write(body []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(wire.AppendFrame(make([]byte, 0, wire.HeaderSize+len(body)), body))
	return err
}

func (c *frameConn) read() ([]byte, error) { return c.r.ReadFrame(nil) }

// request sends a request (a notification when id is nil).
func (c *frameConn) request(id []byte, method string, params any) error {
	var raw []byte
	if params != nil {
		var err error
		if raw, err = json.Marshal(params); err != nil {
			return err
		}
	}
	return c.write(jsonrpc.AppendRequest(nil, id, method, raw))
}

// result answers the request id with v.
func (c *frameConn) result(id []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(jsonrpc.AppendResponse(nil, id, raw, nil, nil))
}

// fail answers the request id (null when nil) with e.
func (c *frameConn) fail(id []byte, e *jsonrpc.Error) error {
	return c.write(jsonrpc.AppendErrorResponse(nil, id, e, nil))
}
