package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// Crash takes nodes down at once as a reboot or power loss does: the agent is killed and the
// node's fabric port unplugged, so neither its datapath nor its probe responder answers. After
// Config.NotReadyAfter, unless Restore came first, the Nodes turn NotReady as the node
// lifecycle controller would mark them.
func (l *Lab) Crash(ctx context.Context, names ...string) error {
	var errs []error
	nodes := make([]*Node, 0, len(names))
	for _, name := range names {
		n := l.Node(name)
		if n == nil {
			return fmt.Errorf("no node %q", name)
		}
		nodes = append(nodes, n)
	}
	// Cut every port first, then kill the agents: stopping an agent waits for the process to
	// be reaped, and doing both node by node staggered "three at once" by that wait.
	at := time.Now()
	for _, n := range nodes {
		if err := l.setFabricPort(n, false); err != nil {
			errs = append(errs, err)
		}
		n.downSince(at)
	}
	for _, name := range names {
		if err := l.StopAgent(name, syscall.SIGKILL); err != nil {
			errs = append(errs, err)
		}
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(l.Config.NotReadyAfter):
		}
		// Only nodes still down from this crash: one restored and crashed again since has
		// its own grace period.
		for _, n := range nodes {
			if n.downFrom(at) {
				_ = l.SetNodeReady(l.ctx, n.Name, false)
			}
		}
	}()
	return errors.Join(errs...)
}

// Restore brings crashed nodes back: port plugged, Node Ready (the kubelet is back), agent
// started.
func (l *Lab) Restore(ctx context.Context, names ...string) error {
	var errs []error
	for _, name := range names {
		n := l.Node(name)
		if n == nil {
			return fmt.Errorf("no node %q", name)
		}
		n.downSince(time.Time{})
		if err := l.setFabricPort(n, true); err != nil {
			errs = append(errs, err)
		}
		if err := l.SetNodeReady(ctx, name, true); err != nil {
			errs = append(errs, err)
		}
		if !l.Config.NoControlPlane {
			if err := l.StartAgent(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Reboot crashes nodes, keeps them down for downFor and restores them.
func (l *Lab) Reboot(ctx context.Context, downFor time.Duration, names ...string) error {
	if err := l.Crash(ctx, names...); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-time.After(downFor):
	}
	return l.Restore(context.WithoutCancel(ctx), names...)
}

func (l *Lab) setFabricPort(n *Node, up bool) error {
	nl := l.Topo.Fabric.Netlink()
	l.fabricMu.Lock()
	defer l.fabricMu.Unlock()
	link, err := nl.LinkByName(n.FabricPort)
	if err != nil {
		return fmt.Errorf("finding %s's fabric port %s: %w", n.Name, n.FabricPort, err)
	}
	if up {
		err = nl.LinkSetUp(link)
	} else {
		err = nl.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("setting %s's fabric port up=%v: %w", n.Name, up, err)
	}
	return nil
}

type downState struct {
	mu    sync.Mutex
	since time.Time
}

func (n *Node) downSince(t time.Time) {
	n.down.mu.Lock()
	n.down.since = t
	n.down.mu.Unlock()
}

func (n *Node) isDown() bool {
	n.down.mu.Lock()
	defer n.down.mu.Unlock()
	return !n.down.since.IsZero()
}

// downFrom reports whether the node is down since t (and was not restored in between).
func (n *Node) downFrom(t time.Time) bool {
	n.down.mu.Lock()
	defer n.down.mu.Unlock()
	return n.down.since.Equal(t)
}

// Drain removes the gateway label from a node: the planned maintenance of DESIGN.md §5.
func (l *Lab) Drain(ctx context.Context, name string) error {
	return l.SetGatewayLabel(ctx, name, false)
}

// Undrain puts the gateway label back.
func (l *Lab) Undrain(ctx context.Context, name string) error {
	return l.SetGatewayLabel(ctx, name, true)
}

// GatewayView is what the lab reads of the demo gateway's status.
type GatewayView struct {
	Ready     bool
	Reason    string
	EgressIPs []string          // status.egressIPs, sorted
	Holders   map[string]string // egress IP → node holding it (status.zones[].egressIPs)
	States    map[string]string // node → gateway state
	Public    map[string]string // egress IP → public IP
}

// Active returns the nodes in state Active.
func (v GatewayView) Active() []string {
	var out []string
	for n, s := range v.States {
		if s == string(egressv1.GatewayActive) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (v GatewayView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ready=%v", v.Ready)
	if v.Reason != "" {
		fmt.Fprintf(&b, " (%s)", v.Reason)
	}
	fmt.Fprintf(&b, " egressIPs=%v gateways=", v.EgressIPs)
	names := make([]string, 0, len(v.States))
	for n := range v.States {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, n := range names {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s:%s", n, v.States[n])
	}
	return b.String()
}

// View reads the demo gateway's status.
func (l *Lab) View(ctx context.Context) (GatewayView, error) {
	gw, err := l.GatewayStatus(ctx)
	if err != nil {
		return GatewayView{}, err
	}
	v := GatewayView{Holders: map[string]string{}, States: map[string]string{}, Public: map[string]string{}}
	if c := meta.FindStatusCondition(gw.Status.Conditions, egressv1.ConditionReady); c != nil {
		v.Ready = c.Status == "True"
		v.Reason = c.Reason
	}
	v.EgressIPs = slices.Sorted(slices.Values(gw.Status.EgressIPs))
	for _, z := range gw.Status.Zones {
		for _, g := range z.Gateways {
			v.States[g.Node] = string(g.State)
		}
		for _, e := range z.EgressIPs {
			v.Holders[e.IP] = e.Node
			if e.PublicIP != "" {
				v.Public[e.IP] = e.PublicIP
			}
		}
	}
	return v, nil
}

// WaitFor polls the gateway's view until cond holds, ctx ends or timeout passes; the error
// then says what the status last showed.
func (l *Lab) WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(GatewayView) bool) (GatewayView, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last GatewayView
	var lastErr error
	for {
		v, err := l.View(ctx)
		if err == nil && cond(v) {
			return v, nil
		}
		last, lastErr = v, err
		if l.controller != nil && !l.ControllerRunning() {
			return last, fmt.Errorf("waiting for %s: egressd-controller exited; last lines of %s:\n%s", what, l.LogPath(""), Tail(l.LogPath(""), 15))
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), lastErr)
			}
			return last, fmt.Errorf("waiting for %s: %w; the gateway's status last showed %s", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// AllActive is the condition of a gateway fully up: Ready, every zone's egress IP held by a
// node of that zone (with one IP per zone and two gateways per zone, one Active holder and one
// Standby), and every gateway node of the lab Active or Standby.
func (l *Lab) AllActive(v GatewayView) bool {
	if !v.Ready || !l.ZonesHeld(v) {
		return false
	}
	for _, n := range l.Gateways() {
		if s := v.States[n.Name]; s != string(egressv1.GatewayActive) && s != string(egressv1.GatewayStandby) {
			return false
		}
	}
	return true
}

// egressSources are the addresses the echo server should see: each egress IP's public IP when it
// has one, else the private one.
func egressSources(v GatewayView) []string {
	var out []string
	for ip := range v.Holders {
		if p := v.Public[ip]; p != "" {
			out = append(out, p)
		} else {
			out = append(out, ip)
		}
	}
	slices.Sort(out)
	return out
}
