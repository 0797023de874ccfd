package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/egressd/egressd/providers"
)

func (p *Provider) lock(key string) func() {
	p.mu.Lock()
	m := p.lks[key]
	if m == nil {
		m = &sync.Mutex{}
		p.lks[key] = m
	}
	p.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// nicFor finds the VM's primary NIC: one list of the VM's resource group the first time
// (Azure has no NIC-by-VM lookup without the compute API; the list records every VM's NIC, so
// a resource group is listed once for all its VMs), cached afterwards.
func (p *Provider) nicFor(ctx context.Context, node providers.NodeRef) (nicRef, error) {
	vm, inst, err := parseProviderID(node.ProviderID)
	if err != nil {
		return nicRef{}, err
	}
	if inst != nil {
		return nicRef{}, fmt.Errorf("placing an egress IP on %s: a Uniform scale-set instance has no NIC resource", node.Name)
	}
	key := strings.ToLower(vm.id())
	p.mu.Lock()
	n, ok := p.nics[key]
	p.mu.Unlock()
	if ok {
		return n, nil
	}
	op := "finding the NIC of " + vm.id()
	listed, err := p.listNICs(ctx, vm.rg)
	if err != nil {
		return nicRef{}, fmt.Errorf("%s: %w", op, err)
	}
	nic := listed[key]
	if nic == nil {
		return nicRef{}, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errNoNIC}
	}
	return nicRef{vm.rg, deref(nic.Name)}, nil
}

var errNoNIC = errors.New("no network interface references this VM")

func (p *Provider) getNIC(ctx context.Context, n nicRef) (*armnetwork.Interface, error) {
	resp, err := p.c.Interfaces.Get(ctx, n.rg, n.name, nil)
	if err != nil {
		return nil, classify("getting NIC "+n.name, err)
	}
	return &resp.Interface, nil
}

// Bounds of the retries of a NIC write. The waits start at pollFrequency (1 s by default) and
// double.
const (
	// staleRetries bounds the re-reads after 412 PreconditionFailed: another writer changed the
	// NIC between our read and our write. Each retry re-reads at once; more than a few in a row
	// means the NIC is rewritten continuously, and the caller's next reconcile will do.
	staleRetries = 5
	// busyRetries bounds the waits for another operation on the NIC (provisioningState Updating
	// when read, 409 AnotherOperationInProgress or 429 RetryableError when written). With
	// busyMaxFactor they add up to about two minutes at the 1 s default, longer than ARM takes
	// to update a NIC.
	busyRetries   = 10
	busyMaxFactor = 16
)

// wait sleeps before the attempt-th retry of a busy resource: pollFrequency << attempt, at
// most busyMaxFactor × pollFrequency.
func (p *Provider) wait(ctx context.Context, attempt int) error {
	base := time.Duration(p.cfg.PollFrequency)
	d := base * busyMaxFactor
	if attempt < 4 {
		d = min(base<<attempt, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settled reports whether a provisioningState is terminal (Succeeded, Failed, Canceled: the ARM
// resource provider contract's three): no operation on the resource runs. Updating (and
// Creating, Deleting) is not done: what the document shows is the goal of an operation that may
// still fail.
func settled(ps *armnetwork.ProvisioningState) bool {
	return ps == nil || *ps == armnetwork.ProvisioningStateSucceeded || *ps == armnetwork.ProvisioningStateFailed || *ps == "Canceled"
}

func nicState(nic *armnetwork.Interface) *armnetwork.ProvisioningState {
	if nic.Properties == nil {
		return nil
	}
	return nic.Properties.ProvisioningState
}

// failed reports a NIC whose last operation failed or was canceled; its document may show
// changes that were never applied, so a write of the same content is not a no-op.
func failed(nic *armnetwork.Interface) bool {
	ps := nicState(nic)
	return ps != nil && (*ps == armnetwork.ProvisioningStateFailed || *ps == "Canceled")
}

// readNIC reads the NIC once no operation on it runs (busyRetries waits at most).
func (p *Provider) readNIC(ctx context.Context, n nicRef) (*armnetwork.Interface, error) {
	return readSettled(ctx, p, "reading NIC "+n.name, func() (*armnetwork.Interface, *armnetwork.ProvisioningState, error) {
		nic, err := p.getNIC(ctx, n)
		if err != nil {
			return nil, nil, err
		}
		return nic, nicState(nic), nil
	})
}

// readSettled reads a resource with get until its provisioningState is settled (no operation
// on it runs), waiting between reads (p.wait), busyRetries waits at most: then Conflict
// AnotherOperationInProgress. An error of get is returned as it is.
func readSettled[T any](ctx context.Context, p *Provider, op string, get func() (T, *armnetwork.ProvisioningState, error)) (T, error) {
	var zero T
	for attempt := 0; ; attempt++ {
		v, ps, err := get()
		if err != nil {
			return zero, err
		}
		if settled(ps) {
			return v, nil
		}
		if attempt == busyRetries {
			return zero, &providers.Error{Kind: providers.KindConflict, Op: op, Code: "AnotherOperationInProgress",
				Err: fmt.Errorf("stayed %s through %d reads", *ps, attempt+1)}
		}
		if err := p.wait(ctx, attempt); err != nil {
			return zero, err
		}
	}
}

// updateNIC applies change to the NIC and writes it back with If-Match, so a concurrent change
// by another writer (cloud-provider-azure moving load-balancer pools, an operator) is never
// overwritten. nic is the NIC as just read (nil: read it now). change edits the document it is
// given and says whether there is anything to write; it is called again on a fresh read when
// the write is refused because the NIC changed (412) or another operation on it runs (409
// AnotherOperationInProgress, RetryableError; after a wait), so it must derive everything from
// that document. It returns the NIC as written (or as read when change wrote nothing).
func (p *Provider) updateNIC(ctx context.Context, n nicRef, nic *armnetwork.Interface, change func(*armnetwork.Interface) (bool, error)) (*armnetwork.Interface, error) {
	stale, busy := 0, 0
	for {
		if nic == nil {
			var err error
			if nic, err = p.readNIC(ctx, n); err != nil {
				return nil, err
			}
		}
		write, err := change(nic)
		if err != nil || !write {
			return nic, err
		}
		err = p.putNIC(ctx, n, nic)
		switch {
		case err == nil:
			return nic, nil
		case isStale(err) && stale < staleRetries:
			stale++
		case isBusy(err) && busy < busyRetries:
			if err := p.wait(ctx, busy); err != nil {
				return nil, err
			}
			busy++
		default:
			return nil, err
		}
		nic = nil
	}
}

// putNIC writes the NIC if it is still as read (If-Match: its etag) and waits for the
// long-running operation; a failed operation is an error.
func (p *Provider) putNIC(ctx context.Context, n nicRef, nic *armnetwork.Interface) error {
	op := "updating NIC " + n.name
	if deref(nic.Etag) == "" {
		return fmt.Errorf("%s: the NIC as read has no etag, and egressd writes NICs only if they are unchanged since read", op)
	}
	// Even a refused or failed write may have changed the NIC (or shows that someone else did);
	// a list running during the write may show it either way.
	p.forgetListed(n)
	defer p.forgetListed(n)
	// The header goes on the PUT only: the operation's polls and final GET are not conditional.
	put := policy.WithHTTPHeader(ctx, http.Header{"If-Match": []string{*nic.Etag}})
	poller, err := p.c.Interfaces.BeginCreateOrUpdate(put, n.rg, n.name, *nic, nil)
	if err != nil {
		return classify(op, err)
	}
	if _, err := poller.PollUntilDone(ctx, p.pollOptions()); err != nil {
		return classify(op, err)
	}
	return nil
}

func configs(nic *armnetwork.Interface) []*armnetwork.InterfaceIPConfiguration {
	if nic.Properties == nil {
		return nil
	}
	return nic.Properties.IPConfigurations
}

func cfgIP(c *armnetwork.InterfaceIPConfiguration) netip.Addr {
	if c.Properties == nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(deref(c.Properties.PrivateIPAddress))
	return a
}

func primaryConfig(nic *armnetwork.Interface) *armnetwork.InterfaceIPConfiguration {
	for _, c := range configs(nic) {
		if c.Properties != nil && c.Properties.Primary != nil && *c.Properties.Primary {
			return c
		}
	}
	if cs := configs(nic); len(cs) > 0 {
		return cs[0]
	}
	return nil
}

func findConfig(nic *armnetwork.Interface, ip netip.Addr) *armnetwork.InterfaceIPConfiguration {
	for _, c := range configs(nic) {
		if cfgIP(c) == ip {
			return c
		}
	}
	return nil
}

// newConfig builds the secondary ipConfiguration: static address in the primary's subnet (or
// subnet), the primary's application security groups (so NSG rules written against them
// cover the egress address), no load-balancer pools (the egress address must not become an
// LB backend).
func newConfig(nic *armnetwork.Interface, name string, ip netip.Addr, subnet string, pip *armnetwork.PublicIPAddress) *armnetwork.InterfaceIPConfiguration {
	prim := primaryConfig(nic)
	props := &armnetwork.InterfaceIPConfigurationPropertiesFormat{
		Primary:                   to.Ptr(false),
		PrivateIPAddress:          to.Ptr(ip.String()),
		PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodStatic),
		PublicIPAddress:           pip,
	}
	if ip.Is6() {
		props.PrivateIPAddressVersion = to.Ptr(armnetwork.IPVersionIPv6)
	} else {
		props.PrivateIPAddressVersion = to.Ptr(armnetwork.IPVersionIPv4)
	}
	if subnet != "" {
		props.Subnet = &armnetwork.Subnet{ID: to.Ptr(subnet)}
	} else if prim != nil && prim.Properties != nil && prim.Properties.Subnet != nil {
		props.Subnet = &armnetwork.Subnet{ID: prim.Properties.Subnet.ID}
	}
	if prim != nil && prim.Properties != nil {
		props.ApplicationSecurityGroups = prim.Properties.ApplicationSecurityGroups
	}
	return &armnetwork.InterfaceIPConfiguration{Name: to.Ptr(name), Properties: props}
}

// removeConfig removes the ipConfiguration name from the NIC (PUT + wait). It returns the
// removed configuration, or nil when the NIC did not have it.
func (p *Provider) removeConfig(ctx context.Context, n nicRef, name string) (*armnetwork.InterfaceIPConfiguration, error) {
	defer p.lock(n.key())()
	var removed *armnetwork.InterfaceIPConfiguration
	_, err := p.updateNIC(ctx, n, nil, func(nic *armnetwork.Interface) (bool, error) {
		// removed stays what the first read found: a retry after our own write went through (a
		// 5xx after apply) reads the NIC without it.
		found := false
		var keep []*armnetwork.InterfaceIPConfiguration
		for _, c := range configs(nic) {
			if strings.EqualFold(deref(c.Name), name) {
				removed, found = c, true
				continue
			}
			keep = append(keep, c)
		}
		if !found {
			return false, nil
		}
		nic.Properties.IPConfigurations = keep
		return true, nil
	})
	if providers.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// holderOf finds the NIC holding the cluster's ipConfiguration for ip: the recorded one
// first, else by listing the resource group's NICs.
func (p *Provider) holderOf(ctx context.Context, cur providers.Assignment, name string) (*nicRef, error) {
	if n, _, ok := parseNICID(cur.InterfaceID); ok {
		nic, err := p.getNIC(ctx, n)
		if err == nil && configByName(nic, name) != nil {
			return &n, nil
		}
		if err != nil && !providers.IsNotFound(err) {
			return nil, err
		}
	}
	if p.cfg.ResourceGroup == "" {
		return nil, nil
	}
	var holder *nicRef
	err := p.eachNIC(ctx, "listing NICs", p.cfg.ResourceGroup, func(nic *armnetwork.Interface) bool {
		if configByName(nic, name) != nil {
			holder = &nicRef{p.cfg.ResourceGroup, deref(nic.Name)}
			return false
		}
		return true
	})
	return holder, err
}

// eachNIC calls fn with every NIC of resource group rg, page by page, until fn returns false.
func (p *Provider) eachNIC(ctx context.Context, op, rg string, fn func(*armnetwork.Interface) bool) error {
	pager := p.c.Interfaces.NewListPager(rg, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return classify(op, err)
		}
		for _, nic := range page.Value {
			if !fn(nic) {
				return nil
			}
		}
	}
	return nil
}

func configByName(nic *armnetwork.Interface, name string) *armnetwork.InterfaceIPConfiguration {
	for _, c := range configs(nic) {
		if strings.EqualFold(deref(c.Name), name) {
			return c
		}
	}
	return nil
}
