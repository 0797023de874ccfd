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

// tagZone is the tag of a public IP prefix's zone (names.go's other tags are the API's).
const tagZone = "egressd.io/zone"

// tagOwner is egressv1.TagOwner, read from prefixes' tags.
const tagOwner = egressv1.TagOwner

func ownerTags(owner providers.Owner) map[string]*string {
	c, g := owner.Cluster, owner.Gateway
	return map[string]*string{egressv1.TagCluster: &c, egressv1.TagOwner: &g}
}

// zoneOf is the Azure zone ("1", "2", "3") of a topology.kubernetes.io/zone label: AKS labels
// zonal nodes <region>-<zone> and others with a fault domain ("0"), which is no zone ("").
func zoneOf(label string) string {
	z := label[strings.LastIndex(label, "-")+1:]
	if label == z || z == "" || z == "0" || strings.Trim(z, "0123456789") != "" {
		return ""
	}
	return z
}

// prefixName names the public IP prefix of a gateway in a zone: egressd-<cluster hash>-pfx-
// <gateway>-<zone or "regional">, within Azure's 80 characters (a long gateway name is
// replaced by its hash; the owner tag carries it whole).
func prefixName(owner providers.Owner, zone string) string {
	if zone == "" {
		zone = "regional"
	}
	n := "egressd-" + clusterHash(owner.Cluster) + "-pfx-" + owner.Gateway + "-" + zone
	if len(n) > 80 {
		n = "egressd-" + clusterHash(owner.Cluster) + "-pfx-" + clusterHash(owner.Gateway) + "-" + zone
	}
	return n
}

// parseScaleSetID parses the ID of a Uniform scale-set instance's NIC, of one of its
// ipConfigurations or of that ipConfiguration's public IP:
// /subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/VMSS/virtualMachines/I/networkInterfaces/NIC[/ipConfigurations/CFG[/publicIPAddresses/PIP]].
func parseScaleSetID(id string) (inst instanceRef, nic, cfg, pip string, ok bool) {
	parts := strings.Split(strings.Trim(id, "/"), "/")
	n := len(parts)
	if (n != 12 && n != 14 && n != 16) || !strings.EqualFold(parts[2], "resourceGroups") || !strings.EqualFold(parts[5], "Microsoft.Compute") ||
		!strings.EqualFold(parts[6], "virtualMachineScaleSets") || !strings.EqualFold(parts[8], "virtualMachines") || !strings.EqualFold(parts[10], "networkInterfaces") {
		return instanceRef{}, "", "", "", false
	}
	inst, nic = instanceRef{parts[1], parts[3], parts[7], parts[9]}, parts[11]
	if n >= 14 {
		if !strings.EqualFold(parts[12], "ipConfigurations") {
			return instanceRef{}, "", "", "", false
		}
		cfg = parts[13]
	}
	if n == 16 {
		if !strings.EqualFold(parts[14], "publicIPAddresses") {
			return instanceRef{}, "", "", "", false
		}
		pip = parts[15]
	}
	return inst, nic, cfg, pip, true
}

func scaleSetNICID(inst instanceRef, nic string) string {
	return inst.resourceID() + "/networkInterfaces/" + nic
}

// parsePrefixID parses a public IP prefix's resource ID.
func parsePrefixID(id string) (rg, name string, ok bool) {
	parts := strings.Split(strings.Trim(id, "/"), "/")
	if len(parts) != 8 || !strings.EqualFold(parts[2], "resourceGroups") || !strings.EqualFold(parts[6], "publicIPPrefixes") {
		return "", "", false
	}
	return parts[3], parts[7], true
}

// ipOfConfigName is the IPv4 egress address an ipConfiguration of the cluster is named for
// (configName), false for another name.
func ipOfConfigName(cluster, name string) (netip.Addr, bool) {
	rest, ok := strings.CutPrefix(name, "egressd-"+clusterHash(cluster)+"-")
	if !ok || strings.HasPrefix(rest, "pub-") || strings.HasPrefix(rest, "pfx-") {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(rest, "-", "."))
	return a, err == nil && a.Is4()
}
