package awssim_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	awssim "github.com/egressd/egressd/test/cloudsim/aws"
)

func setup(t *testing.T) (*awssim.Server, *ec2.Client, awssim.Seeded, string) {
	t.Helper()
	sim := awssim.New("us-east-1")
	seeded, err := sim.SeedTopology(awssim.Topology{VPCCIDR: "10.0.0.0/16", Zones: []awssim.ZoneTopology{
		{Zone: "us-east-1a", SubnetCIDR: "10.0.1.0/28", Instances: []string{"t3.nano", "t3.nano"}},
		{Zone: "us-east-1b", SubnetCIDR: "10.0.2.0/24", Instances: []string{"m5.large"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""), RetryMaxAttempts: 1})
	return sim, c, seeded, srv.URL
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestWireProtocol(t *testing.T) {
	sim, c, seeded, _ := setup(t)
	ctx := context.Background()
	a, b := seeded.Instances[0], seeded.Instances[1]

	// The first usable address of 10.0.1.0/28 is .4: .0-.3 and .15 are reserved.
	if got := a.PrivateIP.String(); got != "10.0.1.4" {
		t.Fatalf("first instance IP %s, want 10.0.1.4", got)
	}
	out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{seeded.Subnets["us-east-1a"]}})
	if err != nil {
		t.Fatal(err)
	}
	if n := aws.ToInt32(out.Subnets[0].AvailableIpAddressCount); n != 16-5-2 {
		t.Fatalf("free addresses %d, want 9", n)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(a.PrimaryENI),
		PrivateIpAddresses: []string{"10.0.1.15"}}); code(err) != "InvalidParameterValue" {
		t.Fatalf("reserved address: %v", err)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(a.PrimaryENI),
		PrivateIpAddresses: []string{"10.0.1.10"}}); err != nil {
		t.Fatal(err)
	}
	// t3.nano: 2 addresses per interface, primary included.
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(a.PrimaryENI),
		PrivateIpAddresses: []string{"10.0.1.11"}}); code(err) != "PrivateIpAddressLimitExceeded" {
		t.Fatalf("limit: %v", err)
	}
	alloc, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc, TagSpecifications: []ec2types.TagSpecification{{
		ResourceType: ec2types.ResourceTypeElasticIp, Tags: []ec2types.Tag{{Key: aws.String("egressd.io/cluster"), Value: aws.String("c1")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, NetworkInterfaceId: aws.String(a.PrimaryENI),
		PrivateIpAddress: aws.String("10.0.1.10")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(b.PrimaryENI),
		PrivateIpAddresses: []string{"10.0.1.10"}}); code(err) != "InvalidIPAddress.InUse" {
		t.Fatalf("without AllowReassignment: %v", err)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(b.PrimaryENI),
		PrivateIpAddresses: []string{"10.0.1.10"}, AllowReassignment: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	h, ok := sim.Holder("", mustAddr("10.0.1.10"))
	if !ok || h.Instance != b.ID || h.Allocation != aws.ToString(alloc.AllocationId) {
		t.Fatalf("after reassignment %+v: the address and its Elastic IP should be on %s", h, b.ID)
	}
	ds, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:egressd.io/cluster"), Values: []string{"c1"}},
		{Name: aws.String("private-ip-address"), Values: []string{"10.0.1.*"}}}})
	if err != nil || len(ds.Addresses) != 1 || aws.ToString(ds.Addresses[0].InstanceId) != b.ID {
		t.Fatalf("DescribeAddresses: %v %+v", err, ds)
	}
	di, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{b.ID}})
	if err != nil {
		t.Fatal(err)
	}
	nis := di.Reservations[0].Instances[0].NetworkInterfaces
	if len(nis) != 1 || len(nis[0].PrivateIpAddresses) != 2 || nis[0].PrivateIpAddresses[1].Association == nil {
		t.Fatalf("instance interfaces: %+v", nis)
	}
	if _, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-00000000000000404"}}); code(err) != "InvalidNetworkInterfaceID.NotFound" {
		t.Fatalf("not found: %v", err)
	}
	if _, err := c.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: aws.String("eipalloc-00000404")}); code(err) != "InvalidAllocationID.NotFound" {
		t.Fatalf("release unknown: %v", err)
	}
	// IDs of the wrong shape are refused as malformed before any lookup.
	if _, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-404"}}); code(err) != "InvalidNetworkInterfaceID.Malformed" {
		t.Fatalf("malformed ENI id: %v", err)
	}
	if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"node-a"}}); code(err) != "InvalidInstanceID.Malformed" {
		t.Fatalf("malformed instance id: %v", err)
	}
	if _, err := c.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: aws.String("eni-0000000000000000a")}); code(err) != "InvalidAllocationID.Malformed" {
		t.Fatalf("an ENI id as allocation id: %v", err)
	}
	// A dry run checks the request as the call would, and changes nothing.
	before, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc, DryRun: aws.Bool(true)}); code(err) != "DryRunOperation" {
		t.Fatalf("dry run: %v", err)
	}
	if after, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{}); err != nil || len(after.Addresses) != len(before.Addresses) {
		t.Fatalf("a dry run allocated an address: %v, %d then %d", err, len(before.Addresses), len(after.Addresses))
	}
	if _, err := c.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: alloc.AllocationId, DryRun: aws.Bool(true)}); code(err) != "InvalidIPAddress.InUse" {
		t.Fatalf("a dry run of a release that would fail (associated) must fail as the release would: %v", err)
	}
	// Pagination: MaxResults bounds (5-1000), not with an ID list, and pages that add up.
	if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(4)}); code(err) != "InvalidParameterValue" {
		t.Fatalf("MaxResults 4: %v", err)
	}
	if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), InstanceIds: []string{b.ID}}); code(err) != "InvalidParameterCombination" {
		t.Fatalf("MaxResults with InstanceIds: %v", err)
	}
	sim.SetPageSize(1)
	pages, seen := 0, 0
	for pg := ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)}); pg.HasMorePages(); pages++ {
		out, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen += len(out.Reservations)
	}
	sim.SetPageSize(0)
	if pages != 3 || seen != 3 {
		t.Fatalf("3 instances over pages of 1: %d pages, %d instances", pages, seen)
	}

	// Dedicated interface: create (client token makes a retry return the same one), attach,
	// and hit the t3.nano limit of 2 interfaces.
	tok := aws.String("tok-1")
	n1, err := c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(a.Subnet), ClientToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(a.Subnet), ClientToken: tok})
	if err != nil || aws.ToString(n2.NetworkInterface.NetworkInterfaceId) != aws.ToString(n1.NetworkInterface.NetworkInterfaceId) {
		t.Fatalf("client token: %v", err)
	}
	if _, err := c.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n1.NetworkInterface.NetworkInterfaceId,
		InstanceId: aws.String(a.ID), DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	n3, err := c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(a.Subnet)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n3.NetworkInterface.NetworkInterfaceId,
		InstanceId: aws.String(a.ID), DeviceIndex: aws.Int32(2)}); code(err) != "AttachmentLimitExceeded" {
		t.Fatalf("attachment limit: %v", err)
	}
	// The /28 has 11 usable addresses; fill it.
	for {
		_, err := c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(a.Subnet)})
		if err != nil {
			if code(err) != "InsufficientFreeAddressesInSubnet" {
				t.Fatalf("subnet full: %v", err)
			}
			break
		}
	}

	// Faults.
	sim.Throttle("DescribeSubnets", 0, 0)
	if _, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{}); code(err) != "RequestLimitExceeded" {
		t.Fatalf("throttle: %v", err)
	}
	sim.ClearFaults()
	sim.Inject("CreateTags", awssim.Fault{Code: "InternalError", Status: 500, AfterApply: true})
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{a.PrimaryENI}, Tags: []ec2types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}); code(err) != "InternalError" {
		t.Fatalf("scripted 5xx: %v", err)
	}
	if sim.Snapshot().ENIs[0].Tags["k"] != "v" {
		t.Fatal("5xx after apply did not apply")
	}
	sim.SetDescribeLag(time.Hour)
	if _, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{a.PrimaryENI}, Tags: []ec2types.Tag{{Key: aws.String("k")}}}); err != nil {
		t.Fatal(err)
	}
	lagged, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{a.PrimaryENI}})
	if err != nil || len(lagged.NetworkInterfaces[0].TagSet) != 1 {
		t.Fatalf("describe lag: the deleted tag should still show: %v %+v", err, lagged)
	}
	if sim.Calls()["DescribeNetworkInterfaces"] != 3 { // not found, malformed, lagged
		t.Fatalf("calls: %v", sim.Calls())
	}
}

func TestIMDSv2(t *testing.T) {
	sim, _, seeded, url := setup(t)
	sim.SetIMDSInstance(seeded.Instances[2].ID)
	c := imds.New(imds.Options{Endpoint: url})
	ctx := context.Background()
	r, err := c.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil || r.Region != "us-east-1" {
		t.Fatalf("region: %v %v", r, err)
	}
	mac, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: "mac"})
	if err != nil {
		t.Fatal(err)
	}
	defer mac.Content.Close()
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
