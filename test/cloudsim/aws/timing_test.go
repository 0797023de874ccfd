package awssim

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// fakeClock is the simulator's clock in these tests: time moves only when the test says.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func timed(t *testing.T, p simkit.Profile) (*Server, *ec2.Client, Seeded, *fakeClock) {
	t.Helper()
	s := New("us-east-1")
	clock := &fakeClock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	s.now = clock.now
	seeded, err := s.SeedTopology(Topology{VPCCIDR: "10.0.0.0/16", Zones: []ZoneTopology{
		{Zone: "us-east-1a", SubnetCIDR: "10.0.1.0/24", Instances: []string{"m5.large", "m5.large"}}}})
	if err != nil {
		t.Fatal(err)
	}
	s.SetTiming(p, 7)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""), RetryMaxAttempts: 1})
	return s, c, seeded, clock
}

func fabricHolder(s *Server, ip netip.Addr) string {
	for _, h := range s.FabricHoldings() {
		if h.PrivateIP == ip {
			return h.Instance
		}
	}
	return ""
}

func TestMoveAcceptedAtOnceDeliveredAfterPropagation(t *testing.T) {
	s, c, seeded, clock := timed(t, simkit.Profile{Name: "test", Propagation: simkit.Const(5 * time.Second)})
	ctx := context.Background()
	a, b := seeded.Instances[0], seeded.Instances[1]
	ip := netip.MustParseAddr("10.0.1.50")
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(a.PrimaryENI),
		PrivateIpAddresses: []string{ip.String()}}); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Holder("", ip); h.Instance != a.ID {
		t.Fatalf("API holder %q, want %s at once", h.Instance, a.ID)
	}
	if got := fabricHolder(s, ip); got != "" {
		t.Fatalf("the fabric delivers %s to %q before its propagation", ip, got)
	}
	gen := s.FabricGeneration()
	changed := s.FabricChanged()
	clock.add(5 * time.Second)
	if got := fabricHolder(s, ip); got != a.ID {
		t.Fatalf("after propagation the fabric delivers %s to %q, want %s", ip, got, a.ID)
	}
	select {
	case <-changed:
	default:
		t.Fatal("FabricChanged did not fire on delivery")
	}
	if s.FabricGeneration() == gen {
		t.Fatal("FabricGeneration did not change on delivery")
	}

	// The move: the API says b at once, the fabric keeps delivering to a until propagated.
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(b.PrimaryENI),
		PrivateIpAddresses: []string{ip.String()}, AllowReassignment: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	accepted := clock.now()
	if h, _ := s.Holder("", ip); h.Instance != b.ID {
		t.Fatalf("API holder %q after the move, want %s", h.Instance, b.ID)
	}
	clock.add(4 * time.Second)
	if got := fabricHolder(s, ip); got != a.ID {
		t.Fatalf("4 s into a 5 s propagation the fabric delivers %s to %q, want the old holder %s", ip, got, a.ID)
	}
	if !s.Pending() {
		t.Fatal("Pending() is false with a move in flight")
	}
	clock.add(time.Second)
	if got := fabricHolder(s, ip); got != b.ID {
		t.Fatalf("after propagation the fabric delivers %s to %q, want %s", ip, got, b.ID)
	}
	moves := s.MovesSince(0)
	var m Move
	for _, x := range moves {
		if x.IP == ip {
			m = x
		}
	}
	if m.From.Instance != a.ID || m.To.Instance != b.ID || !m.AcceptedAt.Equal(accepted) ||
		m.DeliveredAt.Sub(m.AcceptedAt) != 5*time.Second || m.Action != "AssignPrivateIpAddresses" {
		t.Fatalf("move %+v: want %s→%s accepted at %v, delivered 5 s later", m, a.ID, b.ID, accepted)
	}
	if later := s.MovesSince(m.Seq); len(later) != 0 {
		t.Fatalf("MovesSince(last) = %+v, want none", later)
	}
}

func TestDescribeLagPerWrite(t *testing.T) {
	_, c, seeded, clock := timed(t, simkit.Profile{Name: "test", DescribeLag: simkit.Const(2 * time.Second)})
	ctx := context.Background()
	a := seeded.Instances[0]
	ip := "10.0.1.60"
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(a.PrimaryENI),
		PrivateIpAddresses: []string{ip}}); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		t.Helper()
		out, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{a.PrimaryENI}})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.NetworkInterfaces[0].PrivateIpAddresses)
	}
	if n := count(); n != 1 {
		t.Fatalf("right after the write the describe shows %d addresses, want the previous 1", n)
	}
	clock.add(2 * time.Second)
	if n := count(); n != 2 {
		t.Fatalf("after the lag the describe shows %d addresses, want 2", n)
	}
	// A write is validated against the accepted state, not the lagged view.
	if _, err := c.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(a.PrimaryENI),
		PrivateIpAddresses: []string{ip}}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Fatalf("right after the unassign the describe shows %d addresses, want the previous 2", n)
	}
}

func TestAttachingAndDetaching(t *testing.T) {
	_, c, seeded, clock := timed(t, simkit.Profile{Name: "test", Attachment: simkit.Const(3 * time.Second)})
	ctx := context.Background()
	a := seeded.Instances[0]
	n, err := c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(a.Subnet)})
	if err != nil {
		t.Fatal(err)
	}
	id := n.NetworkInterface.NetworkInterfaceId
	att, err := c.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: id, InstanceId: aws.String(a.ID),
		DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	state := func() (string, string) {
		t.Helper()
		out, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*id}})
		if err != nil {
			t.Fatal(err)
		}
		e := out.NetworkInterfaces[0]
		if e.Attachment == nil {
			return string(e.Status), ""
		}
		return string(e.Status), string(e.Attachment.Status)
	}
	if st, at := state(); st != "attaching" || at != "attaching" {
		t.Fatalf("right after attach: %s/%s, want attaching/attaching", st, at)
	}
	clock.add(3 * time.Second)
	if st, at := state(); st != "in-use" || at != "attached" {
		t.Fatalf("after the attachment time: %s/%s, want in-use/attached", st, at)
	}
	if _, err := c.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: att.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	if st, at := state(); st != "detaching" || at != "detaching" {
		t.Fatalf("right after detach: %s/%s, want detaching/detaching", st, at)
	}
	if _, err := c.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: id}); errCode(err) != "InvalidNetworkInterface.InUse" {
		t.Fatalf("deleting a detaching interface: %v, want InvalidNetworkInterface.InUse", err)
	}
	clock.add(3 * time.Second)
	if st, at := state(); st != "available" || at != "" {
		t.Fatalf("after the detachment time: %s/%s, want available without attachment", st, at)
	}
	if _, err := c.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: id}); err != nil {
		t.Fatal(err)
	}
}

func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
