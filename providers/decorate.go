package providers

import "context"

// call runs one Provider method through a decorator's hook. The decorators below share it so
// that each Provider method is spelled out once per decorator, not once per concern.
type hook func(ctx context.Context, op Operation, fn func(context.Context) error) error

// hooked is a Provider whose every method runs through h.
type hooked struct {
	next Provider
	h    hook
}

func (d *hooked) Name() string { return d.next.Name() }

func (d *hooked) DiscoverNode(ctx context.Context, node NodeRef) (*NodeInfo, error) {
	var out *NodeInfo
	err := d.h(ctx, OpDiscoverNode, func(ctx context.Context) error {
		var err error
		out, err = d.next.DiscoverNode(ctx, node)
		return err
	})
	return out, err
}

// DiscoverNodes runs one batched discovery through the hook when the decorated provider has
// it, else the nodes one by one (each through the hook).
func (d *hooked) DiscoverNodes(ctx context.Context, nodes []NodeRef) ([]*NodeInfo, []error) {
	b, ok := d.next.(NodesDiscoverer)
	if !ok {
		return discoverEach(ctx, d, nodes)
	}
	var infos []*NodeInfo
	var errs []error
	if err := d.h(ctx, OpDiscoverNodes, func(ctx context.Context) error {
		infos, errs = b.DiscoverNodes(ctx, nodes)
		return nil
	}); err != nil {
		// The hook refused the call (rate limit): every node failed alike.
		errs = make([]error, len(nodes))
		for i := range errs {
			errs[i] = err
		}
		return make([]*NodeInfo, len(nodes)), errs
	}
	return infos, errs
}

func (d *hooked) EnsureIP(ctx context.Context, req EnsureRequest) (*Assignment, error) {
	var out *Assignment
	err := d.h(ctx, OpEnsureIP, func(ctx context.Context) error {
		var err error
		out, err = d.next.EnsureIP(ctx, req)
		return err
	})
	return out, err
}

func (d *hooked) MoveIP(ctx context.Context, req MoveRequest) (*Assignment, error) {
	var out *Assignment
	err := d.h(ctx, OpMoveIP, func(ctx context.Context) error {
		var err error
		out, err = d.next.MoveIP(ctx, req)
		return err
	})
	return out, err
}

func (d *hooked) ReleaseIP(ctx context.Context, req ReleaseRequest) error {
	return d.h(ctx, OpReleaseIP, func(ctx context.Context) error { return d.next.ReleaseIP(ctx, req) })
}

func (d *hooked) ListOwned(ctx context.Context, cluster string) ([]OwnedResource, error) {
	var out []OwnedResource
	err := d.h(ctx, OpListOwned, func(ctx context.Context) error {
		var err error
		out, err = d.next.ListOwned(ctx, cluster)
		return err
	})
	return out, err
}

func (d *hooked) ReleaseOwned(ctx context.Context, res OwnedResource) error {
	return d.h(ctx, OpReleaseOwned, func(ctx context.Context) error { return d.next.ReleaseOwned(ctx, res) })
}

// Unwrap returns the decorated provider, so callers can look for optional interfaces.
func (d *hooked) Unwrap() Provider { return d.next }
