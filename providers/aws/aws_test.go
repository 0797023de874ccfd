package aws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/conformance"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
)

func newWorld(t *testing.T, ipsPerNode int) *awssimtest.World {
	t.Helper()
	w := awssimtest.Harness{}.Setup(t, conformance.Topology{Zones: []string{"zone-a", "zone-b"}, NodesPerZone: 2, IPsPerNode: ipsPerNode})
	return w.(*awssimtest.World)
}

var owner = providers.Owner{Cluster: "c1", Gateway: "gw1"}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestConstructorFromEnvironment builds the provider the way the controller does: JSON
// configuration, the SDK's default chain (here static keys from the environment), the EC2
// endpoint from AWS_ENDPOINT_URL_EC2, region and VPC from IMDSv2.
func TestConstructorFromEnvironment(t *testing.T) {
	w := newWorld(t, 4)
	node := w.Nodes("zone-a")[0]
	inst := node.ProviderID[strings.LastIndex(node.ProviderID, "/")+1:]
	w.Sim.SetIMDSInstance(inst)
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_EC2": w.URL, "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "",
		"AWS_DEFAULT_REGION": "", "AWS_PROFILE": "", "AWS_CONFIG_FILE": filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"), "AWS_EC2_METADATA_SERVICE_ENDPOINT": w.URL,
	} {
		t.Setenv(k, v)
	}
	p, err := aws.Constructor(ctxT(t), "aws-prod", json.RawMessage(`{"clusterName":"c1","maxBackoff":"10ms"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(*aws.Provider).VPC(); got != w.VPC {
		t.Fatalf("VPC from IMDS = %q, want %q", got, w.VPC)
	}
	info, err := p.DiscoverNode(ctxT(t), node)
	if err != nil {
		t.Fatal(err)
	}
	if info.Zone != "us-east-1a" || info.Capacity.MaxIPsPerInterface != 5 || info.Capacity.FreeIPSlots != 4 ||
		info.Capacity.DedicatedFreeIPSlots != 4 || len(info.Subnets) != 1 || len(info.Subnets[0].Reserved) != 5 {
		t.Fatalf("DiscoverNode: %+v", info)
	}
	if p.Name() != "aws-prod" {
		t.Fatalf("Name() = %q, want the configured name aws-prod", p.Name())
	}
}

func TestOwnershipRecordsAndDedicatedInterface(t *testing.T) {
	w := newWorld(t, 4)
	ctx := ctxT(t)
	n := w.Nodes("zone-a")[0]
	ip := w.FreeAddress("zone-a")
	if _, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: ip}); err != nil {
		t.Fatal(err)
	}
	st := w.Sim.Snapshot()
	var primary awssim.ENIView
	for _, e := range st.ENIs {
		if slices.Contains(e.SecondaryIPs, ip) {
			primary = e
		}
	}
	if primary.DeviceIndex != 0 || primary.Tags[aws.TagIPPrefix+ip.String()] != "c1/gw1" {
		t.Fatalf("primary ENI after ensure: %+v", primary)
	}
	ip2 := w.FreeAddress("zone-a")
	a, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: ip2, Interface: providers.InterfaceDedicated, Public: true})
	if err != nil {
		t.Fatal(err)
	}
	var ded awssim.ENIView
	for _, e := range w.Sim.Snapshot().ENIs {
		if e.ID == a.InterfaceID {
			ded = e
		}
	}
	if ded.DeviceIndex != 1 || !ded.DeleteOnTermination || !slices.Equal(ded.Groups, primary.Groups) || ded.Subnet != primary.Subnet ||
		ded.Tags[egressv1.TagCluster] != "c1" || ded.Tags[egressv1.TagOwner] != "gw1" || ded.Tags[aws.TagCreated] == "" ||
		a.InterfaceMAC != ded.MAC || a.Attachment != string(providers.InterfaceDedicated) {
		t.Fatalf("dedicated ENI %+v, assignment %+v", ded, a)
	}
	for _, x := range w.Sim.Snapshot().EIPs {
		if x.Tags[egressv1.TagCluster] != "c1" || x.Tags[egressv1.TagOwner] != "gw1" || x.Tags[aws.TagPrivateIP] != ip2.String() {
			t.Fatalf("EIP tags %v", x.Tags)
		}
	}
	// A move in primary mode records the address on the new holder and leaves the old one's
	// record standing; moving back is then a single mutating call.
	b := w.Nodes("zone-a")[1]
	records := func() (n int) {
		for _, e := range w.Sim.Snapshot().ENIs {
			if _, has := e.Tags[aws.TagIPPrefix+ip.String()]; has {
				n++
			}
		}
		return n
	}
	if _, err := w.AWS.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: providers.Assignment{IP: ip}, To: b}); err != nil {
		t.Fatal(err)
	}
	if got := records(); got != 2 {
		t.Fatalf("after a move, %d ENIs carry the record of %s, want 2 (holder and standing)", got, ip)
	}
	w.Sim.ResetCalls()
	if _, err := w.AWS.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: providers.Assignment{IP: ip}, To: n}); err != nil {
		t.Fatal(err)
	}
	if calls := w.Sim.Calls(); awssim.MutatingCalls(calls) != 1 || calls["AssignPrivateIpAddresses"] != 1 {
		t.Fatalf("moving back to a node with a standing record: %v, want one AssignPrivateIpAddresses", calls)
	}
	// Another cluster may not release or move it.
	other := providers.Owner{Cluster: "c2"}
	if err := w.AWS.ReleaseIP(ctx, providers.ReleaseRequest{Owner: other, Current: providers.Assignment{IP: ip}}); !providers.IsPermission(err) {
		t.Fatalf("release by another cluster: %v", err)
	}
	if _, err := w.AWS.MoveIP(ctx, providers.MoveRequest{Owner: other, Current: providers.Assignment{IP: ip}, To: n}); !providers.IsNotFound(err) {
		t.Fatalf("move by another cluster: %v", err)
	}
	// Releasing drops every record of the address, standing ones included.
	if err := w.AWS.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: providers.Assignment{IP: ip}}); err != nil {
		t.Fatal(err)
	}
	if got := records(); got != 0 {
		t.Fatalf("after release, %d ENIs still carry the record of %s", got, ip)
	}
}

// TestStandingRecordsPruned fills a primary ENI to EC2's 50 tags with standing records and
// another cluster's record: the next address still lands, the standing records go in one
// DeleteTags, and the other cluster's record and the held addresses' records stay.
func TestStandingRecordsPruned(t *testing.T) {
	w := newWorld(t, 4)
	ctx := ctxT(t)
	n := w.Nodes("zone-a")[0]
	held := w.FreeAddress("zone-a")
	if _, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: held}); err != nil {
		t.Fatal(err)
	}
	var eni awssim.ENIView
	for _, e := range w.Sim.Snapshot().ENIs {
		if slices.Contains(e.SecondaryIPs, held) {
			eni = e
		}
	}
	foreign := aws.TagIPPrefix + "10.9.9.9"
	tags := map[string]string{foreign: "c2/x"}
	for i := 0; len(eni.Tags)+len(tags) < 50; i++ {
		tags[fmt.Sprintf("%s10.8.0.%d", aws.TagIPPrefix, i)] = "c1/gw1"
	}
	in := ec2.CreateTagsInput{Resources: []string{eni.ID}}
	for k, v := range tags {
		in.Tags = append(in.Tags, ec2types.Tag{Key: awssdk.String(k), Value: awssdk.String(v)})
	}
	if _, err := w.EC2.CreateTags(ctx, &in); err != nil {
		t.Fatal(err)
	}
	// Full now: EC2 (and the simulator) refuses a 51st tag.
	if _, err := w.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{eni.ID},
		Tags: []ec2types.Tag{{Key: awssdk.String("one-more"), Value: awssdk.String("x")}}}); !strings.Contains(fmt.Sprint(err), "TagLimitExceeded") {
		t.Fatalf("a 51st tag: %v, want TagLimitExceeded", err)
	}
	w.Sim.ResetCalls()
	next := w.FreeAddress("zone-a")
	if _, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: next}); err != nil {
		t.Fatalf("ensuring on an ENI full of standing records: %v", err)
	}
	if calls := w.Sim.Calls(); calls["DeleteTags"] != 1 {
		t.Errorf("pruning took %d DeleteTags, want 1", calls["DeleteTags"])
	}
	for _, e := range w.Sim.Snapshot().ENIs {
		if e.ID != eni.ID {
			continue
		}
		for k := range tags {
			if _, has := e.Tags[k]; has != (k == foreign) {
				t.Errorf("record %s present %v after pruning", k, has)
			}
		}
		for _, a := range []netip.Addr{held, next} {
			if e.Tags[aws.TagIPPrefix+a.String()] != "c1/gw1" {
				t.Errorf("record of held %s lost: %v", a, e.Tags)
			}
		}
	}
}

func TestCapacityErrors(t *testing.T) {
	w := newWorld(t, 4)
	ctx := ctxT(t)
	n := w.Nodes("zone-a")[0]
	w.Sim.SetElasticIPLimit(0)
	_, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: w.FreeAddress("zone-a"), Public: true})
	if !providers.IsCapacityExhausted(err) || !strings.Contains(err.Error(), "AddressLimitExceeded") {
		t.Fatalf("EIP quota: %v", err)
	}
	// A /28 with its 11 usable addresses taken cannot give a dedicated ENI its primary address.
	w2 := newWorld(t, 4)
	sn, err := w2.Sim.AddSubnet(awssim.SubnetSpec{VPC: w2.VPC, Zone: "us-east-1a", CIDR: "10.0.200.0/28"})
	if err != nil {
		t.Fatal(err)
	}
	for range 11 {
		if _, err := w2.Sim.AddInstance(awssim.InstanceSpec{Type: "t3.nano", Subnet: sn}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = w2.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: w2.Nodes("zone-a")[0], IP: netip.MustParseAddr("10.0.200.9"),
		Subnet: sn, Interface: providers.InterfaceDedicated})
	if !providers.IsCapacityExhausted(err) || !strings.Contains(err.Error(), "InsufficientFreeAddressesInSubnet") {
		t.Fatalf("full subnet: %v", err)
	}
}

// TestEnsureOthersPrimary: an egress IP that is another instance's primary address cannot be
// assigned (EC2: InvalidParameterValue even with AllowReassignment). The provider answers
// Conflict from EC2's own describe of the address, not from the error's message, and the
// address stays where it was.
func TestEnsureOthersPrimary(t *testing.T) {
	w := newWorld(t, 4)
	ctx := ctxT(t)
	a, b := w.Nodes("zone-a")[0], w.Nodes("zone-a")[1]
	var primary netip.Addr
	var holder string
	for _, e := range w.Sim.Snapshot().ENIs {
		if e.DeviceIndex == 0 && e.Instance != "" && strings.HasSuffix(b.ProviderID, "/"+e.Instance) {
			primary, holder = e.PrimaryIP, e.ID
		}
	}
	if !primary.IsValid() {
		t.Fatalf("no primary ENI for %s in %+v", b.ProviderID, w.Sim.Snapshot().ENIs)
	}
	_, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: a, IP: primary})
	if !providers.IsConflict(err) || !strings.Contains(err.Error(), holder) {
		t.Fatalf("ensuring %s (primary of %s) on %s: want Conflict naming %s, got %v", primary, holder, a.Name, holder, err)
	}
	if got, _, ok := w.Holder(primary); !ok || got != b.Name {
		t.Fatalf("%s now held by %q (%v), want %s", primary, got, ok, b.Name)
	}
}

type apiErr struct{ code string }

func (e apiErr) Error() string                 { return e.code }
func (e apiErr) ErrorCode() string             { return e.code }
func (e apiErr) ErrorMessage() string          { return e.code }
func (e apiErr) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

func TestErrorKinds(t *testing.T) {
	for code, want := range map[string]providers.ErrorKind{
		"InvalidNetworkInterfaceID.NotFound": providers.KindNotFound, "InvalidAllocationID.NotFound": providers.KindNotFound,
		"PrivateIpAddressLimitExceeded": providers.KindCapacityExhausted, "AttachmentLimitExceeded": providers.KindCapacityExhausted,
		"InsufficientFreeAddressesInSubnet": providers.KindCapacityExhausted, "AddressLimitExceeded": providers.KindCapacityExhausted,
		"RequestLimitExceeded": providers.KindThrottled, "InvalidIPAddress.InUse": providers.KindConflict,
		"Resource.AlreadyAssociated": providers.KindConflict, "UnauthorizedOperation": providers.KindPermission,
		"InvalidParameterValue": 0,
	} {
		got := providers.KindOf(aws.Classify("op", fmt.Errorf("wrapped: %w", apiErr{code})))
		if got != want {
			t.Errorf("%s → %v, want %v", code, got, want)
		}
	}
	if err := aws.Classify("op", errors.New("x")); providers.KindOf(err) != 0 || !strings.HasPrefix(err.Error(), "op: ") {
		t.Errorf("unclassified: %v", err)
	}
}

// TestFigures prints the EC2 calls each operation makes (go test -run TestFigures -v).
func TestFigures(t *testing.T) {
	w := newWorld(t, 8)
	ctx := ctxT(t)
	a, b := w.Nodes("zone-a")[0], w.Nodes("zone-a")[1]
	type row struct {
		name  string
		calls map[string]int
		note  string
	}
	var rows []row
	measure := func(name, note string, fn func() error) {
		t.Helper()
		w.ResetCalls()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows = append(rows, row{name, w.Calls(), note})
	}
	ip1, ip2, ip3, ip4 := w.FreeAddress("zone-a"), w.FreeAddress("zone-a"), w.FreeAddress("zone-a"), w.FreeAddress("zone-a")
	var cur *providers.Assignment
	ensure := func(n providers.NodeRef, ip netip.Addr, pub bool, m providers.InterfaceMode) func() error {
		return func() (err error) {
			cur, err = w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: ip, Public: pub, Interface: m})
			return err
		}
	}
	move := func(ip netip.Addr, to providers.NodeRef) func() error {
		return func() error {
			_, err := w.AWS.MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: providers.Assignment{IP: ip}, To: to})
			return err
		}
	}
	release := func(ip netip.Addr) func() error {
		return func() error {
			return w.AWS.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: providers.Assignment{IP: ip}})
		}
	}
	measure("discover node", "first time: instance type fetched", func() error { _, err := w.AWS.DiscoverNode(ctx, a); return err })
	measure("discover node again", "instance type cached", func() error { _, err := w.AWS.DiscoverNode(ctx, a); return err })
	measure("ensure (primary ENI)", "", ensure(a, ip1, false, providers.InterfacePrimary))
	measure("ensure again (no-op)", "", ensure(a, ip1, false, providers.InterfacePrimary))
	measure("ensure + public (primary ENI)", "", ensure(a, ip2, true, providers.InterfacePrimary))
	measure("ensure (dedicated, new ENI)", "ENI created once per node", ensure(a, ip3, false, providers.InterfaceDedicated))
	measure("ensure + public (dedicated ENI exists)", "", ensure(a, ip4, true, providers.InterfaceDedicated))
	if _, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: b, IP: w.FreeAddress("zone-a"), Interface: providers.InterfaceDedicated}); err != nil {
		t.Fatal(err)
	}
	measure("move (primary ENI, + public)", "EIP follows", move(ip2, b))
	measure("move back (primary ENI, + public)", "standing record: no tag call", move(ip2, a))
	measure("move (dedicated ENI, + public)", "EIP follows", move(ip4, b))
	measure("move again (no-op)", "", move(ip4, b))
	measure("steady-state resync (ListOwned)", "whatever the number of IPs", func() error { _, err := w.AWS.ListOwned(ctx, "c1"); return err })
	pubBefore := cur.PublicIP
	_ = pubBefore
	h, _ := w.Sim.Holder(w.VPC, ip4)
	var relAssign map[string]int
	w.ResetCalls()
	if err := release(ip4)(); err != nil {
		t.Fatal(err)
	}
	if err := ensure(a, ip4, true, providers.InterfaceDedicated)(); err != nil {
		t.Fatal(err)
	}
	relAssign = w.Calls()
	rows = append(rows, row{"release-then-assign (dedicated, + public)", relAssign,
		fmt.Sprintf("public IP %v → %v", h.PublicIP, cur.PublicIP)})
	measure("release (primary ENI)", "", release(ip1))
	measure("release + public (dedicated ENI)", "", release(ip4))

	var b2 strings.Builder
	fmt.Fprintf(&b2, "\n%-52s %5s %5s  %s\n", "operation", "reads", "muts", "calls")
	for _, r := range rows {
		mut := awssim.MutatingCalls(r.calls)
		total := 0
		var names []string
		for k, v := range r.calls {
			total += v
			names = append(names, fmt.Sprintf("%s×%d", k, v))
		}
		sort.Strings(names)
		fmt.Fprintf(&b2, "%-52s %5d %5d  %s %s\n", r.name, total-mut, mut, strings.Join(names, " "), r.note)
	}
	t.Log(b2.String())
	if os.Getenv("EGRESSD_FIGURES") != "" {
		fmt.Print(b2.String())
	}
}

// TestDiscoverNodesBatched: four nodes in two zones, plus one whose instance does not exist,
// are described with one DescribeInstances and one DescribeSubnets per zone; each node gets what
// DiscoverNode alone reports, and the unknown one a NotFound error of its own.
func TestDiscoverNodesBatched(t *testing.T) {
	w := newWorld(t, 4)
	ctx := ctxT(t)
	nodes := append(append([]providers.NodeRef{}, w.Nodes("zone-a")...), w.Nodes("zone-b")...)
	ghost := providers.NodeRef{Name: "ghost", ProviderID: "aws:///us-east-1a/i-0123456789abcdef0"}
	nodes = append(nodes, ghost)
	if _, err := w.AWS.DiscoverNode(ctx, nodes[0]); err != nil { // instance type cached
		t.Fatal(err)
	}
	w.Sim.ResetCalls()
	infos, errs := w.AWS.DiscoverNodes(ctx, nodes)
	calls := w.Sim.Calls()
	if calls["DescribeInstances"] != 1 || calls["DescribeSubnets"] != 2 || len(calls) != 2 {
		t.Errorf("batched discovery of %d nodes in 2 zones: %v, want 1 DescribeInstances and 2 DescribeSubnets", len(nodes), calls)
	}
	if !providers.IsNotFound(errs[4]) || infos[4] != nil {
		t.Errorf("unknown instance: %v, %v", infos[4], errs[4])
	}
	for i, n := range nodes[:4] {
		if errs[i] != nil {
			t.Fatalf("%s: %v", n.Name, errs[i])
		}
		one, err := w.AWS.DiscoverNode(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(one, infos[i]) {
			t.Errorf("%s: batch %+v, alone %+v", n.Name, infos[i], one)
		}
	}
}

// TestDiscoverNodesChunked: 250 nodes take two DescribeInstances, under EC2's (and the
// simulator's) 200 filter values per request; the unknown ones each get NotFound.
func TestDiscoverNodesChunked(t *testing.T) {
	w := newWorld(t, 4)
	nodes := slices.Clone(w.Nodes("zone-a"))
	for i := len(nodes); i < 250; i++ {
		nodes = append(nodes, providers.NodeRef{Name: fmt.Sprintf("ghost-%d", i), ProviderID: fmt.Sprintf("aws:///us-east-1a/i-0ff%014x", i)})
	}
	w.Sim.ResetCalls()
	infos, errs := w.AWS.DiscoverNodes(ctxT(t), nodes)
	if n := w.Sim.Calls()["DescribeInstances"]; n != 2 {
		t.Errorf("%d DescribeInstances for 250 nodes, want 2", n)
	}
	for i := range nodes {
		if known := i < len(w.Nodes("zone-a")); known != (errs[i] == nil && infos[i] != nil) || (!known && !providers.IsNotFound(errs[i])) {
			t.Fatalf("%s: %v, %v", nodes[i].Name, infos[i], errs[i])
		}
	}
}

// TestPaginatedDescribes: with the simulator serving one result per page (EC2 may return fewer
// than MaxResults), discovery and ListOwned still see every instance and every owned address,
// over as many pages as there are results.
func TestPaginatedDescribes(t *testing.T) {
	w := newWorld(t, 4)
	ctx := ctxT(t)
	nodes := append(append([]providers.NodeRef{}, w.Nodes("zone-a")...), w.Nodes("zone-b")...)
	for i, n := range nodes[:3] {
		zone := map[bool]string{true: "zone-a", false: "zone-b"}[i < 2]
		if _, err := w.AWS.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: w.FreeAddress(zone)}); err != nil {
			t.Fatalf("ensure %d: %v", i, err)
		}
	}
	want, err := w.AWS.ListOwned(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	w.Sim.SetPageSize(1)
	t.Cleanup(func() { w.Sim.SetPageSize(0) })
	w.Sim.ResetCalls()
	infos, errs := w.AWS.DiscoverNodes(ctx, nodes)
	for i := range nodes {
		if errs[i] != nil || infos[i] == nil {
			t.Fatalf("%s over pages of one: %v", nodes[i].Name, errs[i])
		}
	}
	if n := w.Sim.Calls()["DescribeInstances"]; n != len(nodes) {
		t.Errorf("DescribeInstances calls %d, want %d pages of one", n, len(nodes))
	}
	got, err := w.AWS.ListOwned(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(got) < 3 {
		t.Fatalf("ListOwned over pages of one: %d resources, %d in one page", len(got), len(want))
	}
	if n := w.Sim.Calls()["DescribeNetworkInterfaces"]; n < 2 {
		t.Errorf("DescribeNetworkInterfaces calls %d: the listing never crossed a page", n)
	}
}
