package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// TestStatusSubresourceAndPrinterColumns writes status through the status subresource and
// reads objects back as kubectl does (as=Table), checking the columns platform engineers see.
func TestStatusSubresourceAndPrinterColumns(t *testing.T) {
	ctx := context.Background()
	c := server.Client

	gw := &egressv1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "printer-egress"},
		Spec: egressv1.EgressGatewaySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{egressv1.LabelGateway: "egress"}},
			Addresses:    egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws"}},
		},
	}
	if err := c.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, gw) })
	gw.Status = egressv1.EgressGatewayStatus{
		ReadyGateways: 4,
		EgressIPs:     []string{"10.0.1.10", "10.0.2.10"},
		Conditions: []metav1.Condition{{
			Type: egressv1.ConditionReady, Status: metav1.ConditionTrue, Reason: egressv1.ReasonAllGatewaysHealthy,
			Message: "4 of 4 gateways healthy", LastTransitionTime: metav1.Now(),
		}},
	}
	if err := c.Status().Update(ctx, gw); err != nil {
		t.Fatalf("status update: %v", err)
	}
	// A spec update must not touch status, and a status update must not touch spec.
	gw.Spec.Mode = egressv1.ModeActiveStandby
	gw.Status.ReadyGateways = 1
	if err := c.Update(ctx, gw); err != nil {
		t.Fatal(err)
	}
	if gw.Status.ReadyGateways != 4 {
		t.Errorf("spec update changed status: readyGateways %d", gw.Status.ReadyGateways)
	}

	eip := &egressv1.EgressIP{
		ObjectMeta: metav1.ObjectMeta{Name: "10.0.1.10"},
		Spec:       egressv1.EgressIPSpec{IP: "10.0.1.10", Gateway: gw.Name, Zone: "us-east-1a", Provider: "aws", Node: "gw-a"},
	}
	if err := c.Create(ctx, eip); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, eip) })
	eip.Status = egressv1.EgressIPStatus{Node: "gw-a", PublicIP: "198.51.100.7", Conditions: []metav1.Condition{{
		Type: egressv1.ConditionAssigned, Status: metav1.ConditionTrue, Reason: egressv1.ReasonAssigned,
		Message: "held by eni-0abc on gw-a", LastTransitionTime: metav1.Now(),
	}}}
	if err := c.Status().Update(ctx, eip); err != nil {
		t.Fatal(err)
	}

	pol := &egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: "default"},
		Spec: egressv1.EgressPolicyRule{
			PodSelector:      metav1.LabelSelector{MatchLabels: map[string]string{"app": "billing"}},
			DestinationCIDRs: []string{"203.0.113.0/24"},
			Gateway:          gw.Name,
		},
	}
	if err := c.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, pol) })
	pol.Status = egressv1.EgressPolicyStatus{MatchedPods: 12, Conditions: []metav1.Condition{{
		Type: egressv1.ConditionReady, Status: metav1.ConditionTrue, Reason: egressv1.ReasonAccepted,
		Message: "steered through printer-egress", LastTransitionTime: metav1.Now(),
	}}}
	if err := c.Status().Update(ctx, pol); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		resource, namespace string
		want                map[string]string
	}{
		{"egressgateways", "", map[string]string{"Mode": "ActiveStandby", "Ready": "True", "Gateways": "4", "Egress IPs": `["10.0.1.10","10.0.2.10"]`}},
		{"egressips", "", map[string]string{"IP": "10.0.1.10", "Zone": "us-east-1a", "Node": "gw-a", "Public IP": "198.51.100.7", "Assigned": "True"}},
		{"egresspolicies", "default", map[string]string{"Gateway": "printer-egress", "Pods": "12", "Ready": "True"}},
	} {
		got := tableRow(t, tc.resource, tc.namespace)
		for col, want := range tc.want {
			if got[col] != want {
				t.Errorf("%s column %q = %q, want %q (row %v)", tc.resource, col, got[col], want, got)
			}
		}
	}
}

// tableRow fetches the first row of a resource as the server renders it for kubectl.
func tableRow(t *testing.T, resource, namespace string) map[string]string {
	t.Helper()
	cfg := rest.CopyConfig(server.Config)
	cfg.GroupVersion = &schema.GroupVersion{Group: egressv1.GroupVersion.Group, Version: egressv1.GroupVersion.Version}
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(server.Scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rc.Get().NamespaceIfScoped(namespace, namespace != "").Resource(resource).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("listing %s as a table: %v", resource, err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	if len(table.Rows) == 0 {
		t.Fatalf("%s: no rows", resource)
	}
	// As kubectl get prints it (go test -v shows it).
	var out strings.Builder
	tw := tabwriter.NewWriter(&out, 0, 8, 3, ' ', 0)
	var hdr []string
	for _, col := range table.ColumnDefinitions {
		if col.Priority == 0 {
			hdr = append(hdr, strings.ToUpper(col.Name))
		}
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	for _, r := range table.Rows {
		var cells []string
		for i, col := range table.ColumnDefinitions {
			if col.Priority == 0 {
				cells = append(cells, fmt.Sprint(r.Cells[i]))
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
	t.Logf("kubectl get %s:\n%s", resource, out.String())
	row := map[string]string{}
	for i, col := range table.ColumnDefinitions {
		b, _ := json.Marshal(table.Rows[0].Cells[i])
		row[col.Name] = strings.Trim(string(b), `"`)
		if s, ok := table.Rows[0].Cells[i].(string); ok {
			row[col.Name] = s
		}
	}
	return row
}
