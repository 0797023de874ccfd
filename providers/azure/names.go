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

// parseProviderID parses azure:///subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM.
func parseProviderID(id string) (vmRef, error) {
	op := "parsing providerID " + id
	rest, ok := strings.CutPrefix(id, "azure://")
	if !ok {
		return vmRef{}, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("not an Azure node")}
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if len(parts) >= 8 && strings.EqualFold(parts[6], "virtualMachineScaleSets") {
		return vmRef{}, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Code: "VMSSUnsupported",
			Err: errors.New("uniform scale set NICs are changed through the scale set model, which this provider does not do yet; use Flexible orchestration or availability-set node pools for gateways")}
	}
	if len(parts) != 8 || !strings.EqualFold(parts[0], "subscriptions") || !strings.EqualFold(parts[2], "resourceGroups") || !strings.EqualFold(parts[6], "virtualMachines") {
		return vmRef{}, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: errors.New("want azure:///subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM")}
	}
	return vmRef{parts[1], parts[3], parts[7]}, nil
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
