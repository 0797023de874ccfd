package coordinator

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/randfill"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/providers"
)

// filled returns a T with every field set to random data: a trimmed copy that keeps more than
// it should shows, and so does an answer that depends on a field the trim drops.
func filled[T any](seed int64) T {
	var v T
	randfill.NewWithSeed(seed).NilChance(0).NumElements(1, 3).Fill(&v)
	return v
}

// nodeCase is what the coordinator reads of a node; the rest of fullNode is random.
type nodeCase struct {
	name, zone, providerID, internalIP string
	selected, unschedulable, deleting  bool
	ready                              corev1.ConditionStatus // "" = no Ready condition
}

func fullNode(seed int64, c nodeCase) corev1.Node {
	n := filled[corev1.Node](seed)
	n.Name, n.Namespace = c.name, ""
	n.Labels = map[string]string{ZoneLabel: c.zone, corev1.LabelHostname: c.name}
	if c.selected {
		n.Labels["egress"] = "yes"
	}
	n.DeletionTimestamp = nil
	if c.deleting {
		n.DeletionTimestamp = &metav1.Time{Time: time.Unix(1700000000, 0)}
	}
	n.Spec.ProviderID, n.Spec.Unschedulable = c.providerID, c.unschedulable
	// Random conditions around the Ready one; addresses of every type, IPv6 first.
	conds := n.Status.Conditions
	if c.ready != "" {
		conds = append(conds, corev1.NodeCondition{Type: corev1.NodeReady, Status: c.ready, Reason: "KubeletReady"})
	}
	n.Status.Conditions = append(conds, filled[[]corev1.NodeCondition](seed+1)...)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "fd00::" + fmt.Sprint(seed)},
		{Type: corev1.NodeHostName, Address: c.name}, {Type: corev1.NodeExternalIP, Address: "198.51.100.7"}}
	if c.internalIP != "" {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: c.internalIP})
	}
	return n
}

// podCase is what the coordinator reads of a pod; the rest of fullPod is random.
type podCase struct {
	ns, app, ip string
	phase       corev1.PodPhase
	deleting    bool
	hostNetwork bool
}

func fullPod(seed int64, c podCase) corev1.Pod {
	p := filled[corev1.Pod](seed)
	p.Name, p.Namespace = fmt.Sprintf("pod-%d", seed), c.ns
	p.Labels = map[string]string{"app": c.app, "pod-template-hash": "5d4b8c7f9"}
	p.DeletionTimestamp = nil
	if c.deleting {
		p.DeletionTimestamp = &metav1.Time{Time: time.Unix(1700000000, 0)}
	}
	p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = c.phase, c.ip, nil
	if c.ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: c.ip}}
	}
	p.Spec.HostNetwork = c.hostNetwork
	return p
}

// TestTrimKeepsWhatIsRead: the functions that read cached Nodes and Pods give the same answers
// on trimmed copies as on complete objects.
func TestTrimKeepsWhatIsRead(t *testing.T) {
	nodeCases := []nodeCase{
		{name: "n0", zone: "a", providerID: "aws:///a/i-0", internalIP: "10.0.0.10", selected: true, ready: corev1.ConditionTrue},
		{name: "n1", zone: "a", providerID: "aws:///a/i-1", internalIP: "10.0.0.11", selected: true, ready: corev1.ConditionFalse},
		{name: "n2", zone: "b", providerID: "aws:///b/i-2", internalIP: "10.0.1.12", selected: true, ready: corev1.ConditionTrue, unschedulable: true},
		{name: "n3", zone: "b", providerID: "aws:///b/i-3", internalIP: "10.0.1.13", selected: true, ready: corev1.ConditionTrue, deleting: true},
		{name: "n4", zone: "b", providerID: "aws:///b/i-4", selected: true, ready: corev1.ConditionTrue},
		{name: "n5", zone: "c", providerID: "aws:///c/i-5", internalIP: "10.0.2.15", selected: true},
		{name: "n6", zone: "c", providerID: "aws:///c/i-6", internalIP: "10.0.2.16", ready: corev1.ConditionTrue},
		{name: "listed", zone: "c", providerID: "aws:///c/i-7", internalIP: "10.0.2.17", ready: corev1.ConditionTrue},
	}
	var full, trimmed []corev1.Node
	for i, c := range nodeCases {
		n := fullNode(int64(i), c)
		full, trimmed = append(full, n), append(trimmed, *trimNode(&n))
	}

	t.Run("nodeViews and nodeRef", func(t *testing.T) {
		now := time.Unix(1700000000, 0)
		c := New(Options{Config: Config{AgentLeaseTimeout: metav1.Duration{Duration: 10 * time.Second}},
			Health: &staticHealth{down: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.11"): true}}, Clock: testclock.NewFakeClock(now)})
		gw := &egressv1.EgressGateway{Spec: egressv1.EgressGatewaySpec{NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"egress": "yes"}}}}
		gw.Status.Zones = []egressv1.ZoneStatus{{Name: "c", Gateways: []egressv1.GatewayNodeStatus{{Node: "listed"}}}}
		renewed := metav1.NewMicroTime(now)
		leases := map[string]*coordinationv1.Lease{"n0": {Spec: coordinationv1.LeaseSpec{RenewTime: &renewed}}}
		views := func(nodes []corev1.Node) ([]NodeView, []providers.NodeRef) {
			var refs []providers.NodeRef
			v, err := c.nodeViews(gw, nodes, leases, func(ns []*corev1.Node) []int {
				free := make([]int, len(ns))
				for i, n := range ns {
					refs, free[i] = append(refs, nodeRef(n)), 3
				}
				return free
			})
			if err != nil {
				t.Fatal(err)
			}
			return v, refs
		}
		wantViews, wantRefs := views(full)
		gotViews, gotRefs := views(trimmed)
		if d := cmp.Diff(wantViews, gotViews, cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Errorf("nodeViews differ (-full +trimmed):\n%s", d)
		}
		if d := cmp.Diff(wantRefs, gotRefs); d != "" {
			t.Errorf("provider node refs differ (-full +trimmed):\n%s", d)
		}
		if len(wantRefs) == 0 {
			t.Error("no node reached the provider: the cases do not exercise nodeRef")
		}
	})

	t.Run("nodeChanged", func(t *testing.T) {
		pred := nodeChanged()
		// Every pair of cases, and each case against itself with different random rest (a
		// kubelet heartbeat, a new image: not a change).
		for i := range full {
			twin := fullNode(int64(100+i), nodeCases[i])
			for j := range full {
				want := pred.Update(event.UpdateEvent{ObjectOld: &full[i], ObjectNew: &full[j]})
				got := pred.Update(event.UpdateEvent{ObjectOld: &trimmed[i], ObjectNew: &trimmed[j]})
				if got != want {
					t.Errorf("nodeChanged(%s → %s): %v on trimmed nodes, %v on full ones", nodeCases[i].name, nodeCases[j].name, got, want)
				}
			}
			if pred.Update(event.UpdateEvent{ObjectOld: &full[i], ObjectNew: &twin}) {
				t.Errorf("nodeChanged(%s): a change of unread fields passes", nodeCases[i].name)
			}
			if pred.Update(event.UpdateEvent{ObjectOld: &trimmed[i], ObjectNew: trimNode(&twin)}) {
				t.Errorf("nodeChanged(%s): a change of unread fields passes on trimmed nodes", nodeCases[i].name)
			}
		}
	})

	podCases := []podCase{
		{ns: "a", app: "web", ip: "10.244.0.5", phase: corev1.PodRunning},
		{ns: "a", app: "db", ip: "10.244.0.6", phase: corev1.PodRunning},
		{ns: "b", app: "web", phase: corev1.PodPending},
		{ns: "b", app: "web", ip: "10.244.0.7", phase: corev1.PodSucceeded},
		{ns: "b", app: "web", ip: "10.244.0.8", phase: corev1.PodFailed},
		{ns: "b", app: "web", ip: "10.244.0.9", phase: corev1.PodRunning, deleting: true},
		{ns: "b", app: "web", ip: "10.0.0.10", phase: corev1.PodRunning, hostNetwork: true},
	}
	var fullPods, trimmedPods []corev1.Pod
	for i, c := range podCases {
		p := fullPod(int64(i), c)
		fullPods, trimmedPods = append(fullPods, p), append(trimmedPods, *trimPod(&p))
	}
	t.Run("policy pod count and selection", func(t *testing.T) {
		web, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}})
		selects := func(set map[string]string) bool { return matches(web, err, set) }
		for i := range fullPods {
			f, tr := &fullPods[i], &trimmedPods[i]
			if counted(f) != counted(tr) || selects(f.Labels) != selects(tr.Labels) || f.Namespace != tr.Namespace || f.GetName() != tr.GetName() {
				t.Errorf("pod %+v: counted %v/%v, selected %v/%v, key %s/%s vs %s/%s (full/trimmed)", podCases[i],
					counted(f), counted(tr), selects(f.Labels), selects(tr.Labels), f.Namespace, f.Name, tr.Namespace, tr.Name)
			}
		}
	})
	t.Run("podIPChanged", func(t *testing.T) {
		pred := podIPChanged()
		for i := range fullPods {
			twin := fullPod(int64(100+i), podCases[i])
			for j := range fullPods {
				want := pred.Update(event.UpdateEvent{ObjectOld: &fullPods[i], ObjectNew: &fullPods[j]})
				got := pred.Update(event.UpdateEvent{ObjectOld: &trimmedPods[i], ObjectNew: &trimmedPods[j]})
				if got != want {
					t.Errorf("podIPChanged(%d → %d): %v on trimmed pods, %v on full ones", i, j, got, want)
				}
			}
			if pred.Update(event.UpdateEvent{ObjectOld: &trimmedPods[i], ObjectNew: trimPod(&twin)}) {
				t.Errorf("podIPChanged(%d): a change of unread fields passes on trimmed pods", i)
			}
		}
	})
}

// TestTrimDropsTheRest: a trimmed Node or Pod holds exactly the kept fields, so containers,
// statuses, images, annotations and managed fields are gone; trimming is idempotent (informers
// may hand an object through twice) and leaves other kinds alone.
func TestTrimDropsTheRest(t *testing.T) {
	n := fullNode(1, nodeCase{name: "n", zone: "a", providerID: "aws:///a/i-1", internalIP: "10.0.0.1", ready: corev1.ConditionTrue, unschedulable: true, deleting: true})
	if len(n.Status.Images) == 0 || len(n.ManagedFields) == 0 || len(n.Annotations) == 0 || n.Status.NodeInfo.MachineID == "" {
		t.Fatal("the full node is not full")
	}
	var ready []corev1.NodeCondition
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = append(ready, c)
		}
	}
	wantNode := &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels,
			DeletionTimestamp: n.DeletionTimestamp},
		Spec:   corev1.NodeSpec{ProviderID: n.Spec.ProviderID, Unschedulable: true},
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses, Conditions: ready},
	}
	gotNode := trimNode(&n)
	if d := cmp.Diff(wantNode, gotNode); d != "" {
		t.Errorf("trimmed node (-want +got):\n%s", d)
	}
	if d := cmp.Diff(gotNode, trimNode(gotNode)); d != "" {
		t.Errorf("trimming a trimmed node changed it:\n%s", d)
	}

	p := fullPod(1, podCase{ns: "a", app: "web", ip: "10.244.0.5", phase: corev1.PodRunning, deleting: true})
	if len(p.Spec.Containers) == 0 || len(p.Status.ContainerStatuses) == 0 || len(p.ManagedFields) == 0 || len(p.OwnerReferences) == 0 {
		t.Fatal("the full pod is not full")
	}
	wantPod := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}},
	}
	gotPod := trimPod(&p)
	if d := cmp.Diff(wantPod, gotPod); d != "" {
		t.Errorf("trimmed pod (-want +got):\n%s", d)
	}
	if d := cmp.Diff(gotPod, trimPod(gotPod)); d != "" {
		t.Errorf("trimming a trimmed pod changed it:\n%s", d)
	}
}

// TestCacheTrimsPodsAndNodes runs the coordinator's cache options against the API server: the
// cache holds the trimmed objects, and the planner reads the same from them as from the
// complete ones.
func TestCacheTrimsPodsAndNodes(t *testing.T) {
	if server == nil {
		t.Skip("needs the envtest API server (not in -short mode)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ensureNamespace(t, "trim-test")
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "trim-test-node", Labels: map[string]string{ZoneLabel: "a", "egress": "yes"},
		Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}}, Spec: corev1.NodeSpec{ProviderID: "aws:///a/i-trim"}}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "trim-test-pod", Namespace: "trim-test", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
	for _, o := range []client.Object{n, p} {
		if err := server.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = server.Client.Delete(context.Background(), o) })
	}
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.9.0.1"}},
		Images:     []corev1.ContainerImage{{Names: []string{"registry.example/app:1"}, SizeBytes: 1 << 20}},
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.9.1", PodIPs: []corev1.PodIP{{IP: "10.244.9.1"}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "registry.example/app:1", Ready: true}}}
	for _, o := range []client.Object{n, p} {
		if err := server.Client.Status().Update(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	opts := cacheOptions(testNamespace)
	opts.Scheme = server.Scheme
	c, err := cache.New(server.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	var cn corev1.Node
	var cp corev1.Pod
	for {
		errN, errP := c.Get(ctx, client.ObjectKeyFromObject(n), &cn), c.Get(ctx, client.ObjectKeyFromObject(p), &cp)
		if errN == nil && errP == nil && contract.UnderlayIP(&cn).IsValid() && cp.Status.PodIP != "" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the cache never held the node and the pod with their status: %v, %v", errN, errP)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if len(cn.Status.Images) > 0 || len(cn.Annotations) > 0 || len(cn.ManagedFields) > 0 || len(cn.Status.Conditions) != 1 {
		t.Errorf("the cached node is not trimmed: %+v", cn)
	}
	if len(cp.Spec.Containers) > 0 || len(cp.Status.ContainerStatuses) > 0 || len(cp.ManagedFields) > 0 {
		t.Errorf("the cached pod is not trimmed: %+v", cp)
	}
	if nodeRef(&cn) != nodeRef(n) || !nodeReady(&cn) || contract.UnderlayIP(&cn) != contract.UnderlayIP(n) || !counted(&cp) || cp.Labels["app"] != "web" {
		t.Errorf("the cached node and pod read differently: %v %v %v, pod counted %v", nodeRef(&cn), nodeReady(&cn), contract.UnderlayIP(&cn), counted(&cp))
	}
}
