package v1alpha1_test

import (
	"testing"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

func TestAddressSource(t *testing.T) {
	for _, tc := range []struct {
		name      string
		a         egressv1.EgressAddresses
		want      egressv1.AddressSource
		announced bool
	}{
		{"cloud", egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws"}}, egressv1.AddressSourceCloud, false},
		{"static", egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{}}, egressv1.AddressSourceStatic, true},
		{"nodeInterface", egressv1.EgressAddresses{NodeInterface: &egressv1.NodeInterfaceAddresses{Interface: "eth0"}}, egressv1.AddressSourceNodeInterface, false},
		{"none", egressv1.EgressAddresses{}, "", false},
	} {
		if got := tc.a.Source(); got != tc.want || got.Announced() != tc.announced {
			t.Errorf("%s: Source %q (announced %v), want %q (%v)", tc.name, got, got.Announced(), tc.want, tc.announced)
		}
	}
	for provider, want := range map[string]egressv1.AddressSource{egressv1.ProviderStatic: egressv1.AddressSourceStatic, "aws": egressv1.AddressSourceCloud, "onprem": egressv1.AddressSourceCloud} {
		s := egressv1.EgressIPSpec{Provider: provider}
		if got := s.Source(); got != want {
			t.Errorf("EgressIP of provider %q: Source %q, want %q", provider, got, want)
		}
	}
}
