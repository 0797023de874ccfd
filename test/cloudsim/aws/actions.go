package awssim

import (
	"cmp"
	"maps"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var actions = map[string]handler{
	"DescribeInstances":               (*Server).describeInstances,
	"DescribeInstanceTypes":           (*Server).describeInstanceTypes,
	"DescribeSubnets":                 (*Server).describeSubnets,
	"DescribeNetworkInterfaces":       (*Server).describeNetworkInterfaces,
	"DescribeAddresses":               (*Server).describeAddresses,
	"CreateNetworkInterface":          (*Server).createNetworkInterface,
	"AttachNetworkInterface":          (*Server).attachNetworkInterface,
	"DetachNetworkInterface":          (*Server).detachNetworkInterface,
	"DeleteNetworkInterface":          (*Server).deleteNetworkInterface,
	"ModifyNetworkInterfaceAttribute": (*Server).modifyNetworkInterfaceAttribute,
	"AssignPrivateIpAddresses":        (*Server).assignPrivateIPAddresses,
	"UnassignPrivateIpAddresses":      (*Server).unassignPrivateIPAddresses,
	"AssignIpv6Addresses":             (*Server).assignIPv6Addresses,
	"UnassignIpv6Addresses":           (*Server).unassignIPv6Addresses,
	"AllocateAddress":                 (*Server).allocateAddress,
	"AssociateAddress":                (*Server).associateAddress,
	"DisassociateAddress":             (*Server).disassociateAddress,
	"ReleaseAddress":                  (*Server).releaseAddress,
	"CreateTags":                      (*Server).createTags,
	"DeleteTags":                      (*Server).deleteTags,
}

// --- request parsing, in the shapes the SDK serialises (PrivateIpAddress.1, Filter.1.Value.1,
// TagSpecification.1.Tag.1.Key) ---

func list(q url.Values, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		k := prefix + "." + strconv.Itoa(i)
		if _, ok := q[k]; !ok {
			return out
		}
		out = append(out, q.Get(k))
	}
}

type filter struct {
	name   string
	values []*regexp.Regexp
}

// glob compiles an EC2 filter value: * matches any run of characters, ? any one.
func glob(v string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range v {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func filters(q url.Values) ([]filter, *apiError) {
	var out []filter
	values := 0
	for i := 1; ; i++ {
		p := "Filter." + strconv.Itoa(i)
		name, ok := q[p+".Name"]
		if !ok {
			return out, nil
		}
		f := filter{name: name[0]}
		for _, v := range list(q, p+".Value") {
			f.values = append(f.values, glob(v))
		}
		// EC2 takes at most maxFilterValues values in all the filters of one request.
		if values += len(f.values); values > maxFilterValues {
			return nil, errf("FilterLimitExceeded", "The maximum number of filter values specified on a single call is %d", maxFilterValues)
		}
		out = append(out, f)
	}
}

const maxFilterValues = 200

// match applies filters (AND across names, OR across values) to a resource whose field
// values field returns; ok=false from field means the filter name is unknown.
func match(fs []filter, tags map[string]string, field func(name string) ([]string, bool)) (bool, *apiError) {
	for _, f := range fs {
		var vals []string
		switch {
		case strings.HasPrefix(f.name, "tag:"):
			if v, ok := tags[strings.TrimPrefix(f.name, "tag:")]; ok {
				vals = []string{v}
			}
		case f.name == "tag-key":
			vals = slices.Collect(maps.Keys(tags))
		case f.name == "tag-value":
			vals = slices.Collect(maps.Values(tags))
		default:
			v, ok := field(f.name)
			if !ok {
				return false, errf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
			}
			vals = v
		}
		hit := false
		for _, re := range f.values {
			for _, v := range vals {
				if re.MatchString(v) {
					hit = true
				}
			}
		}
		if !hit {
			return false, nil
		}
	}
	return true, nil
}

func tagSpecs(q url.Values, resourceType string) map[string]string {
	tags := map[string]string{}
	for i := 1; ; i++ {
		p := "TagSpecification." + strconv.Itoa(i)
		rt, ok := q[p+".ResourceType"]
		if !ok {
			return tags
		}
		if rt[0] != resourceType {
			continue
		}
		for j := 1; ; j++ {
			tp := p + ".Tag." + strconv.Itoa(j)
			k, ok := q[tp+".Key"]
			if !ok {
				break
			}
			tags[k[0]] = q.Get(tp + ".Value")
		}
	}
}

func boolParam(q url.Values, k string) bool { return q.Get(k) == "true" }

func addrParam(q url.Values, k string) (netip.Addr, *apiError) {
	a, err := netip.ParseAddr(q.Get(k))
	if err != nil || !a.Is4() {
		return netip.Addr{}, errf("InvalidParameterValue", "Invalid value '%s' for %s", q.Get(k), k)
	}
	return a, nil
}

func strs(a []netip.Addr) []string {
	out := make([]string, len(a))
	for i, x := range a {
		out[i] = x.String()
	}
	return out
}

// --- describes (they read s.view(), which lags when describe lag is on) ---

type describeInstancesResp struct {
	reqMeta
	Reservations []xReservation `xml:"reservationSet>item"`
	NextToken    string         `xml:"nextToken,omitempty"`
}

func (s *Server) xinstance(w *world, in *instance) xInstance {
	x := xInstance{InstanceID: in.ID, InstanceType: in.Type, Placement: xPlacement{AvailabilityZone: in.Zone, Tenancy: "default"},
		SubnetID: in.Subnet, VpcID: in.VPC, InstanceState: xState{Code: 16, Name: in.State}, GroupSet: groupSet(in.Groups), TagSet: tagSet(in.Tags)}
	if in.State == "terminated" {
		x.InstanceState.Code = 48
	}
	for _, e := range w.enisOf(in.ID) {
		if e.Attach.DeviceIndex == 0 {
			x.PrivateIPAddress = e.Primary.String()
		}
		xe := w.xeni(e)
		xe.AvailabilityZone, xe.TagSet = "", nil // not part of an instance's interface
		x.NetworkInterfaces = append(x.NetworkInterfaces, xe)
	}
	return x
}

func (s *Server) describeInstances(q url.Values) (any, *apiError) {
	w := s.view()
	ids := list(q, "InstanceId")
	fs, ferr := filters(q)
	if ferr != nil {
		return nil, ferr
	}
	for _, id := range ids {
		if _, ok := w.Instances[id]; !ok {
			return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
	}
	resp := &describeInstancesResp{}
	for _, id := range slices.Sorted(maps.Keys(w.Instances)) {
		in := w.Instances[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		ok, err := match(fs, in.Tags, func(n string) ([]string, bool) {
			switch n {
			case "instance-id":
				return []string{in.ID}, true
			case "availability-zone":
				return []string{in.Zone}, true
			case "vpc-id":
				return []string{in.VPC}, true
			case "subnet-id":
				return []string{in.Subnet}, true
			case "instance-type":
				return []string{in.Type}, true
			case "instance-state-name":
				return []string{in.State}, true
			}
			return nil, false
		})
		if err != nil {
			return nil, err
		}
		if ok {
			resp.Reservations = append(resp.Reservations, xReservation{ReservationID: "r-" + in.ID[2:], OwnerID: accountID,
				Instances: []xInstance{s.xinstance(w, in)}})
		}
	}
	from, to, next, perr := s.page(q, len(resp.Reservations), "InstanceId")
	if perr != nil {
		return nil, perr
	}
	resp.Reservations, resp.NextToken = resp.Reservations[from:to], next
	return resp, nil
}

type describeInstanceTypesResp struct {
	reqMeta
	Types []xInstanceType `xml:"instanceTypeSet>item"`
}

func (s *Server) describeInstanceTypes(q url.Values) (any, *apiError) {
	w := s.view()
	resp := &describeInstanceTypesResp{}
	names := list(q, "InstanceType")
	for _, n := range names {
		if _, ok := w.Types[n]; !ok {
			return nil, errf("InvalidInstanceType", "The following supplied instance types do not exist: [%s]", n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(w.Types)) {
		if len(names) > 0 && !slices.Contains(names, n) {
			continue
		}
		t := w.Types[n]
		resp.Types = append(resp.Types, xInstanceType{InstanceType: n, NetworkInfo: xNetworkInfo{
			MaximumNetworkInterfaces: t.MaxENIs, Ipv4AddressesPerInterface: t.IPv4PerENI, Ipv6AddressesPerInterface: t.IPv4PerENI, Ipv6Supported: true}})
	}
	return resp, nil
}

type describeSubnetsResp struct {
	reqMeta
	Subnets []xSubnet `xml:"subnetSet>item"`
}

func (s *Server) describeSubnets(q url.Values) (any, *apiError) {
	w := s.view()
	ids := list(q, "SubnetId")
	for _, id := range ids {
		if _, ok := w.Subnets[id]; !ok {
			return nil, errf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
		}
	}
	fs, ferr := filters(q)
	if ferr != nil {
		return nil, ferr
	}
	resp := &describeSubnetsResp{}
	for _, id := range slices.Sorted(maps.Keys(w.Subnets)) {
		sn := w.Subnets[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		ok, err := match(fs, sn.Tags, func(n string) ([]string, bool) {
			switch n {
			case "subnet-id":
				return []string{sn.ID}, true
			case "vpc-id":
				return []string{sn.VPC}, true
			case "availability-zone":
				return []string{sn.Zone}, true
			case "cidr-block", "cidr":
				return []string{sn.CIDR.String()}, true
			}
			return nil, false
		})
		if err != nil {
			return nil, err
		}
		if ok {
			x := xSubnet{SubnetID: sn.ID, VpcID: sn.VPC, State: "available", AvailabilityZone: sn.Zone,
				CidrBlock: sn.CIDR.String(), AvailableIPAddressCount: w.free(sn), OwnerID: accountID, TagSet: tagSet(sn.Tags)}
			if sn.IPv6CIDR.IsValid() {
				v6 := xSubnetIPv6{AssociationID: "subnet-cidr-assoc-" + sn.ID[len("subnet-"):], CIDR: sn.IPv6CIDR.String()}
				v6.State.State = "associated"
				x.IPv6 = append(x.IPv6, v6)
			}
			resp.Subnets = append(resp.Subnets, x)
		}
	}
	return resp, nil
}

type describeNetworkInterfacesResp struct {
	reqMeta
	ENIs      []xENI `xml:"networkInterfaceSet>item"`
	NextToken string `xml:"nextToken,omitempty"`
}

func (s *Server) describeNetworkInterfaces(q url.Values) (any, *apiError) {
	w := s.view()
	ids := list(q, "NetworkInterfaceId")
	for _, id := range ids {
		if _, ok := w.ENIs[id]; !ok {
			return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
		}
	}
	fs, ferr := filters(q)
	if ferr != nil {
		return nil, ferr
	}
	resp := &describeNetworkInterfacesResp{}
	for _, id := range slices.Sorted(maps.Keys(w.ENIs)) {
		e := w.ENIs[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		ok, err := match(fs, e.Tags, func(n string) ([]string, bool) {
			switch n {
			case "network-interface-id":
				return []string{e.ID}, true
			case "vpc-id":
				return []string{e.VPC}, true
			case "subnet-id":
				return []string{e.Subnet}, true
			case "availability-zone":
				return []string{e.Zone}, true
			case "mac-address":
				return []string{e.MAC}, true
			case "description":
				return []string{e.Description}, true
			case "status":
				return []string{e.status()}, true
			case "attachment.status":
				if e.Attach != nil {
					return []string{cmp.Or(e.Attach.State, stateAttached)}, true
				}
				return nil, true
			case "attachment.instance-id":
				if e.Attach != nil {
					return []string{e.Attach.Instance}, true
				}
				return nil, true
			case "attachment.device-index":
				if e.Attach != nil {
					return []string{strconv.Itoa(e.Attach.DeviceIndex)}, true
				}
				return nil, true
			case "ipv6-addresses.ipv6-address":
				return strs(e.IPv6), true
			case "private-ip-address", "addresses.private-ip-address":
				if n == "private-ip-address" {
					return []string{e.Primary.String()}, true
				}
				return strs(append([]netip.Addr{e.Primary}, e.Secondary...)), true
			}
			return nil, false
		})
		if err != nil {
			return nil, err
		}
		if ok {
			resp.ENIs = append(resp.ENIs, w.xeni(e))
		}
	}
	from, to, next, perr := s.page(q, len(resp.ENIs), "NetworkInterfaceId")
	if perr != nil {
		return nil, perr
	}
	resp.ENIs, resp.NextToken = resp.ENIs[from:to], next
	return resp, nil
}

type describeAddressesResp struct {
	reqMeta
	Addresses []xAddress `xml:"addressesSet>item"`
}

func (s *Server) describeAddresses(q url.Values) (any, *apiError) {
	w := s.view()
	ids := list(q, "AllocationId")
	for _, id := range ids {
		if _, ok := w.EIPs[id]; !ok {
			return nil, errf("InvalidAllocationID.NotFound", "The allocation ID '%s' does not exist", id)
		}
	}
	publics := list(q, "PublicIp")
	fs, ferr := filters(q)
	if ferr != nil {
		return nil, ferr
	}
	resp := &describeAddressesResp{}
	for _, id := range slices.Sorted(maps.Keys(w.EIPs)) {
		x := w.EIPs[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		if len(publics) > 0 && !slices.Contains(publics, x.Public.String()) {
			continue
		}
		xa := w.xaddr(x, s.Region)
		ok, err := match(fs, x.Tags, func(n string) ([]string, bool) {
			switch n {
			case "allocation-id":
				return []string{x.Allocation}, true
			case "association-id":
				return []string{xa.AssociationID}, true
			case "public-ip":
				return []string{xa.PublicIP}, true
			case "private-ip-address":
				return []string{xa.PrivateIPAddress}, true
			case "network-interface-id":
				return []string{xa.NetworkInterfaceID}, true
			case "instance-id":
				return []string{xa.InstanceID}, true
			case "domain":
				return []string{"vpc"}, true
			}
			return nil, false
		})
		if err != nil {
			return nil, err
		}
		if ok {
			resp.Addresses = append(resp.Addresses, xa)
		}
	}
	return resp, nil
}

// --- mutations (they validate against the current state, s.w) ---

type createNetworkInterfaceResp struct {
	reqMeta
	ENI         xENI   `xml:"networkInterface"`
	ClientToken string `xml:"clientToken,omitempty"`
}

func (s *Server) createNetworkInterface(q url.Values) (any, *apiError) {
	w := s.w
	token := q.Get("ClientToken")
	if id, ok := w.Tokens[token]; ok && token != "" {
		if e := w.ENIs[id]; e != nil {
			return &createNetworkInterfaceResp{ENI: w.xeni(e), ClientToken: token}, nil
		}
	}
	sn := w.Subnets[q.Get("SubnetId")]
	if sn == nil {
		return nil, errf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", q.Get("SubnetId"))
	}
	var primary netip.Addr
	if q.Get("PrivateIpAddress") != "" {
		a, err := addrParam(q, "PrivateIpAddress")
		if err != nil {
			return nil, err
		}
		if err := s.checkFree(sn, a); err != nil {
			return nil, err
		}
		primary = a
	} else {
		a, ok := w.nextFree(sn)
		if !ok {
			return nil, errf("InsufficientFreeAddressesInSubnet", "The specified subnet %s does not have enough free addresses to satisfy the request.", sn.ID)
		}
		primary = a
	}
	e := &eni{ID: w.id("eni"), Subnet: sn.ID, VPC: sn.VPC, Zone: sn.Zone, MAC: w.mac(), Description: q.Get("Description"),
		Groups: list(q, "SecurityGroupId"), Primary: primary, Tags: tagSpecs(q, "network-interface")}
	w.ENIs[e.ID] = e
	if token != "" {
		w.Tokens[token] = e.ID
	}
	return &createNetworkInterfaceResp{ENI: w.xeni(e), ClientToken: token}, nil
}

func (s *Server) checkFree(sn *subnet, a netip.Addr) *apiError {
	if !sn.CIDR.Contains(a) {
		return errf("InvalidParameterValue", "Address %s does not fall within the subnet's address range", a)
	}
	if reserved(sn.CIDR, a) {
		return errf("InvalidParameterValue", "Address %s is reserved by AWS", a)
	}
	if _, used := s.w.used(sn.ID)[a]; used {
		return errf("InvalidIPAddress.InUse", "The specified address %s is already in use.", a)
	}
	return nil
}

type attachResp struct {
	reqMeta
	AttachmentID     string `xml:"attachmentId"`
	NetworkCardIndex int    `xml:"networkCardIndex"`
}

func (s *Server) attachNetworkInterface(q url.Values) (any, *apiError) {
	w := s.w
	e := w.ENIs[q.Get("NetworkInterfaceId")]
	if e == nil {
		return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", q.Get("NetworkInterfaceId"))
	}
	in := w.Instances[q.Get("InstanceId")]
	if in == nil || in.State == "terminated" {
		return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", q.Get("InstanceId"))
	}
	idx, err := strconv.Atoi(q.Get("DeviceIndex"))
	if err != nil || idx < 1 {
		return nil, errf("InvalidParameterValue", "Invalid value '%s' for deviceIndex", q.Get("DeviceIndex"))
	}
	if e.Attach != nil {
		return nil, errf("InvalidNetworkInterface.InUse", "Interface: %s in use.", e.ID)
	}
	if e.Zone != in.Zone {
		return nil, errf("InvalidParameterCombination", "You may not attach a network interface to an instance if they are not in the same availability zone")
	}
	attached := w.enisOf(in.ID)
	for _, o := range attached {
		if o.Attach.DeviceIndex == idx {
			return nil, errf("InvalidParameterValue", "Instance '%s' already has an interface attached at device index '%d'.", in.ID, idx)
		}
	}
	if len(attached) >= w.Types[in.Type].MaxENIs {
		return nil, errf("AttachmentLimitExceeded", "Interface count %d exceeds the limit for %s", len(attached)+1, in.Type)
	}
	if len(e.Secondary)+1 > w.Types[in.Type].IPv4PerENI {
		return nil, errf("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	e.Attach = &attachment{ID: w.id("eni-attach"), Instance: in.ID, DeviceIndex: idx, State: stateAttached}
	// EC2 shows the attachment attaching for a while before it is attached.
	if d := s.timing.Attachment(); d > 0 {
		e.Attach.State, e.Attach.Until = stateAttaching, s.now().Add(d)
		s.wakeAt(e.Attach.Until)
	}
	return &attachResp{AttachmentID: e.Attach.ID}, nil
}

func (w *world) byAttachment(id string) *eni {
	for _, e := range w.ENIs {
		if e.Attach != nil && e.Attach.ID == id {
			return e
		}
	}
	return nil
}

func (s *Server) detachNetworkInterface(q url.Values) (any, *apiError) {
	e := s.w.byAttachment(q.Get("AttachmentId"))
	if e == nil {
		return nil, errf("InvalidAttachmentID.NotFound", "The attachment ID '%s' does not exist", q.Get("AttachmentId"))
	}
	if e.Attach.DeviceIndex == 0 {
		return nil, errf("OperationNotPermitted", "The network interface at device index 0 cannot be detached.")
	}
	if e.Attach.State == stateDetaching {
		return nil, nil // already on its way
	}
	// EC2 detaches asynchronously: the interface is detaching, still in use, for a while.
	if d := s.timing.Attachment(); d > 0 {
		e.Attach.State, e.Attach.Until = stateDetaching, s.now().Add(d)
		s.wakeAt(e.Attach.Until)
		return nil, nil
	}
	e.Attach = nil
	return nil, nil
}

func (s *Server) deleteNetworkInterface(q url.Values) (any, *apiError) {
	w := s.w
	e := w.ENIs[q.Get("NetworkInterfaceId")]
	if e == nil {
		return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", q.Get("NetworkInterfaceId"))
	}
	if e.Attach != nil {
		return nil, errf("InvalidNetworkInterface.InUse", "The interface %s is currently in use.", e.ID)
	}
	s.dropENI(e)
	return nil, nil
}

// dropENI deletes an interface; Elastic IPs on its addresses are disassociated, as in EC2.
func (s *Server) dropENI(e *eni) {
	for _, x := range s.w.EIPs {
		if x.ENI == e.ID {
			x.Association, x.ENI, x.Private = "", "", netip.Addr{}
		}
	}
	delete(s.w.ENIs, e.ID)
}

func (s *Server) modifyNetworkInterfaceAttribute(q url.Values) (any, *apiError) {
	e := s.w.ENIs[q.Get("NetworkInterfaceId")]
	if e == nil {
		return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", q.Get("NetworkInterfaceId"))
	}
	if id := q.Get("Attachment.AttachmentId"); id != "" {
		if e.Attach == nil || e.Attach.ID != id {
			return nil, errf("InvalidAttachmentID.NotFound", "The attachment ID '%s' does not exist", id)
		}
		e.Attach.DeleteOnTermination = boolParam(q, "Attachment.DeleteOnTermination")
	}
	if g := list(q, "SecurityGroupId"); len(g) > 0 {
		e.Groups = g
	}
	if d, ok := q["Description.Value"]; ok {
		e.Description = d[0]
	}
	return nil, nil
}

type assignResp struct {
	reqMeta
	NetworkInterfaceID string          `xml:"networkInterfaceId"`
	Assigned           []assignedEntry `xml:"assignedPrivateIpAddressesSet>item"`
}

type assignedEntry struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
}

func (s *Server) assignPrivateIPAddresses(q url.Values) (any, *apiError) {
	w := s.w
	e := w.ENIs[q.Get("NetworkInterfaceId")]
	if e == nil {
		return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", q.Get("NetworkInterfaceId"))
	}
	sn := w.Subnets[e.Subnet]
	reassign := boolParam(q, "AllowReassignment")
	var want []netip.Addr
	for _, v := range list(q, "PrivateIpAddress") {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return nil, errf("InvalidParameterValue", "Invalid value '%s' for PrivateIpAddresses", v)
		}
		want = append(want, a)
	}
	if n := q.Get("SecondaryPrivateIpAddressCount"); n != "" {
		if len(want) > 0 {
			return nil, errf("InvalidParameterCombination", "PrivateIpAddresses and SecondaryPrivateIpAddressCount are mutually exclusive")
		}
		c, err := strconv.Atoi(n)
		if err != nil || c < 1 {
			return nil, errf("InvalidParameterValue", "Invalid value '%s' for SecondaryPrivateIpAddressCount", n)
		}
		if w.free(sn) < c {
			return nil, errf("InsufficientFreeAddressesInSubnet", "The specified subnet %s does not have enough free addresses to satisfy the request.", sn.ID)
		}
		if 1+len(e.Secondary)+c > w.ipLimit(e) {
			return nil, errf("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
		}
		resp := &assignResp{NetworkInterfaceID: e.ID}
		for range c {
			a, _ := w.nextFree(sn)
			e.Secondary = append(e.Secondary, a)
			resp.Assigned = append(resp.Assigned, assignedEntry{a.String()})
		}
		return resp, nil
	}
	if len(want) == 0 {
		return nil, errf("MissingParameter", "Either PrivateIpAddresses or SecondaryPrivateIpAddressCount is required")
	}
	// Validate everything before changing anything: EC2 applies a request whole or not at all.
	var add []netip.Addr
	for _, a := range want {
		if !sn.CIDR.Contains(a) {
			return nil, errf("InvalidParameterValue", "Address %s does not fall within the subnet's address range", a)
		}
		if reserved(sn.CIDR, a) {
			return nil, errf("InvalidParameterValue", "Address %s is reserved by AWS", a)
		}
		h, primary := w.holder(e.VPC, a)
		switch {
		case h == e:
			// Already there: assigning again is a no-op, which is what makes retries safe.
			continue
		case h != nil && primary:
			return nil, errf("InvalidParameterValue", "Address %s is the primary address of %s and cannot be reassigned", a, h.ID)
		case h != nil && !reassign:
			return nil, errf("InvalidIPAddress.InUse", "The specified address %s is already assigned to %s.", a, h.ID)
		}
		add = append(add, a)
	}
	if 1+len(e.Secondary)+len(add) > w.ipLimit(e) {
		return nil, errf("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	for _, a := range add {
		if h, _ := w.holder(e.VPC, a); h != nil {
			h.Secondary = slices.DeleteFunc(h.Secondary, func(x netip.Addr) bool { return x == a })
			// The Elastic IP associated with the address follows it to the new interface.
			if x := w.eipOn(h.ID, a); x != nil {
				x.ENI = e.ID
			}
		}
		e.Secondary = append(e.Secondary, a)
	}
	resp := &assignResp{NetworkInterfaceID: e.ID}
	for _, a := range want {
		resp.Assigned = append(resp.Assigned, assignedEntry{a.String()})
	}
	return resp, nil
}

type assignIPv6Resp struct {
	reqMeta
	NetworkInterfaceID string   `xml:"networkInterfaceId"`
	Assigned           []string `xml:"assignedIpv6Addresses>item"`
}

// assignIPv6Addresses assigns IPv6 addresses of the interface's subnet block: the ones named
// (Ipv6Addresses.N) or Ipv6AddressCount new ones. EC2 has no AllowReassignment for IPv6: an
// address another interface holds is refused (the code is assumed, docs/testbed.md), so a
// move is an unassign and an assign. An interface holds as many IPv6 addresses as its type
// allows IPv4 ones.
func (s *Server) assignIPv6Addresses(q url.Values) (any, *apiError) {
	w := s.w
	e := w.ENIs[q.Get("NetworkInterfaceId")]
	if e == nil {
		return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", q.Get("NetworkInterfaceId"))
	}
	sn := w.Subnets[e.Subnet]
	if !sn.IPv6CIDR.IsValid() {
		return nil, errf("InvalidParameterValue", "The subnet %s of %s has no IPv6 CIDR block", sn.ID, e.ID)
	}
	var want []netip.Addr
	for _, v := range list(q, "Ipv6Addresses") {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is6() || a.Is4In6() {
			return nil, errf("InvalidParameterValue", "Invalid value '%s' for Ipv6Addresses", v)
		}
		want = append(want, a)
	}
	count := 0
	if n := q.Get("Ipv6AddressCount"); n != "" {
		if len(want) > 0 {
			return nil, errf("InvalidParameterCombination", "Ipv6Addresses and Ipv6AddressCount are mutually exclusive")
		}
		c, err := strconv.Atoi(n)
		if err != nil || c < 1 {
			return nil, errf("InvalidParameterValue", "Invalid value '%s' for Ipv6AddressCount", n)
		}
		count = c
	}
	if len(want) == 0 && count == 0 {
		return nil, errf("MissingParameter", "Either Ipv6Addresses or Ipv6AddressCount is required")
	}
	// Validate everything before changing anything.
	var add []netip.Addr
	for _, a := range want {
		if !sn.IPv6CIDR.Contains(a) {
			return nil, errf("InvalidParameterValue", "Address %s does not fall within the subnet's IPv6 address range", a)
		}
		if reserved(sn.IPv6CIDR, a) {
			return nil, errf("InvalidParameterValue", "Address %s is reserved by AWS", a)
		}
		switch h, _ := w.holder(e.VPC, a); {
		case h == e:
			continue // already there: a no-op, which makes retries safe
		case h != nil:
			return nil, errf("InvalidIPAddress.InUse", "The specified address %s is already assigned to %s.", a, h.ID)
		}
		add = append(add, a)
	}
	for a := sn.IPv6CIDR.Addr(); len(add) < count && sn.IPv6CIDR.Contains(a); a = a.Next() {
		if h, _ := w.holder(e.VPC, a); h == nil && !reserved(sn.IPv6CIDR, a) && !slices.Contains(add, a) {
			add = append(add, a)
		}
	}
	if len(e.IPv6)+len(add) > w.ipLimit(e) {
		return nil, errf("PrivateIpAddressLimitExceeded", "Number of IPv6 addresses will exceed limit.")
	}
	e.IPv6 = append(e.IPv6, add...)
	resp := &assignIPv6Resp{NetworkInterfaceID: e.ID, Assigned: strs(want)}
	if count > 0 {
		resp.Assigned = strs(add) // with a count, every added address is a picked one
	}
	return resp, nil
}

type unassignIPv6Resp struct {
	reqMeta
	NetworkInterfaceID string   `xml:"networkInterfaceId"`
	Unassigned         []string `xml:"unassignedIpv6Addresses>item"`
}

func (s *Server) unassignIPv6Addresses(q url.Values) (any, *apiError) {
	w := s.w
	e := w.ENIs[q.Get("NetworkInterfaceId")]
	if e == nil {
		return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", q.Get("NetworkInterfaceId"))
	}
	var del []netip.Addr
	for _, v := range list(q, "Ipv6Addresses") {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is6() || a.Is4In6() {
			return nil, errf("InvalidParameterValue", "Invalid value '%s' for Ipv6Addresses", v)
		}
		if !slices.Contains(e.IPv6, a) {
			return nil, errf("InvalidParameterValue", "Some of the specified addresses are not assigned to interface %s", e.ID)
		}
		del = append(del, a)
	}
	if len(del) == 0 {
		return nil, errf("MissingParameter", "The request must contain the parameter Ipv6Addresses")
	}
	e.IPv6 = slices.DeleteFunc(e.IPv6, func(x netip.Addr) bool { return slices.Contains(del, x) })
	return &unassignIPv6Resp{NetworkInterfaceID: e.ID, Unassigned: strs(del)}, nil
}

func (s *Server) unassignPrivateIPAddresses(q url.Values) (any, *apiError) {
	w := s.w
	e := w.ENIs[q.Get("NetworkInterfaceId")]
	if e == nil {
		return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", q.Get("NetworkInterfaceId"))
	}
	var del []netip.Addr
	for _, v := range list(q, "PrivateIpAddress") {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return nil, errf("InvalidParameterValue", "Invalid value '%s' for PrivateIpAddresses", v)
		}
		if a == e.Primary {
			return nil, errf("InvalidParameterValue", "The primary address %s of %s cannot be unassigned", a, e.ID)
		}
		if !slices.Contains(e.Secondary, a) {
			return nil, errf("InvalidParameterValue", "Some of the specified addresses are not assigned to interface %s", e.ID)
		}
		del = append(del, a)
	}
	for _, a := range del {
		e.Secondary = slices.DeleteFunc(e.Secondary, func(x netip.Addr) bool { return x == a })
		if x := w.eipOn(e.ID, a); x != nil {
			x.Association, x.ENI, x.Private = "", "", netip.Addr{}
		}
	}
	return nil, nil
}

type allocateResp struct {
	reqMeta
	AllocationID       string `xml:"allocationId"`
	PublicIP           string `xml:"publicIp"`
	Domain             string `xml:"domain"`
	NetworkBorderGroup string `xml:"networkBorderGroup"`
}

func (s *Server) allocateAddress(q url.Values) (any, *apiError) {
	w := s.w
	if len(w.EIPs) >= s.eipLimit {
		return nil, errf("AddressLimitExceeded", "The maximum number of addresses has been reached.")
	}
	x := &eip{Allocation: w.id("eipalloc"), Public: w.NextPublic, Tags: tagSpecs(q, "elastic-ip")}
	w.NextPublic = w.NextPublic.Next()
	w.EIPs[x.Allocation] = x
	return &allocateResp{AllocationID: x.Allocation, PublicIP: x.Public.String(), Domain: "vpc", NetworkBorderGroup: s.Region}, nil
}

type associateResp struct {
	reqMeta
	AssociationID string `xml:"associationId"`
}

func (s *Server) associateAddress(q url.Values) (any, *apiError) {
	w := s.w
	x := w.EIPs[q.Get("AllocationId")]
	if x == nil {
		return nil, errf("InvalidAllocationID.NotFound", "The allocation ID '%s' does not exist", q.Get("AllocationId"))
	}
	var e *eni
	if id := q.Get("NetworkInterfaceId"); id != "" {
		if e = w.ENIs[id]; e == nil {
			return nil, errf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
		}
	} else if id := q.Get("InstanceId"); id != "" {
		if w.Instances[id] == nil {
			return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
		for _, c := range w.enisOf(id) {
			if c.Attach.DeviceIndex == 0 {
				e = c
			}
		}
	}
	if e == nil {
		return nil, errf("MissingParameter", "Either NetworkInterfaceId or InstanceId is required")
	}
	priv := e.Primary
	if q.Get("PrivateIpAddress") != "" {
		a, err := addrParam(q, "PrivateIpAddress")
		if err != nil {
			return nil, err
		}
		if a != e.Primary && !slices.Contains(e.Secondary, a) {
			return nil, errf("InvalidParameterValue", "The private IP address %s is not assigned to %s", a, e.ID)
		}
		priv = a
	}
	if x.ENI == e.ID && x.Private == priv {
		return &associateResp{AssociationID: x.Association}, nil
	}
	if x.Association != "" && !boolParam(q, "AllowReassociation") {
		return nil, errf("Resource.AlreadyAssociated", "resource %s is already associated with associate-id %s", x.Allocation, x.Association)
	}
	if other := w.eipOn(e.ID, priv); other != nil {
		if !boolParam(q, "AllowReassociation") {
			return nil, errf("Resource.AlreadyAssociated", "address %s of %s is already associated with %s", priv, e.ID, other.Allocation)
		}
		other.Association, other.ENI, other.Private = "", "", netip.Addr{}
	}
	x.Association, x.ENI, x.Private = w.id("eipassoc"), e.ID, priv
	return &associateResp{AssociationID: x.Association}, nil
}

func (s *Server) disassociateAddress(q url.Values) (any, *apiError) {
	id := q.Get("AssociationId")
	for _, x := range s.w.EIPs {
		if x.Association == id && id != "" {
			x.Association, x.ENI, x.Private = "", "", netip.Addr{}
			return nil, nil
		}
	}
	return nil, errf("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
}

func (s *Server) releaseAddress(q url.Values) (any, *apiError) {
	x := s.w.EIPs[q.Get("AllocationId")]
	if x == nil {
		return nil, errf("InvalidAllocationID.NotFound", "The allocation ID '%s' does not exist", q.Get("AllocationId"))
	}
	if x.Association != "" {
		return nil, errf("InvalidIPAddress.InUse", "Address %s is in use.", x.Public)
	}
	delete(s.w.EIPs, x.Allocation)
	return nil, nil
}

// tagsOf returns the tag map of any taggable resource.
func (s *Server) tagsOf(id string) (map[string]string, *apiError) {
	w := s.w
	switch {
	case w.ENIs[id] != nil:
		return w.ENIs[id].Tags, nil
	case w.EIPs[id] != nil:
		return w.EIPs[id].Tags, nil
	case w.Instances[id] != nil:
		return w.Instances[id].Tags, nil
	case w.Subnets[id] != nil:
		return w.Subnets[id].Tags, nil
	}
	prefix, _, _ := strings.Cut(id, "-")
	kind := map[string]string{"eni": "InvalidNetworkInterfaceID", "eipalloc": "InvalidAllocationID", "i": "InvalidInstanceID", "subnet": "InvalidSubnetID"}[prefix]
	if kind == "" {
		return nil, errf("InvalidID", "The ID '%s' is not valid", id)
	}
	return nil, errf(kind+".NotFound", "The ID '%s' does not exist", id)
}

func (s *Server) createTags(q url.Values) (any, *apiError) {
	ids := list(q, "ResourceId")
	var maps_ []map[string]string
	for _, id := range ids {
		m, err := s.tagsOf(id)
		if err != nil {
			return nil, err
		}
		maps_ = append(maps_, m)
	}
	tags := map[string]string{}
	for i := 1; ; i++ {
		k, ok := q["Tag."+strconv.Itoa(i)+".Key"]
		if !ok {
			break
		}
		if strings.HasPrefix(strings.ToLower(k[0]), "aws:") {
			return nil, errf("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
		tags[k[0]] = q.Get("Tag." + strconv.Itoa(i) + ".Value")
	}
	// EC2 checks the limit before it changes anything: the request fails as a whole.
	for j, m := range maps_ {
		n := len(m)
		for k := range tags {
			if _, ok := m[k]; !ok {
				n++
			}
		}
		if n > maxTags {
			return nil, errf("TagLimitExceeded", "The maximum number of tags (%d) for resource %s has been reached", maxTags, ids[j])
		}
	}
	for k, v := range tags {
		for j, m := range maps_ {
			if m == nil {
				m = map[string]string{}
				s.setTags(ids[j], m)
				maps_[j] = m
			}
			m[k] = v
		}
	}
	return nil, nil
}

// maxTags is EC2's limit of user tags per resource.
const maxTags = 50

func (s *Server) setTags(id string, m map[string]string) {
	w := s.w
	switch {
	case w.ENIs[id] != nil:
		w.ENIs[id].Tags = m
	case w.EIPs[id] != nil:
		w.EIPs[id].Tags = m
	case w.Instances[id] != nil:
		w.Instances[id].Tags = m
	case w.Subnets[id] != nil:
		w.Subnets[id].Tags = m
	}
}

func (s *Server) deleteTags(q url.Values) (any, *apiError) {
	for _, id := range list(q, "ResourceId") {
		m, err := s.tagsOf(id)
		if err != nil {
			return nil, err
		}
		for i := 1; ; i++ {
			p := "Tag." + strconv.Itoa(i)
			k, ok := q[p+".Key"]
			if !ok {
				break
			}
			if v, has := q[p+".Value"]; has && m[k[0]] != v[0] {
				continue
			}
			delete(m, k[0])
		}
	}
	return nil, nil
}
