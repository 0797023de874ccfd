package coordinator

import (
	"context"
	"net/netip"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/egressd/egressd/providers"
)

// Log keys (docs/logging.md): one meaning each, shared by every log line of the coordinator.
const (
	keyGateway  = "gateway"  // EgressGateway name
	keyNode     = "node"     // Kubernetes node name: where the address goes (ensure, move) or is (release)
	keyFrom     = "from"     // Kubernetes node name the address leaves (move)
	keyIP       = "ip"       // the egress IP (private address)
	keyProvider = "provider" // configured provider name (spec.addresses.cloud.provider, EgressIP spec.provider)
	keyOp       = "op"       // cloud mutation: ensure, move, release, releaseOwned
	keyResult   = "result"   // ok, or the provider error kind (Throttled, Conflict, ...; Error if unclassified)
)

// Cloud mutations, the values of keyOp.
const (
	opEnsure       = "ensure"
	opMove         = "move"
	opRelease      = "release"
	opReleaseOwned = "releaseOwned"
)

// logged is the decorator that logs every mutating call of a provider with its operation,
// address, node, gateway, provider and result, on the logger of the caller's context. Reads
// are not logged. Library packages never log (STYLE.md), so the coordinator does it here, once
// for every provider.
type logged struct {
	providers.Provider
	// name is the provider's configured name, which the ledger and the logs use.
	name string
}

func (l logged) mutation(ctx context.Context, op string, ip netip.Addr, gateway, node string, start time.Time, err error, extra ...any) {
	addr := ""
	if ip.IsValid() {
		addr = ip.String()
	}
	kv := append([]any{keyOp, op, keyIP, addr, keyNode, node, keyGateway, gateway, keyProvider, l.name,
		keyResult, resultOf(err), "duration", time.Since(start).Round(time.Millisecond)}, extra...)
	logger := log.FromContext(ctx)
	if err != nil {
		logger.Error(err, "cloud mutation", kv...)
		return
	}
	logger.Info("cloud mutation", kv...)
}

// resultOf is keyResult's value for a call's error.
func resultOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case providers.KindOf(err) != 0:
		return providers.KindOf(err).String()
	}
	return "Error"
}

// EnsureIP implements providers.Provider.
func (l logged) EnsureIP(ctx context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	start := time.Now()
	a, err := l.Provider.EnsureIP(ctx, req)
	l.mutation(ctx, opEnsure, req.IP, req.Owner.Gateway, req.Node.Name, start, err, assigned(a)...)
	return a, err
}

// MoveIP implements providers.Provider.
func (l logged) MoveIP(ctx context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	start := time.Now()
	a, err := l.Provider.MoveIP(ctx, req)
	l.mutation(ctx, opMove, req.Current.IP, req.Owner.Gateway, req.To.Name, start, err, append([]any{keyFrom, req.Current.Node}, assigned(a)...)...)
	return a, err
}

// ReleaseIP implements providers.Provider.
func (l logged) ReleaseIP(ctx context.Context, req providers.ReleaseRequest) error {
	start := time.Now()
	err := l.Provider.ReleaseIP(ctx, req)
	l.mutation(ctx, opRelease, req.Current.IP, req.Owner.Gateway, req.Current.Node, start, err)
	return err
}

// ReleaseOwned implements providers.Provider.
func (l logged) ReleaseOwned(ctx context.Context, res providers.OwnedResource) error {
	start := time.Now()
	err := l.Provider.ReleaseOwned(ctx, res)
	l.mutation(ctx, opReleaseOwned, res.IP, res.Owner.Gateway, res.Node, start, err, "kind", res.Kind, "id", res.ID)
	return err
}

// DiscoverNodes keeps the wrapped provider's batched discovery (providers.NodesDiscoverer).
func (l logged) DiscoverNodes(ctx context.Context, refs []providers.NodeRef) ([]*providers.NodeInfo, []error) {
	return providers.DiscoverNodes(ctx, l.Provider, refs)
}

// assigned are the keys of a successful assignment: the interface that holds the address.
func assigned(a *providers.Assignment) []any {
	if a == nil || a.InterfaceID == "" {
		return nil
	}
	return []any{"interface", a.InterfaceID}
}
