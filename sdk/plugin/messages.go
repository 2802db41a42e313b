package plugin

import (
	"time"

	"github.com/mserve/mserve/sdk/dispatch"
)

// Manifest is what a plugin provides, as it tells mserve on start.
type Manifest struct {
	Protocol   int             `json:"protocol"`
	Algorithms []AlgorithmInfo `json:"algorithms"`
	Routes     []RouteInfo     `json:"routes"`
}

// AlgorithmInfo describes a provided algorithm.
type AlgorithmInfo struct {
	Name    string `json:"name"`
	Summary string `json:"summary,omitempty"`
	Backlog int    `json:"backlog,omitempty"`
}

// RouteInfo describes a provided routing function.
type RouteInfo struct {
	Name    string `json:"name"`
	Summary string `json:"summary,omitempty"`
}

// DescribeRequest asks for the manifest.
type DescribeRequest struct{}

// AssignRequest is one round of an algorithm over a batch of waiting calls.
type AssignRequest struct {
	Algorithm  string             `json:"algorithm"`
	Session    uint64             `json:"session"` // one per mserve engine: the plugin keeps an instance per session
	Now        time.Time          `json:"now"`
	MaxBacklog int                `json:"max_backlog"`
	Calls      []dispatch.Call    `json:"calls"`
	Servants   []dispatch.Servant `json:"servants"`
	Observed   []Observation      `json:"observed,omitempty"` // calls finished since the last round, for dispatch.Observer
}

// Observation is one finished call.
type Observation struct {
	Call      dispatch.Call `json:"call"`
	Servant   string        `json:"servant"` // the name of the servant that answered
	Execution time.Duration `json:"execution"`
	OK        bool          `json:"ok"`
}

// AssignResponse is the round's decisions.
type AssignResponse struct {
	Assignments []dispatch.Assignment `json:"assignments"`
	Wake        time.Time             `json:"wake"`
}

// RouteRequest asks a routing function for one call's routing string.
type RouteRequest struct {
	Router string        `json:"router"`
	Call   dispatch.Call `json:"call"`
}

// RouteResponse is the routing string.
type RouteResponse struct {
	Route string `json:"route"`
}
