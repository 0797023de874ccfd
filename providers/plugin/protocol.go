// Package plugin carries the provider contract over a versioned HTTP+JSON protocol
// (docs/provider-plugin-protocol.md), so that providers for other clouds can live outside this
// repository: Client implements providers.Provider by calling a plugin server, and NewHandler
// serves any providers.Provider as one. The conformance suite runs through it.
package plugin

import (
	"github.com/egressd/egressd/providers"
)

// Version is the protocol version this package speaks. Paths carry it (/egressd-plugin/v1/...).
const Version = "v1"

// Base is the path prefix of every endpoint.
const Base = "/egressd-plugin"

// Endpoint paths under Base/<version>.
const (
	PathDiscoverNode = "/discover-node"
	PathEnsureIP     = "/ensure-ip"
	PathMoveIP       = "/move-ip"
	PathReleaseIP    = "/release-ip"
	PathListOwned    = "/list-owned"
	PathReleaseOwned = "/release-owned"
)

// Info is the answer of GET /egressd-plugin/info: the provider's name and the protocol
// versions the server speaks. The client picks the newest version both sides know.
type Info struct {
	Name     string   `json:"name"`
	Versions []string `json:"versions"`
}

// ListOwnedRequest is the body of list-owned.
type ListOwnedRequest struct {
	Cluster string `json:"cluster"`
}

// ListOwnedResponse is the answer of list-owned.
type ListOwnedResponse struct {
	Resources []providers.OwnedResource `json:"resources"`
}

// ErrorBody is the body of every non-2xx answer.
type ErrorBody struct {
	Error WireError `json:"error"`
}

// WireError is a provider error on the wire. Kind is one of NotFound, CapacityExhausted,
// Throttled, Conflict, Permission, or empty for an unclassified error.
type WireError struct {
	Kind         string `json:"kind,omitempty"`
	Op           string `json:"op,omitempty"`
	Code         string `json:"code,omitempty"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retryAfterMs,omitempty"`
}
