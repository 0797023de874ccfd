package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/test/envtest"
	"github.com/egressd/egressd/test/netns"
)

func (l *Lab) startAPIServer(ctx context.Context) error {
	s, err := envtest.StartServer(ctx)
	if err != nil {
		return err
	}
	l.API = s
	l.Kubeconfig = filepath.Join(l.workDir, "kubeconfig")
	b, err := os.ReadFile(s.Kubeconfig)
	if err != nil {
		return err
	}
	return os.WriteFile(l.Kubeconfig, b, 0o600)
}

// startProxies makes the API server and the simulator, which listen on the root namespace's
// loopback, reachable at the same address from every node and the control plane: a listener
// on 127.0.0.1:<port> inside the namespace whose connections the lab process pipes to
// 127.0.0.1:<port> in the root namespace. The kubeconfig and endpoints stay identical. A node's
// proxies pass through its gate, which Partition closes: the path to the API server and the
// EC2 endpoint crosses the fabric on a real node.
func (l *Lab) startProxies(context.Context) error {
	_, apiPort, err := hostPort(l.API.Config.Host)
	if err != nil {
		return err
	}
	_, simPort, err := hostPort(l.SimAddr)
	if err != nil {
		return err
	}
	type target struct {
		ns   *netns.Namespace
		gate *apiGate
	}
	targets := []target{{ns: l.CP.Namespace, gate: &apiGate{}}}
	for _, n := range l.Nodes {
		targets = append(targets, target{ns: n.Namespace, gate: &n.down.gate})
	}
	for _, t := range targets {
		for _, port := range []int{apiPort, simPort} {
			if err := l.proxy(t.ns, port, t.gate); err != nil {
				return err
			}
		}
	}
	return nil
}

// apiGate cuts a namespace's proxies as a partition cuts the network: while cut, open
// connections lose their upstream but stay open and silent, and new ones are accepted and
// held without an answer, so clients see requests hang until their own timeouts, never a
// reset or a close.
type apiGate struct {
	mu     sync.Mutex
	healed chan struct{} // non-nil while cut; closed by heal
	ups    map[net.Conn]struct{}
}

// cut black-holes the gate's connections until heal.
func (g *apiGate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.healed != nil {
		return
	}
	g.healed = make(chan struct{})
	for up := range g.ups {
		_ = up.Close()
	}
}

func (g *apiGate) heal() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.healed != nil {
		close(g.healed)
		g.healed = nil
	}
}

// isCut returns the channel heal closes, or nil when the gate is open.
func (g *apiGate) isCut() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.healed
}

// track registers an upstream connection for cut; false if the gate is cut already.
func (g *apiGate) track(up net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.healed != nil {
		return false
	}
	if g.ups == nil {
		g.ups = map[net.Conn]struct{}{}
	}
	g.ups[up] = struct{}{}
	return true
}

func (g *apiGate) untrack(up net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.ups, up)
}

func (l *Lab) proxy(ns *netns.Namespace, port int, g *apiGate) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s in %s: %w", addr, ns.Name, err)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		<-l.ctx.Done()
		_ = ln.Close()
	}()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				pipe(l.ctx, c, addr, g)
			}()
		}
	}()
	return nil
}

// pipe copies between c and a new connection to addr in the root namespace until either side
// closes or the lab stops. While g is cut it holds c open and silent (a black hole) until the
// gate heals, then closes it.
func pipe(ctx context.Context, c net.Conn, addr string, g *apiGate) {
	defer c.Close()
	hold := func() {
		if healed := g.isCut(); healed != nil {
			select {
			case <-healed:
			case <-ctx.Done():
			}
		}
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	if !g.track(up) {
		hold()
		return
	}
	defer g.untrack(up)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass a close on, unless the gate cut the upstream: then the client hears nothing.
		if tc, ok := dst.(*net.TCPConn); ok && g.isCut() == nil {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	select {
	case <-done:
		if g.isCut() != nil {
			hold()
			return
		}
		<-done
	case <-ctx.Done():
	}
}

// registerObjects creates what a real cluster would have before egressd is installed: the
// egressd namespace, Nodes as kubelets register them (zone label, providerID, Ready,
// InternalIP), the workload namespace and the monitor Pod as the scheduler, kubelet and CNI
// leave it (nodeName, Running, podIP).
func (l *Lab) registerObjects(ctx context.Context) error {
	c := l.API.Client
	for _, name := range []string{SystemNS, WorkloadNS} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	for _, n := range l.Nodes {
		labels := map[string]string{ZoneLabel: n.Zone.Name, "kubernetes.io/hostname": n.Name,
			"topology.kubernetes.io/region": l.Config.region(), "node.kubernetes.io/instance-type": l.Config.InstanceType}
		if n.Gateway {
			labels[GatewayLabel] = GatewayGroup
		}
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels},
			Spec: corev1.NodeSpec{ProviderID: n.ProviderID, PodCIDR: n.PodCIDR.String(),
				PodCIDRs: []string{n.PodCIDR.String()}},
		}
		if err := c.Create(ctx, node); err != nil {
			return fmt.Errorf("creating node %s: %w", n.Name, err)
		}
		node.Status = corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{readyCondition(true)},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP.String()},
				{Type: corev1.NodeHostName, Address: n.Name}},
		}
		if err := c.Status().Update(ctx, node); err != nil {
			return fmt.Errorf("setting node %s's status: %w", n.Name, err)
		}
	}
	for _, p := range l.Topo.Pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: WorkloadNS, Labels: map[string]string{"app": p.Name}},
			Spec: corev1.PodSpec{NodeName: p.Node.Name,
				Containers: []corev1.Container{{Name: p.Name, Image: "egressd.io/lab/" + p.Name}}},
		}
		if err := c.Create(ctx, pod); err != nil {
			return fmt.Errorf("creating pod %s: %w", p.Name, err)
		}
		now := metav1.Now()
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, HostIP: p.Node.IP.String(),
			HostIPs: []corev1.HostIP{{IP: p.Node.IP.String()}},
			PodIP:   p.IP.String(), PodIPs: []corev1.PodIP{{IP: p.IP.String()}}, StartTime: &now,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
		if err := c.Status().Update(ctx, pod); err != nil {
			return fmt.Errorf("setting pod %s's status: %w", p.Name, err)
		}
	}
	return nil
}

func readyCondition(ready bool) corev1.NodeCondition {
	now := metav1.Now()
	c := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now}
	if !ready {
		c.Status, c.Reason, c.Message = corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status."
	}
	return c
}

// SetNodeReady sets the Node's Ready condition as the kubelet (true) or the node lifecycle
// controller (false: Unknown) would.
func (l *Lab) SetNodeReady(ctx context.Context, name string, ready bool) error {
	return retryConflict(ctx, func() error {
		var node corev1.Node
		if err := l.API.Client.Get(ctx, types.NamespacedName{Name: name}, &node); err != nil {
			return err
		}
		cond := readyCondition(ready)
		replaced := false
		for i := range node.Status.Conditions {
			if node.Status.Conditions[i].Type == corev1.NodeReady {
				node.Status.Conditions[i], replaced = cond, true
			}
		}
		if !replaced {
			node.Status.Conditions = append(node.Status.Conditions, cond)
		}
		return l.API.Client.Status().Update(ctx, &node)
	})
}

// SetGatewayLabel adds (on) or removes the gateway label of a node: removing it is the planned
// drain of DESIGN.md §5.
func (l *Lab) SetGatewayLabel(ctx context.Context, name string, on bool) error {
	return retryConflict(ctx, func() error {
		var node corev1.Node
		if err := l.API.Client.Get(ctx, types.NamespacedName{Name: name}, &node); err != nil {
			return err
		}
		if on {
			if node.Labels == nil {
				node.Labels = map[string]string{}
			}
			node.Labels[GatewayLabel] = GatewayGroup
		} else {
			delete(node.Labels, GatewayLabel)
		}
		return l.API.Client.Update(ctx, &node)
	})
}

func retryConflict(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if !apierrors.IsConflict(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ApplyDemoPolicy creates the walkthrough's objects: EgressGateway "lab" selecting the gateway
// nodes, one cloud (AWS) egress IP per zone, zone affinity Any so one pod's flows spread over
// every zone's IP, and an EgressPolicy sending the monitor pod's traffic to the echo server's
// network through it. In the GCP lab the group has public egress (cloud.public: a static
// external address per egress IP) and the policy also sends the on-premises network (OnPrem)
// through it, where the alias IPs show.
func (l *Lab) ApplyDemoPolicy(ctx context.Context) error {
	any := egressv1.AffinityAny
	gw := &egressv1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: GatewayGroup},
		Spec: egressv1.EgressGatewaySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{GatewayLabel: GatewayGroup}},
			Mode:         egressv1.ModeActiveActive,
			Addresses: egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: l.Config.Cloud, IPsPerZone: 1,
				Public: l.Config.Cloud == CloudGCP}},
			Zones: &egressv1.ZoneSpec{Affinity: any},
		},
	}
	if l.Config.ProbeInterval > 0 {
		gw.Spec.Health = &egressv1.HealthSpec{Interval: &metav1.Duration{Duration: l.Config.ProbeInterval}}
	}
	dsts := []string{netipPrefix24(l.Echo)}
	if l.OnPrem.IsValid() {
		dsts = append(dsts, netipPrefix24(l.OnPrem))
	}
	if err := l.API.Client.Create(ctx, gw); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating EgressGateway %s: %w", gw.Name, err)
	}
	pol := &egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "monitor-egress", Namespace: WorkloadNS},
		Spec: egressv1.EgressPolicyRule{
			PodSelector:      metav1.LabelSelector{MatchLabels: map[string]string{"app": MonitorPodName}},
			DestinationCIDRs: dsts,
			Gateway:          GatewayGroup,
		},
	}
	if err := l.API.Client.Create(ctx, pol); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating EgressPolicy %s: %w", pol.Name, err)
	}
	return nil
}

// GatewayStatus returns the demo EgressGateway.
func (l *Lab) GatewayStatus(ctx context.Context) (*egressv1.EgressGateway, error) {
	var gw egressv1.EgressGateway
	if err := l.API.Client.Get(ctx, client.ObjectKey{Name: GatewayGroup}, &gw); err != nil {
		return nil, err
	}
	return &gw, nil
}

// EgressIPs returns the EgressIP ledger.
func (l *Lab) EgressIPs(ctx context.Context) ([]egressv1.EgressIP, error) {
	var list egressv1.EgressIPList
	if err := l.API.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}
