package coordinator

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// TestNotHeldLost: an address held through the cloud's NAT source (Azure Uniform) is lost when
// its holder's discovery no longer shows that source (an AKS upgrade reset the instance's
// model); an address the cloud holds itself, one not placed where it is held, one being
// deleted, or a node view that still shows the source, is not.
func TestNotHeldLost(t *testing.T) {
	held := func(mod func(*egressv1.EgressIP)) *egressv1.EgressIP {
		e := &egressv1.EgressIP{}
		e.Spec.IP, e.Spec.Node = "10.240.30.1", "gw-0"
		e.Status.Node, e.Status.PublicIP, e.Status.PublicNATSource, e.Status.PrivateAddressNotHeld = "gw-0", "20.60.0.1", "10.240.0.77", true
		if mod != nil {
			mod(e)
		}
		return e
	}
	view := func(secondaries ...string) *providers.NodeInfo {
		itf := providers.Interface{PrimaryIP: netip.MustParseAddr("10.240.0.10")}
		for _, s := range secondaries {
			itf.SecondaryIPs = append(itf.SecondaryIPs, netip.MustParseAddr(s))
		}
		return &providers.NodeInfo{Interfaces: []providers.Interface{itf}}
	}
	now := metav1.Now()
	for _, tc := range []struct {
		name string
		e    *egressv1.EgressIP
		info *providers.NodeInfo
		lost bool
	}{
		{"NAT source on the node", held(nil), view("10.240.0.77"), false},
		{"NAT source gone (upgrade)", held(nil), view(), true},
		{"another Dynamic address only", held(nil), view("10.240.0.78"), true},
		{"the cloud holds the egress IP itself", held(func(e *egressv1.EgressIP) { e.Status.PrivateAddressNotHeld = false }), view(), false},
		{"moving: not where it is placed", held(func(e *egressv1.EgressIP) { e.Spec.Node = "gw-1" }), view(), false},
		{"not held anywhere", held(func(e *egressv1.EgressIP) { e.Status.Node = "" }), view(), false},
		{"being deleted", held(func(e *egressv1.EgressIP) { e.DeletionTimestamp = &now }), view(), false},
		{"no NAT source recorded", held(func(e *egressv1.EgressIP) { e.Status.PublicNATSource = "" }), view(), false},
		{"no view of the node", held(nil), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := notHeldLost(tc.e, tc.info); got != tc.lost {
				t.Errorf("notHeldLost = %v, want %v", got, tc.lost)
			}
		})
	}
}
