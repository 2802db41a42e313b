package wire

// Control methods. They use the "rpc." prefix that JSON-RPC 2.0 reserves
// for extensions, so they can never collide with a servant's functions.
const (
	// MethodHello opens a connection. A balancer sends it to a servant
	// (params HelloParams, result HelloResult); a client may send it to a
	// balancer to present credentials and options.
	MethodHello = "rpc.hello"
	// MethodCancel is a notification: params [id] names a call, by the
	// id the sender gave it, that nobody waits for any more.
	MethodCancel = "rpc.cancel"
	// MethodPing is a request answered at once with the result "pong";
	// it checks that a peer is alive and reading.
	MethodPing = "rpc.ping"
	// MethodRegister opens a connection a servant dialed to a balancer's
	// registration address (params RegisterParams, result
	// RegisterResult). Once answered, the connection is the servant's
	// link: the balancer sends calls on it and the servant answers them,
	// as on a connection the balancer dialed.
	MethodRegister = "rpc.register"
)

// ProtocolVersion is the version of the native protocol this package
// speaks. Peers refuse a hello with a different major version.
const ProtocolVersion = 1

// HelloParams is what a balancer tells a servant when it connects.
type HelloParams struct {
	Protocol int    `json:"protocol"`         // ProtocolVersion of the balancer
	Balancer string `json:"balancer"`         // the balancer's name, for the servant's logs
	Servant  string `json:"servant"`          // the name the balancer knows the servant by
	Secret   string `json:"secret,omitempty"` // the launch secret, when the servant requires one
}

// HelloResult is what a servant tells a balancer about itself.
type HelloResult struct {
	Protocol  int      `json:"protocol"`            // ProtocolVersion of the servant
	Name      string   `json:"name,omitempty"`      // the servant's own name for itself
	Slots     int      `json:"slots,omitempty"`     // calls it runs at once (default 1)
	Tags      []string `json:"tags,omitempty"`      // labels algorithms may route by
	Functions []string `json:"functions,omitempty"` // declarations of the functions it serves, e.g. "echo(x any)"
	// Balancer is set by a servant that is itself a balancer (an mserve
	// under another): its info records are nested, not merged.
	Balancer bool `json:"balancer,omitempty"`
}

// RegisterParams is what a servant tells a balancer when it registers: the
// registration secret and what a HelloResult says.
type RegisterParams struct {
	Protocol  int      `json:"protocol"`            // ProtocolVersion of the servant
	Secret    string   `json:"secret,omitempty"`    // the balancer's registration secret
	Name      string   `json:"name,omitempty"`      // the name to be known by; empty lets the balancer choose
	Slots     int      `json:"slots,omitempty"`     // calls it runs at once (default 1)
	Tags      []string `json:"tags,omitempty"`      // labels algorithms may route by
	Functions []string `json:"functions,omitempty"` // declarations of the functions it serves
}

// RegisterResult is a balancer's answer to a registration it accepted.
type RegisterResult struct {
	Protocol int    `json:"protocol"` // ProtocolVersion of the balancer
	Balancer string `json:"balancer"` // the balancer's name, for the servant's logs
	Servant  string `json:"servant"`  // the name the balancer knows the servant by
}
