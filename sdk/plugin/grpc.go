package plugin

import (
	"context"
	"fmt"
	"sort"
	"sync"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mserve/mserve/sdk/dispatch"
)

const serviceName = "mserve.dispatch.v1.Dispatcher"

// handler is the shape of the service's methods.
type handler interface {
	describe(context.Context, *DescribeRequest) (*Manifest, error)
	assign(context.Context, *AssignRequest) (*AssignResponse, error)
	route(context.Context, *RouteRequest) (*RouteResponse, error)
}

func unary[Req any, Resp any](call func(handler, context.Context, *Req) (*Resp, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		return call(srv.(handler), ctx, in)
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*handler)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Describe", Handler: unary(handler.describe)},
		{MethodName: "Assign", Handler: unary(handler.assign)},
		{MethodName: "Route", Handler: unary(handler.route)},
	},
}

// Server is the plugin side of the dispatch service.
type Server struct {
	p         Plugin
	mu        sync.Mutex
	instances map[string]dispatch.Algorithm // by algorithm name and session
}

func newServer(p Plugin) *Server {
	return &Server{p: p, instances: map[string]dispatch.Algorithm{}}
}

func (s *Server) describe(context.Context, *DescribeRequest) (*Manifest, error) {
	m := &Manifest{Protocol: ProtocolVersion}
	for name, a := range s.p.Algorithms {
		m.Algorithms = append(m.Algorithms, AlgorithmInfo{Name: name, Summary: a.Summary, Backlog: a.Backlog})
	}
	for name, r := range s.p.Routes {
		m.Routes = append(m.Routes, RouteInfo{Name: name, Summary: r.Summary})
	}
	sort.Slice(m.Algorithms, func(i, j int) bool { return m.Algorithms[i].Name < m.Algorithms[j].Name })
	sort.Slice(m.Routes, func(i, j int) bool { return m.Routes[i].Name < m.Routes[j].Name })
	return m, nil
}

func (s *Server) instance(name string, session uint64) (dispatch.Algorithm, error) {
	spec, ok := s.p.Algorithms[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "this plugin has no algorithm %q", name)
	}
	key := fmt.Sprintf("%s/%d", name, session)
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.instances[key]
	if a == nil {
		a = spec.New()
		s.instances[key] = a
	}
	return a, nil
}

func (s *Server) assign(_ context.Context, req *AssignRequest) (*AssignResponse, error) {
	a, err := s.instance(req.Algorithm, req.Session)
	if err != nil {
		return nil, err
	}
	if obs, ok := a.(dispatch.Observer); ok && len(req.Observed) > 0 {
		byName := make(map[string]*dispatch.Servant, len(req.Servants))
		for i := range req.Servants {
			byName[req.Servants[i].Name] = &req.Servants[i]
		}
		for i := range req.Observed {
			o := &req.Observed[i]
			s := byName[o.Servant]
			if s == nil { // it has left since: the algorithm still learns who it was
				s = &dispatch.Servant{Name: o.Servant}
			}
			obs.Done(&o.Call, s, o.Execution, o.OK)
		}
	}
	calls := make([]*dispatch.Call, len(req.Calls))
	for i := range req.Calls {
		calls[i] = &req.Calls[i]
	}
	servants := make([]*dispatch.Servant, len(req.Servants))
	for i := range req.Servants {
		servants[i] = &req.Servants[i]
	}
	var p dispatch.Plan
	p.Reset(calls, servants, req.Now)
	p.MaxBacklog = req.MaxBacklog
	a.Assign(calls, servants, &p)
	return &AssignResponse{Assignments: p.Assignments(), Wake: p.Wake()}, nil
}

func (s *Server) route(_ context.Context, req *RouteRequest) (*RouteResponse, error) {
	r, ok := s.p.Routes[req.Router]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "this plugin has no routing function %q", req.Router)
	}
	route, err := r.Router.Route(&req.Call)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &RouteResponse{Route: route}, nil
}

// Client is mserve's side of the dispatch service.
type Client struct {
	conn *grpc.ClientConn
}

// GRPCClient implements goplugin.GRPCPlugin.
func (g *GRPCPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{conn: c}, nil
}

func (c *Client) invoke(ctx context.Context, method string, req, resp any) error {
	return c.conn.Invoke(ctx, "/"+serviceName+"/"+method, req, resp, grpc.CallContentSubtype(codecName))
}

// Describe asks the plugin what it provides.
func (c *Client) Describe(ctx context.Context) (*Manifest, error) {
	m := &Manifest{}
	return m, c.invoke(ctx, "Describe", &DescribeRequest{}, m)
}

// Assign runs one round of an algorithm in the plugin.
func (c *Client) Assign(ctx context.Context, req *AssignRequest) (*AssignResponse, error) {
	resp := &AssignResponse{}
	return resp, c.invoke(ctx, "Assign", req, resp)
}

// Route asks a routing function in the plugin for a routing string.
func (c *Client) Route(ctx context.Context, req *RouteRequest) (*RouteResponse, error) {
	resp := &RouteResponse{}
	return resp, c.invoke(ctx, "Route", req, resp)
}
