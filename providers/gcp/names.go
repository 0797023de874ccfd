package gcp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	computepb "cloud.google.com/go/compute/apiv1/computepb"

	"github.com/egressd/egressd/providers"
)

type instanceRef struct{ project, zone, name string }

func (r instanceRef) key() string { return r.project + "/" + r.zone + "/" + r.name }

func (r instanceRef) id() string {
	return fmt.Sprintf("projects/%s/zones/%s/instances/%s", r.project, r.zone, r.name)
}

func (r instanceRef) region() string { return zoneRegion(r.zone) }

func zoneRegion(zone string) string {
	if i := strings.LastIndex(zone, "-"); i > 0 {
		return zone[:i]
	}
	return zone
}

// parseProviderID parses gce://project/zone/instance.
func (p *Provider) ref(n providers.NodeRef) (instanceRef, error) {
	if rest, ok := strings.CutPrefix(n.ProviderID, "gce://"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "" {
			return instanceRef{parts[0], parts[1], parts[2]}, nil
		}
		return instanceRef{}, &providers.Error{Kind: providers.KindNotFound, Op: "parsing providerID " + n.ProviderID, Err: errors.New("want gce://project/zone/instance")}
	}
	if n.ProviderID == "" && n.Zone != "" && n.Name != "" && p.project != "" {
		return instanceRef{p.project, n.Zone, n.Name}, nil
	}
	return instanceRef{}, &providers.Error{Kind: providers.KindNotFound, Op: "parsing providerID " + n.ProviderID, Err: errors.New("not a GCE node")}
}

// parseInstanceID parses projects/P/zones/Z/instances/N or a self link.
func parseInstanceID(s string) (instanceRef, bool) {
	i := strings.Index(s, "projects/")
	if i < 0 {
		return instanceRef{}, false
	}
	parts := strings.Split(s[i:], "/")
	if len(parts) != 6 || parts[2] != "zones" || parts[4] != "instances" {
		return instanceRef{}, false
	}
	return instanceRef{parts[1], parts[3], parts[5]}, true
}

// labelKey spells a tag key as a label key: lowercase, '-' for '.' and '/'.
func labelKey(tag string) string {
	return strings.NewReplacer(".", "-", "/", "-").Replace(strings.ToLower(tag))
}

// labelValue makes s a valid label value: lowercase letters, digits, '-', '_', at most 63.
func labelValue(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

func labels(o providers.Owner) map[string]string {
	return map[string]string{LabelCluster: labelValue(o.Cluster), LabelOwner: labelValue(o.Gateway)}
}

func ownedBy(l map[string]string, cluster string) bool {
	return l[LabelCluster] != "" && l[LabelCluster] == labelValue(cluster)
}

// Address resource names are derived from the cluster and the IP, so that retries after a
// crash or an ambiguous error find the resource instead of creating a second one.
func clusterHash(cluster string) string {
	h := sha256.Sum256([]byte(cluster))
	return hex.EncodeToString(h[:4])
}

func internalName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-" + strings.ReplaceAll(ip.String(), ".", "-")
}

func publicName(cluster string, ip netip.Addr) string {
	return "egressd-" + clusterHash(cluster) + "-pub-" + strings.ReplaceAll(ip.String(), ".", "-")
}

type subnetID struct{ project, region, name string }

func subnetRef(link string) (subnetID, bool) {
	i := strings.Index(link, "projects/")
	if i < 0 {
		return subnetID{}, false
	}
	parts := strings.Split(link[i:], "/")
	if len(parts) != 6 || parts[2] != "regions" || parts[4] != "subnetworks" {
		return subnetID{}, false
	}
	return subnetID{parts[1], parts[3], parts[5]}, true
}

func regionOf(a *computepb.Address) string {
	reg := a.GetRegion()
	if i := strings.LastIndex(reg, "/"); i >= 0 {
		reg = reg[i+1:]
	}
	return "regions/" + reg
}
