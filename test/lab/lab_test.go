package lab

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/egressd/egressd/test/netns"
	"github.com/egressd/egressd/test/privileged"
)

func skipUnlessRoot(t testing.TB) {
	t.Helper()
	privileged.Require(t, "network namespaces, nftables, eBPF and bpffs for the lab")
}

func upLab(t testing.TB, cfg Config) *Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg.Log = testWriter{t}
	// EGRESSD_LAB_KEEP keeps the work directory (logs of every binary) for a post-mortem, like
	// egressd-lab --keep-logs.
	cfg.KeepWorkDir = cfg.KeepWorkDir || os.Getenv("EGRESSD_LAB_KEEP") != ""
	l, err := Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if cfg.KeepWorkDir {
		t.Logf("lab work directory (kept): %s", l.WorkDir())
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return l
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// ec2 sends one EC2 Query API call to the simulator, as the provider's SDK would.
func ec2(t *testing.T, l *Lab, params ...string) string {
	t.Helper()
	v := url.Values{"Version": {"2016-11-15"}}
	for i := 0; i+1 < len(params); i += 2 {
		v.Set(params[i], params[i+1])
	}
	resp, err := http.PostForm("http://"+l.SimAddr+"/", v)
	if err != nil {
		t.Fatalf("%s: %v", v.Get("Action"), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %s", v.Get("Action"), resp.StatusCode, b)
	}
	return string(b)
}

// getFrom sends GET / to the echo server from ns with source address src.
func getFrom(ns *netns.Namespace, src, dst netip.Addr) (string, error) {
	var seen string
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.Dial("tcp", netip.AddrPortFrom(dst, netns.HTTPPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		seen = strings.TrimSpace(string(b))
		return err
	})
	return seen, err
}

// TestInfrastructure checks the lab without egressd: the router follows the simulator's
// assignments and Elastic IPs, namespaces reach the API server and the simulator through the
// proxies, instance metadata answers per node, Kubernetes objects are registered, the monitor
// records, crash and restore work.
func TestInfrastructure(t *testing.T) {
	skipUnlessRoot(t)
	l := upLab(t, Config{Zones: 2, NoControlPlane: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	gw := l.Node("gw-a1")
	other := l.Node("gw-b1")
	egress := gw.Zone.Addr(200)

	// Before any assignment the address reaches nobody.
	if err := gw.AddAddr(gw.Link, netip.PrefixFrom(egress, 24)); err != nil {
		t.Fatal(err)
	}
	if seen, err := getFrom(gw.Namespace, egress, l.Echo); err == nil {
		t.Fatalf("unassigned %s reached the echo server (seen %s)", egress, seen)
	}
	ec2(t, l, "Action", "AssignPrivateIpAddresses", "NetworkInterfaceId", gw.Instance.PrimaryENI, "PrivateIpAddress.1", egress.String())
	if err := l.SyncRouter(); err != nil {
		t.Fatal(err)
	}
	if seen, err := getFrom(gw.Namespace, egress, l.Echo); err != nil || seen != egress.String() {
		t.Fatalf("after assignment: seen %q, %v; want %s", seen, err, egress)
	}

	// An Elastic IP: the echo server sees the public address.
	out := ec2(t, l, "Action", "AllocateAddress", "Domain", "vpc")
	alloc := regexp.MustCompile(`<allocationId>([^<]+)<`).FindStringSubmatch(out)
	pub := regexp.MustCompile(`<publicIp>([^<]+)<`).FindStringSubmatch(out)
	if alloc == nil || pub == nil {
		t.Fatalf("AllocateAddress: %s", out)
	}
	ec2(t, l, "Action", "AssociateAddress", "AllocationId", alloc[1], "NetworkInterfaceId", gw.Instance.PrimaryENI, "PrivateIpAddress", egress.String())
	if err := l.SyncRouter(); err != nil {
		t.Fatal(err)
	}
	if seen, err := getFrom(gw.Namespace, egress, l.Echo); err != nil || seen != pub[1] {
		t.Fatalf("with Elastic IP: seen %q, %v; want %s", seen, err, pub[1])
	}

	// Unassigned: dropped again.
	ec2(t, l, "Action", "UnassignPrivateIpAddresses", "NetworkInterfaceId", gw.Instance.PrimaryENI, "PrivateIpAddress.1", egress.String())
	if err := l.SyncRouter(); err != nil {
		t.Fatal(err)
	}
	if seen, err := getFrom(gw.Namespace, egress, l.Echo); err == nil {
		t.Fatalf("released %s still reached the echo server (seen %s)", egress, seen)
	}

	// The router follows on its own (no SyncRouter): assign in zone b.
	egressB := other.Zone.Addr(201)
	if err := other.AddAddr(other.Link, netip.PrefixFrom(egressB, 24)); err != nil {
		t.Fatal(err)
	}
	ec2(t, l, "Action", "AssignPrivateIpAddresses", "NetworkInterfaceId", other.Instance.PrimaryENI, "PrivateIpAddress.1", egressB.String())
	deadline := time.Now().Add(2 * time.Second)
	for {
		seen, err := getFrom(other.Namespace, egressB, l.Echo)
		if err == nil && seen == egressB.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router did not follow the simulator: %q, %v", seen, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Proxies: the API server and the simulator from a node, at their root-namespace addresses.
	for _, target := range []string{l.API.Config.Host + "/readyz", "http://" + l.SimAddr + "/admin/state"} {
		var code int
		err := func() error {
			// Go's transport dials from its own goroutines: the dialer must enter the namespace.
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsInsecure(), DialContext: gw.DialContext}}
			resp, err := c.Get(target)
			if err != nil {
				return err
			}
			resp.Body.Close()
			code = resp.StatusCode
			return nil
		}()
		if err != nil || (code != http.StatusOK && code != http.StatusUnauthorized && code != http.StatusForbidden) {
			t.Fatalf("GET %s from %s: %d, %v", target, gw.Name, code, err)
		}
	}
	// Instance metadata: each node is its own instance.
	var id string
	err := func() error {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: gw.DialContext}}
		req, _ := http.NewRequest(http.MethodPut, "http://"+IMDSAddr+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		tok, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		req, _ = http.NewRequest(http.MethodGet, "http://"+IMDSAddr+"/latest/meta-data/instance-id", nil)
		req.Header.Set("X-aws-ec2-metadata-token", string(tok))
		if resp, err = c.Do(req); err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id = string(b)
		return nil
	}()
	if err != nil || id != gw.Instance.ID {
		t.Fatalf("IMDS instance-id on %s: %q, %v; want %s", gw.Name, id, err, gw.Instance.ID)
	}

	// Kubernetes objects.
	var nodes corev1.NodeList
	if err := l.API.Client.List(ctx, &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != len(l.Nodes) {
		t.Fatalf("%d nodes registered, want %d", len(nodes.Items), len(l.Nodes))
	}
	for _, n := range nodes.Items {
		if n.Spec.ProviderID == "" || n.Labels[ZoneLabel] == "" || len(n.Status.Addresses) == 0 {
			t.Errorf("node %s incomplete: %+v", n.Name, n)
		}
	}
	// One worker per zone with its monitor pod, labelled for the demo policy.
	if len(l.Monitors) != l.Config.Zones || l.Monitor != l.Monitors[0] {
		t.Fatalf("%d monitor pods for %d zones", len(l.Monitors), l.Config.Zones)
	}
	for i, p := range l.Monitors {
		var pod corev1.Pod
		if err := l.API.Client.Get(ctx, keyOf(WorkloadNS, MonitorPod(i)), &pod); err != nil || pod.Status.PodIP != p.IP.String() ||
			pod.Labels["app"] != MonitorPodName || pod.Spec.NodeName != "worker-"+zoneLetter(i)+"1" || p.Node.Zone.Name != zoneName(i) {
			t.Fatalf("monitor pod %s: %v, podIP %q (want %s), labels %v, node %q", MonitorPod(i), err, pod.Status.PodIP, p.IP, pod.Labels, pod.Spec.NodeName)
		}
	}
	if gws := names(l.Gateways()); !slices.Equal(gws, []string{"gw-a1", "gw-a2", "gw-b1", "gw-b2"}) {
		t.Fatalf("gateways %v, want two per zone", gws)
	}

	// Long-lived connections: the server echoes the address:port it sees, here each worker's
	// masquerade.
	conns := l.NewConns(ctx, ConnOptions{PerPod: 1})
	t.Cleanup(conns.Close)
	want := []string{l.Monitors[0].Node.IP.String(), l.Monitors[1].Node.IP.String()}
	if err := conns.Open(ctx, want); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, r := range conns.Records() {
		p := l.Topo.Pod(r.Pod)
		src, err := netip.ParseAddrPort(r.Segments[0].Source)
		if err != nil || src.Addr() != p.Node.IP || r.Segments[0].Echoes < 2 || !r.Closed.IsZero() {
			t.Errorf("connection from %s: %+v, want echoes seen from %s:<port>", r.Pod, r, p.Node.IP)
		}
	}
	conns.Close()
	for _, r := range conns.Records() {
		if r.Closed.IsZero() || r.Err != "" {
			t.Errorf("connection %d after Close: closed %v, error %q; want closed by the lab", r.ID, r.Closed, r.Err)
		}
	}

	// Monitor: without egressd the CNI-style masquerade shows the worker's address.
	m := l.NewMonitors()
	mctx, mcancel := context.WithTimeout(ctx, 600*time.Millisecond)
	m.Run(mctx)
	mcancel()
	s := m.Samples()
	if len(s) < 16 {
		t.Fatalf("monitors recorded %d samples in 600 ms", len(s))
	}
	for _, x := range s {
		p := l.Topo.Pod(x.Pod)
		if p == nil || !x.OK() || x.Source != p.Node.IP.String() || x.Zone != p.Node.Zone.Name {
			t.Fatalf("monitor sample %+v, want source the worker of pod %q", x, x.Pod)
		}
	}

	// Crash and restore: the node is cut off, then back.
	if err := l.Crash(ctx, other.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := getFrom(other.Namespace, egressB, l.Echo); err == nil {
		t.Fatal("crashed node still reaches the echo server")
	}
	if err := l.Restore(ctx, other.Name); err != nil {
		t.Fatal(err)
	}
	// The node's neighbour entries went FAILED while it was cut off: its first connection can
	// meet one before the kernel re-resolves it (seen once under a load average of 10: "no
	// route to host"), so the restored node gets a few seconds to reach the server again.
	var seen string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if seen, err = getFrom(other.Namespace, egressB, l.Echo); (err == nil && seen == egressB.String()) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || seen != egressB.String() {
		t.Fatalf("restored node: %q, %v", seen, err)
	}

	// Report generation from what the monitor saw.
	r := BuildReport(s, []Event{{Name: "none", At: s[2].Sent, End: s[len(s)-1].Sent.Add(time.Millisecond)}}, nil, nil, nil)
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
}

func keyOf(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

func tlsInsecure() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // loopback test API server
