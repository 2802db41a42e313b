// Command oldplugin is a dispatch plugin built against another version of
// the plugin protocol (1, where this mserve speaks sdk/plugin's
// ProtocolVersion): it shares mserve's handshake cookie but offers only
// version 1, so mserve must refuse it and say to rebuild it.
package main

import (
	"context"
	"errors"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/mserve/mserve/sdk/plugin"
)

// otherVersion is the protocol version this plugin speaks.
const otherVersion = 1

// dispatchV1 stands for the dispatch service of protocol version 1; the
// version negotiation fails before any of its methods could be called.
type dispatchV1 struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (dispatchV1) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error { return nil }

func (dispatchV1) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("oldplugin: server side only")
}

func main() {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  plugin.Handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{otherVersion: {plugin.PluginName: dispatchV1{}}},
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
}
