// Package agent is egressd's node agent (DESIGN.md §5, docs/control-plane.md): it watches its
// node's pods, the policies, the gateways and the egress IPs through the API server, computes
// the node's datapath state locally (ComputeState) and applies it; it probes the gateways of
// its groups and fails over in the datapath on its own; on gateway nodes the same state mounts
// the egress IPs it holds and serves their groups. It answers probes, renews its heartbeat
// Lease and exports the datapath counters.
//
// The datapath outlives the agent: nothing here tears it down, on shutdown or on API errors.
package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/agent/announce"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
)

// Dataplane is what the agent needs of the node's datapath; *dataplane.Dataplane has it.
type Dataplane interface {
	// Apply makes the datapath match a complete State.
	Apply(ctx context.Context, s dataplane.State) error
	// Run attaches the classifier to pod interfaces as they appear, until ctx ends; it is
	// started after the first successful Apply.
	Run(ctx context.Context) error
	// Stats returns the datapath counters.
	Stats() (map[bpf.StatsKey]bpf.Stats, error)
}

var _ Dataplane = (*dataplane.Dataplane)(nil)

// Defaults of Config.
const (
	// DefaultLeaseInterval is how often the heartbeat Lease is renewed; the coordinator
	// treats a Lease older than contract.AgentLeaseDuration as a dead agent.
	DefaultLeaseInterval = 2 * time.Second
	// DefaultDebounce coalesces bursts of events into one Apply while keeping a new pod's
	// steering within milliseconds.
	DefaultDebounce = time.Millisecond
	// DefaultResync re-applies an unchanged state, repairing drift (e.g. a link the
	// datapath's watch missed).
	DefaultResync = time.Minute
	// applyTimeout bounds one Apply.
	applyTimeout = 30 * time.Second
	// maxRetry caps the backoff after a failed Apply.
	maxRetry = 10 * time.Second
)

// Config of an Agent.
type Config struct {
	// NodeName is this node. Required.
	NodeName string
	// Namespace of the heartbeat Lease; empty means contract.DefaultNamespace.
	Namespace string
	// ProbePort is the port probes are sent to on every node; zero means
	// contract.DefaultProbePort.
	ProbePort uint16
	// PrefixBudget bounds the prefixes of policies (Inputs.PrefixBudget); zero fields mean
	// the contract's defaults. The coordinator must be given the same.
	PrefixBudget contract.PrefixBudget
	// ProbeAddress is where this node's responder listens; empty means ":<ProbePort>".
	ProbeAddress string
	// Dataplane is the node's datapath. Required.
	Dataplane Dataplane
	// ListenPacket opens the probe sockets; nil means net.ListenPacket. (Tests give one that
	// opens them in a node's network namespace.)
	ListenPacket func(network, address string) (net.PacketConn, error)
	// Interfaces lists the node's interfaces; nil means the calling process's (net.Interfaces).
	Interfaces func() ([]Interface, error)
	// Announce sends one gratuitous ARP / unsolicited NA for ip on the interface; nil means
	// announce.Send (in the calling thread's network namespace).
	Announce func(ifname string, ip netip.Addr) error
	// Registerer receives the agent's metrics; nil means none.
	Registerer prometheus.Registerer
	// ClusterCache makes the cache of every pod and node that a gateway node reads to admit
	// tunnelled traffic; Setup gives one (NewClusterCache). Nil: this agent's gateway role
	// admits no tunnelled traffic beyond what its datapath already admits.
	ClusterCache func() (cache.Cache, error)
	// NoDeliveryProof serves a cloud egress IP as soon as the cloud gives it to this node,
	// without proving that the fabric delivers it (Inputs.Delivered; docs/control-plane.md,
	// "Delivery"), and publishes no proofs, so the coordinator takes the cloud's word too.
	NoDeliveryProof bool
	// MaxGroup is the largest group id the datapath's packet mark layout carries
	// (Inputs.MaxGroup); zero means bpf.MaxGroup.
	MaxGroup uint32
	// Flows is the node's flow stream (egressctl observe), served by the manager's metrics
	// server (ManagerOptions.Flows); the agent reads the datapath's flow events for it while
	// a client watches. Nil: no flow stream.
	Flows *FlowHub
	// LeaseInterval, LeaseDuration (contract.AgentLeaseDuration), Debounce and Resync: zero
	// means the defaults.
	LeaseInterval, LeaseDuration, Debounce, Resync time.Duration
}

func (c *Config) defaults() error {
	if c.NodeName == "" {
		return errors.New("agent: node name is required")
	}
	if c.Dataplane == nil {
		return errors.New("agent: a dataplane is required")
	}
	if c.Namespace == "" {
		c.Namespace = contract.DefaultNamespace
	}
	if c.ProbePort == 0 {
		c.ProbePort = contract.DefaultProbePort
	}
	if err := c.PrefixBudget.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.ProbeAddress == "" {
		c.ProbeAddress = fmt.Sprintf(":%d", c.ProbePort)
	}
	if c.ListenPacket == nil {
		c.ListenPacket = net.ListenPacket
	}
	if c.Interfaces == nil {
		c.Interfaces = HostInterfaces
	}
	if c.Announce == nil {
		c.Announce = announce.Send
	}
	if c.LeaseInterval == 0 {
		c.LeaseInterval = DefaultLeaseInterval
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = contract.AgentLeaseDuration
	}
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.Resync == 0 {
		c.Resync = DefaultResync
	}
	return nil
}

// Agent is the node agent. Build it with New and run it with Run (or add it to a manager).
type Agent struct {
	cfg    Config
	cache  cache.Cache
	client client.Client // Lease writes
	reader client.Reader // Lease reads, uncached: the agent may not list Leases

	dirty     chan struct{}
	view      *clusterView
	responder *probe.Responder
	prober    *probe.Prober

	mu       sync.Mutex
	last     Result
	applied  *dataplane.State // last state applied successfully
	appliedN uint64
	readyErr error
	// becameReady wakes the heartbeat when the agent turns ready, so a restarted agent renews
	// its Lease at once instead of at its next tick.
	becameReady chan struct{}
	problems    []Problem

	// Static addresses of the last applied state, and those still to announce.
	announced    map[dataplane.EgressAddress]bool
	toAnnounce   []dataplane.EgressAddress
	announceKick chan struct{}

	delivery *deliveries
}

// New returns an agent reading through c (a started, or to be started, cache whose pods are
// limited to this node) and writing its Lease with cl and reader. It starts nothing.
func New(cfg Config, c cache.Cache, cl client.Client, reader client.Reader) (*Agent, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, cache: c, client: cl, reader: reader,
		dirty: make(chan struct{}, 1), announceKick: make(chan struct{}, 1), becameReady: make(chan struct{}, 1),
		readyErr: errors.New("no state applied yet"), delivery: newDeliveries()}
	a.view = &clusterView{newCache: cfg.ClusterCache, signal: a.signal}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(&collector{a: a}); err != nil {
			return nil, fmt.Errorf("registering agent metrics: %w", err)
		}
	}
	return a, nil
}

// NeedLeaderElection is false: every node runs its agent.
func (a *Agent) NeedLeaderElection() bool { return false }

// Ready returns nil once the last Apply succeeded; it backs the readiness endpoint and gates
// the heartbeat.
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.readyErr
}

// Applied returns the number of successful Applies and the last state applied.
func (a *Agent) Applied() (uint64, *dataplane.State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.appliedN, a.applied
}

func (a *Agent) signal() {
	select {
	case a.dirty <- struct{}{}:
	default:
	}
}

// Run runs the agent until ctx ends: probe responder and prober, watches, the apply loop, the
// heartbeat and the announcer of static egress IPs. It returns nil on ctx's end and leaves the
// datapath as last applied.
func (a *Agent) Run(ctx context.Context) error {
	logger := log.FromContext(ctx).WithValues("node", a.cfg.NodeName)
	ctx = log.IntoContext(ctx, logger)

	rconn, err := a.cfg.ListenPacket("udp4", a.cfg.ProbeAddress)
	if err != nil {
		return fmt.Errorf("listening for probes on %s: %w", a.cfg.ProbeAddress, err)
	}
	pconn, err := a.cfg.ListenPacket("udp4", ":0")
	if err != nil {
		_ = rconn.Close()
		return fmt.Errorf("opening the probe socket: %w", err)
	}
	responder := probe.NewResponder(rconn)
	prober := probe.NewProber(pconn, probe.Options{OnChange: func(s probe.Status) {
		logger.Info("gateway probe changed", "underlay", s.Addr.Addr(), "up", s.Up, "draining", s.Draining, "failures", s.Failures)
		a.signal()
	}})
	a.mu.Lock()
	a.responder, a.prober = responder, prober
	a.mu.Unlock()

	if !a.cfg.NoDeliveryProof {
		a.seedDeliveries(ctx, logger)
	}
	defer a.delivery.stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return responder.Run(ctx) })
	g.Go(func() error { return prober.Run(ctx) })
	g.Go(func() error {
		if err := a.watch(ctx); err != nil {
			return err
		}
		return a.loop(ctx, g)
	})
	g.Go(func() error { a.heartbeat(ctx); return nil })
	g.Go(func() error { a.runAnnouncer(ctx); return nil })
	if obs, ok := a.cfg.Dataplane.(flowObserver); ok && a.cfg.Flows != nil {
		g.Go(func() error { a.cfg.Flows.run(ctx, obs, a.flowRecord); return nil })
	}
	err = g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// watch registers event handlers that mark the state dirty, and waits for the caches.
func (a *Agent) watch(ctx context.Context) error {
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.signal() },
		UpdateFunc: func(any, any) { a.signal() },
		DeleteFunc: func(any) { a.signal() },
	}
	for _, obj := range []client.Object{
		&corev1.Node{}, &corev1.Pod{}, &corev1.Namespace{},
		&egressv1.EgressPolicy{}, &egressv1.ClusterEgressPolicy{}, &egressv1.EgressGateway{}, &egressv1.EgressIP{},
	} {
		inf, err := a.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	if !a.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("caches did not sync")
	}
	a.signal()
	return nil
}

// loop applies the state whenever something changed, after a short debounce; it retries a
// failed Apply with backoff and re-applies an unchanged state every Resync.
func (a *Agent) loop(ctx context.Context, g *errgroup.Group) error {
	logger := log.FromContext(ctx)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	resync := time.NewTicker(a.cfg.Resync)
	defer resync.Stop()
	backoff := 200 * time.Millisecond
	dpRunning := false
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-a.dirty:
		case <-retry.C:
			force = true
		case <-resync.C:
			force = true
		}
		if a.cfg.Debounce > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(a.cfg.Debounce):
			}
			select {
			case <-a.dirty:
			default:
			}
		}
		err := a.sync(ctx, force)
		if err != nil {
			logger.Error(err, "applying the datapath state; keeping the last one", "retryIn", backoff)
			retry.Reset(backoff)
			backoff = min(backoff*2, maxRetry)
			continue
		}
		backoff = 200 * time.Millisecond
		if !dpRunning {
			if n, _ := a.Applied(); n > 0 {
				dpRunning = true
				g.Go(func() error {
					if err := a.cfg.Dataplane.Run(ctx); err != nil && ctx.Err() == nil {
						return fmt.Errorf("watching pod interfaces: %w", err)
					}
					return nil
				})
			}
		}
	}
}

// sync computes the state from the caches and the probes and applies it if it changed (or
// force is set).
func (a *Agent) sync(ctx context.Context, force bool) error {
	logger := log.FromContext(ctx)
	in, err := a.inputs(ctx)
	if err != nil {
		return err
	}
	res, err := ComputeState(in)
	if err != nil {
		a.setReady(err)
		return err
	}
	a.responder.SetDraining(res.State.Draining)
	a.prober.SetTargets(res.Probes)
	a.logProblems(logger, res.Problems)
	if err := a.view.ensure(ctx, res.NeedsClusterView); err != nil {
		logger.Error(err, "starting the cluster view; until it starts the gateway admits only what its datapath already admits")
	}

	a.mu.Lock()
	a.last = res
	same := a.applied != nil && reflect.DeepEqual(*a.applied, res.State)
	a.mu.Unlock()
	if same && !force {
		a.proveDeliveries(ctx, in, res)
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, applyTimeout)
	defer cancel()
	start := time.Now()
	if err := a.cfg.Dataplane.Apply(actx, res.State); err != nil {
		a.setReady(fmt.Errorf("applying the datapath state: %w", err))
		return err
	}
	st := res.State
	a.mu.Lock()
	servedBefore := servedIPs(a.applied)
	a.applied = &st
	a.appliedN++
	wasReady := a.readyErr == nil
	a.readyErr = nil
	a.mu.Unlock()
	if !wasReady {
		select {
		case a.becameReady <- struct{}{}:
		default:
		}
	}
	if !maps.Equal(servedBefore, servedIPs(&st)) {
		a.delivery.kick() // publish the proofs of what is served now (Agent.published)
	}
	a.queueAnnouncements(res.Announce)
	a.proveDeliveries(ctx, in, res)
	if !same {
		logger.V(1).Info("applied datapath state", "pods", len(st.Pods), "policySets", len(st.PolicySets),
			"groups", len(st.Groups), "gateway", st.Gateway != nil, "took", time.Since(start))
	}
	return nil
}

// proveDeliveries starts the delivery proofs the applied state needs (its addresses are mounted
// now) and forgets those of addresses no longer held here.
func (a *Agent) proveDeliveries(ctx context.Context, in Inputs, res Result) {
	if a.cfg.NoDeliveryProof {
		return
	}
	a.delivery.update(ctx, log.FromContext(ctx), heldGenerations(a.cfg.NodeName, in.EgressIPs), res.DeliveryChecks, a.cfg.ListenPacket, a.signal)
}

func (a *Agent) setReady(err error) {
	a.mu.Lock()
	a.readyErr = err
	a.mu.Unlock()
}

func (a *Agent) logProblems(logger logr.Logger, problems []Problem) {
	a.mu.Lock()
	changed := !slices.EqualFunc(a.problems, problems, func(x, y Problem) bool { return reflect.DeepEqual(x, y) })
	a.problems = problems
	a.mu.Unlock()
	if changed {
		for _, p := range problems {
			logger.Info("skipping an object", "problem", p.String(), "reason", p.Kind)
		}
	}
}

// inputs reads the cache (ReadInputs; the cache holds this node's pods only) and adds this
// agent's own probe results, interfaces and set ids.
func (a *Agent) inputs(ctx context.Context) (Inputs, error) {
	in, err := ReadInputs(ctx, a.cache, a.cfg.NodeName)
	if err != nil {
		return in, err
	}
	if in.Node == nil {
		return in, fmt.Errorf("node %s not found", a.cfg.NodeName)
	}
	in.ProbePort, in.Namespace, in.PrefixBudget, in.MaxGroup = a.cfg.ProbePort, a.cfg.Namespace, a.cfg.PrefixBudget, a.cfg.MaxGroup
	if err := a.view.read(ctx, &in); err != nil {
		return in, err
	}
	a.mu.Lock()
	in.SetIDs, in.Listed = a.last.SetIDs, a.last.State.Groups
	a.mu.Unlock()
	if !a.cfg.NoDeliveryProof {
		in.Delivered = a.delivery.snapshot()
	}
	in.Health, in.ProbeDraining = map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, s := range a.prober.Statuses() {
		in.Health[s.Addr.Addr()] = s.Up
		in.ProbeDraining[s.Addr.Addr()] = s.Draining
	}
	ifs, err := a.cfg.Interfaces()
	if err != nil {
		// Only the gateway role needs them; a worker carries on.
		log.FromContext(ctx).Error(err, "listing interfaces")
	}
	in.Interfaces = ifs
	return in, nil
}

// HostInterfaces lists the interfaces of the calling process's network namespace.
func HostInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifc := range ifs {
		i := Interface{Name: ifc.Name, MAC: ifc.HardwareAddr}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					i.Addrs = append(i.Addrs, ip.Unmap())
				}
			}
		}
		out = append(out, i)
	}
	return out, nil
}

// Start runs the agent as a manager.Runnable.
func (a *Agent) Start(ctx context.Context) error { return a.Run(ctx) }
