package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/test/envtest"
	"github.com/egressd/egressd/test/lab"
)

// clientStatus is the client pod's last status line.
type clientStatus struct {
	httpOK, httpErr, flowOK, flowErr, flowConns int
	lastIP, flowIP, lastErr                     string
}

func parseStatus(line string) (clientStatus, bool) {
	var st clientStatus
	if !strings.HasPrefix(line, "status ") {
		return st, false
	}
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "http_ok":
			st.httpOK = n
		case "http_err":
			st.httpErr = n
		case "flow_ok":
			st.flowOK = n
		case "flow_err":
			st.flowErr = n
		case "flow_conns":
			st.flowConns = n
		case "last_ip":
			st.lastIP = v
		case "flow_ip":
			st.flowIP = v
		}
	}
	if _, e, ok := strings.Cut(line, "last_err="); ok {
		st.lastErr = e
	}
	return st, true
}

// status reads the client's last status line through the API server and the kubelet (logs
// are themselves a check of --kubelet-preferred-address-types).
func (s *suite) status(ctx context.Context) (clientStatus, error) {
	tail := int64(2)
	b, err := s.c.Client.CoreV1().Pods(workloadNS).GetLogs("client", &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
	if err != nil {
		return clientStatus{}, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if st, ok := parseStatus(lines[i]); ok {
			return st, nil
		}
	}
	return clientStatus{}, fmt.Errorf("no status line in %q", b)
}

// clientStatus waits up to a minute for a status line satisfying ok.
func (s *suite) clientStatus(t *testing.T, ok func(clientStatus) bool) clientStatus {
	t.Helper()
	var last clientStatus
	s.wait(t, "the client's status", time.Minute, func(ctx context.Context) (bool, error) {
		st, err := s.status(ctx)
		if err != nil {
			return false, nil
		}
		last = st
		return ok(st), nil
	})
	return last
}

func (s *suite) helmInstall(t *testing.T) {
	values := fmt.Sprintf(`clusterName: %s
provider: aws
aws:
  region: %s
  vpcID: %s
image:
  # The images were imported into every node's containerd; there is no registry.
  pullPolicy: Never
controller:
  logLevel: debug
  extraEnv:
    - {name: AWS_ENDPOINT_URL_EC2, value: %q}
    - {name: AWS_ACCESS_KEY_ID, value: AKIDEGRESSDE2E}
    - {name: AWS_SECRET_ACCESS_KEY, value: egressd-e2e}
    - {name: AWS_EC2_METADATA_DISABLED, value: "true"}
agent:
  logLevel: debug
  # The bridge CNI's host-side interfaces.
  podInterfacePatterns: [veth*]
`, ClusterName, Region, s.c.VPC, s.c.SimURL)
	f := filepath.Join(s.c.Config.Dir, "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	s.before = map[string]nodeState{}
	for _, n := range s.c.Nodes {
		st, err := readNodeState(n)
		if err != nil {
			t.Fatal(err)
		}
		s.before[n.Name] = st
	}
	chart := filepath.Join(envtest.RepoRoot(), "charts", "egressd")
	start := time.Now()
	if out, err := s.c.Helm(s.ctx, "install", "egressd", chart, "--namespace", releaseNS, "--create-namespace", "-f", f); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm install (%s):\n%s", time.Since(start).Round(time.Millisecond), firstLines(out, 6))
	}
	s.waitReady(t, "all egressd pods Ready after helm install", 4*time.Minute, "")
	t.Logf("FIGURE helm install to all pods Ready: %s", time.Since(start).Round(time.Millisecond))
	s.heartbeatsThroughPolicy(t)
	s.idleFigures(t)
}

// heartbeatsThroughPolicy checks that every agent created and renews its own Lease with the
// token its kubelet gave it, while the chart's write policy (admission-agent.yaml) is in force:
// the policy admits a kubelet's pod-bound token for the agent's own node.
func (s *suite) heartbeatsThroughPolicy(t *testing.T) {
	t.Helper()
	if _, err := s.c.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(s.ctx, "egressd-agent-writes", metav1.GetOptions{}); err != nil {
		t.Fatalf("the agent's write policy binding: %v", err)
	}
	// first renewal time seen per node; the condition holds once every Lease renewed after it.
	first := map[string]time.Time{}
	s.wait(t, "every agent renewing its own heartbeat Lease", time.Minute, func(ctx context.Context) (bool, error) {
		all := true
		for _, n := range s.c.Nodes {
			l, err := s.c.Client.CoordinationV1().Leases(releaseNS).Get(ctx, contract.AgentLeaseName(n.Name), metav1.GetOptions{})
			if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != n.Name || l.Spec.RenewTime == nil {
				return false, nil
			}
			if f, ok := first[n.Name]; !ok {
				first[n.Name] = l.Spec.RenewTime.Time
				all = false
			} else if !l.Spec.RenewTime.After(f) {
				all = false
			}
		}
		return all, nil
	})
	t.Logf("%d agents renew their own heartbeat Lease under the write policy", len(s.c.Nodes))
}

// waitReady waits for the controller Deployment (2 replicas) and the agent DaemonSet (one per
// node, image tag agentTag when given) to be rolled out and Ready.
func (s *suite) waitReady(t *testing.T, what string, timeout time.Duration, agentTag string) {
	t.Helper()
	s.wait(t, what, timeout, func(ctx context.Context) (bool, error) {
		var dep appsv1.Deployment
		if err := s.crc.Get(ctx, types.NamespacedName{Namespace: releaseNS, Name: "egressd-controller"}, &dep); err != nil {
			return false, nil
		}
		var ds appsv1.DaemonSet
		if err := s.crc.Get(ctx, types.NamespacedName{Namespace: releaseNS, Name: "egressd-agent"}, &ds); err != nil {
			return false, nil
		}
		if agentTag != "" && !strings.HasSuffix(ds.Spec.Template.Spec.Containers[0].Image, ":"+agentTag) {
			return false, nil
		}
		n := int32(len(s.c.Nodes))
		return dep.Status.ReadyReplicas == 2 && dep.Status.UpdatedReplicas == 2 && dep.Status.Replicas == 2 &&
			ds.Status.ObservedGeneration == ds.Generation && ds.Status.NumberReady == n &&
			ds.Status.UpdatedNumberScheduled == n && ds.Status.DesiredNumberScheduled == n, nil
	})
}

// idleFigures logs the agent's and the controller's memory and CPU from their cgroups, over
// 10 s of idleness.
func (s *suite) idleFigures(t *testing.T) {
	type sample struct {
		name      string
		cpu0, mem int64
		cpuPath   string
		memPath   string
	}
	var samples []*sample
	for _, n := range s.c.Nodes {
		for _, comp := range []string{"agent", "controller"} {
			pods, err := s.c.Client.CoreV1().Pods(releaseNS).List(s.ctx, metav1.ListOptions{
				LabelSelector: "app.kubernetes.io/component=" + comp, FieldSelector: "spec.nodeName=" + n.Name})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods.Items {
				cg := podCgroup(n, p)
				if cg == "" {
					t.Logf("no cgroup found for %s/%s on %s", comp, p.Name, n.Name)
					continue
				}
				samples = append(samples, &sample{name: comp + " " + p.Name + " on " + n.Name,
					cpuPath: filepath.Join("/sys/fs/cgroup/cpuacct", cg, "cpuacct.usage"),
					memPath: filepath.Join("/sys/fs/cgroup/memory", cg, "memory.usage_in_bytes")})
			}
		}
	}
	for _, sm := range samples {
		sm.cpu0 = readInt(sm.cpuPath)
	}
	const window = 10 * time.Second
	time.Sleep(window)
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	for _, sm := range samples {
		cpu := float64(readInt(sm.cpuPath)-sm.cpu0) / float64(window.Nanoseconds()) * 1000
		sm.mem = readInt(sm.memPath)
		dir := filepath.Dir(sm.memPath)
		stat := memoryStat(filepath.Join(dir, "memory.stat"))
		t.Logf("FIGURE idle %s: CPU %.1f millicores over %s; memory %.1f MiB charged (rss %.1f, page cache %.1f, kernel %.1f: BPF maps are charged here)",
			sm.name, cpu, window, mib(sm.mem), mib(stat["total_rss"]), mib(stat["total_cache"]), mib(readInt(filepath.Join(dir, "memory.kmem.usage_in_bytes"))))
	}
}

// podCgroup finds a pod's cgroup under the node's kubelet cgroupRoot (QoS class directories
// included), relative to a hierarchy's root.
func podCgroup(n *Node, p corev1.Pod) string {
	want := "pod" + string(p.UID)
	var found string
	root := filepath.Join("/sys/fs/cgroup/memory", n.CgroupRoot)
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == want {
			found = strings.TrimPrefix(path, "/sys/fs/cgroup/memory")
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

func memoryStat(path string) map[string]int64 {
	out := map[string]int64{}
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, " ")
		if ok {
			out[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return out
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (s *suite) egressThroughGateway(t *testing.T) {
	gw := &egressv1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: GatewayGroup},
		Spec: egressv1.EgressGatewaySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{GatewayLabel: GatewayGroup}},
			Mode:         egressv1.ModeActiveStandby,
			Addresses:    egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws", IPsPerZone: 1}},
			Zones:        &egressv1.ZoneSpec{Affinity: egressv1.AffinityAny},
		},
	}
	if err := s.crc.Create(s.ctx, gw); err != nil {
		t.Fatal(err)
	}
	pol := &egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "client-egress", Namespace: workloadNS},
		Spec: egressv1.EgressPolicyRule{
			PodSelector:      metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
			DestinationCIDRs: []string{netipPrefix24(s.c.Echo.String())},
			Gateway:          GatewayGroup,
		},
	}
	start := time.Now()
	if err := s.crc.Create(s.ctx, pol); err != nil {
		t.Fatal(err)
	}
	eip := s.waitEgressIP(t, "")
	s.egressIP = eip.Spec.IP
	t.Logf("egress IP %s on %s after %s", eip.Spec.IP, eip.Status.Node, time.Since(start).Round(time.Millisecond))
	st := s.clientStatus(t, func(st clientStatus) bool { return st.lastIP == s.egressIP && st.flowIP == s.egressIP })
	t.Logf("FIGURE policy applied to echo host seeing the egress IP %s (HTTP and the long-lived flow): %s; client %+v",
		s.egressIP, time.Since(start).Round(time.Millisecond), st)
}

// waitEgressIP waits for the group's one EgressIP to be held by a node other than notOn, and for
// the cloud (the simulator) to agree.
func (s *suite) waitEgressIP(t *testing.T, notOn string) egressv1.EgressIP {
	t.Helper()
	var got egressv1.EgressIP
	s.wait(t, "the egress IP held by a gateway (not "+notOn+")", 2*time.Minute, func(ctx context.Context) (bool, error) {
		var list egressv1.EgressIPList
		if err := s.crc.List(ctx, &list); err != nil {
			return false, nil
		}
		if len(list.Items) != 1 {
			return false, nil
		}
		got = list.Items[0]
		n := s.c.Node(got.Status.Node)
		if n == nil || got.Status.Node == notOn {
			return false, nil
		}
		h, ok := s.c.Sim.Holder(s.c.VPC, mustAddr(got.Spec.IP))
		return ok && h.Instance == n.Instance.ID, nil
	})
	return got
}

// leaderFailover kills the controller pod that holds the leader Lease, waits for the other
// replica to take the Lease, then drains the gateway holding the egress IP: the new leader
// must move the IP to the other gateway of the zone, and the client keep the same egress IP.
func (s *suite) leaderFailover(t *testing.T) {
	leader := s.leader(t, "")
	pre0, err := s.status(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	zero := int64(0)
	if err := s.c.Client.CoreV1().Pods(releaseNS).Delete(s.ctx, leader, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	next := s.leader(t, leader)
	t.Logf("FIGURE leader %s killed, %s took the Lease after %s", leader, next, time.Since(start).Round(time.Millisecond))

	var eip egressv1.EgressIP
	if err := s.crc.Get(s.ctx, types.NamespacedName{Name: s.egressIPName(t)}, &eip); err != nil {
		t.Fatal(err)
	}
	from := eip.Status.Node
	pre, err := s.status(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE during the leader change: %d failed HTTP requests, %d long-lived flow errors",
		pre.httpErr-pre0.httpErr, pre.flowErr-pre0.flowErr)
	start = time.Now()
	s.setGatewayLabel(t, from, false)
	moved := s.waitEgressIP(t, from)
	t.Logf("FIGURE IP move %s from %s to %s (drain by label removal) under the new leader: %s", moved.Spec.IP, from, moved.Status.Node, time.Since(start).Round(time.Millisecond))
	if moved.Spec.IP != s.egressIP {
		t.Fatalf("egress IP changed from %s to %s; a move keeps it", s.egressIP, moved.Spec.IP)
	}
	before, err := s.status(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := s.clientStatus(t, func(st clientStatus) bool { return st.httpOK > before.httpOK+5 && st.lastIP == s.egressIP })
	t.Logf("FIGURE during the drain and move: %d of %d new HTTP connections failed, the long-lived flow needed %d new connections (%d errors); after it the echo host sees %s",
		st.httpErr-pre.httpErr, st.httpErr-pre.httpErr+st.httpOK-pre.httpOK, st.flowConns-pre.flowConns, st.flowErr-pre.flowErr, st.lastIP)
	s.setGatewayLabel(t, from, true)
}

func (s *suite) egressIPName(t *testing.T) string {
	var list egressv1.EgressIPList
	if err := s.crc.List(s.ctx, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("listing EgressIPs: %v (%d)", err, len(list.Items))
	}
	return list.Items[0].Name
}

// leader waits for the controller Lease to name a live controller pod other than not.
func (s *suite) leader(t *testing.T, not string) string {
	t.Helper()
	var name string
	s.wait(t, "a controller leader other than "+not, 2*time.Minute, func(ctx context.Context) (bool, error) {
		var l coordinationv1.Lease
		if err := s.crc.Get(ctx, types.NamespacedName{Namespace: releaseNS, Name: "egressd-controller"}, &l); err != nil || l.Spec.HolderIdentity == nil {
			return false, nil
		}
		name, _, _ = strings.Cut(*l.Spec.HolderIdentity, "_")
		if name == not || name == "" {
			return false, nil
		}
		_, err := s.c.Client.CoreV1().Pods(releaseNS).Get(ctx, name, metav1.GetOptions{})
		return err == nil, nil
	})
	return name
}

func (s *suite) setGatewayLabel(t *testing.T, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, GatewayLabel)
	if on {
		patch = fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, GatewayLabel, GatewayGroup)
	}
	if _, err := s.c.Client.CoreV1().Nodes().Patch(s.ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// rollingUpgrade rolls the agent DaemonSet to another image tag with helm upgrade while the
// client keeps its long-lived connection through the gateway, and reports what happened to it.
func (s *suite) rollingUpgrade(t *testing.T) {
	before, err := s.status(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(envtest.RepoRoot(), "charts", "egressd")
	start := time.Now()
	if _, err := s.c.Helm(s.ctx, "upgrade", "egressd", chart, "--namespace", releaseNS, "--reuse-values",
		"--set", "agent.image.tag="+upgradeTag); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "the agent DaemonSet rolled out to "+upgradeTag, 5*time.Minute, upgradeTag)
	rollout := time.Since(start)
	time.Sleep(3 * time.Second) // a few more flow round trips after the last agent restarted
	after := s.clientStatus(t, func(st clientStatus) bool { return st.flowOK > before.flowOK })
	t.Logf("FIGURE rolling agent upgrade over %d nodes: %s; long-lived flow: connections %d -> %d, round trips %d -> %d, errors %d -> %d; HTTP errors %d -> %d; last error %s",
		len(s.c.Nodes), rollout.Round(time.Millisecond), before.flowConns, after.flowConns, before.flowOK, after.flowOK,
		before.flowErr, after.flowErr, before.httpErr, after.httpErr, after.lastErr)
	if after.flowIP != s.egressIP || after.lastIP != s.egressIP {
		t.Errorf("after the upgrade the echo host sees %s (flow) and %s (HTTP), want the egress IP %s", after.flowIP, after.lastIP, s.egressIP)
	}
	if after.flowConns != before.flowConns {
		t.Errorf("the long-lived connection broke during the rolling upgrade: %d connections before, %d after (errors %d -> %d, last %s)",
			before.flowConns, after.flowConns, before.flowErr, after.flowErr, after.lastErr)
	}
}

// uninstall removes the EgressGateway (the controller releases the cloud side), then the
// release, and checks that no node keeps any egressd datapath object and that the simulator
// holds no egressd address or tagged resource.
func (s *suite) uninstall(t *testing.T) {
	if err := s.crc.Delete(s.ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "client-egress", Namespace: workloadNS}}); err != nil {
		t.Fatal(err)
	}
	if err := s.crc.Delete(s.ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: GatewayGroup}}); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "every EgressIP released", 2*time.Minute, func(ctx context.Context) (bool, error) {
		var list egressv1.EgressIPList
		err := s.crc.List(ctx, &list)
		return err == nil && len(list.Items) == 0, nil
	})
	start := time.Now()
	if _, err := s.c.Helm(s.ctx, "uninstall", "egressd", "--namespace", releaseNS, "--wait", "--timeout", "3m"); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "every egressd pod gone", 2*time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := s.c.Client.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	})
	t.Logf("helm uninstall and pods gone: %s", time.Since(start).Round(time.Millisecond))
	for _, n := range s.c.Nodes {
		after, err := readNodeState(n)
		if err != nil {
			t.Fatal(err)
		}
		if left := leftovers(s.before[n.Name], after); len(left) > 0 {
			t.Errorf("node %s keeps egressd objects after helm uninstall:\n  %s", n.Name, strings.Join(left, "\n  "))
		}
	}
	snap := s.c.Sim.Snapshot()
	for _, e := range snap.ENIs {
		if len(e.SecondaryIPs) > 0 || e.Tags["egressd.io/cluster"] != "" {
			t.Errorf("simulator keeps ENI %s with secondary IPs %v, tags %v", e.ID, e.SecondaryIPs, e.Tags)
		}
	}
	for _, e := range snap.EIPs {
		if e.Tags["egressd.io/cluster"] != "" {
			t.Errorf("simulator keeps Elastic IP %s (%s) tagged %v", e.Allocation, e.PublicIP, e.Tags)
		}
	}
	// The client's traffic goes direct again, from its pod IP.
	st := s.clientStatus(t, func(st clientStatus) bool { return st.lastIP == s.podIP })
	t.Logf("after uninstall the echo host sees the pod IP %s again", st.lastIP)
}

// nodeState is what a node shows of the datapath objects egressd creates: bpffs entries, links,
// nftables tables, policy rules, routes of every table, and tc filters on pod interfaces.
type nodeState map[string]string

func readNodeState(n *Node) (nodeState, error) {
	st := nodeState{}
	for what, argv := range map[string][]string{
		"bpffs":    {"find", "/sys/fs/bpf", "-mindepth", "1"},
		"nftables": {"nft", "list", "tables"},
		"rules":    {"ip", "rule", "show"},
		"routes":   {"ip", "route", "show", "table", "all"},
		"links":    {"ip", "-br", "link", "show"},
	} {
		out, err := n.Exec(argv...)
		if err != nil {
			return nil, err
		}
		st[what] = strings.TrimSpace(string(out))
	}
	var filters []string
	for _, l := range strings.Split(st["links"], "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || !strings.HasPrefix(f[0], "veth") {
			continue
		}
		dev, _, _ := strings.Cut(f[0], "@")
		for _, dir := range []string{"ingress", "egress"} {
			out, err := n.Exec("tc", "filter", "show", "dev", dev, dir)
			if err != nil {
				return nil, err
			}
			if o := strings.TrimSpace(string(out)); o != "" {
				filters = append(filters, dev+" "+dir+": "+o)
			}
		}
	}
	st["tc filters"] = strings.Join(filters, "\n")
	return st, nil
}

// leftovers compares a node's state after uninstall with its state before install. Links are
// checked by name only (pods come and go): no egressd device may remain.
func leftovers(before, after nodeState) []string {
	var left []string
	for what, b := range before {
		a := after[what]
		switch what {
		case "links":
			for _, l := range strings.Split(a, "\n") {
				if strings.Contains(l, "egressd") {
					left = append(left, "link "+l)
				}
			}
		case "tc filters":
			if a != "" {
				left = append(left, "tc filters:\n"+a)
			}
		case "routes":
			// The bridge CNI's own routes appear with a node's first pod (the controller's).
			if a, b = withoutCNI(a), withoutCNI(b); a != b {
				left = append(left, fmt.Sprintf("%s before install:\n%s\nafter uninstall:\n%s", what, b, a))
			}
		default:
			if a != b {
				left = append(left, fmt.Sprintf("%s before install:\n%s\nafter uninstall:\n%s", what, b, a))
			}
		}
	}
	return left
}

func withoutCNI(routes string) string {
	var keep []string
	for _, l := range strings.Split(routes, "\n") {
		if !strings.Contains(l, "dev cni0") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// checkTeardown checks that the machine has nothing of the cluster left: no namespace, cgroup,
// mount or process.
func (s *suite) checkTeardown(dir string, netnsBefore map[string]bool) {
	t := s.t
	// Only the cluster's own names and containerd's pod namespaces (cni-<uuid>): other test
	// packages of make test build their namespaces at the same time.
	for name := range netnsNames() {
		if !netnsBefore[name] && (strings.HasPrefix(name, s.c.ID) || strings.HasPrefix(name, "cni-")) {
			t.Errorf("network namespace %s left after teardown", name)
		}
	}
	for _, n := range s.c.Nodes {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/pids", n.CgroupRoot)); err == nil {
			t.Errorf("cgroup %s left after teardown", n.CgroupRoot)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, dir) || strings.Contains(l, s.c.ID) {
			t.Errorf("mount left after teardown: %s", l)
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), dir) {
			t.Errorf("process %s left after teardown: %s", p.Name(), strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
}

// netnsNames lists the machine's named network namespaces (/run/netns): the cluster's node
// namespaces and, were they not kept in each node's mount namespace, its pods' (cni-<uuid>).
func netnsNames() map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

func (s *suite) dumpLogs() {
	dir := filepath.Join(s.c.Config.Dir, "logs")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		s.t.Logf("--- %s:\n%s", e.Name(), lab.Tail(filepath.Join(dir, e.Name()), 15))
	}
	pods, err := s.c.Client.CoreV1().Pods("").List(s.ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		s.t.Logf("pod %s/%s on %s: %s %v", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.ContainerStatuses)
		for _, cs := range p.Status.ContainerStatuses {
			tail := int64(20)
			b, _ := s.c.Client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: cs.Name, TailLines: &tail}).DoRaw(s.ctx)
			s.t.Logf("--- logs of %s/%s %s:\n%s", p.Namespace, p.Name, cs.Name, b)
		}
	}
	ev, _ := s.c.Client.CoreV1().Events("").List(s.ctx, metav1.ListOptions{})
	for _, e := range ev.Items {
		if e.Type != corev1.EventTypeNormal {
			s.t.Logf("event %s/%s: %s %s", e.Namespace, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func netipPrefix24(ip string) string {
	return netip.PrefixFrom(netip.MustParseAddr(ip), 24).Masked().String()
}

func mustAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}
