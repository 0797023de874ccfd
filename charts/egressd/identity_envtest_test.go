package chart

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/test/envtest"
)

// leaderLease is the controller's leader-election Lease (gateway/coordinator setup.go).
const leaderLease = "egressd-controller"

// nodeNameExtra is the user extra the API server sets from a pod-bound service-account token
// (k8s.io/apiserver/pkg/authentication/serviceaccount.NodeNameKey).
const nodeNameExtra = "authentication.kubernetes.io/node-name"

// TestAgentIdentity applies the chart's identities (service accounts, RBAC, the agent's write
// policy) to a real API server and acts as the agent of node-a with the token the kubelet would
// give it: a TokenRequest bound to the agent's pod on node-a (envtest has no kubelet, so the
// test creates the Node and the Pod). The agent's own code then runs as that identity (its
// watches sync, it creates and renews its Lease, a stopping agent reads its DaemonSet), every
// write it must not make is refused, and the refusals that only the admission policy makes
// (RBAC alone allows them) succeed once the policy's binding is removed.
func TestAgentIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the envtest API server; skipped with -short")
	}
	env := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admin, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := releaseNamespace
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}); err != nil {
		t.Fatal(err)
	}
	r := mustRender(t, profiles["aws"])
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		for _, o := range r.ofKind(kind) {
			if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.FieldOwner("helm")); err != nil {
				t.Fatalf("applying %s %s: %v", kind, o.GetName(), err)
			}
		}
	}
	policy := into[admissionregistrationv1.ValidatingAdmissionPolicy](t, r.get(t, "ValidatingAdmissionPolicy", agentName+"-writes"))
	binding := into[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, r.get(t, "ValidatingAdmissionPolicyBinding", agentName+"-writes"))
	if binding.Spec.PolicyName != policy.Name {
		t.Fatalf("binding %s binds %q, want %q", binding.Name, binding.Spec.PolicyName, policy.Name)
	}

	// node-a runs the agent under test; node-b is another node with its heartbeat.
	// The agent is ready (and renews its Lease) only on a node with an underlay address.
	for n, ip := range map[string]string{"node-a": "127.0.0.1", "node-b": "127.0.0.2"} {
		node, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "egressd-agent-a"},
		Spec: corev1.PodSpec{ServiceAccountName: agentName, NodeName: "node-a",
			Containers: []corev1.Container{{Name: "agent", Image: "egressd-agent"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	boundCfg := tokenConfig(ctx, t, env.Config, admin, &authenticationv1.BoundObjectReference{
		Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID})
	unboundCfg := tokenConfig(ctx, t, env.Config, admin, nil)
	as := clients(t, boundCfg)
	unbound := clients(t, unboundCfg)

	// The API server tells who the token is: the agent's service account on node-a.
	review, err := as.cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := review.Status.UserInfo
	if want := "system:serviceaccount:" + ns + ":" + agentName; u.Username != want || len(u.Extra[nodeNameExtra]) != 1 || u.Extra[nodeNameExtra][0] != "node-a" {
		t.Fatalf("bound token authenticates as %s with extra %v, want %s on node-a", u.Username, u.Extra, want)
	}
	t.Logf("bound token: %s, %s=%v", u.Username, nodeNameExtra, u.Extra[nodeNameExtra])

	// What is already there: the controller's leader Lease and node-b's heartbeat.
	for name, holder := range map[string]string{leaderLease: "egressd-controller-7d9f-abcde", contract.AgentLeaseName("node-b"): "node-b"} {
		if _, err := admin.CoordinationV1().Leases(ns).Create(ctx, lease(ns, name, holder), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The policy takes effect once the API server has loaded it; until then RBAC alone decides.
	waitForPolicy(ctx, t, as.cs, ns, true)

	own := contract.AgentLeaseName("node-a")
	t.Run("the agent runs as its identity", func(t *testing.T) {
		runAgent(ctx, t, boundCfg, admin, ns, own)
	})

	// A refusal by admission, not by RBAC, names the policy.
	const byPolicy, byRBAC = "ValidatingAdmissionPolicy", "cannot"
	type attempt struct {
		name string
		// by is the refusal's mark: byPolicy for what RBAC allows and only the policy refuses.
		by string
		do func(ctx context.Context, c agentClients) error
	}
	leases := func(c agentClients) leaseClient { return leaseClient{cs: c.cs, ns: ns} }
	attempts := []attempt{
		{"renew the leader-election Lease", byPolicy, func(ctx context.Context, c agentClients) error {
			return leases(c).renew(ctx, leaderLease, "node-a")
		}},
		{"renew node-b's heartbeat", byPolicy, func(ctx context.Context, c agentClients) error {
			return leases(c).renew(ctx, contract.AgentLeaseName("node-b"), "node-b")
		}},
		{"take node-b's heartbeat (holderIdentity node-a)", byPolicy, func(ctx context.Context, c agentClients) error {
			return leases(c).renew(ctx, contract.AgentLeaseName("node-b"), "node-a")
		}},
		{"create a heartbeat for node-c", byPolicy, func(ctx context.Context, c agentClients) error {
			return leases(c).create(ctx, contract.AgentLeaseName("node-c"), "node-c")
		}},
		{"create a Lease with another name", byPolicy, func(ctx context.Context, c agentClients) error {
			return leases(c).create(ctx, "egressd-controller-2", "node-a")
		}},
		{"hand its own Lease to node-b (holderIdentity)", byPolicy, func(ctx context.Context, c agentClients) error {
			return leases(c).renew(ctx, own, "node-b")
		}},
		{"delete its own Lease", byRBAC, func(ctx context.Context, c agentClients) error {
			return c.cs.CoordinationV1().Leases(ns).Delete(ctx, own, metav1.DeleteOptions{})
		}},
		{"delete the leader-election Lease", byRBAC, func(ctx context.Context, c agentClients) error {
			return c.cs.CoordinationV1().Leases(ns).Delete(ctx, leaderLease, metav1.DeleteOptions{})
		}},
		{"patch the leader-election Lease", byRBAC, func(ctx context.Context, c agentClients) error {
			_, err := c.cs.CoordinationV1().Leases(ns).Patch(ctx, leaderLease, types.MergePatchType,
				[]byte(`{"spec":{"holderIdentity":"node-a"}}`), metav1.PatchOptions{})
			return err
		}},
		{"list Leases", byRBAC, func(ctx context.Context, c agentClients) error {
			_, err := c.cs.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"create its heartbeat in another namespace", byRBAC, func(ctx context.Context, c agentClients) error {
			return leaseClient{cs: c.cs, ns: "tenant"}.create(ctx, own, "node-a")
		}},
		{"create an EgressIP", byRBAC, func(ctx context.Context, c agentClients) error {
			return c.cl.Create(ctx, &egressv1.EgressIP{ObjectMeta: metav1.ObjectMeta{Name: "10.0.0.9"}})
		}},
		{"create an EgressGateway", byRBAC, func(ctx context.Context, c agentClients) error {
			return c.cl.Create(ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "gw"}})
		}},
		{"create an EgressPolicy", byRBAC, func(ctx context.Context, c agentClients) error {
			return c.cl.Create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "p"}})
		}},
		{"delete the agents' DaemonSet", byRBAC, func(ctx context.Context, c agentClients) error {
			return c.cs.AppsV1().DaemonSets(ns).Delete(ctx, agentName, metav1.DeleteOptions{})
		}},
		{"label its Node", byRBAC, func(ctx context.Context, c agentClients) error {
			_, err := c.cs.CoreV1().Nodes().Patch(ctx, "node-a", types.MergePatchType,
				[]byte(`{"metadata":{"labels":{"egressd.io/gateway":"true"}}}`), metav1.PatchOptions{})
			return err
		}},
		{"read a Secret", byRBAC, func(ctx context.Context, c agentClients) error {
			_, err := c.cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get a Pod (it only watches)", byRBAC, func(ctx context.Context, c agentClients) error {
			_, err := c.cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			return err
		}},
	}
	for _, a := range attempts {
		err := a.do(ctx, as)
		switch {
		case err == nil:
			t.Errorf("%s: allowed, want refused", a.name)
		case !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), a.by):
			t.Errorf("%s: %v, want refused by %s", a.name, err, map[string]string{byPolicy: "the admission policy", byRBAC: "RBAC"}[a.by])
		default:
			t.Logf("refused: %s: %v", a.name, err)
		}
	}

	// A token that is not bound to a pod names no node: even the agent's own Lease is refused.
	if err := (leaseClient{cs: unbound.cs, ns: ns}).renew(ctx, own, "node-a"); err == nil || !strings.Contains(err.Error(), "not bound to a pod") {
		t.Errorf("renewing %s with a token bound to no pod: %v, want refused by the admission policy", own, err)
	} else {
		t.Logf("refused: renew its own Lease with an unbound token: %v", err)
	}

	// Without the policy, RBAC alone lets the agent do what the policy refused: the policy is
	// what enforces it. Dry runs, so that nothing is changed.
	if err := admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, binding.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForPolicy(ctx, t, as.cs, ns, false)
	dry := leaseClient{cs: as.cs, ns: ns}
	dry.dryRun = true
	for name, do := range map[string]func() error{
		"renew the leader-election Lease": func() error { return dry.renew(ctx, leaderLease, "node-a") },
		"take node-b's heartbeat":         func() error { return dry.renew(ctx, contract.AgentLeaseName("node-b"), "node-a") },
		"create a heartbeat for node-c":   func() error { return dry.create(ctx, contract.AgentLeaseName("node-c"), "node-c") },
	} {
		if err := do(); err != nil {
			t.Errorf("without the policy, %s: %v, want allowed by RBAC", name, err)
		} else {
			t.Logf("without the policy, allowed: %s", name)
		}
	}
}

// runAgent runs the agent's manager and agent (gateway/agent NewManager and Setup, the code
// cmd/egressd-agent runs) with cfg, the agent's identity, until its heartbeat Lease was
// created and renewed; then asks, as a stopping agent does, whether its DaemonSet is gone.
func runAgent(ctx context.Context, t *testing.T, cfg *rest.Config, admin kubernetes.Interface, ns, own string) {
	mgr, err := agent.NewManager(cfg, agent.ManagerOptions{NodeName: "node-a", MetricsBindAddress: "0", HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	dp := &countingDataplane{}
	a, err := agent.Setup(mgr, agent.Config{NodeName: "node-a", Namespace: ns, Dataplane: dp,
		ProbeAddress: "127.0.0.1:0", LeaseInterval: 200 * time.Millisecond,
		ListenPacket: func(network, address string) (net.PacketConn, error) {
			// Loopback only: the agent's probe sockets.
			if address == ":0" {
				address = "127.0.0.1:0"
			}
			return net.ListenPacket(network, address)
		}})
	if err != nil {
		t.Fatal(err)
	}
	log.SetLogger(logr.Discard()) // the manager's own; the agent logs to the test
	runCtx, stop := context.WithCancel(log.IntoContext(ctx, testr.New(t)))
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent manager: %v", err)
		}
	}()

	// Created, then renewed (a later renewTime): through RBAC and the admission policy.
	var first time.Time
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := admin.CoordinationV1().Leases(ns).Get(ctx, own, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "node-a" || l.Spec.RenewTime == nil {
			return false, errors.New("the agent's Lease is not held by node-a")
		}
		if first.IsZero() {
			first = l.Spec.RenewTime.Time
			return false, nil
		}
		return l.Spec.RenewTime.After(first), nil
	})
	if err != nil {
		n, _ := a.Applied()
		t.Fatalf("waiting for the agent to create and renew %s (%d Applies, ready: %v): %v", own, n, a.Ready(), err)
	}
	n, _ := a.Applied()
	t.Logf("the agent's watches synced, %d Apply, Lease %s created and renewed", n, own)

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The chart's DaemonSet is not applied here: gone reads as an uninstall.
	if gone, err := agent.Uninstalling(ctx, cs, ns, agentName); err != nil || !gone {
		t.Errorf("a stopping agent reading its DaemonSet: gone %v, %v; want gone, no error", gone, err)
	}
	if _, err := agent.Uninstalling(ctx, cs, ns, "other"); !apierrors.IsForbidden(err) {
		t.Errorf("reading another DaemonSet: %v, want forbidden", err)
	}
}

// countingDataplane stands in for the node's datapath, which needs root and is not what this
// test is about: it accepts every state.
type countingDataplane struct {
	mu sync.Mutex
	n  int
}

func (d *countingDataplane) Apply(context.Context, dataplane.State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	return nil
}

func (d *countingDataplane) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (d *countingDataplane) Stats() (map[bpf.StatsKey]bpf.Stats, error) {
	return map[bpf.StatsKey]bpf.Stats{}, nil
}

type agentClients struct {
	cs kubernetes.Interface
	cl client.Client
}

func clients(t *testing.T, cfg *rest.Config) agentClients {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := envtest.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return agentClients{cs, cl}
}

// tokenConfig returns a config that authenticates with a token of the agent's service account,
// bound to ref (nil: bound to nothing).
func tokenConfig(ctx context.Context, t *testing.T, base *rest.Config, admin kubernetes.Interface, ref *authenticationv1.BoundObjectReference) *rest.Config {
	t.Helper()
	secs := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(releaseNamespace).CreateToken(ctx, agentName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs, BoundObjectRef: ref},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for %s bound to %+v: %v", agentName, ref, err)
	}
	cfg := rest.AnonymousClientConfig(base)
	cfg.BearerToken = tr.Status.Token
	return cfg
}

func lease(ns, name, holder string) *coordinationv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	secs := int32(contract.AgentLeaseDuration / time.Second)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
	}
}

// leaseClient writes Leases as the agent's renew does: create, or get and update.
type leaseClient struct {
	cs     kubernetes.Interface
	ns     string
	dryRun bool
}

func (c leaseClient) dry() []string {
	if c.dryRun {
		return []string{metav1.DryRunAll}
	}
	return nil
}

func (c leaseClient) create(ctx context.Context, name, holder string) error {
	_, err := c.cs.CoordinationV1().Leases(c.ns).Create(ctx, lease(c.ns, name, holder), metav1.CreateOptions{DryRun: c.dry()})
	return err
}

func (c leaseClient) renew(ctx context.Context, name, holder string) error {
	l, err := c.cs.CoordinationV1().Leases(c.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.NewMicroTime(time.Now())
	l.Spec.HolderIdentity, l.Spec.RenewTime = &holder, &now
	_, err = c.cs.CoordinationV1().Leases(c.ns).Update(ctx, l, metav1.UpdateOptions{DryRun: c.dry()})
	return err
}

// waitForPolicy waits until the API server enforces the agent's write policy (on) or no longer
// does (off), probing with a dry-run renewal of the leader Lease as the agent, which RBAC allows.
func waitForPolicy(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, on bool) {
	t.Helper()
	c := leaseClient{cs: cs, ns: ns, dryRun: true}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.renew(ctx, leaderLease, "node-a")
		if err != nil && !strings.Contains(err.Error(), "may write only Lease "+contract.AgentLeaseName("node-a")) {
			return false, err
		}
		return (err != nil) == on, nil
	})
	if err != nil {
		t.Fatalf("waiting for the agent's write policy to be enforced=%v: %v", on, err)
	}
}
