package awssim

import (
	"net/netip"
	"slices"
)

// reqMeta is embedded in every response body; encoding/xml flattens it.
type reqMeta struct {
	RequestID string `xml:"requestId"`
}

func (m *reqMeta) setReqID(id string) { m.RequestID = id }

func setRequestID(v any, id string) {
	if r, ok := v.(interface{ setReqID(string) }); ok {
		r.setReqID(id)
	}
}

type returnResp struct {
	reqMeta
	Return bool `xml:"return"`
}

type xTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func tagSet(m map[string]string) []xTag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]xTag, 0, len(keys))
	for _, k := range keys {
		out = append(out, xTag{Key: k, Value: m[k]})
	}
	return out
}

type xGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

func groupSet(ids []string) []xGroup {
	out := make([]xGroup, 0, len(ids))
	for _, g := range ids {
		out = append(out, xGroup{GroupID: g, GroupName: g})
	}
	return out
}

type xAssoc struct {
	AllocationID  string `xml:"allocationId,omitempty"`
	AssociationID string `xml:"associationId,omitempty"`
	PublicIP      string `xml:"publicIp"`
	IPOwnerID     string `xml:"ipOwnerId"`
}

type xPrivIP struct {
	Primary          bool    `xml:"primary"`
	PrivateIPAddress string  `xml:"privateIpAddress"`
	Association      *xAssoc `xml:"association"`
}

type xAttach struct {
	AttachmentID        string `xml:"attachmentId"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	InstanceID          string `xml:"instanceId"`
	InstanceOwnerID     string `xml:"instanceOwnerId"`
	Status              string `xml:"status"`
}

// xENI is an ENI as DescribeNetworkInterfaces answers it and, without availabilityZone and
// tagSet, as an instance's networkInterfaceSet lists it.
type xENI struct {
	NetworkInterfaceID string    `xml:"networkInterfaceId"`
	SubnetID           string    `xml:"subnetId"`
	VpcID              string    `xml:"vpcId"`
	AvailabilityZone   string    `xml:"availabilityZone,omitempty"`
	Description        string    `xml:"description"`
	OwnerID            string    `xml:"ownerId"`
	Status             string    `xml:"status"`
	MacAddress         string    `xml:"macAddress"`
	PrivateIPAddress   string    `xml:"privateIpAddress"`
	SourceDestCheck    bool      `xml:"sourceDestCheck"`
	InterfaceType      string    `xml:"interfaceType"`
	GroupSet           []xGroup  `xml:"groupSet>item"`
	Attachment         *xAttach  `xml:"attachment"`
	Association        *xAssoc   `xml:"association"`
	TagSet             []xTag    `xml:"tagSet>item"`
	PrivateIPs         []xPrivIP `xml:"privateIpAddressesSet>item"`
	IPv6s              []xIPv6   `xml:"ipv6AddressesSet>item"`
}

type xIPv6 struct {
	IPv6Address string `xml:"ipv6Address"`
}

const accountID = "123456789012"

func (w *world) xeni(e *eni) xENI {
	x := xENI{
		NetworkInterfaceID: e.ID, SubnetID: e.Subnet, VpcID: e.VPC, AvailabilityZone: e.Zone,
		Description: e.Description, OwnerID: accountID, Status: "available", MacAddress: e.MAC,
		PrivateIPAddress: e.Primary.String(), SourceDestCheck: true, InterfaceType: "interface",
		GroupSet: groupSet(e.Groups), TagSet: tagSet(e.Tags),
	}
	x.Status = e.status()
	if e.Attach != nil {
		st := e.Attach.State
		if st == "" {
			st = stateAttached
		}
		x.Attachment = &xAttach{AttachmentID: e.Attach.ID, DeleteOnTermination: e.Attach.DeleteOnTermination,
			DeviceIndex: e.Attach.DeviceIndex, InstanceID: e.Attach.Instance, InstanceOwnerID: accountID, Status: st}
	}
	for i, a := range append([]netip.Addr{e.Primary}, e.Secondary...) {
		p := xPrivIP{Primary: i == 0, PrivateIPAddress: a.String()}
		if ip := w.eipOn(e.ID, a); ip != nil {
			p.Association = &xAssoc{AllocationID: ip.Allocation, AssociationID: ip.Association, PublicIP: ip.Public.String(), IPOwnerID: accountID}
			if i == 0 {
				x.Association = p.Association
			}
		}
		x.PrivateIPs = append(x.PrivateIPs, p)
	}
	for _, a := range e.IPv6 {
		x.IPv6s = append(x.IPv6s, xIPv6{IPv6Address: a.String()})
	}
	return x
}

type xPlacement struct {
	AvailabilityZone string `xml:"availabilityZone"`
	Tenancy          string `xml:"tenancy"`
}

type xState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xInstance struct {
	InstanceID        string     `xml:"instanceId"`
	InstanceType      string     `xml:"instanceType"`
	Placement         xPlacement `xml:"placement"`
	PrivateIPAddress  string     `xml:"privateIpAddress"`
	SubnetID          string     `xml:"subnetId"`
	VpcID             string     `xml:"vpcId"`
	InstanceState     xState     `xml:"instanceState"`
	GroupSet          []xGroup   `xml:"groupSet>item"`
	TagSet            []xTag     `xml:"tagSet>item"`
	NetworkInterfaces []xENI     `xml:"networkInterfaceSet>item"`
}

type xReservation struct {
	ReservationID string      `xml:"reservationId"`
	OwnerID       string      `xml:"ownerId"`
	Instances     []xInstance `xml:"instancesSet>item"`
}

type xSubnet struct {
	SubnetID                string `xml:"subnetId"`
	VpcID                   string `xml:"vpcId"`
	State                   string `xml:"state"`
	AvailabilityZone        string `xml:"availabilityZone"`
	CidrBlock               string `xml:"cidrBlock"`
	AvailableIPAddressCount int    `xml:"availableIpAddressCount"`
	OwnerID                 string `xml:"ownerId"`
	TagSet                  []xTag `xml:"tagSet>item"`
	// IPv6 is the subnet's IPv6 block on a dual-stack subnet.
	IPv6 []xSubnetIPv6 `xml:"ipv6CidrBlockAssociationSet>item"`
}

type xSubnetIPv6 struct {
	AssociationID string `xml:"associationId"`
	CIDR          string `xml:"ipv6CidrBlock"`
	State         struct {
		State string `xml:"state"`
	} `xml:"ipv6CidrBlockState"`
}

type xNetworkInfo struct {
	MaximumNetworkInterfaces  int  `xml:"maximumNetworkInterfaces"`
	Ipv4AddressesPerInterface int  `xml:"ipv4AddressesPerInterface"`
	Ipv6AddressesPerInterface int  `xml:"ipv6AddressesPerInterface"`
	Ipv6Supported             bool `xml:"ipv6Supported"`
}

type xInstanceType struct {
	InstanceType string       `xml:"instanceType"`
	NetworkInfo  xNetworkInfo `xml:"networkInfo"`
}

type xAddress struct {
	AllocationID            string `xml:"allocationId"`
	PublicIP                string `xml:"publicIp"`
	Domain                  string `xml:"domain"`
	AssociationID           string `xml:"associationId,omitempty"`
	NetworkInterfaceID      string `xml:"networkInterfaceId,omitempty"`
	NetworkInterfaceOwnerID string `xml:"networkInterfaceOwnerId,omitempty"`
	PrivateIPAddress        string `xml:"privateIpAddress,omitempty"`
	InstanceID              string `xml:"instanceId,omitempty"`
	NetworkBorderGroup      string `xml:"networkBorderGroup"`
	TagSet                  []xTag `xml:"tagSet>item"`
}

func (w *world) xaddr(x *eip, region string) xAddress {
	a := xAddress{AllocationID: x.Allocation, PublicIP: x.Public.String(), Domain: "vpc", NetworkBorderGroup: region, TagSet: tagSet(x.Tags)}
	if x.Association != "" {
		a.AssociationID = x.Association
		a.NetworkInterfaceID = x.ENI
		a.NetworkInterfaceOwnerID = accountID
		a.PrivateIPAddress = x.Private.String()
		if e := w.ENIs[x.ENI]; e != nil && e.Attach != nil {
			a.InstanceID = e.Attach.Instance
		}
	}
	return a
}
