package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/randfill"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// filled returns a T with every field set to random data: a trimmed copy that keeps more than
// it should shows, and so does an answer that depends on a field the trim drops.
func filled[T any](seed int64) T {
	var v T
	randfill.NewWithSeed(seed).NilChance(0).NumElements(1, 3).Fill(&v)
	return v
}

// fullPodOf is p with every field it leaves unset filled at random, and those the agent reads
// taken from p.
func fullPodOf(p corev1.Pod, seed int64) corev1.Pod {
	f := filled[corev1.Pod](seed)
	f.Name, f.Namespace, f.Labels, f.DeletionTimestamp = p.Name, p.Namespace, p.Labels, p.DeletionTimestamp
	f.Spec.NodeName, f.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	f.Status.Phase, f.Status.PodIP, f.Status.PodIPs = p.Status.Phase, p.Status.PodIP, p.Status.PodIPs
	return f
}

// fullNodeOf is n likewise.
func fullNodeOf(n *corev1.Node, seed int64) *corev1.Node {
	f := filled[corev1.Node](seed)
	f.Name, f.Namespace, f.Labels, f.DeletionTimestamp = n.Name, "", n.Labels, n.DeletionTimestamp
	f.Spec.Unschedulable = n.Spec.Unschedulable
	f.Status.Addresses = n.Status.Addresses
	return &f
}

// TestTrimKeepsWhatIsRead: the agent computes the same datapath state from trimmed Pods and
// Node as from complete ones, and inputs and sync read the same node name and cordon.
func TestTrimKeepsWhatIsRead(t *testing.T) {
	dual := func(in *Inputs) {
		// A pod with spec.podIPs, one with status.podIP only, the pods ComputeState leaves out,
		// and a cluster policy selecting by namespace labels.
		only := pod("other", "only-podip", nil, "app", "web")
		only.Status.PodIP = "10.244.0.20"
		hn := pod("default", "hn", []string{"10.0.0.11"}, "app", "web")
		hn.Spec.HostNetwork = true
		done := pod("default", "done", []string{"10.244.0.9"}, "app", "web")
		done.Status.Phase = corev1.PodSucceeded
		failed := pod("default", "failed", []string{"10.244.0.10"}, "app", "web")
		failed.Status.Phase = corev1.PodFailed
		in.Pods = append(in.Pods, only, hn, done, failed, pod("default", "pending", nil, "app", "web"),
			pod("other", "v6", []string{"fd00:244::7", "10.244.0.7"}, "app", "web"))
		in.Namespaces = append(in.Namespaces, namespace("other", "team", "x"))
		in.ClusterPolicies = append(in.ClusterPolicies, cpol("team-x", nsSel("team", "x"), rule("out", sel("app", "web"), []string{"198.51.100.0/24"})))
	}
	tests := []struct {
		name   string
		mutate func(*Inputs)
	}{
		{name: "worker"},
		{name: "every kind of pod", mutate: dual},
		{name: "zones: PreferLocal picks this node's zone", mutate: func(in *Inputs) {
			in.Gateways = []egressv1.EgressGateway{egw("out", 7, gw1, gw3)}
			in.EgressIPs = append(in.EgressIPs, eip("10.0.1.200", "out", "gw3"))
		}},
		{name: "zones: another zone", mutate: func(in *Inputs) {
			in.Node.Labels[corev1.LabelTopologyZone] = "b"
			in.Gateways = []egressv1.EgressGateway{egw("out", 7, gw1, gw3)}
		}},
		{name: "cordoned gateway node holding an egress IP", mutate: func(in *Inputs) {
			dual(in)
			in.Node = node("gw1", "a", "10.0.0.21")
			in.Node.Spec.Unschedulable = true
			for i := range in.Pods {
				in.Pods[i].Spec.NodeName = "gw1"
			}
			in.Gateways = []egressv1.EgressGateway{egw("out", 7, gw1, gw2)}
			in.Interfaces = []Interface{{Name: "eth0", MAC: mac("02:00:00:00:00:01"), Addrs: []netip.Addr{gw1IP}}}
		}},
		{name: "node without an IPv4 InternalIP", mutate: func(in *Inputs) {
			in.Node = node("worker1", "a", "fd00::11")
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			if tc.mutate != nil {
				tc.mutate(&in)
			}
			full, trimmed := in, in
			full.Node = fullNodeOf(in.Node, int64(i))
			trimmed.Node = trimNode(full.Node)
			full.Pods, trimmed.Pods = nil, nil
			for j, p := range in.Pods {
				f := fullPodOf(p, int64(100*i+j))
				full.Pods = append(full.Pods, f)
				trimmed.Pods = append(trimmed.Pods, *trimPod(&f))
			}

			want, wantErr := ComputeState(full)
			got, gotErr := ComputeState(trimmed)
			if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
				t.Fatalf("ComputeState: error %v on trimmed objects, %v on full ones", gotErr, wantErr)
			}
			if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{})); d != "" {
				t.Errorf("ComputeState differs (-full +trimmed):\n%s", d)
			}
			// inputs keeps the pods whose spec.nodeName is this node; sync sets the probe
			// responder's draining bit from spec.unschedulable.
			for j := range full.Pods {
				if full.Pods[j].Spec.NodeName != trimmed.Pods[j].Spec.NodeName {
					t.Errorf("pod %s: spec.nodeName %q trimmed to %q", full.Pods[j].Name, full.Pods[j].Spec.NodeName, trimmed.Pods[j].Spec.NodeName)
				}
			}
			if full.Node.Spec.Unschedulable != trimmed.Node.Spec.Unschedulable {
				t.Error("spec.unschedulable was not kept")
			}
		})
	}
}

// TestTrimDropsTheRest: a trimmed Pod or Node holds exactly the kept fields, so containers,
// statuses, volumes, images, annotations and managed fields are gone; trimming is idempotent
// (informers may hand an object through twice) and leaves other kinds alone.
func TestTrimDropsTheRest(t *testing.T) {
	deleted := &metav1.Time{Time: time.Unix(1700000000, 0)}
	p := pod("default", "a", []string{"10.244.0.5", "fd00:244::5"}, "app", "web")
	p.Spec.HostNetwork, p.DeletionTimestamp = true, deleted
	f := fullPodOf(p, 1)
	if len(f.Spec.Containers) == 0 || len(f.Status.ContainerStatuses) == 0 || len(f.Spec.Volumes) == 0 || len(f.ManagedFields) == 0 || len(f.Annotations) == 0 {
		t.Fatal("the full pod is not full")
	}
	wantPod := &corev1.Pod{
		TypeMeta: f.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "default", UID: f.UID, ResourceVersion: f.ResourceVersion,
			Labels: map[string]string{"app": "web"}, DeletionTimestamp: deleted},
		Spec:   corev1.PodSpec{NodeName: "worker1", HostNetwork: true},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}, {IP: "fd00:244::5"}}},
	}
	gotPod := trimPod(&f)
	if d := cmp.Diff(wantPod, gotPod); d != "" {
		t.Errorf("trimmed pod (-want +got):\n%s", d)
	}
	if d := cmp.Diff(gotPod, trimPod(gotPod)); d != "" {
		t.Errorf("trimming a trimmed pod changed it:\n%s", d)
	}

	n := node("worker1", "a", "10.0.0.11")
	n.Spec.Unschedulable = true
	fn := fullNodeOf(n, 2)
	if len(fn.Status.Images) == 0 || len(fn.Status.Conditions) == 0 || len(fn.ManagedFields) == 0 || fn.Spec.ProviderID == "" {
		t.Fatal("the full node is not full")
	}
	wantNode := &corev1.Node{
		TypeMeta: fn.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: "worker1", UID: fn.UID, ResourceVersion: fn.ResourceVersion,
			Labels: map[string]string{corev1.LabelTopologyZone: "a"}},
		Spec:   corev1.NodeSpec{Unschedulable: true},
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
	gotNode := trimNode(fn)
	if d := cmp.Diff(wantNode, gotNode); d != "" {
		t.Errorf("trimmed node (-want +got):\n%s", d)
	}
	if d := cmp.Diff(gotNode, trimNode(gotNode)); d != "" {
		t.Errorf("trimming a trimmed node changed it:\n%s", d)
	}
}
