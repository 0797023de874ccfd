// Package awssim is an in-process EC2 simulator speaking the real wire protocol: the EC2
// Query protocol (form-encoded POST, XML responses and XML errors with request IDs) and
// IMDSv2. It models VPCs, subnets, instances and their types' interface and address limits,
// ENIs, attachments, private IPs, Elastic IPs and tags, returns EC2's documented error codes,
// and injects faults (throttling, scripted errors, latency, 5xx after the change was applied,
// describe calls lagging behind mutations). It is reached through the AWS SDK's endpoint
// options and also runs as its own process (cmd/ec2sim) for the network lab, which routes
// traffic according to which instance the simulator says holds an address.
package awssim

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// InstanceType carries the limits EC2 publishes in DescribeInstanceTypes.
type InstanceType struct {
	Name string `json:"name"`
	// MaxENIs is networkInfo.maximumNetworkInterfaces.
	MaxENIs int `json:"maxENIs"`
	// IPv4PerENI is networkInfo.ipv4AddressesPerInterface (primary address included).
	IPv4PerENI int `json:"ipv4PerENI"`
}

// DefaultInstanceTypes are real limits of a few common types, plus a tiny one for tests.
var DefaultInstanceTypes = []InstanceType{
	{Name: "t3.nano", MaxENIs: 2, IPv4PerENI: 2},
	{Name: "t3.medium", MaxENIs: 3, IPv4PerENI: 6},
	{Name: "m5.large", MaxENIs: 3, IPv4PerENI: 10},
	{Name: "m5.xlarge", MaxENIs: 4, IPv4PerENI: 15},
	{Name: "c5.4xlarge", MaxENIs: 8, IPv4PerENI: 30},
}

type vpc struct {
	ID   string
	CIDR netip.Prefix
}

type subnet struct {
	ID, VPC, Zone string
	CIDR          netip.Prefix
	// IPv6CIDR is the subnet's IPv6 block (a /64) on a dual-stack subnet; invalid otherwise.
	IPv6CIDR netip.Prefix
	Tags     map[string]string
}

type instance struct {
	ID, Type, Zone, Subnet, VPC string
	Groups                      []string
	State                       string
	Tags                        map[string]string
}

type attachment struct {
	ID, Instance        string
	DeviceIndex         int
	DeleteOnTermination bool
	// State is attaching, attached or detaching; a transition completes at Until.
	State string
	Until time.Time
}

// Attachment states, as DescribeNetworkInterfaces shows them. A detached interface has no
// attachment.
const (
	stateAttaching = "attaching"
	stateAttached  = "attached"
	stateDetaching = "detaching"
)

// status is the interface's status: available, attaching, in-use or detaching.
func (e *eni) status() string {
	switch {
	case e.Attach == nil:
		return "available"
	case e.Attach.State == stateAttaching, e.Attach.State == stateDetaching:
		return e.Attach.State
	}
	return "in-use"
}

type eni struct {
	ID, Subnet, VPC, Zone, MAC, Description string
	Groups                                  []string
	Primary                                 netip.Addr
	Secondary                               []netip.Addr
	// IPv6 are the interface's IPv6 addresses (AssignIpv6Addresses), from its subnet's block.
	IPv6   []netip.Addr
	Tags   map[string]string
	Attach *attachment
}

// held lists every address the interface holds: primary, secondary IPv4, IPv6.
func (e *eni) held() []netip.Addr {
	return slices.Concat([]netip.Addr{e.Primary}, e.Secondary, e.IPv6)
}

type eip struct {
	Allocation string
	Public     netip.Addr
	// Association, ENI and Private are set while associated.
	Association string
	ENI         string
	Private     netip.Addr
	Tags        map[string]string
}

// world is the whole simulated account in one region. It is cloned for describe lag.
type world struct {
	VPCs      map[string]*vpc
	Subnets   map[string]*subnet
	Instances map[string]*instance
	ENIs      map[string]*eni
	EIPs      map[string]*eip
	Types     map[string]InstanceType
	// Tokens maps CreateNetworkInterface client tokens to the ENI they created.
	Tokens map[string]string
	Seq    int
	// NextPublic is the next Elastic IP handed out (from 198.18.0.0/15, benchmark space).
	NextPublic netip.Addr
}

func newWorld() *world {
	w := &world{
		VPCs: map[string]*vpc{}, Subnets: map[string]*subnet{}, Instances: map[string]*instance{},
		ENIs: map[string]*eni{}, EIPs: map[string]*eip{}, Types: map[string]InstanceType{},
		Tokens: map[string]string{}, NextPublic: netip.MustParseAddr("198.18.0.1"),
	}
	for _, t := range DefaultInstanceTypes {
		w.Types[t.Name] = t
	}
	return w
}

func (w *world) clone() *world {
	c := &world{
		VPCs: map[string]*vpc{}, Subnets: map[string]*subnet{}, Instances: map[string]*instance{},
		ENIs: map[string]*eni{}, EIPs: map[string]*eip{}, Types: maps.Clone(w.Types),
		Tokens: maps.Clone(w.Tokens), Seq: w.Seq, NextPublic: w.NextPublic,
	}
	for k, v := range w.VPCs {
		x := *v
		c.VPCs[k] = &x
	}
	for k, v := range w.Subnets {
		x := *v
		x.Tags = maps.Clone(v.Tags)
		c.Subnets[k] = &x
	}
	for k, v := range w.Instances {
		x := *v
		x.Groups = slices.Clone(v.Groups)
		x.Tags = maps.Clone(v.Tags)
		c.Instances[k] = &x
	}
	for k, v := range w.ENIs {
		x := *v
		x.Groups = slices.Clone(v.Groups)
		x.Secondary = slices.Clone(v.Secondary)
		x.IPv6 = slices.Clone(v.IPv6)
		x.Tags = maps.Clone(v.Tags)
		if v.Attach != nil {
			a := *v.Attach
			x.Attach = &a
		}
		c.ENIs[k] = &x
	}
	for k, v := range w.EIPs {
		x := *v
		x.Tags = maps.Clone(v.Tags)
		c.EIPs[k] = &x
	}
	return c
}

// id returns a new resource ID in EC2's shape (prefix-17 hex digits).
func (w *world) id(prefix string) string {
	w.Seq++
	return fmt.Sprintf("%s-%017x", prefix, w.Seq)
}

func (w *world) mac() string {
	w.Seq++
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(w.Seq>>24), byte(w.Seq>>16), byte(w.Seq>>8), byte(w.Seq))
}

// reserved reports the five addresses AWS reserves in every subnet CIDR block, IPv4 or IPv6:
// network, VPC router, DNS, future use, and the last.
func reserved(p netip.Prefix, a netip.Addr) bool {
	first := p.Masked().Addr()
	for i, x := 0, first; i < 4; i, x = i+1, x.Next() {
		if a == x {
			return true
		}
	}
	if a.Is6() {
		last := first.AsSlice()
		for i := p.Bits(); i < 128; i++ {
			last[i/8] |= 1 << (7 - i%8)
		}
		l, _ := netip.AddrFromSlice(last)
		return a == l
	}
	return a == lastAddr(p)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// used returns every private address in use in a subnet.
func (w *world) used(subnetID string) map[netip.Addr]string {
	u := map[netip.Addr]string{}
	for _, e := range w.ENIs {
		if e.Subnet != subnetID {
			continue
		}
		u[e.Primary] = e.ID
		for _, a := range e.Secondary {
			u[a] = e.ID
		}
	}
	return u
}

func (w *world) free(s *subnet) int {
	size := 1 << (32 - s.CIDR.Bits())
	return size - 5 - len(w.used(s.ID))
}

// nextFree returns the lowest free, unreserved address of a subnet.
func (w *world) nextFree(s *subnet) (netip.Addr, bool) {
	u := w.used(s.ID)
	for a := s.CIDR.Masked().Addr(); s.CIDR.Contains(a); a = a.Next() {
		if _, ok := u[a]; !ok && !reserved(s.CIDR, a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// holder returns the ENI holding a private address in a VPC, and whether it is its primary.
func (w *world) holder(vpcID string, a netip.Addr) (*eni, bool) {
	for _, e := range w.ENIs {
		if e.VPC != vpcID {
			continue
		}
		if e.Primary == a {
			return e, true
		}
		if slices.Contains(e.Secondary, a) || slices.Contains(e.IPv6, a) {
			return e, false
		}
	}
	return nil, false
}

func (w *world) eipOn(eniID string, a netip.Addr) *eip {
	for _, x := range w.EIPs {
		if x.ENI == eniID && x.Private == a {
			return x
		}
	}
	return nil
}

func (w *world) enisOf(instanceID string) []*eni {
	var out []*eni
	for _, e := range w.ENIs {
		if e.Attach != nil && e.Attach.Instance == instanceID {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *eni) int { return a.Attach.DeviceIndex - b.Attach.DeviceIndex })
	return out
}

func (w *world) ipLimit(e *eni) int {
	if e.Attach != nil {
		if in := w.Instances[e.Attach.Instance]; in != nil {
			return w.Types[in.Type].IPv4PerENI
		}
	}
	// An unattached interface may hold what the largest common types allow.
	return 50
}
