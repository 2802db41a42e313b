// Package plugin is what a compiled dispatch plugin is built with: the
// author implements dispatch.Algorithm and dispatch.Router (the same
// contract mserve's built-in algorithms and Lua scripts follow) and hands
// them to Serve; mserve starts the binary named in MSERVE_PLUGINS and talks
// to it over gRPC through hashicorp/go-plugin.
//
//	func main() {
//		plugin.Serve(plugin.Plugin{
//			Algorithms: map[string]plugin.AlgorithmSpec{
//				"mine": {Summary: "my algorithm", New: func() dispatch.Algorithm { return &mine{} }},
//			},
//		})
//	}
//
// mserve does not call a plugin once per call: it sends the waiting calls
// in batches (one round of the algorithm each), so a round trip to the
// plugin is paid per batch. Observations of finished calls (for algorithms
// that implement dispatch.Observer) ride along with the next batch.
package plugin

import (
	"os"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/mserve/mserve/sdk/dispatch"
)

// ProtocolVersion is the version of the plugin protocol. mserve refuses a
// plugin built against another version, with a message naming both.
const ProtocolVersion = 2

// Handshake is the go-plugin handshake shared by mserve and its plugins. A
// binary started by hand (not by mserve) prints a message saying so.
var Handshake = goplugin.HandshakeConfig{
	MagicCookieKey:   "MSERVE_PLUGIN",
	MagicCookieValue: "dispatch-6a1f0c",
}

// PluginName is the name the dispatch service is registered under.
const PluginName = "dispatch"

// AlgorithmSpec describes one algorithm a plugin provides.
type AlgorithmSpec struct {
	Summary string                    // one line for mserve -h and the status page
	New     func() dispatch.Algorithm // makes an instance; each mserve engine gets its own
	// Backlog is how many calls a busy servant may hold waiting for a slot
	// (0: calls go only to free slots), as dispatch.BacklogUser.
	Backlog int
}

// RouteSpec describes one routing function a plugin provides.
type RouteSpec struct {
	Summary string
	Router  dispatch.Router // must be safe for concurrent use
}

// Plugin is what a plugin binary serves.
type Plugin struct {
	Algorithms map[string]AlgorithmSpec
	Routes     map[string]RouteSpec
}

// Serve serves p to mserve and returns when mserve is done with it. Call it
// from main.
func Serve(p Plugin) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{ProtocolVersion: {PluginName: &GRPCPlugin{Impl: newServer(p)}}},
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
	os.Exit(0)
}

// GRPCPlugin binds the dispatch service to go-plugin. On the plugin side
// Impl serves; on mserve's side GRPCClient returns a *Client.
type GRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl *Server
}

// GRPCServer implements goplugin.GRPCPlugin.
func (g *GRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&serviceDesc, g.Impl)
	return nil
}
