package azure

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

type vmRef struct{ sub, rg, name string }

func (v vmRef) id() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", v.sub, v.rg, v.name)
}

type nicRef struct{ rg, name string }

func (n nicRef) key() string { return strings.ToLower(n.rg + "/" + n.name) }

// instanceRef is an instance of a Uniform virtual machine scale set (AKS's default node
// pools): its NIC is part of the instance's model, not a networkInterfaces resource.
type instanceRef struct{ sub, rg, vmss, id string }

func (r instanceRef) resourceID() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines/%s", r.sub, r.rg, r.vmss, r.id)
}

// uniformRefused is the answer for a Uniform scale-set instance asked to hold an egress IP.
// The instance's ipConfigurations exist only in its compute model
// (networkProfileConfiguration), whose ipConfigurations have no privateIPAddress: the network
// resource provider allocates them a Dynamic address of its choosing, so an address ipalloc
// chose can be neither placed on such an instance nor carried to it by a move; and a model's
// public IP comes from a publicIPAddressConfiguration (a new address, or one drawn from a
// prefix), never an existing public IP resource. The network resource provider itself only
// reads these NICs.
func uniformRefused(op string, r instanceRef) error {
	return &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "UniformScaleSetInstance",
		Err: fmt.Errorf("%s is an instance of the Uniform scale set %s: its ipConfigurations are Dynamic (the scale-set model has no privateIPAddress), so it cannot hold an egress IP egressd chose; run gateways on a node pool of standalone VMs (AKS --vm-set-type VirtualMachines)", r.resourceID(), r.vmss)}
}

// parseProviderID parses azure:///subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM
// (a standalone VM or a Flexible scale-set instance) or, returning it as the second value,
// .../virtualMachineScaleSets/VMSS/virtualMachines/ID (a Uniform scale-set instance).
func parseProviderID(id string) (vmRef, *instanceRef, error) {
	op := "parsing providerID " + id
	rest, ok := strings.CutPrefix(id, "azure://")
	if !ok {
		return vmRef{}, nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("not an Azure node")}
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if len(parts) == 10 && strings.EqualFold(parts[0], "subscriptions") && strings.EqualFold(parts[2], "resourceGroups") &&
		strings.EqualFold(parts[4], "providers") && strings.EqualFold(parts[5], "Microsoft.Compute") &&
		strings.EqualFold(parts[6], "virtualMachineScaleSets") && strings.EqualFold(parts[8], "virtualMachines") {
		return vmRef{}, &instanceRef{parts[1], parts[3], parts[7], parts[9]}, nil
	}
	if len(parts) != 8 || !strings.EqualFold(parts[0], "subscriptions") || !strings.EqualFold(parts[2], "resourceGroups") || !strings.EqualFold(parts[6], "virtualMachines") {
		return vmRef{}, nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("want azure:///subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM or .../virtualMachineScaleSets/VMSS/virtualMachines/ID")}
	}
	return vmRef{parts[1], parts[3], parts[7]}, nil, nil
}

// parseNICID parses a NIC resource ID (or an ipConfiguration ID) into the NIC reference.
func parseNICID(id string) (nicRef, string, bool) {
	parts := strings.Split(strings.Trim(id, "/"), "/")
	if len(parts) < 8 || !strings.EqualFold(parts[2], "resourceGroups") || !strings.EqualFold(parts[6], "networkInterfaces") {
		return nicRef{}, "", false
	}
	cfg := ""
	if len(parts) == 10 && strings.EqualFold(parts[8], "ipConfigurations") {
		cfg = parts[9]
	}
	return nicRef{parts[3], parts[7]}, cfg, true
}

func clusterHash(cluster string) string {
	h := sha256.Sum256([]byte(cluster))
	return hex.EncodeToString(h[:4])
}

var ipDash = strings.NewReplacer(".", "-", ":", "-")

func configName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-" + ipDash.Replace(ip.String())
}

func publicName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-pub-" + ipDash.Replace(ip.String())
}

func ownedBy(tags map[string]*string, cluster string) bool {
	return tags[egressv1.TagCluster] != nil && *tags[egressv1.TagCluster] == cluster
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
