package awssim

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// VPCSpec, SubnetSpec and InstanceSpec seed the simulated account (Go API and admin API).
type VPCSpec struct {
	CIDR string `json:"cidr"`
}

type SubnetSpec struct {
	VPC  string `json:"vpcId"`
	Zone string `json:"zone"`
	CIDR string `json:"cidr"`
	// IPv6CIDR makes the subnet dual-stack: its IPv6 block, a /64 as in EC2.
	IPv6CIDR string            `json:"ipv6Cidr,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
}

type InstanceSpec struct {
	Type           string            `json:"type"`
	Subnet         string            `json:"subnetId"`
	SecurityGroups []string          `json:"securityGroups,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	// PrivateIP of the primary interface; the subnet's lowest free address when empty.
	PrivateIP string `json:"privateIp,omitempty"`
}

// Instance describes a seeded instance.
type Instance struct {
	ID         string     `json:"instanceId"`
	ProviderID string     `json:"providerId"`
	Zone       string     `json:"zone"`
	Type       string     `json:"type"`
	VPC        string     `json:"vpcId"`
	Subnet     string     `json:"subnetId"`
	PrimaryENI string     `json:"primaryEni"`
	MAC        string     `json:"mac"`
	PrivateIP  netip.Addr `json:"privateIp"`
	State      string     `json:"state"`
}

// AddVPC creates a VPC.
func (s *Server) AddVPC(spec VPCSpec) (string, error) {
	p, err := netip.ParsePrefix(spec.CIDR)
	if err != nil {
		return "", fmt.Errorf("parsing VPC CIDR: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := &vpc{ID: s.w.id("vpc"), CIDR: p.Masked()}
	s.w.VPCs[v.ID] = v
	return v.ID, nil
}

// AddSubnet creates a subnet in a VPC and zone.
func (s *Server) AddSubnet(spec SubnetSpec) (string, error) {
	p, err := netip.ParsePrefix(spec.CIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() > 28 {
		return "", fmt.Errorf("subnet CIDR %q: want an IPv4 prefix of /28 or larger", spec.CIDR)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.w.VPCs[spec.VPC]
	if v == nil {
		return "", fmt.Errorf("no VPC %s", spec.VPC)
	}
	if !v.CIDR.Contains(p.Addr()) {
		return "", fmt.Errorf("subnet %s outside VPC %s", p, v.CIDR)
	}
	sn := &subnet{ID: s.w.id("subnet"), VPC: v.ID, Zone: spec.Zone, CIDR: p.Masked(), Tags: maps.Clone(spec.Tags)}
	if spec.IPv6CIDR != "" {
		p6, err := netip.ParsePrefix(spec.IPv6CIDR)
		if err != nil || !p6.Addr().Is6() || p6.Addr().Is4In6() || p6.Bits() != 64 {
			return "", fmt.Errorf("subnet IPv6 CIDR %q: want an IPv6 /64, as EC2 gives subnets", spec.IPv6CIDR)
		}
		sn.IPv6CIDR = p6.Masked()
	}
	s.w.Subnets[sn.ID] = sn
	return sn.ID, nil
}

// AddInstanceType adds or replaces an instance type.
func (s *Server) AddInstanceType(t InstanceType) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w.Types[t.Name] = t
}

// AddInstance launches a running instance with its primary interface (device 0,
// delete-on-termination) in the given subnet.
func (s *Server) AddInstance(spec InstanceSpec) (Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.w
	sn := w.Subnets[spec.Subnet]
	if sn == nil {
		return Instance{}, fmt.Errorf("no subnet %s", spec.Subnet)
	}
	if _, ok := w.Types[spec.Type]; !ok {
		return Instance{}, fmt.Errorf("no instance type %s", spec.Type)
	}
	var ip netip.Addr
	if spec.PrivateIP != "" {
		a, err := netip.ParseAddr(spec.PrivateIP)
		if err != nil {
			return Instance{}, fmt.Errorf("parsing private IP: %w", err)
		}
		if e := s.checkFree(sn, a); e != nil {
			return Instance{}, e
		}
		ip = a
	} else {
		a, ok := w.nextFree(sn)
		if !ok {
			return Instance{}, fmt.Errorf("subnet %s is full", sn.ID)
		}
		ip = a
	}
	groups := spec.SecurityGroups
	if len(groups) == 0 {
		groups = []string{"sg-" + sn.VPC[4:]}
	}
	in := &instance{ID: w.id("i"), Type: spec.Type, Zone: sn.Zone, Subnet: sn.ID, VPC: sn.VPC, Groups: slices.Clone(groups),
		State: "running", Tags: maps.Clone(spec.Tags)}
	w.Instances[in.ID] = in
	e := &eni{ID: w.id("eni"), Subnet: sn.ID, VPC: sn.VPC, Zone: sn.Zone, MAC: w.mac(), Description: "Primary network interface",
		Groups: slices.Clone(groups), Primary: ip, Tags: map[string]string{},
		Attach: &attachment{ID: w.id("eni-attach"), Instance: in.ID, DeviceIndex: 0, DeleteOnTermination: true}}
	w.ENIs[e.ID] = e
	s.commitLocked("RunInstances", s.now(), false)
	return s.instanceLocked(in), nil
}

func (s *Server) instanceLocked(in *instance) Instance {
	out := Instance{ID: in.ID, ProviderID: "aws:///" + in.Zone + "/" + in.ID, Zone: in.Zone, Type: in.Type, VPC: in.VPC,
		Subnet: in.Subnet, State: in.State}
	for _, e := range s.w.enisOf(in.ID) {
		if e.Attach.DeviceIndex == 0 {
			out.PrimaryENI, out.MAC, out.PrivateIP = e.ID, e.MAC, e.Primary
		}
	}
	return out
}

// TerminateInstance terminates an instance: interfaces with delete-on-termination go, others
// are detached.
func (s *Server) TerminateInstance(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.w.Instances[id]
	if in == nil {
		return fmt.Errorf("no instance %s", id)
	}
	in.State = "terminated"
	for _, e := range s.w.enisOf(id) {
		if e.Attach.DeleteOnTermination {
			s.dropENI(e)
		} else {
			e.Attach = nil
		}
	}
	s.commitLocked("TerminateInstances", s.now(), false)
	return nil
}

// Holding says where a private address is.
type Holding struct {
	PrivateIP  netip.Addr `json:"privateIp"`
	Instance   string     `json:"instanceId,omitempty"`
	ENI        string     `json:"eniId"`
	Primary    bool       `json:"primary"`
	PublicIP   netip.Addr `json:"publicIp,omitzero"`
	Allocation string     `json:"allocationId,omitempty"`
}

// Holder returns who holds a private address in a VPC ("" : any VPC), from the true state.
func (s *Server) Holder(vpcID string, ip netip.Addr) (Holding, bool) {
	for _, h := range s.Holdings() {
		if h.PrivateIP == ip && (vpcID == "" || s.vpcOfENI(h.ENI) == vpcID) {
			return h, true
		}
	}
	return Holding{}, false
}

func (s *Server) vpcOfENI(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.w.ENIs[id]; e != nil {
		return e.VPC
	}
	return ""
}

// Holdings lists every private address held by any interface, with its Elastic IP, as the
// API accepted it (FabricHoldings is what the network delivers).
func (s *Server) Holdings() []Holding {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	var out []Holding
	for _, id := range slices.Sorted(maps.Keys(s.w.ENIs)) {
		e := s.w.ENIs[id]
		for i, a := range e.held() {
			h := Holding{PrivateIP: a, ENI: e.ID, Primary: i == 0}
			if e.Attach != nil {
				h.Instance = e.Attach.Instance
			}
			if x := s.w.eipOn(e.ID, a); x != nil {
				h.PublicIP, h.Allocation = x.Public, x.Allocation
			}
			out = append(out, h)
		}
	}
	return out
}

// ENIView and EIPView are the admin/inspection view of interfaces and Elastic IPs.
type ENIView struct {
	ID                  string            `json:"eniId"`
	Subnet              string            `json:"subnetId"`
	Zone                string            `json:"zone"`
	MAC                 string            `json:"mac"`
	Instance            string            `json:"instanceId,omitempty"`
	DeviceIndex         int               `json:"deviceIndex"`
	DeleteOnTermination bool              `json:"deleteOnTermination"`
	Groups              []string          `json:"securityGroups"`
	PrimaryIP           netip.Addr        `json:"primaryIp"`
	SecondaryIPs        []netip.Addr      `json:"secondaryIps"`
	IPv6s               []netip.Addr      `json:"ipv6s,omitempty"`
	Tags                map[string]string `json:"tags"`
}

type EIPView struct {
	Allocation  string            `json:"allocationId"`
	PublicIP    netip.Addr        `json:"publicIp"`
	Association string            `json:"associationId,omitempty"`
	ENI         string            `json:"eniId,omitempty"`
	PrivateIP   netip.Addr        `json:"privateIp,omitzero"`
	Tags        map[string]string `json:"tags"`
}

// State is a JSON view of the whole account.
type State struct {
	Region    string       `json:"region"`
	Instances []Instance   `json:"instances"`
	ENIs      []ENIView    `json:"enis"`
	EIPs      []EIPView    `json:"eips"`
	Subnets   []SubnetView `json:"subnets"`
}

type SubnetView struct {
	ID       string       `json:"subnetId"`
	VPC      string       `json:"vpcId"`
	Zone     string       `json:"zone"`
	CIDR     netip.Prefix `json:"cidr"`
	IPv6CIDR netip.Prefix `json:"ipv6Cidr,omitzero"`
	Free     int          `json:"free"`
}

// Snapshot returns the true current state.
func (s *Server) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	w := s.w
	st := State{Region: s.Region}
	for _, id := range slices.Sorted(maps.Keys(w.Instances)) {
		st.Instances = append(st.Instances, s.instanceLocked(w.Instances[id]))
	}
	for _, id := range slices.Sorted(maps.Keys(w.ENIs)) {
		e := w.ENIs[id]
		v := ENIView{ID: e.ID, Subnet: e.Subnet, Zone: e.Zone, MAC: e.MAC, Groups: slices.Clone(e.Groups), PrimaryIP: e.Primary,
			SecondaryIPs: slices.Clone(e.Secondary), IPv6s: slices.Clone(e.IPv6), Tags: maps.Clone(e.Tags)}
		if e.Attach != nil {
			v.Instance, v.DeviceIndex, v.DeleteOnTermination = e.Attach.Instance, e.Attach.DeviceIndex, e.Attach.DeleteOnTermination
		}
		st.ENIs = append(st.ENIs, v)
	}
	for _, id := range slices.Sorted(maps.Keys(w.EIPs)) {
		x := w.EIPs[id]
		st.EIPs = append(st.EIPs, EIPView{Allocation: x.Allocation, PublicIP: x.Public, Association: x.Association, ENI: x.ENI,
			PrivateIP: x.Private, Tags: maps.Clone(x.Tags)})
	}
	for _, id := range slices.Sorted(maps.Keys(w.Subnets)) {
		sn := w.Subnets[id]
		st.Subnets = append(st.Subnets, SubnetView{ID: sn.ID, VPC: sn.VPC, Zone: sn.Zone, CIDR: sn.CIDR, IPv6CIDR: sn.IPv6CIDR, Free: w.free(sn)})
	}
	return st
}
