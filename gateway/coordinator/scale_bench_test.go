package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/azure"
	"github.com/egressd/egressd/providers/azure/azuresimtest"
	"github.com/egressd/egressd/providers/gcp"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
	"github.com/egressd/egressd/test/envtest"
)

// The fixed part of the scale figure's shape (issue 7); the part that grows is scaleShape.
const (
	scaleZones           = 4
	scaleGateways        = 4
	scaleGatewayNodes    = 100 // 25 per gateway, spread over the zones
	scaleClusterPolicies = 50  // one /24 each: within the cluster budget (128 prefixes)
	scaleApps            = 10  // pod label app=a0..a9: EgressPolicies select a0..a8, ClusterEgressPolicies a9
	scalePodsPerNode     = 10
	scaleNodesPerNS      = 20 // namespaces = nodes/20: 200 pods each, 20 per app
	scaleTeams           = 5  // namespace label team=t0..t4
	scaleCreateWorkers   = 16
	scaleGatewayLabel    = "scale.egressd.io/gateway"
	scaleLeaseRenewEvery = 3 * time.Second
	scaleNodeImages      = 30 // container images a node's status lists
)

// The shape that grows, set by setScaleShape from EGRESSD_SCALE_NODES and
// EGRESSD_SCALE_POLICIES (defaults: the 1k-node figure of issue 7).
var (
	scaleNodes      = 1000
	scaleNamespaces = 50    // scaleNodes / scaleNodesPerNS
	scalePods       = 10000 // scaleNodes * scalePodsPerNode
	scalePolicies   = 450   // EgressPolicies, the same number in every namespace
	// Expected matched pods: pods of namespace n are i%scaleNamespaces == n, app
	// a(i/scaleNamespaces % scaleApps).
	scalePodsPerApp       = 20  // scalePods / scaleNamespaces / scaleApps
	scaleClusterPolicyPod = 200 // scalePodsPerApp * scaleNamespaces / scaleTeams
)

// scaleShape is the shape of a BenchmarkScale run: nodes (pods, namespaces follow) and
// EgressPolicies (ClusterEgressPolicies stay scaleClusterPolicies).
type scaleShape struct{ nodes, policies int }

// parseScaleShape reads EGRESSD_SCALE_NODES and EGRESSD_SCALE_POLICIES (empty: 1000 and
// nodes*9/20, which is the 1k figure's 450). Nodes must be a multiple of 100 above the gateway
// nodes (namespaces of 20 nodes' pods, a whole number per team); EgressPolicies a multiple of
// the namespaces with at most contract.DefaultNamespacePrefixBudget (one /24 each) in one.
func parseScaleShape(nodes, policies string) (scaleShape, error) {
	sh := scaleShape{nodes: 1000}
	if nodes != "" {
		n, err := strconv.Atoi(nodes)
		if err != nil || n <= scaleGatewayNodes || n%(scaleNodesPerNS*scaleTeams) != 0 {
			return sh, fmt.Errorf("EGRESSD_SCALE_NODES=%q: want a multiple of %d above %d", nodes, scaleNodesPerNS*scaleTeams, scaleGatewayNodes)
		}
		sh.nodes = n
	}
	ns := sh.nodes / scaleNodesPerNS
	sh.policies = ns * 9
	if policies != "" {
		p, err := strconv.Atoi(policies)
		if err != nil || p <= 0 || p%ns != 0 || p/ns > contract.DefaultNamespacePrefixBudget {
			return sh, fmt.Errorf("EGRESSD_SCALE_POLICIES=%q: want a multiple of the %d namespaces, at most %d per namespace (its prefix budget)",
				policies, ns, contract.DefaultNamespacePrefixBudget)
		}
		sh.policies = p
	}
	return sh, nil
}

// set makes sh the shape of the populate and convergence code.
func (sh scaleShape) set() {
	scaleNodes, scaleNamespaces, scalePods, scalePolicies = sh.nodes, sh.nodes/scaleNodesPerNS, sh.nodes*scalePodsPerNode, sh.policies
	scalePodsPerApp = scalePods / scaleNamespaces / scaleApps
	scaleClusterPolicyPod = scalePodsPerApp * scaleNamespaces / scaleTeams
}

// BenchmarkScale populates an envtest API server with 1,000 Nodes (100 of them gateway nodes
// of 4 EgressGateways, backed by instances of the cloud's simulator), 10,000 Pods with IPs
// (both of realistic size: see createNode and createPod), 500 policies and the gateway
// agents' Leases, then runs the coordinator with the production wiring (controller-runtime
// manager with its cache, Setup, the simulator-backed provider wrapped in metrics and the
// default rate limits) and measures: time to converge, the cloud calls made until every
// gateway is Ready and CloudSynced, one gateway and one policy reconcile in steady state, a
// failover, and the coordinator's heap. One sub-benchmark per cloud, each on its own API
// server, each through the cloud's real SDK provider: aws (EC2 simulator), gcp (Compute
// simulator), azure (ARM simulator). The time until every gateway is Ready and CloudSynced and
// the calls until then, per simulator method (mutating and read apart) and per provider
// operation, are metrics (b.ReportMetric: <method>-calls-to-ready, <operation>-ops-to-ready)
// and the FIGURE line that opens the log and the report.
//
//	EGRESSD_KUBE_ASSETS=$(hack/kube-binaries.sh) go test -run '^$' -bench 'Scale/gcp' -benchtime 1x -timeout 30m ./gateway/coordinator/
//
// The envtest API server and etcd are separate processes: their memory is not counted.
//
// EGRESSD_SCALE_NODES=5000 EGRESSD_SCALE_POLICIES=5000 runs issue 16's shape: 5,000 nodes,
// 50,000 pods in 250 namespaces, 5,000 EgressPolicies (20 per namespace, two per app, each to
// its own /24) + 50 ClusterEgressPolicies; the gateways and their 100 nodes stay as they are.
// EGRESSD_SCALE_PROFILE=dir writes cpu-<cloud>.pprof (manager start to the end of the steady
// state: the coordinator, not the population) and heap-<cloud>.pprof (after convergence) there.
func BenchmarkScale(b *testing.B) {
	if testing.Short() {
		b.Skip("scale benchmark: not in -short mode")
	}
	if server == nil {
		b.Skip("needs the envtest API server")
	}
	sh, err := parseScaleShape(os.Getenv("EGRESSD_SCALE_NODES"), os.Getenv("EGRESSD_SCALE_POLICIES"))
	if err != nil {
		b.Fatal(err)
	}
	sh.set()
	logs := &errorLog{}
	ctrl.SetLogger(funcr.New(logs.add, funcr.Options{}))
	for _, name := range []string{"aws", "gcp", "azure"} {
		b.Run(name, func(b *testing.B) { benchmarkScale(b, name, logs) })
	}
}

func benchmarkScale(b *testing.B, cloudName string, logs *errorLog) {
	grow := time.Duration(max(1, scaleNodes/1000))
	ctx, cancel := context.WithTimeout(context.Background(), grow*25*time.Minute)
	defer cancel()
	logs.reset()
	s := newScaleWorld(b, cloudName)
	populateStart := time.Now()
	s.populate(ctx)
	populate := time.Since(populateStart)
	progress("%s: populated %d objects in %v", cloudName, s.objects.Load(), populate.Round(time.Millisecond))

	renewCtx, stopRenew := context.WithCancel(ctx)
	renewDone := s.renewLeases(renewCtx)
	defer func() { stopRenew(); <-renewDone }()

	profDir := os.Getenv("EGRESSD_SCALE_PROFILE")
	reconcilesBefore := reconcileCounts()
	before := heapInUse()
	stopCPU := startCPUProfile(b, profDir, cloudName)
	r := s.run(ctx)
	after := heapInUse()
	writeHeapProfile(b, profDir, cloudName)
	progress("%s: converged: %v; steady-state passes", cloudName, r.converged)
	steady := s.steadyState(ctx, r.c, b.N)
	stopCPU()
	progress("%s: failover", cloudName)
	fo := s.failover(ctx)
	progress("%s: node churn", cloudName)
	churn := s.nodeChurn(ctx)
	errs := logs.snapshot() // before the stop, whose cancelled reconciles log errors
	r.stop()

	rep := scaleReport{cloud: s.cloud, populate: populate, objects: s.objects.Load(), run: r, steady: steady, failover: fo, churn: churn,
		heapBefore: before, heapAfter: after, calls: s.cloud.calls(), reconciles: reconcileCounts().since(reconcilesBefore), errors: errs}
	// The FIGURE line first: go test keeps only the first lines of a benchmark's log.
	out := rep.figure() + "\n" + rep.String()
	b.Log(rep.figure())
	b.Log("\n" + rep.String())
	fmt.Print(out)
	if dir := filepath.Join(envtest.RepoRoot(), "out"); isDir(dir) {
		if err := os.WriteFile(filepath.Join(dir, "bench-coordinator-"+cloudName+".txt"), []byte(out), 0o644); err != nil {
			b.Error(err)
		}
	}
	b.ReportMetric(populate.Seconds(), "populate-s")
	b.ReportMetric(r.synced.Seconds(), "cache-sync-s")
	b.ReportMetric(r.gatewaysReady.Seconds(), "gateways-ready-s")
	b.ReportMetric(r.policiesReady.Seconds(), "converge-s")
	mut, read := s.cloud.split(r.callsAtReady)
	b.ReportMetric(float64(mut), "mutating-calls-to-ready")
	b.ReportMetric(float64(read), "read-calls-to-ready")
	for m, n := range r.callsAtReady {
		b.ReportMetric(float64(n), m+"-calls-to-ready")
	}
	for op, n := range r.opsAtReady {
		b.ReportMetric(float64(n), op+"-ops-to-ready")
	}
	b.ReportMetric(ms(steady.gateway.mean()), "gw-reconcile-ms")
	b.ReportMetric(ms(steady.gateway.max), "gw-reconcile-max-ms")
	b.ReportMetric(ms(steady.policy.mean()), "policy-reconcile-ms")
	b.ReportMetric(ms(steady.policy.max), "policy-reconcile-max-ms")
	b.ReportMetric(ms(steady.cluster.mean()), "cpolicy-reconcile-ms")
	b.ReportMetric(ms(steady.cluster.max), "cpolicy-reconcile-max-ms")
	b.ReportMetric(fo.cloud.Seconds(), "failover-s")
	b.ReportMetric(churn.reconciles, "churn-gw-reconciles")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-MB")
	if !r.converged || !fo.ok {
		b.Errorf("did not converge: run %+v, failover %+v", r, fo)
	}
}

// scaleCloud is one cloud's simulator and provider, as the benchmark sees them.
type scaleCloud struct {
	name    string // provider type and name: aws, gcp, azure
	region  string
	zones   []string
	service string // what the simulator serves, for the report
	prov    providers.Provider
	calls   func() map[string]int
	// mutating reports whether a simulator method name changes state.
	mutating func(method string) bool
	// holder is the gateway node holding ip as an egress IP, "" when none.
	holder func(ip netip.Addr) string
	// workerProviderID is the providerID of worker node i in zone (an instance no one asks
	// about).
	workerProviderID func(zone string, i int) string
	// labels are the labels the cloud's node pools put on a node of zone.
	labels func(zone string) map[string]string
}

// split sums calls into mutating and read.
func (c *scaleCloud) split(calls map[string]int) (mutating, read int) {
	for m, n := range calls {
		if c.mutating(m) {
			mutating += n
		} else {
			read += n
		}
	}
	return mutating, read
}

// gwNode is a gateway node's instance in the simulator.
type gwNode struct {
	name, zone, providerID string
	ip                     netip.Addr
}

// scaleWorld is the populated API server and the simulator behind the gateway nodes.
type scaleWorld struct {
	tb      testing.TB
	srv     *envtest.Server
	cloud   *scaleCloud
	client  client.Client
	objects atomic.Int64
	// gateway nodes: names in order (gateway k%4), underlay IP, zone, providerID.
	gwNodes    []string
	providerID map[string]string
	ip         map[string]netip.Addr
	zone       map[string]string
	health     *staticHealth
}

// newScaleWorld starts an API server of the world's own and seeds the cloud's simulator with
// the gateway nodes' instances, 25 per zone, with primary addresses high in their subnet. The
// coordinator's allocator only knows the addresses of the nodes it discovered, so low
// primaries of other groups' nodes would be handed out as egress IPs and refused by the cloud
// forever; high primaries keep the figure about scale.
func newScaleWorld(tb testing.TB, cloudName string) *scaleWorld {
	tb.Helper()
	var cloud *scaleCloud
	var nodes []gwNode
	switch cloudName {
	case "aws":
		cloud, nodes = newAWSScaleCloud(tb)
	case "gcp":
		cloud, nodes = newGCPScaleCloud(tb)
	case "azure":
		cloud, nodes = newAzureScaleCloud(tb)
	default:
		tb.Fatalf("no scale world for cloud %q (want aws, gcp or azure)", cloudName)
	}
	srv := envtest.Start(tb)
	// Population has its own client: envtest's rest config already allows 1000 QPS.
	cl, err := client.New(srv.Config, client.Options{Scheme: srv.Scheme})
	if err != nil {
		tb.Fatal(err)
	}
	s := &scaleWorld{tb: tb, srv: srv, cloud: cloud, client: cl, providerID: map[string]string{}, ip: map[string]netip.Addr{}, zone: map[string]string{},
		health: &staticHealth{down: map[netip.Addr]bool{}}}
	for _, n := range nodes {
		s.gwNodes = append(s.gwNodes, n.name)
		s.providerID[n.name], s.ip[n.name], s.zone[n.name] = n.providerID, n.ip, n.zone
	}
	return s
}

func gwNodeName(i int) string { return fmt.Sprintf("scale-gwnode-%03d", i) }

// newAWSScaleCloud: the EC2 simulator, one subnet per zone, primaries at .200 and up.
func newAWSScaleCloud(tb testing.TB) (*scaleCloud, []gwNode) {
	const region = "us-east-1"
	sim := awssim.New(region)
	sim.SetElasticIPLimit(50)
	sim.AddInstanceType(awssim.InstanceType{Name: "sim.ips4", MaxENIs: 3, IPv4PerENI: 5})
	vpc, err := sim.AddVPC(awssim.VPCSpec{CIDR: "10.0.0.0/16"})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	tb.Cleanup(srv.Close)
	prov, err := aws.New(context.Background(), aws.Type, aws.Config{Region: region, VPC: vpc, Endpoint: srv.URL, ClusterName: "c1",
		MaxAttempts: 4, MaxBackoff: providers.Duration(20 * time.Millisecond)},
		aws.WithStaticCredentials("AKIDSIM", "SECRETSIM"))
	if err != nil {
		tb.Fatal(err)
	}
	c := &scaleCloud{name: "aws", region: region, service: "EC2", prov: prov, calls: sim.Calls,
		mutating: func(m string) bool {
			return !strings.HasPrefix(m, "Describe") && !strings.HasPrefix(m, "Get") && !strings.HasPrefix(m, "List")
		},
		workerProviderID: func(zone string, i int) string { return fmt.Sprintf("aws:///%s/i-worker%06d", zone, i) },
		labels: func(zone string) map[string]string {
			return map[string]string{"eks.amazonaws.com/nodegroup": "workers-" + zone, "eks.amazonaws.com/capacityType": "ON_DEMAND",
				"k8s.io/cloud-provider-aws": "0123456789abcdef0123456789abcdef"}
		}}
	var nodes []gwNode
	node := map[string]string{} // instance ID → node
	for z := range scaleZones {
		az := fmt.Sprintf("%s%c", region, 'a'+z)
		c.zones = append(c.zones, az)
		sn, err := sim.AddSubnet(awssim.SubnetSpec{VPC: vpc, Zone: az, CIDR: fmt.Sprintf("10.0.%d.0/24", z+1)})
		if err != nil {
			tb.Fatal(err)
		}
		for i := range scaleGatewayNodes / scaleZones {
			in, err := sim.AddInstance(awssim.InstanceSpec{Type: "sim.ips4", Subnet: sn, PrivateIP: fmt.Sprintf("10.0.%d.%d", z+1, 200+i)})
			if err != nil {
				tb.Fatal(err)
			}
			n := gwNode{name: gwNodeName(len(nodes)), zone: az, providerID: "aws:///" + az + "/" + in.ID, ip: in.PrivateIP}
			node[in.ID] = n.name
			nodes = append(nodes, n)
		}
	}
	c.holder = func(ip netip.Addr) string {
		if h, ok := sim.Holder(vpc, ip); ok {
			return node[h.Instance]
		}
		return ""
	}
	return c, nodes
}

// newGCPScaleCloud: the Compute simulator with GKE's default layout, one regional subnetwork
// (a /21) for the nodes of every zone, each zone's primaries in its own /24 at .200 and up;
// instances are named as their nodes, as on GKE. The zones share the subnetwork's pool in the
// allocator (ipalloc: a regional subnet); before they did, every gateway stayed
// CloudSynced=False in all zones but the first ("add subnet: ... overlap").
func newGCPScaleCloud(tb testing.TB) (*scaleCloud, []gwNode) {
	const region, project = "us-central1", "scale-proj"
	sim := gcpsim.New()
	seed := gcpsim.ProjectSeed{ID: project}
	var zones []string
	var nodes []gwNode
	for z := range scaleZones {
		zone := fmt.Sprintf("%s-%c", region, 'a'+z)
		zones = append(zones, zone)
		const subnet = "nodes"
		if z == 0 {
			seed.Subnets = append(seed.Subnets, gcpsim.SubnetSeed{Name: subnet, Region: region, CIDR: "10.0.0.0/21"})
		}
		for i := range scaleGatewayNodes / scaleZones {
			n := gwNode{name: gwNodeName(len(nodes)), zone: zone, ip: netip.AddrFrom4([4]byte{10, 0, byte(z + 1), byte(200 + i)})}
			n.providerID = "gce://" + project + "/" + zone + "/" + n.name
			seed.Instances = append(seed.Instances, gcpsim.InstanceSeed{Name: n.name, Zone: zone, NICs: []gcpsim.NICSeed{{Subnet: subnet, NetworkIP: n.ip.String()}}})
			nodes = append(nodes, n)
		}
	}
	if err := sim.Seed(seed); err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	tb.Cleanup(srv.Close)
	prov, err := gcp.New(context.Background(), gcp.Type, gcp.Config{ClusterName: "c1", Project: project, Endpoint: srv.URL, WithoutAuthentication: true})
	if err != nil {
		tb.Fatal(err)
	}
	gcpMutating := map[string]bool{gcpsim.MUpdateNetworkIface: true, gcpsim.MAddAccessConfig: true, gcpsim.MDeleteAccessConfig: true,
		gcpsim.MAddressesInsert: true, gcpsim.MAddressesDelete: true, gcpsim.MAddressesSetLabels: true}
	return &scaleCloud{name: "gcp", region: region, zones: zones, service: "Compute", prov: prov, calls: sim.CallCounts,
		mutating: func(m string) bool { return gcpMutating[m] },
		holder: func(ip netip.Addr) string {
			h := sim.Holder(ip.String()) // project/zone/instance
			return h[strings.LastIndex(h, "/")+1:]
		},
		workerProviderID: func(zone string, i int) string { return fmt.Sprintf("gce://%s/%s/scale-node-%04d", project, zone, i) },
		labels: func(zone string) map[string]string {
			return map[string]string{"cloud.google.com/gke-nodepool": "workers", "cloud.google.com/machine-family": "e2",
				"cloud.google.com/gke-os-distribution": "cos"}
		}}, nodes
}

// newAzureScaleCloud: the ARM simulator with AKS's default layout, one subnet (a /21, Azure
// subnets span zones) for every zone's nodes, each zone's primaries in its own /24 at .200 and
// up (the zones share the subnet's pool: see newGCPScaleCloud); a VM's NIC is
// <vm>-nic. The provider polls long-running operations at its production default (1 s when
// ARM sends no Retry-After).
func newAzureScaleCloud(tb testing.TB) (*scaleCloud, []gwNode) {
	const (
		location = "westeurope"
		sub      = "00000000-0000-0000-0000-000000005ca1"
		rg       = "MC_scale_scale_westeurope"
	)
	sim := azuresim.New(sub, location)
	var zones []string
	var nodes []gwNode
	for z := range scaleZones {
		zone := fmt.Sprintf("%s-%d", location, z+1)
		zones = append(zones, zone)
		const name = "aks-subnet"
		if z == 0 {
			if err := sim.AddSubnet(azuresim.SubnetSeed{ResourceGroup: rg, VNet: "aks-vnet", Name: name, CIDR: "10.240.0.0/21"}); err != nil {
				tb.Fatal(err)
			}
		}
		subnet := sim.SubnetID(rg, "aks-vnet", name)
		for i := range scaleGatewayNodes / scaleZones {
			n := gwNode{name: gwNodeName(len(nodes)), zone: zone, ip: netip.AddrFrom4([4]byte{10, 240, byte(z + 1), byte(200 + i)})}
			n.providerID = "azure://" + sim.VMID(rg, n.name)
			sim.AddVM(azuresim.VMSeed{ResourceGroup: rg, Name: n.name, Subnet: subnet, PrimaryIP: n.ip.String()})
			nodes = append(nodes, n)
		}
	}
	srv := httptest.NewTLSServer(sim.Handler())
	tb.Cleanup(srv.Close)
	clients, err := azure.NewClients(sub, azuresimtest.StaticToken{}, azure.ClientOptions(srv.URL, srv.Client(), false, 2))
	if err != nil {
		tb.Fatal(err)
	}
	prov, err := azure.New(context.Background(), azure.Type, azure.Config{ClusterName: "c1", SubscriptionID: sub, ResourceGroup: rg, Location: location},
		azure.WithClients(clients))
	if err != nil {
		tb.Fatal(err)
	}
	azMutating := map[string]bool{azuresim.MNICPut: true, azuresim.MPIPPut: true, azuresim.MPIPDelete: true}
	return &scaleCloud{name: "azure", region: location, zones: zones, service: "ARM", prov: prov, calls: sim.CallCounts,
		mutating: func(m string) bool { return azMutating[m] },
		holder: func(ip netip.Addr) string {
			h := sim.Snapshot().PrivateIPs[ip.String()] // nic/ipConfiguration
			nic, _, _ := strings.Cut(h, "/")
			return strings.TrimSuffix(nic, "-nic")
		},
		workerProviderID: func(zone string, i int) string {
			return fmt.Sprintf("azure://%s", sim.VMID(rg, fmt.Sprintf("scale-node-%04d", i)))
		},
		labels: func(zone string) map[string]string {
			return map[string]string{"kubernetes.azure.com/agentpool": "workers", "kubernetes.azure.com/cluster": rg,
				"kubernetes.azure.com/mode": "user"}
		}}, nodes
}

func gatewayName(k int) string { return fmt.Sprintf("scale-gw-%d", k) }

// populate creates every object with a bounded pool of workers.
func (s *scaleWorld) populate(ctx context.Context) {
	tb := s.tb
	must := func(what string, err error) {
		if err != nil {
			tb.Fatalf("populating %s: %v", what, err)
		}
	}
	must("namespaces", parallel(ctx, scaleNamespaces+1, scaleCreateWorkers, func(ctx context.Context, i int) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}
		if i < scaleNamespaces {
			ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace(i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%scaleTeams)}}}
		}
		return s.create(ctx, ns)
	}))
	must("gateways", parallel(ctx, scaleGateways, scaleCreateWorkers, func(ctx context.Context, k int) error {
		return s.create(ctx, &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: gatewayName(k)}, Spec: egressv1.EgressGatewaySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{scaleGatewayLabel: gatewayName(k)}},
			Addresses:    egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: s.cloud.name}},
		}})
	}))
	must("nodes", parallel(ctx, scaleNodes, scaleCreateWorkers, func(ctx context.Context, i int) error {
		return s.createNode(ctx, i)
	}))
	must("leases", parallel(ctx, len(s.gwNodes), scaleCreateWorkers, func(ctx context.Context, i int) error {
		node := s.gwNodes[i]
		now := metav1.NewMicroTime(time.Now())
		return s.create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: contract.AgentLeaseName(node), Namespace: testNamespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, RenewTime: &now, LeaseDurationSeconds: ptr.To[int32](10)}})
	}))
	must("pods", parallel(ctx, scalePods, scaleCreateWorkers, func(ctx context.Context, i int) error {
		return s.createPod(ctx, i)
	}))
	must("policies", parallel(ctx, scalePolicies+scaleClusterPolicies, scaleCreateWorkers, func(ctx context.Context, i int) error {
		if i < scalePolicies {
			ns, j := i/(scalePolicies/scaleNamespaces), i%(scalePolicies/scaleNamespaces)
			return s.create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pol-%d", j), Namespace: scaleNamespace(ns)},
				Spec: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", j%(scaleApps-1))}},
					DestinationCIDRs: []string{fmt.Sprintf("203.0.%d.0/24", j)}, Gateway: gatewayName(i % scaleGateways)}})
		}
		c := i - scalePolicies
		return s.create(ctx, &egressv1.ClusterEgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-cpol-%02d", c)},
			Spec: egressv1.ClusterEgressPolicySpec{
				NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", c%scaleTeams)}},
				EgressPolicyRule: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", scaleApps-1)}},
					DestinationCIDRs: []string{fmt.Sprintf("198.51.%d.0/24", c)}, Gateway: gatewayName(c % scaleGateways)}}})
	}))
}

func scaleNamespace(i int) string { return fmt.Sprintf("scale-ns-%02d", i) }

func (s *scaleWorld) create(ctx context.Context, o client.Object) error {
	if err := s.client.Create(ctx, o); err != nil {
		return fmt.Errorf("creating %s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, client.ObjectKeyFromObject(o), err)
	}
	s.objects.Add(1)
	return nil
}

// createNode makes node i: the first 100 are the gateway nodes (gateway k%4, in the zone of
// their simulator instance), the rest workers with a provider ID no one discovers. Nodes carry
// what a kubelet writes (annotations, five conditions, 30 cached images, system info), so that
// the coordinator's heap is measured on objects of realistic size.
func (s *scaleWorld) createNode(ctx context.Context, i int) error {
	var name, zone, providerID string
	var ip netip.Addr
	labels := map[string]string{}
	if i < len(s.gwNodes) {
		name = s.gwNodes[i]
		zone, ip = s.zone[name], s.ip[name]
		providerID = s.providerID[name]
		labels[scaleGatewayLabel] = gatewayName(i % scaleGateways)
	} else {
		name = fmt.Sprintf("scale-node-%04d", i)
		zone = s.cloud.zones[i%scaleZones]
		ip = workerIP(i)
		providerID = s.cloud.workerProviderID(zone, i)
	}
	maps.Copy(labels, s.cloud.labels(zone))
	labels[ZoneLabel] = zone
	labels[corev1.LabelTopologyRegion] = s.cloud.region
	labels[corev1.LabelHostname] = name
	labels[corev1.LabelOSStable] = "linux"
	labels[corev1.LabelArchStable] = "amd64"
	labels[corev1.LabelInstanceTypeStable] = "m6i.large"
	labels["beta.kubernetes.io/os"], labels["beta.kubernetes.io/arch"], labels["beta.kubernetes.io/instance-type"] = "linux", "amd64", "m6i.large"
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{
			"alpha.kubernetes.io/provided-node-ip":                   ip.String(),
			"node.alpha.kubernetes.io/ttl":                           "0",
			"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			"csi.volume.kubernetes.io/nodeid":                        fmt.Sprintf(`{"ebs.csi.aws.com":"%s","efs.csi.aws.com":"%s"}`, providerID[strings.LastIndex(providerID, "/")+1:], providerID[strings.LastIndex(providerID, "/")+1:]),
		}},
		Spec: corev1.NodeSpec{ProviderID: providerID, PodCIDR: fmt.Sprintf("100.64.%d.0/24", i%256), PodCIDRs: []string{fmt.Sprintf("100.64.%d.0/24", i%256)}},
	}
	if err := s.create(ctx, n); err != nil {
		return err
	}
	res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("83873772Ki"), "hugepages-1Gi": resource.MustParse("0"), "hugepages-2Mi": resource.MustParse("0")}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, st corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: st, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	images := make([]corev1.ContainerImage, 0, scaleNodeImages)
	for j := range scaleNodeImages {
		repo := fmt.Sprintf("602401143452.dkr.ecr.us-east-1.amazonaws.com/team-%d/service-%02d", j%7, j)
		images = append(images, corev1.ContainerImage{
			Names:     []string{repo + "@sha256:" + digest(repo), fmt.Sprintf("%s:v1.%d.%d", repo, j, i%10)},
			SizeBytes: int64(20_000_000 + j*3_000_000),
		})
	}
	n.Status = corev1.NodeStatus{
		Capacity: res, Allocatable: res,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name},
			{Type: corev1.NodeInternalDNS, Address: "ip-" + strings.ReplaceAll(ip.String(), ".", "-") + ".ec2.internal"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		NodeInfo: corev1.NodeSystemInfo{MachineID: digest(name)[:32], SystemUUID: "ec2" + digest(providerID)[:29], BootID: digest("boot" + name)[:36],
			KernelVersion: "6.1.132-147.221.amzn2023.x86_64", OSImage: "Amazon Linux 2023.7.20250414", ContainerRuntimeVersion: "containerd://1.7.27",
			KubeletVersion: "v1.33.0-eks-802817d", Architecture: "amd64", OperatingSystem: "linux"},
		Images: images,
	}
	if err := s.client.Status().Update(ctx, n); err != nil {
		return fmt.Errorf("writing status of node %s: %w", name, err)
	}
	return nil
}

// workerIP is the InternalIP of worker node i.
func workerIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 16, byte(i / 250), byte(i%250 + 1)})
}

// digest is a stable sha256-looking hex string for s.
func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// createPod makes pod i in namespace i%50 with label app=a((i/50)%10), then gives it an IP
// through the status subresource, as the kubelet would. Pods look like a Deployment's: an
// owner, an application container and a sidecar with probes, environment and mounts, the
// service account token volume, and the kubelet's container statuses.
func (s *scaleWorld) createPod(ctx context.Context, i int) error {
	ns := scaleNamespace(i % scaleNamespaces)
	app := fmt.Sprintf("a%d", (i/scaleNamespaces)%scaleApps)
	nodeIdx := scaleGatewayNodes + i%(scaleNodes-scaleGatewayNodes)
	node := fmt.Sprintf("scale-node-%04d", nodeIdx)
	image := "602401143452.dkr.ecr.us-east-1.amazonaws.com/" + ns + "/" + app
	mounts := []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app", ReadOnly: true},
		{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "LOG_LEVEL", Value: "info"}, {Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://otel-collector.observability:4317"},
		{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: app + "-db"}, Key: "url"}}},
	}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(8080)}}, PeriodSeconds: 10}
	}
	requests := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}
	limits := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%05d", i), Namespace: ns,
			Labels: map[string]string{"app": app, "pod-template-hash": "5d4b8c7f9", "team": ns,
				"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": ns, "app.kubernetes.io/version": "1.0.0"},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2025-04-01T09:30:00Z",
				"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-5d4b8c7f9",
				UID: types.UID(digest(ns + app)[:36]), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: app,
			Containers: []corev1.Container{
				{Name: "app", Image: image + ":1.0.0", Args: []string{"--config=/etc/app/config.yaml", "--listen=:8080"},
					Ports:         []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}},
					Env:           env,
					Resources:     corev1.ResourceRequirements{Requests: requests, Limits: limits},
					LivenessProbe: probe("/healthz"), ReadinessProbe: probe("/readyz"), VolumeMounts: mounts,
					SecurityContext: &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}},
				{Name: "envoy", Image: "public.ecr.aws/envoyproxy/envoy:v1.33.2", Args: []string{"-c", "/etc/app/envoy.yaml", "--log-level", "warn"},
					Ports:     []corev1.ContainerPort{{Name: "envoy-admin", ContainerPort: 9901, Protocol: corev1.ProtocolTCP}},
					Resources: corev1.ResourceRequirements{Requests: requests, Limits: limits}, VolumeMounts: mounts},
			},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: app + "-config"}}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
				}}}},
			},
		},
	}
	if err := s.create(ctx, p); err != nil {
		return err
	}
	ip := netip.AddrFrom4([4]byte{10, 128, byte(i / 250), byte(i%250 + 1)}).String()
	hostIP := workerIP(nodeIdx).String()
	now := metav1.Now()
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
	}
	running := func(name, image string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, Image: image, ImageID: image + "@sha256:" + digest(image), ContainerID: "containerd://" + digest(p.Name+name),
			Ready: true, Started: ptr.To(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: hostIP, HostIPs: []corev1.HostIP{{IP: hostIP}},
		StartTime: &now, QOSClass: corev1.PodQOSBurstable,
		Conditions: []corev1.PodCondition{cond(corev1.PodReadyToStartContainers), cond(corev1.PodInitialized), cond(corev1.PodReady),
			cond(corev1.ContainersReady), cond(corev1.PodScheduled)},
		ContainerStatuses: []corev1.ContainerStatus{running("app", image+":1.0.0"), running("envoy", "public.ecr.aws/envoyproxy/envoy:v1.33.2")},
	}
	if err := s.client.Status().Update(ctx, p); err != nil {
		return fmt.Errorf("writing status of pod %s/%s: %w", ns, p.Name, err)
	}
	return nil
}

// renewLeases plays the gateway agents: every lease renewed every few seconds (the coordinator
// deems an agent dead after 10 s).
func (s *scaleWorld) renewLeases(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(scaleLeaseRenewEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := metav1.NewMicroTime(time.Now())
			raw, _ := json.Marshal(map[string]any{"spec": map[string]any{"renewTime": now}})
			_ = parallel(ctx, len(s.gwNodes), 8, func(ctx context.Context, i int) error {
				l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: contract.AgentLeaseName(s.gwNodes[i]), Namespace: testNamespace}}
				return s.client.Patch(ctx, l, client.RawPatch(types.MergePatchType, raw))
			})
		}
	}()
	return done
}

// scaleRun is the running coordinator and what its start-up measured.
type scaleRun struct {
	c         *Coordinator
	mgrErr    chan error
	cancel    context.CancelFunc
	converged bool
	// from manager start
	synced, gatewaysReady, policiesReady time.Duration
	firstSeen                            string
	// callsAtReady are the simulator's calls per method when every gateway was first seen
	// Ready and CloudSynced (polled once a second); opsAtReady the provider operations the
	// coordinator made until then (egressd_cloud_calls_total per operation).
	callsAtReady map[string]int
	opsAtReady   map[string]int
	reg          *prometheus.Registry
}

func (r *scaleRun) stop() {
	r.cancel()
	select {
	case err := <-r.mgrErr:
		_ = err // the manager's error was reported while it ran; stopping is all that is left
	case <-time.After(30 * time.Second):
	}
}

// run starts the manager as Run does (minus leader election, the metrics and probe listeners
// and the UDP prober, which needs reachable agents) and waits for every gateway to be Ready
// and every policy's status written.
func (s *scaleWorld) run(ctx context.Context) *scaleRun {
	tb := s.tb
	cfg, err := ParseConfig([]byte("clusterName: c1\nnamespace: " + testNamespace + "\nproviders:\n  " + s.cloud.name + ": {}\n"))
	if err != nil {
		tb.Fatal(err)
	}
	scheme, err := newScheme()
	if err != nil {
		tb.Fatal(err)
	}
	rc := rest.CopyConfig(s.srv.Config)
	rc.QPS, rc.Burst = -1, 0 // as ctrl.GetConfig: no client-side throttling, API priority and fairness instead
	mgr, err := ctrl.NewManager(rc, manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Cache:                  cacheOptions(cfg.Namespace),
	})
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	provs, err := BuildProviders(ctx, cfg, providers.Registry{s.cloud.name: func(context.Context, string, json.RawMessage) (providers.Provider, error) {
		return s.cloud.prov, nil
	}}, reg)
	if err != nil {
		tb.Fatal(err)
	}
	metrics, err := NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	c := New(Options{Config: cfg, Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("egressd-coordinator"),
		Providers: provs, Health: s.health, Metrics: metrics})
	if err := Setup(mgr, c, nil); err != nil {
		tb.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	r := &scaleRun{c: c, mgrErr: make(chan error, 1), cancel: cancel, reg: reg}
	start := time.Now()
	go func() { r.mgrErr <- mgr.Start(mctx) }()

	// Cache sync: every kind the controllers watch, synced (GetInformer blocks until then).
	syncedAt := make(chan time.Duration, 1)
	go func() {
		select {
		case <-mgr.Elected():
		case <-mctx.Done():
			return
		}
		for _, o := range []client.Object{&corev1.Node{}, &corev1.Pod{}, &corev1.Namespace{}, &coordinationv1.Lease{},
			&egressv1.EgressGateway{}, &egressv1.EgressIP{}, &egressv1.EgressPolicy{}, &egressv1.ClusterEgressPolicy{}} {
			if _, err := mgr.GetCache().GetInformer(mctx, o); err != nil {
				return
			}
		}
		syncedAt <- time.Since(start)
	}()

	deadline := time.Now().Add(time.Duration(max(1, scaleNodes/1000)) * 10 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-r.mgrErr:
			tb.Fatalf("manager stopped: %v", err)
		case d := <-syncedAt:
			r.synced = d
		case <-time.After(time.Second):
		}
		gwReady, polReady, why := s.converged(ctx)
		if gwReady && r.gatewaysReady == 0 {
			r.gatewaysReady = time.Since(start)
			r.callsAtReady = s.cloud.calls()
			r.opsAtReady = providerOperations(r.reg)
			progress("%s %v: every gateway Ready", s.cloud.name, r.gatewaysReady.Round(time.Millisecond))
		}
		if gwReady && polReady {
			r.policiesReady = time.Since(start)
			r.converged = true
			break
		}
		if why != r.firstSeen {
			progress("%s %v: %s", s.cloud.name, time.Since(start).Round(time.Millisecond), why)
		}
		r.firstSeen = why
	}
	if r.synced == 0 {
		select {
		case r.synced = <-syncedAt:
		default:
		}
	}
	return r
}

// converged reads from the API server (not the coordinator's cache): every gateway Ready and
// CloudSynced with one egress IP per zone; every policy Accepted and Ready with its pods
// counted and the gateway's addresses.
func (s *scaleWorld) converged(ctx context.Context) (gateways, policies bool, why string) {
	var gws egressv1.EgressGatewayList
	if err := s.client.List(ctx, &gws); err != nil {
		return false, false, err.Error()
	}
	ready := 0
	for _, g := range gws.Items {
		if strings.HasPrefix(g.Name, "scale-") && meta.IsStatusConditionTrue(g.Status.Conditions, egressv1.ConditionReady) &&
			meta.IsStatusConditionTrue(g.Status.Conditions, egressv1.ConditionCloudSynced) && len(g.Status.EgressIPs) == scaleZones {
			ready++
		}
	}
	if ready < scaleGateways {
		return false, false, fmt.Sprintf("%d of %d gateways ready", ready, scaleGateways)
	}
	ok := func(st egressv1.EgressPolicyStatus, gen int64, pods int32) bool {
		return st.ObservedGeneration == gen && meta.IsStatusConditionTrue(st.Conditions, egressv1.ConditionAccepted) &&
			meta.IsStatusConditionTrue(st.Conditions, egressv1.ConditionReady) && st.MatchedPods == pods && len(st.EgressIPs) == scaleZones
	}
	var pols egressv1.EgressPolicyList
	if err := s.client.List(ctx, &pols); err != nil {
		return true, false, err.Error()
	}
	var cpols egressv1.ClusterEgressPolicyList
	if err := s.client.List(ctx, &cpols); err != nil {
		return true, false, err.Error()
	}
	done := 0
	for _, p := range pols.Items {
		if strings.HasPrefix(p.Namespace, "scale-") && ok(p.Status, p.Generation, int32(scalePodsPerApp)) {
			done++
		}
	}
	for _, p := range cpols.Items {
		if strings.HasPrefix(p.Name, "scale-") && ok(p.Status, p.Generation, int32(scaleClusterPolicyPod)) {
			done++
		}
	}
	return true, done == scalePolicies+scaleClusterPolicies, fmt.Sprintf("%d of %d policies ready", done, scalePolicies+scaleClusterPolicies)
}

// durations collects timings.
type durations struct {
	n        int
	sum, max time.Duration
	errs     int
}

func (d *durations) add(t time.Duration, err error) {
	d.n++
	d.sum += t
	d.max = max(d.max, t)
	if err != nil {
		d.errs++
	}
}

func (d durations) mean() time.Duration {
	if d.n == 0 {
		return 0
	}
	return d.sum / time.Duration(d.n)
}

type steadyState struct {
	gateway, policy, cluster durations
	// allocated bytes per gateway / policy reconcile (process-wide, the manager is idle).
	gatewayAlloc, policyAlloc uint64
}

// steadyState calls the reconcilers directly on the converged state, with the manager's
// cached client: passes × every gateway, then every policy once per pass.
func (s *scaleWorld) steadyState(ctx context.Context, c *Coordinator, passes int) steadyState {
	passes = max(passes, 5)
	var st steadyState
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	gr := NewGatewayReconciler(c)
	for range passes {
		for k := range scaleGateways {
			t := time.Now()
			_, err := gr.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: gatewayName(k)}})
			st.gateway.add(time.Since(t), err)
		}
	}
	runtime.ReadMemStats(&m1)
	st.gatewayAlloc = (m1.TotalAlloc - m0.TotalAlloc) / uint64(st.gateway.n)
	var pols egressv1.EgressPolicyList
	var cpols egressv1.ClusterEgressPolicyList
	if err := s.client.List(ctx, &pols); err != nil {
		s.tb.Fatal(err)
	}
	if err := s.client.List(ctx, &cpols); err != nil {
		s.tb.Fatal(err)
	}
	runtime.ReadMemStats(&m0)
	for range min(passes, 2) {
		for _, p := range pols.Items {
			t := time.Now()
			_, err := PolicyReconciler{Coordinator: c}.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
			st.policy.add(time.Since(t), err)
		}
		for _, p := range cpols.Items {
			t := time.Now()
			_, err := PolicyReconciler{Coordinator: c, Cluster: true}.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
			st.cluster.add(time.Since(t), err)
		}
	}
	runtime.ReadMemStats(&m1)
	st.policyAlloc = (m1.TotalAlloc - m0.TotalAlloc) / uint64(max(1, st.policy.n+st.cluster.n))
	return st
}

// churnResult is what a burst of worker-node label changes cost the gateway controller.
type churnResult struct {
	nodes int // worker nodes relabelled
	// reconciles and seconds are the gateway controller's reconciles and their time from the
	// first change until none came for a second; idle its reconciles in as long before it
	// (the periodic requeues).
	reconciles, seconds, idle float64
	took                      time.Duration
}

// nodeChurn relabels 1% of the worker nodes (no gateway selects them) and counts the gateway
// reconciles that follow, next to those of a quiet window as long: every Node event that
// changes labels, cordon, readiness or addresses reaches the gateway controller's watch.
func (s *scaleWorld) nodeChurn(ctx context.Context) churnResult {
	ch := churnResult{nodes: scaleNodes / 100}
	gw := func() [2]float64 { return reconcileCounts()["egressgateway"] }
	settle := func(from [2]float64) [2]float64 {
		last, quiet := gw(), 0
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && quiet < 10; {
			time.Sleep(100 * time.Millisecond)
			if cur := gw(); cur == last {
				quiet++
			} else {
				last, quiet = cur, 0
			}
		}
		return [2]float64{last[0] - from[0], last[1] - from[1]}
	}
	start := gw()
	t := time.Now()
	err := parallel(ctx, ch.nodes, scaleCreateWorkers, func(ctx context.Context, i int) error {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-node-%04d", scaleGatewayNodes+i*(scaleNodes-scaleGatewayNodes)/ch.nodes)}}
		return s.client.Patch(ctx, n, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"scale.egressd.io/churn":"1"}}}`)))
	})
	if err != nil {
		s.tb.Error(err)
	}
	d := settle(start)
	ch.took = time.Since(t)
	ch.reconciles, ch.seconds = d[0], d[1]
	idleStart := gw()
	time.Sleep(ch.took)
	ch.idle = gw()[0] - idleStart[0]
	return ch
}

type failoverResult struct {
	ok                  bool
	gateway, node, ip   string
	to                  string
	ledger, cloud, conv time.Duration
}

// failover marks the node holding one of gateway 0's egress IPs NotReady and times the move:
// spec.node rewritten (the decision), the simulator holding it on the survivor (the cloud move)
// and status.node written (the ledger converged).
func (s *scaleWorld) failover(ctx context.Context) failoverResult {
	fo := failoverResult{gateway: gatewayName(0)}
	var eips egressv1.EgressIPList
	if err := s.client.List(ctx, &eips, client.MatchingLabels{egressv1.LabelGateway: fo.gateway}); err != nil || len(eips.Items) == 0 {
		s.tb.Errorf("no EgressIPs of %s: %v", fo.gateway, err)
		return fo
	}
	victim := eips.Items[0]
	fo.node, fo.ip = victim.Status.Node, victim.Spec.IP
	ip := netip.MustParseAddr(fo.ip)
	n := &corev1.Node{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: fo.node}, n); err != nil {
		s.tb.Error(err)
		return fo
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = corev1.ConditionFalse, "KubeletNotReady"
			n.Status.Conditions[i].LastTransitionTime = metav1.Now()
		}
	}
	start := time.Now()
	if err := s.client.Status().Update(ctx, n); err != nil {
		s.tb.Error(err)
		return fo
	}
	deadline := start.Add(2 * time.Minute)
	for time.Now().Before(deadline) && (fo.ledger == 0 || fo.cloud == 0 || fo.conv == 0) {
		time.Sleep(20 * time.Millisecond)
		if fo.cloud == 0 {
			if h := s.cloud.holder(ip); h != "" && h != fo.node {
				fo.cloud = time.Since(start)
			}
		}
		x := egressv1.EgressIP{}
		if err := s.client.Get(ctx, client.ObjectKeyFromObject(&victim), &x); err != nil {
			continue
		}
		if fo.ledger == 0 && x.Spec.Node != fo.node && x.Spec.Node != "" {
			fo.ledger = time.Since(start)
		}
		if fo.conv == 0 && x.Status.Node != fo.node && x.Status.Node == x.Spec.Node && x.Status.Node != "" {
			fo.conv, fo.to = time.Since(start), x.Status.Node
		}
	}
	fo.ok = fo.ledger > 0 && fo.cloud > 0 && fo.conv > 0 && s.zone[fo.to] == s.zone[fo.node]
	return fo
}

// startCPUProfile profiles the process into dir/cpu-<cloud>.pprof until the returned function
// is called; with dir "" it does nothing.
func startCPUProfile(tb testing.TB, dir, cloud string) (stop func()) {
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, "cpu-"+cloud+".pprof"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatalf("EGRESSD_SCALE_PROFILE with -cpuprofile: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			tb.Error(err)
		}
	}
}

// writeHeapProfile writes the live heap to dir/heap-<cloud>.pprof; with dir "" it does nothing.
func writeHeapProfile(tb testing.TB, dir, cloud string) {
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, "heap-"+cloud+".pprof"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Error(err)
	}
}

func heapInUse() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// parallel runs f(0..n-1) on workers goroutines and returns the first few errors.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		mu   sync.Mutex
		errs []error
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				err := f(ctx, i)
				for attempt := 0; err != nil && attempt < 3 && (apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err)); attempt++ {
					time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
					err = f(ctx, i)
				}
				if err != nil {
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// errorLog counts the controllers' error logs and keeps the first few.
type errorLog struct {
	mu    sync.Mutex
	n     int
	first []string
}

// reset forgets what was logged (a sub-benchmark starts).
func (l *errorLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n, l.first = 0, nil
}

func (l *errorLog) add(prefix, args string) {
	if !strings.Contains(args, `"error"`) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if l.n <= 3 {
		progress("error log: %s", truncate(prefix+" "+args, 400)) // at once: a run that never converges waits 10 minutes
	}
	if len(l.first) < 3 {
		l.first = append(l.first, truncate(prefix+" "+args, 400))
	}
}

// errorSummary is what errorLog held at one moment.
type errorSummary struct {
	n     int
	first []string
}

func (l *errorLog) snapshot() errorSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errorSummary{n: l.n, first: slices.Clone(l.first)}
}

// reconcileCounts reads controller-runtime's own metrics: reconciles and their total time per
// controller since the process started.
func reconcileCounts() reconcileTotals {
	out := reconcileTotals{}
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_time_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" {
					v := out[l.GetValue()]
					v[0] += float64(m.GetHistogram().GetSampleCount())
					v[1] += m.GetHistogram().GetSampleSum()
					out[l.GetValue()] = v
				}
			}
		}
	}
	return out
}

// reconcileTotals are reconciles and their total seconds per controller.
type reconcileTotals map[string][2]float64

// since is r minus an earlier reading (the process's earlier sub-benchmarks).
func (r reconcileTotals) since(before reconcileTotals) reconcileTotals {
	out := reconcileTotals{}
	for k, v := range r {
		b := before[k]
		if d := [2]float64{v[0] - b[0], v[1] - b[1]}; d[0] > 0 {
			out[k] = d
		}
	}
	return out
}

type scaleReport struct {
	cloud                 *scaleCloud
	populate              time.Duration
	objects               int64
	run                   *scaleRun
	steady                steadyState
	failover              failoverResult
	churn                 churnResult
	heapBefore, heapAfter runtime.MemStats
	calls                 map[string]int
	reconciles            reconcileTotals
	errors                errorSummary
}

func (r scaleReport) String() string {
	var b strings.Builder
	mb := func(x uint64) float64 { return float64(x) / (1 << 20) }
	fmt.Fprintf(&b, "BenchmarkScale/%s: %d nodes (%d gateway nodes of %d EgressGateways over %d zones), %d pods in %d namespaces, %d EgressPolicies + %d ClusterEgressPolicies, %d agent Leases\n",
		r.cloud.name, scaleNodes, scaleGatewayNodes, scaleGateways, scaleZones, scalePods, scaleNamespaces, scalePolicies, scaleClusterPolicies, scaleGatewayNodes)
	fmt.Fprintf(&b, "envtest kube-apiserver + etcd (separate processes, not counted in memory); %s simulator in-process; GOMAXPROCS %d\n\n", r.cloud.service, runtime.GOMAXPROCS(0))
	row := func(k, v string) { fmt.Fprintf(&b, "%-52s %s\n", k, v) }
	row("populate (objects, create + status writes)", fmt.Sprintf("%d objects in %v (%d workers)", r.objects, r.populate.Round(time.Millisecond), scaleCreateWorkers))
	row("manager start → caches synced", r.run.synced.Round(time.Millisecond).String())
	row(fmt.Sprintf("manager start → %d gateways Ready + CloudSynced", scaleGateways), r.run.gatewaysReady.Round(time.Millisecond).String())
	conv := r.run.policiesReady.Round(time.Millisecond).String()
	if !r.run.converged {
		conv = "NOT CONVERGED (" + r.run.firstSeen + ")"
	}
	row(fmt.Sprintf("manager start → %d policy statuses written", scalePolicies+scaleClusterPolicies), conv)
	st := r.steady
	row("gateway reconcile, steady state (mean / max)", fmt.Sprintf("%v / %v over %d (%d errors), %.1f MB allocated each",
		st.gateway.mean().Round(10*time.Microsecond), st.gateway.max.Round(10*time.Microsecond), st.gateway.n, st.gateway.errs, mb(st.gatewayAlloc)))
	row("EgressPolicy reconcile (mean / max)", fmt.Sprintf("%v / %v over %d (%d errors)",
		st.policy.mean().Round(10*time.Microsecond), st.policy.max.Round(10*time.Microsecond), st.policy.n, st.policy.errs))
	row("ClusterEgressPolicy reconcile (mean / max)", fmt.Sprintf("%v / %v over %d (%d errors); %.2f MB allocated per policy reconcile",
		st.cluster.mean().Round(10*time.Microsecond), st.cluster.max.Round(10*time.Microsecond), st.cluster.n, st.cluster.errs, mb(st.policyAlloc)))
	fo := r.failover
	row("failover: node NotReady → spec.node moved", fmt.Sprintf("%v (%s %s: %s → %s)", fo.ledger.Round(time.Millisecond), fo.gateway, fo.ip, fo.node, fo.to))
	row("failover: → simulator holds it on the survivor", fo.cloud.Round(time.Millisecond).String())
	row("failover: → status.node written (converged)", fo.conv.Round(time.Millisecond).String())
	ch := r.churn
	row(fmt.Sprintf("node churn: %d worker nodes relabelled", ch.nodes), fmt.Sprintf("%.0f gateway reconciles (%.2f s) in %v; %.0f in as long idle",
		ch.reconciles, ch.seconds, ch.took.Round(time.Millisecond), ch.idle))
	row("heap in use before manager start", fmt.Sprintf("%.1f MB", mb(r.heapBefore.HeapInuse)))
	row("heap in use after convergence", fmt.Sprintf("%.1f MB (heap alloc %.1f MB, %d goroutines)", mb(r.heapAfter.HeapInuse), mb(r.heapAfter.HeapAlloc), runtime.NumGoroutine()))
	row("coordinator footprint (difference)", fmt.Sprintf("%.1f MB in use, %.1f MB live", mb(r.heapAfter.HeapInuse-r.heapBefore.HeapInuse), mb(r.heapAfter.HeapAlloc-r.heapBefore.HeapAlloc)))
	names := make([]string, 0, len(r.reconciles))
	for k := range r.reconciles {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v := r.reconciles[k]
		row("reconciles by the manager: "+k, fmt.Sprintf("%.0f, %.2f s in total", v[0], v[1]))
	}
	calls := func(c map[string]int) string {
		mut, read := r.cloud.split(c)
		return fmt.Sprintf("%d mutating + %d read: %v", mut, read, c)
	}
	row("provider operations until every gateway Ready", fmt.Sprint(r.run.opsAtReady))
	row(r.cloud.service+" requests until every gateway Ready", calls(r.run.callsAtReady))
	row(r.cloud.service+" requests (whole run)", calls(r.calls))
	row("controller error logs", fmt.Sprintf("%d %v", r.errors.n, r.errors.first))
	return b.String()
}

// figure is the run's one-line FIGURE: time to every gateway Ready and CloudSynced, and the
// cloud calls until then per method, mutating and read apart, with the provider operations
// that made them.
func (r scaleReport) figure() string {
	var mut, read []string
	mn, rn := 0, 0
	for _, m := range slices.Sorted(maps.Keys(r.run.callsAtReady)) {
		n := r.run.callsAtReady[m]
		if r.cloud.mutating(m) {
			mut, mn = append(mut, fmt.Sprintf("%s %d", m, n)), mn+n
		} else {
			read, rn = append(read, fmt.Sprintf("%s %d", m, n)), rn+n
		}
	}
	var ops []string
	for _, op := range slices.Sorted(maps.Keys(r.run.opsAtReady)) {
		ops = append(ops, fmt.Sprintf("%s %d", op, r.run.opsAtReady[op]))
	}
	return fmt.Sprintf("FIGURE BenchmarkScale/%s %d nodes, %d pods, %d policies: %d gateways Ready + CloudSynced %v after manager start (caches synced %v); %s calls until then %d mutating (%s) + %d read (%s); provider operations: %s",
		r.cloud.name, scaleNodes, scalePods, scalePolicies+scaleClusterPolicies, scaleGateways, r.run.gatewaysReady.Round(time.Millisecond), r.run.synced.Round(time.Millisecond),
		r.cloud.service, mn, strings.Join(mut, ", "), rn, strings.Join(read, ", "), strings.Join(ops, ", "))
}

// providerOperations reads the provider operations the coordinator made
// (egressd_cloud_calls_total, which BuildProviders' metrics count), by operation; none are 0.
func providerOperations(reg *prometheus.Registry) map[string]int {
	out := map[string]int{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "egressd_cloud_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" && m.GetCounter().GetValue() > 0 {
					out[l.GetValue()] += int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}

// progress goes to stderr at once: the benchmark's own log is printed only at its end.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scale: "+format+"\n", args...)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// TestParseScaleShape: the defaults are the 1k figure, issue 16's shape parses, and a shape
// that would break a namespace's prefix budget or leave a fraction of a namespace is refused
// with the variable named.
func TestParseScaleShape(t *testing.T) {
	for _, tc := range []struct {
		nodes, policies string
		want            scaleShape
		err             string
	}{
		{"", "", scaleShape{nodes: 1000, policies: 450}, ""},
		{"5000", "5000", scaleShape{nodes: 5000, policies: 5000}, ""},
		{"5000", "", scaleShape{nodes: 5000, policies: 2250}, ""},
		{"1050", "", scaleShape{}, "EGRESSD_SCALE_NODES"},
		{"100", "", scaleShape{}, "EGRESSD_SCALE_NODES"},
		{"x", "", scaleShape{}, "EGRESSD_SCALE_NODES"},
		{"5000", "4999", scaleShape{}, "EGRESSD_SCALE_POLICIES"},
		{"1000", "6450", scaleShape{}, "prefix budget"}, // 129 per namespace
	} {
		got, err := parseScaleShape(tc.nodes, tc.policies)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseScaleShape(%q, %q): error %v, want one naming %s", tc.nodes, tc.policies, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseScaleShape(%q, %q) = %+v, %v; want %+v", tc.nodes, tc.policies, got, err, tc.want)
		}
	}
}
