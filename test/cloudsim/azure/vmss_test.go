package azuresim

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func newScaleSetSim(t *testing.T) (*Sim, client) {
	t.Helper()
	s, c := newTestSim(t, 1)
	s.AddScaleSet(ScaleSetSeed{ResourceGroup: trg, Name: "aks-np-vmss", Subnet: s.SubnetID(trg, "vnet", "nodes"),
		Instances: []ScaleSetInstanceSeed{{ID: "0", PrimaryIP: "10.1.1.4"}, {ID: "1", PrimaryIP: "10.1.1.5"}}})
	return s, c
}

const vmssPath = "/resourceGroups/" + trg + "/providers/Microsoft.Compute/virtualMachineScaleSets/aks-np-vmss/virtualMachines/"

// An instance's NIC is read under the scale set, at the read path's own api-version, and is
// Dynamic.
func TestScaleSetNICReadPath(t *testing.T) {
	s, c := newScaleSetSim(t)
	r := c.do(http.MethodGet, vmssPath+"1/networkInterfaces?api-version=2018-10-01", nil)
	if r.status != http.StatusOK {
		t.Fatalf("list: %d %v", r.status, r.body)
	}
	vals, _ := r.body["value"].([]any)
	if len(vals) != 1 {
		t.Fatalf("list: %v", r.body)
	}
	nic := mapOf(vals[0])
	cfg := props(ipConfigs(nic)[0])
	if str(mapOf(props(nic)["virtualMachine"])["id"]) != s.ScaleSetVMID(trg, "aks-np-vmss", "1") ||
		str(cfg["privateIPAddress"]) != "10.1.1.5" || str(cfg["privateIPAllocationMethod"]) != "Dynamic" || str(nic["etag"]) == "" {
		t.Fatalf("instance NIC %v", nic)
	}
	g := c.do(http.MethodGet, vmssPath+"1/networkInterfaces/aks-np-vmss-nic?api-version=2018-10-01", nil)
	if g.status != http.StatusOK || g.header.Get("ETag") != str(nic["etag"]) || str(g.body["id"]) != str(nic["id"]) {
		t.Fatalf("get: %d %v %v", g.status, g.header, g.body)
	}
	// The networkInterfaces resource's api-versions are not the read path's.
	if r := c.do(http.MethodGet, vmssPath+"1/networkInterfaces?api-version="+tver, nil); r.status != http.StatusBadRequest || r.code() != "NoRegisteredProviderFound" ||
		!strings.Contains(str(mapOf(r.body["error"])["message"]), "2018-10-01") {
		t.Fatalf("api-version %s on the read path: %d %v", tver, r.status, r.body)
	}
	if r := c.do(http.MethodGet, nicPath, nil); r.status != http.StatusOK {
		t.Fatalf("the scale-set api-version check reached networkInterfaces: %d %v", r.status, r.body)
	}
}

// Instance NICs are no networkInterfaces resources: the resource group's list and get do not
// show them, and nothing writes them through the network resource provider.
func TestScaleSetNICsAreNotNetworkInterfacesResources(t *testing.T) {
	s, c := newScaleSetSim(t)
	l := c.do(http.MethodGet, "/resourceGroups/"+trg+"/providers/Microsoft.Network/networkInterfaces?api-version="+tver, nil)
	for _, v := range l.body["value"].([]any) {
		if strings.Contains(strings.ToLower(str(mapOf(v)["id"])), "virtualmachinescalesets") {
			t.Fatalf("resource group list shows %v", mapOf(v)["id"])
		}
	}
	if len(l.body["value"].([]any)) != 1 {
		t.Fatalf("resource group list %v", l.body)
	}
	if r := c.do(http.MethodGet, "/resourceGroups/"+trg+"/providers/Microsoft.Network/networkInterfaces/aks-np-vmss-nic?api-version="+tver, nil); r.status != http.StatusNotFound || r.code() != "ResourceNotFound" {
		t.Fatalf("networkInterfaces get of an instance NIC: %d %v", r.status, r.body)
	}
	before := s.CallCounts()
	path := vmssPath + "0/networkInterfaces/aks-np-vmss-nic?api-version=2018-10-01"
	g := c.do(http.MethodGet, path, nil)
	if r := c.do(http.MethodPut, path, g.body); r.status < 400 {
		t.Fatalf("PUT of an instance NIC: %d %v", r.status, r.body)
	}
	if after := c.do(http.MethodGet, path, nil); str(after.body["etag"]) != str(g.body["etag"]) {
		t.Fatal("the refused PUT changed the instance NIC")
	}
	if got := s.CallCounts()[MScaleSetNICGet] - before[MScaleSetNICGet]; got != 2 {
		t.Fatalf("%d scale-set NIC gets counted, want 2 (the PUT is no read)", got)
	}
}

func TestScaleSetNotFoundCodes(t *testing.T) {
	_, c := newScaleSetSim(t)
	for _, tc := range []struct{ path, code string }{
		{vmssPath + "7/networkInterfaces?api-version=2018-10-01", "ResourceNotFound"},
		{vmssPath + "0/networkInterfaces/other-nic?api-version=2018-10-01", "NotFound"},
		{strings.Replace(vmssPath, trg, "rg-gone", 1) + "0/networkInterfaces?api-version=2018-10-01", "ResourceGroupNotFound"},
	} {
		if r := c.do(http.MethodGet, tc.path, nil); r.status != http.StatusNotFound || r.code() != tc.code {
			t.Errorf("GET %s: %d %s, want 404 %s", tc.path, r.status, r.code(), tc.code)
		}
	}
}

// The NICs of every instance of a scale set come in one list, paged as every list, at the
// read path's api-version; a scale set with no instance is ResourceNotFound naming it.
func TestScaleSetNICListAll(t *testing.T) {
	s, c := newScaleSetSim(t)
	s.AddScaleSet(ScaleSetSeed{ResourceGroup: trg, Name: "other-vmss", Subnet: s.SubnetID(trg, "vnet", "nodes"),
		Instances: []ScaleSetInstanceSeed{{ID: "0", PrimaryIP: "10.1.1.9"}}})
	s.SetPageSize(1)
	all := "/resourceGroups/" + trg + "/providers/Microsoft.Compute/virtualMachineScaleSets/aks-np-vmss/networkInterfaces?api-version=2018-10-01"
	var vms []string
	pages := 0
	for next := all; next != ""; pages++ {
		r := c.do(http.MethodGet, next, nil)
		if r.status != http.StatusOK {
			t.Fatalf("page %d: %d %v", pages, r.status, r.body)
		}
		for _, v := range r.body["value"].([]any) {
			vms = append(vms, str(mapOf(props(mapOf(v))["virtualMachine"])["id"]))
		}
		next = str(r.body["nextLink"])
	}
	if pages != 2 || len(vms) != 2 || vms[0] != s.ScaleSetVMID(trg, "aks-np-vmss", "0") || vms[1] != s.ScaleSetVMID(trg, "aks-np-vmss", "1") {
		t.Fatalf("%d pages, instances %v; want 2 pages, instances 0 and 1 of aks-np-vmss only", pages, vms)
	}
	if n := s.Calls(MScaleSetNICListAll); n != 2 {
		t.Fatalf("%d %s calls counted, want 2", n, MScaleSetNICListAll)
	}
	r := c.do(http.MethodGet, strings.Replace(all, "aks-np-vmss", "gone-vmss", 1), nil)
	if r.status != http.StatusNotFound || r.code() != "ResourceNotFound" || !strings.Contains(str(mapOf(r.body["error"])["message"]), "gone-vmss") {
		t.Fatalf("unknown scale set: %d %v", r.status, r.body)
	}
	if r := c.do(http.MethodGet, strings.Replace(all, "2018-10-01", tver, 1), nil); r.status != http.StatusBadRequest || r.code() != "NoRegisteredProviderFound" {
		t.Fatalf("api-version %s on the scale-set list: %d %v", tver, r.status, r.body)
	}
}

const prefixPath = "/resourceGroups/" + trg + "/providers/Microsoft.Network/publicIPPrefixes/pfx?api-version=" + tver

// The compute API of an instance: served at the compute api-versions, conditional on the
// instance's etag, a long-running operation during which the instance is Updating and another
// write is refused, and whose result the network resource provider shows only when it
// completes: a new ipConfiguration with a Dynamic address and a public IP drawn from its
// prefix. A prefix is /28 to /31 and cannot be deleted while a public IP is drawn from it.
func TestScaleSetInstanceModel(t *testing.T) {
	s, c := newScaleSetSim(t)
	s.SetOperationDelay(time.Hour)
	const cver = "?api-version=2025-04-01"
	if r := c.do(http.MethodGet, vmssPath+"0?api-version="+tver, nil); r.status != http.StatusBadRequest || r.code() != "NoRegisteredProviderFound" {
		t.Fatalf("instance at the network api-version: %d %v", r.status, r.body)
	}
	if r := c.do(http.MethodPut, prefixPath, map[string]any{"location": "westeurope", "sku": map[string]any{"name": "Standard"},
		"properties": map[string]any{"prefixLength": 27}}); r.status != http.StatusBadRequest {
		t.Fatalf("a /27 prefix: %d %v", r.status, r.body)
	}
	s.SetOperationDelay(0)
	if r := c.do(http.MethodPut, prefixPath, map[string]any{"location": "westeurope", "sku": map[string]any{"name": "Standard"},
		"properties": map[string]any{"prefixLength": 31}}); r.status != http.StatusCreated {
		t.Fatalf("a /31 prefix: %d %v", r.status, r.body)
	}
	pfx := c.do(http.MethodGet, prefixPath, nil)
	s.SetOperationDelay(time.Hour)
	inst := c.do(http.MethodGet, vmssPath+"0"+cver, nil)
	etag := str(inst.body["etag"])
	if inst.status != http.StatusOK || etag == "" || inst.header.Get("ETag") != etag || props(inst.body)["latestModelApplied"] != true {
		t.Fatalf("instance: %d %v", inst.status, inst.body)
	}
	nc := mapOf(mapOf(props(inst.body)["networkProfileConfiguration"])["networkInterfaceConfigurations"].([]any)[0])
	prim := mapOf(props(nc)["ipConfigurations"].([]any)[0])
	props(nc)["ipConfigurations"] = []any{prim, map[string]any{"name": "egress", "properties": map[string]any{
		"primary": false, "subnet": props(prim)["subnet"],
		"publicIPAddressConfiguration": map[string]any{"name": "pub", "properties": map[string]any{"publicIPPrefix": map[string]any{"id": str(pfx.body["id"])}}},
	}}}
	if r := c.do(http.MethodPut, vmssPath+"0"+cver, inst.body, "If-Match", `"0"`); r.status != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match: %d %v", r.status, r.body)
	}
	r := c.do(http.MethodPut, vmssPath+"0"+cver, inst.body, "If-Match", etag)
	if r.status != http.StatusOK || !strings.Contains(r.header.Get("Azure-AsyncOperation"), "/providers/Microsoft.Compute/locations/") {
		t.Fatalf("PUT: %d %v %v", r.status, r.header, r.body)
	}
	if r := c.do(http.MethodGet, vmssPath+"0"+cver, nil); str(props(r.body)["provisioningState"]) != "Updating" {
		t.Fatalf("during the operation: %v", r.body)
	}
	if r := c.do(http.MethodPut, vmssPath+"0"+cver, inst.body); r.status != http.StatusConflict || r.code() != "AnotherOperationInProgress" {
		t.Fatalf("PUT during the operation: %d %v", r.status, r.body)
	}
	if got := s.ScaleSetIPConfigs(); len(got) != 0 {
		t.Fatalf("the NIC shows the model before its operation completed: %v", got)
	}
	s.SetOperationDelay(0)
	s.mu.Lock()
	for _, op := range s.ops {
		op.DoneAt = time.Now()
	}
	s.mu.Unlock()
	got := s.ScaleSetIPConfigs()
	if len(got) != 1 || got[0].PrivateIP != "10.1.0.5" || got[0].PublicIP != "20.60.0.0" || !strings.EqualFold(got[0].Prefix, str(pfx.body["id"])) {
		t.Fatalf("after the operation: %+v", got)
	}
	pip := c.do(http.MethodGet, vmssPath+"0/networkInterfaces/aks-np-vmss-nic/ipconfigurations/egress/publicipaddresses/pub?api-version=2018-10-01", nil)
	if pip.status != http.StatusOK || str(props(pip.body)["ipAddress"]) != "20.60.0.0" {
		t.Fatalf("the instance's public IP: %d %v", pip.status, pip.body)
	}
	if r := c.do(http.MethodDelete, prefixPath, nil); r.status != http.StatusBadRequest || r.code() != "InUsePublicIpPrefixCannotBeDeleted" {
		t.Fatalf("deleting the prefix in use: %d %v", r.status, r.body)
	}
	if err := s.UpgradeInstance(s.ScaleSetVMID(trg, "aks-np-vmss", "0")); err != nil {
		t.Fatal(err)
	}
	if got := s.ScaleSetIPConfigs(); len(got) != 0 {
		t.Fatalf("after the upgrade: %+v", got)
	}
	if r := c.do(http.MethodDelete, prefixPath, nil); r.status != http.StatusAccepted {
		t.Fatalf("deleting the prefix after the upgrade: %d %v", r.status, r.body)
	}
}
