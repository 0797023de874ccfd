package azuresim

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// Uniform virtual machine scale sets (AKS's default node pools), as far as the network
// resource provider shows them. An instance's NIC is no Microsoft.Network/networkInterfaces
// resource: it is defined by the instance's model (the compute API's
// networkProfileConfiguration), it is absent from the resource group's networkInterfaces list
// and from networkInterfaces get, and the network resource provider only reads it, under the
// scale set's path:
//
//	GET .../providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/networkInterfaces
//	GET .../providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{i}/networkInterfaces
//	GET .../providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{i}/networkInterfaces/{nic}
//
// at the api-versions of that read path (scaleSetNICAPIVersions), not at the
// networkInterfaces resource's. Its ipConfigurations are Dynamic: the compute model has no
// privateIPAddress, so no client chooses an instance's addresses.

// Method names of the scale-set NIC read path.
const (
	// MScaleSetNICListAll lists the NICs of every instance of a scale set.
	MScaleSetNICListAll = "virtualMachineScaleSets.networkInterfaces.list"
	MScaleSetNICList    = "virtualMachineScaleSets.virtualMachines.networkInterfaces.list"
	MScaleSetNICGet     = "virtualMachineScaleSets.virtualMachines.networkInterfaces.get"
)

// scaleSetNICAPIVersions are the api-versions the simulator serves on the scale-set NIC read
// path: the one armnetwork/v7 calls it at, 2018-10-01 (the version of the swagger it is
// generated from for these operations), while its networkInterfaces calls use 2025-01-01.
// docs/azure.md ("Simulator") says what is not known of the versions Azure serves there.
var scaleSetNICAPIVersions = []string{"2018-10-01"}

// ScaleSetSeed describes a Uniform scale set: each instance gets one NIC named after the
// scale set's network interface configuration (<scale set>-nic, as AKS names it
// <pool>-vmss), with one Dynamic primary ipConfiguration.
type ScaleSetSeed struct {
	ResourceGroup string `json:"resourceGroup"`
	Name          string `json:"name"`
	// Subnet is the subnet's resource ID.
	Subnet    string                 `json:"subnet"`
	Instances []ScaleSetInstanceSeed `json:"instances"`
}

// ScaleSetInstanceSeed is one instance of a scale set.
type ScaleSetInstanceSeed struct {
	// ID is the instance ID ("0", "1", ...).
	ID        string `json:"id"`
	PrimaryIP string `json:"primaryIP"`
}

// ScaleSetVMID returns a scale-set instance's resource ID (what the node's providerID names).
func (s *Sim) ScaleSetVMID(rg, vmss, instance string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines/%s", s.sub, rg, vmss, instance)
}

// ScaleSetNICID returns the resource ID of a scale-set instance's NIC.
func (s *Sim) ScaleSetNICID(rg, vmss, instance, nic string) string {
	return s.ScaleSetVMID(rg, vmss, instance) + "/networkInterfaces/" + nic
}

// AddScaleSet seeds a Uniform scale set and its instances' NICs.
func (s *Sim) AddScaleSet(ss ScaleSetSeed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nicName := ss.Name + "-nic"
	// The scale set's model, as AKS writes it: one NIC configuration, one primary
	// ipConfiguration in the pool's subnet, no address.
	model := []any{map[string]any{"name": nicName, "properties": map[string]any{
		"primary": true, "enableIPForwarding": true,
		"ipConfigurations": []any{map[string]any{"name": "ipconfig1", "properties": map[string]any{
			"primary": true, "privateIPAddressVersion": "IPv4", "subnet": map[string]any{"id": ss.Subnet},
		}}},
	}}}
	ssID := fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s", s.sub, ss.ResourceGroup, ss.Name)
	s.scaleSetModels[strings.ToLower(ssID)] = &scaleSetModel{nics: model}
	for _, in := range ss.Instances {
		s.addInstanceLocked(ss, in, model)
		id := s.ScaleSetNICID(ss.ResourceGroup, ss.Name, in.ID, nicName)
		doc := map[string]any{
			"name": nicName, "id": id, "location": s.location, "type": "Microsoft.Network/networkInterfaces",
			"properties": map[string]any{
				"ipConfigurations": []any{map[string]any{"name": "ipconfig1", "properties": map[string]any{
					"primary": true, "privateIPAddress": in.PrimaryIP, "privateIPAllocationMethod": "Dynamic",
					"privateIPAddressVersion": "IPv4", "subnet": map[string]any{"id": ss.Subnet},
				}}},
				"macAddress":     fmt.Sprintf("00-0D-3A-01-00-%02X", len(s.scaleSetNICs)+1),
				"primary":        true,
				"virtualMachine": map[string]any{"id": s.ScaleSetVMID(ss.ResourceGroup, ss.Name, in.ID)},
			},
		}
		s.finishNICLocked(doc, "Succeeded")
		s.stampLocked(doc)
		s.scaleSetNICs[strings.ToLower(id)] = doc
	}
	s.rgs[strings.ToLower(ss.ResourceGroup)] = true
}

// routeScaleSet routes the scale-set NIC read path (lp: the lower-cased path segments), where
// only GET is routed: the network resource provider does not write these NICs; and the compute
// API's instance GET and PUT (compute.go).
func (s *Sim) routeScaleSet(method string, lp []string) (string, handler) {
	n := len(lp)
	if n == 10 && lp[2] == "resourcegroups" && lp[4] == "providers" && lp[5] == "microsoft.compute" &&
		lp[6] == "virtualmachinescalesets" && lp[8] == "virtualmachines" {
		switch method {
		case http.MethodGet:
			return MInstanceGet, s.getInstance
		case http.MethodPut:
			return MInstancePut, s.putInstance
		}
		return "", nil
	}
	if n == 9 && lp[2] == "resourcegroups" && lp[4] == "providers" && lp[5] == "microsoft.compute" &&
		lp[6] == "virtualmachinescalesets" && lp[8] == "networkinterfaces" && method == http.MethodGet {
		return MScaleSetNICListAll, s.listAllScaleSetNICs
	}
	if n < 11 || lp[2] != "resourcegroups" || lp[4] != "providers" || lp[5] != "microsoft.compute" ||
		lp[6] != "virtualmachinescalesets" || lp[8] != "virtualmachines" || lp[10] != "networkinterfaces" || method != http.MethodGet {
		return "", nil
	}
	switch n {
	case 11:
		return MScaleSetNICList, s.listScaleSetNICs
	case 12:
		return MScaleSetNICGet, s.getScaleSetNIC
	case 16:
		if lp[12] == "ipconfigurations" && lp[14] == "publicipaddresses" {
			return MScaleSetPIPGet, s.getScaleSetPIP
		}
	}
	return "", nil
}

func (s *Sim) listScaleSetNICs(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	if e := s.scaleSetVMExists(parts); e != nil {
		return nil, e
	}
	return s.list(r, parts, s.scaleSetNICs, clone)
}

// listAllScaleSetNICs answers one page of the NICs of every instance of the path's scale set
// (paged as every list, SetPageSize), ResourceNotFound naming the scale set when it has none.
func (s *Sim) listAllScaleSetNICs(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	if !s.rgs[strings.ToLower(parts[3])] {
		return nil, aerr(http.StatusNotFound, "ResourceGroupNotFound", "Resource group '%s' could not be found.", parts[3])
	}
	prefix := strings.ToLower(resID(parts[:8])) + "/virtualmachines/"
	var keys []string
	for _, k := range slices.Sorted(maps.Keys(s.scaleSetNICs)) {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, aerr(http.StatusNotFound, "ResourceNotFound", "The Resource 'Microsoft.Compute/virtualMachineScaleSets/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", parts[7], parts[3])
	}
	from, to, next, e := s.pageOf(r, len(keys))
	if e != nil {
		return nil, e
	}
	out := []any{}
	for _, k := range keys[from:to] {
		out = append(out, clone(s.scaleSetNICs[k]))
	}
	body := map[string]any{"value": out}
	if next != "" {
		body["nextLink"] = next
	}
	return &response{status: 200, body: body}, nil
}

func (s *Sim) getScaleSetNIC(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	if e := s.scaleSetVMExists(parts); e != nil {
		return nil, e
	}
	n := s.scaleSetNICs[strings.ToLower(resID(parts))]
	if n == nil {
		return nil, aerr(http.StatusNotFound, "NotFound", "Resource %s not found.", resID(parts))
	}
	return &response{status: 200, body: n, headers: map[string]string{"ETag": str(n["etag"])}}, nil
}

// scaleSetVMExists answers ResourceGroupNotFound, or ResourceNotFound naming the scale set's
// instance, when the path's instance has no NIC.
func (s *Sim) scaleSetVMExists(parts []string) *armError {
	if !s.rgs[strings.ToLower(parts[3])] {
		return aerr(http.StatusNotFound, "ResourceGroupNotFound", "Resource group '%s' could not be found.", parts[3])
	}
	prefix := strings.ToLower(resID(parts[:10])) + "/networkinterfaces/"
	for k := range s.scaleSetNICs {
		if strings.HasPrefix(k, prefix) {
			return nil
		}
	}
	return aerr(http.StatusNotFound, "ResourceNotFound", "The Resource 'Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", parts[7], parts[9], parts[3])
}
