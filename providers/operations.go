package providers

// Operation names a Provider method. Decorators label metrics and choose rate limiters by it.
type Operation string

const (
	OpDiscoverNode Operation = "DiscoverNode"
	// OpDiscoverNodes is one batched discovery (NodesDiscoverer), however many nodes.
	OpDiscoverNodes Operation = "DiscoverNodes"
	OpEnsureIP      Operation = "EnsureIP"
	OpMoveIP        Operation = "MoveIP"
	OpReleaseIP     Operation = "ReleaseIP"
	OpListOwned     Operation = "ListOwned"
	OpReleaseOwned  Operation = "ReleaseOwned"
)

// Operations lists every Provider method.
var Operations = []Operation{OpDiscoverNode, OpDiscoverNodes, OpEnsureIP, OpMoveIP, OpReleaseIP, OpListOwned, OpReleaseOwned}

// Mutating reports whether the operation may change cloud state. Read operations are cheaper
// and have their own, larger, rate budget in every cloud.
func (o Operation) Mutating() bool {
	switch o {
	case OpEnsureIP, OpMoveIP, OpReleaseIP, OpReleaseOwned:
		return true
	}
	return false
}
