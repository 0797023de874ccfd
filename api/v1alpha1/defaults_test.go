package v1alpha1

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// TestDefaultsMatchCRD pins the generated CRD's defaults (from the +kubebuilder:default
// markers) to the Default* constants the controllers use.
func TestDefaultsMatchCRD(t *testing.T) {
	raw, err := os.ReadFile("../../charts/egressd/files/crds/egressd.io_egressgateways.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	field := func(path ...string) string {
		s := spec
		for _, p := range path {
			var ok bool
			if s, ok = s.Properties[p]; !ok {
				t.Fatalf("CRD has no spec.%v", path)
			}
		}
		if s.Default == nil {
			t.Fatalf("spec.%v has no default in the CRD", path)
		}
		var v any
		if err := yaml.Unmarshal(s.Default.Raw, &v); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(v)
	}
	duration := func(path ...string) time.Duration {
		d, err := time.ParseDuration(field(path...))
		if err != nil {
			t.Fatalf("spec.%v: %v", path, err)
		}
		return d
	}
	for _, c := range []struct {
		name      string
		crd, want any
	}{
		{"mode", field("mode"), string(DefaultMode)},
		{"zones.affinity", field("zones", "affinity"), string(DefaultZoneAffinity)},
		{"failback", field("failback"), string(DefaultFailback)},
		{"drainGracePeriod", duration("drainGracePeriod"), DefaultDrainGracePeriod},
		{"health.interval", duration("health", "interval"), DefaultProbeInterval},
		{"health.failureThreshold", field("health", "failureThreshold"), strconv.Itoa(DefaultFailureThreshold)},
	} {
		if c.crd != c.want {
			t.Errorf("spec.%s defaults to %v in the CRD, %v in defaults.go", c.name, c.crd, c.want)
		}
	}
}
