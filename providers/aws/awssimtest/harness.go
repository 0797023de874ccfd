// Package awssimtest runs the AWS provider against the EC2 simulator for the conformance
// suite and the figures: it seeds a VPC, subnets and instances, builds the provider through
// the real SDK on an httptest endpoint, and implements conformance.World on the simulator.
package awssimtest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/conformance"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// Harness implements conformance.Harness for AWS on the simulator. Wrap, when set, wraps
// the provider under test (the plugin suite puts the plugin protocol in between).
type Harness struct {
	Wrap func(t *testing.T, p providers.Provider) providers.Provider
	// Timing, when set, is the simulator's timing profile (seeded with Seed) from the moment
	// the world is seeded: calls take time, describes lag and attachments pass through
	// attaching and detaching.
	Timing *simkit.Profile
	Seed   int64
	// IPv6 makes every subnet dual-stack and the suite's addresses IPv6 (cloud.family IPv6):
	// no public IPs (Elastic IPs are IPv4).
	IPv6 bool
}

var _ conformance.Harness = Harness{}

func (h Harness) Features() []conformance.Feature {
	fs := []conformance.Feature{conformance.FeatureDedicatedInterface, conformance.FeatureThrottling,
		conformance.FeatureFailAfterApply, conformance.FeatureDescribeLag, conformance.FeatureForeign}
	if !h.IPv6 {
		fs = append(fs, conformance.FeaturePublicIP)
	}
	return fs
}

// World is the AWS world of one case.
type World struct {
	Sim    *awssim.Server
	AWS    *aws.Provider
	EC2    *ec2.Client
	URL    string
	VPC    string
	p      providers.Provider
	zones  map[string]string // suite zone → AWS zone
	subnet map[string]netip.Prefix
	nodes  map[string][]providers.NodeRef
	names  map[string]string // instance → node name
	inst   map[string]string // node name → instance
	next   map[string]netip.Addr
}

// Setup implements conformance.Harness.
func (h Harness) Setup(t *testing.T, topo conformance.Topology) conformance.World {
	t.Helper()
	w, err := newWorld(topo, h.IPv6)
	if err != nil {
		t.Fatal(err)
	}
	if h.Timing != nil {
		seed := w.Sim.SetTiming(*h.Timing, h.Seed)
		t.Logf("EC2 simulator timing %v, seed %d", *h.Timing, seed)
	}
	srv := httptest.NewServer(w.Sim)
	t.Cleanup(srv.Close)
	if err := w.Connect(srv.URL); err != nil {
		t.Fatal(err)
	}
	if h.Wrap != nil {
		w.p = h.Wrap(t, w.p)
	}
	return w
}

// NewWorld seeds a simulator for topo; call Connect with its URL before use.
func NewWorld(topo conformance.Topology) (*World, error) { return newWorld(topo, false) }

// NewDualStackWorld is NewWorld with dual-stack subnets, FreeAddress handing out IPv6 ones.
func NewDualStackWorld(topo conformance.Topology) (*World, error) { return newWorld(topo, true) }

func newWorld(topo conformance.Topology, ipv6 bool) (*World, error) {
	sim := awssim.New("us-east-1")
	sim.SetElasticIPLimit(50)
	typ := fmt.Sprintf("sim.ips%d", topo.IPsPerNode)
	sim.AddInstanceType(awssim.InstanceType{Name: typ, MaxENIs: 3, IPv4PerENI: topo.IPsPerNode + 1})
	t := awssim.Topology{VPCCIDR: "10.0.0.0/16"}
	w := &World{Sim: sim, zones: map[string]string{}, subnet: map[string]netip.Prefix{}, nodes: map[string][]providers.NodeRef{},
		names: map[string]string{}, inst: map[string]string{}, next: map[string]netip.Addr{}}
	for i, z := range topo.Zones {
		az := fmt.Sprintf("us-east-1%c", 'a'+i)
		w.zones[z] = az
		cidr := netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/24", i+1))
		w.subnet[z] = cidr
		w.next[z] = netip.MustParseAddr(fmt.Sprintf("10.0.%d.100", i+1))
		zt := awssim.ZoneTopology{Zone: az, SubnetCIDR: cidr.String()}
		if ipv6 {
			zt.SubnetIPv6CIDR = fmt.Sprintf("2001:db8:0:%x::/64", i+1)
			w.next[z] = netip.MustParseAddr(fmt.Sprintf("2001:db8:0:%x::100", i+1))
		}
		for range topo.NodesPerZone {
			zt.Instances = append(zt.Instances, typ)
		}
		t.Zones = append(t.Zones, zt)
	}
	seeded, err := sim.SeedTopology(t)
	if err != nil {
		return nil, err
	}
	w.VPC = seeded.VPC
	for _, in := range seeded.Instances {
		for z, az := range w.zones {
			if in.Zone != az {
				continue
			}
			name := fmt.Sprintf("node-%s-%d", z, len(w.nodes[z]))
			w.nodes[z] = append(w.nodes[z], providers.NodeRef{Name: name, ProviderID: in.ProviderID, Zone: az})
			w.names[in.ID], w.inst[name] = name, in.ID
		}
	}
	return w, nil
}

// Connect builds the provider and a raw EC2 client against the simulator at url.
func (w *World) Connect(url string) error {
	w.URL = url
	p, err := w.NewProvider(aws.Type, nil)
	if err != nil {
		return err
	}
	creds := credentials.NewStaticCredentialsProvider("AKIDSIM", "SECRETSIM", "")
	w.AWS, w.p = p, p
	w.EC2 = ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: awssdk.String(url), Credentials: creds, RetryMaxAttempts: 1})
	return nil
}

// NewProvider builds another AWS provider named name on the simulator at w.URL through the
// real SDK, with the harness's configuration adjusted by mod (nil: as is).
func (w *World) NewProvider(name string, mod func(*aws.Config)) (*aws.Provider, error) {
	cfg := aws.Config{Region: "us-east-1", VPC: w.VPC, Endpoint: w.URL, ClusterName: "c1",
		MaxAttempts: 4, MaxBackoff: providers.Duration(20 * time.Millisecond)}
	if mod != nil {
		mod(&cfg)
	}
	creds := credentials.NewStaticCredentialsProvider("AKIDSIM", "SECRETSIM", "")
	return aws.New(context.Background(), name, cfg, aws.WithCredentials(creds))
}

func (w *World) Provider() providers.Provider { return w.p }
func (w *World) Cluster() string              { return "c1" }

func (w *World) Nodes(zone string) []providers.NodeRef { return w.nodes[zone] }

func (w *World) FreeAddress(zone string) netip.Addr {
	a := w.next[zone]
	w.next[zone] = a.Next()
	return a
}

func (w *World) Holder(ip netip.Addr) (string, netip.Addr, bool) {
	h, ok := w.Sim.Holder(w.VPC, ip)
	if !ok || h.Instance == "" {
		return "", netip.Addr{}, false
	}
	return w.names[h.Instance], h.PublicIP, true
}

func (w *World) Addresses(node string) []netip.Addr {
	var out []netip.Addr
	for _, h := range w.Sim.Holdings() {
		if h.Instance == w.inst[node] && !h.Primary {
			out = append(out, h.PrivateIP)
		}
	}
	return out
}

func (w *World) PublicIPs() int { return len(w.Sim.Snapshot().EIPs) }

func (w *World) Interfaces(node string) int {
	n := 0
	for _, e := range w.Sim.Snapshot().ENIs {
		if e.Instance == w.inst[node] {
			n++
		}
	}
	return n
}

func (w *World) MutatingCalls() int    { return awssim.MutatingCalls(w.Sim.Calls()) }
func (w *World) Calls() map[string]int { return w.Sim.Calls() }
func (w *World) ResetCalls()           { w.Sim.ResetCalls() }

func (w *World) Throttle(n int) {
	if n < 0 {
		w.Sim.Throttle("*", 0, 0)
		return
	}
	w.Sim.Inject("*", awssim.Fault{Code: "RequestLimitExceeded", Message: "Request limit exceeded.", Status: 503, Times: n})
}

// mutatingActions are the EC2 actions the provider may call to change state.
var mutatingActions = []string{"CreateTags", "DeleteTags", "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses",
	"AssignIpv6Addresses", "UnassignIpv6Addresses",
	"CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute", "DetachNetworkInterface",
	"DeleteNetworkInterface", "AllocateAddress", "AssociateAddress", "DisassociateAddress", "ReleaseAddress"}

func (w *World) FailMutationsAfterApply() {
	for _, a := range mutatingActions {
		w.Sim.Inject(a, awssim.Fault{Code: "InternalError", Message: "We encountered an internal error.", Status: 500, AfterApply: true})
	}
}

func (w *World) SetDescribeLag(d time.Duration) { w.Sim.SetDescribeLag(d) }
func (w *World) ClearFaults()                   { w.Sim.ClearFaults() }

// Occupy makes ip, in zone's subnet, the primary address of a new unattached and untagged
// interface: an address held outside egressd, as another instance's or a CNI's pod IP would be.
func (w *World) Occupy(zone string, ip netip.Addr) error {
	sn := ""
	for _, s := range w.Sim.Snapshot().Subnets {
		if s.Zone == w.zones[zone] {
			sn = s.ID
		}
	}
	_, err := w.EC2.CreateNetworkInterface(context.Background(), &ec2.CreateNetworkInterfaceInput{
		SubnetId: &sn, PrivateIpAddress: awssdk.String(ip.String())})
	return err
}

// AddForeign assigns two addresses to node's primary ENI through the EC2 API: one of no
// cluster with an untagged Elastic IP, one recorded as another cluster's with that cluster's
// Elastic IP; and creates an unattached ENI tagged as the other cluster's dedicated one.
func (w *World) AddForeign(node providers.NodeRef) []netip.Addr {
	ctx := context.Background()
	inst := w.inst[node.Name]
	var eni, zone string
	for _, e := range w.Sim.Snapshot().ENIs {
		if e.Instance == inst && e.DeviceIndex == 0 {
			eni, zone = e.ID, e.Zone
		}
	}
	var sz string
	for z, az := range w.zones {
		if az == zone {
			sz = z
		}
	}
	a, b := w.FreeAddress(sz), w.FreeAddress(sz)
	must := func(_ any, err error) {
		if err != nil {
			panic(fmt.Sprintf("seeding foreign resources: %v", err))
		}
	}
	if a.Is6() {
		must(w.EC2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: &eni, Ipv6Addresses: []string{a.String(), b.String()}}))
	} else {
		must(w.EC2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &eni, PrivateIpAddresses: []string{a.String(), b.String()}}))
	}
	must(w.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{eni}, Tags: []ec2types.Tag{
		{Key: awssdk.String(aws.TagIPPrefix + b.String()), Value: awssdk.String("other/gw")}}}))
	for i, ip := range []netip.Addr{a, b} {
		if ip.Is6() {
			break // Elastic IPs are IPv4
		}
		in := &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc}
		if i == 1 {
			in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeElasticIp, Tags: []ec2types.Tag{
				{Key: awssdk.String(egressv1.TagCluster), Value: awssdk.String("other")}, {Key: awssdk.String(aws.TagPrivateIP), Value: awssdk.String(ip.String())}}}}
		}
		out, err := w.EC2.AllocateAddress(ctx, in)
		must(out, err)
		must(w.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: out.AllocationId, NetworkInterfaceId: &eni, PrivateIpAddress: awssdk.String(ip.String())}))
	}
	sn := ""
	for _, s := range w.Sim.Snapshot().Subnets {
		if s.Zone == zone {
			sn = s.ID
		}
	}
	must(w.EC2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: &sn, TagSpecifications: []ec2types.TagSpecification{{
		ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: []ec2types.Tag{
			{Key: awssdk.String(egressv1.TagCluster), Value: awssdk.String("other")}, {Key: awssdk.String(aws.TagRole), Value: awssdk.String("egress-interface")}}}}}))
	return []netip.Addr{a, b}
}
