package azuresim

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// The compute API of Uniform scale-set instances, and the public IP prefixes their public
// addresses come from. An instance's document (virtualMachineScaleSets/{vmss}/virtualMachines/{i})
// carries its own model, networkProfileConfiguration: NIC configurations whose
// ipConfigurations name a subnet but no address, and may ask for a public IP drawn from a
// prefix (publicIPAddressConfiguration.publicIPPrefix). A PUT of the document is a
// long-running operation (Azure-AsyncOperation under Microsoft.Compute); while it runs the
// instance shows provisioningState Updating and the network resource provider's read path
// still shows the NIC as it was. When it completes the NIC is rebuilt from the model: an
// ipConfiguration already there keeps its addresses, a new one gets the lowest free address of
// its subnet (Dynamic) and, with a publicIPAddressConfiguration, the lowest free address of
// its prefix as a public IP of the instance (readable under the NIC's path, not a
// publicIPAddresses resource of the resource group); a removed one gives both back.
//
// UpgradeInstance is what an AKS node image upgrade does to an instance: its model becomes
// the scale set's again (latestModelApplied true), dropping every per-instance change.

// Method names of the compute API and of public IP prefixes.
const (
	MInstanceGet      = "virtualMachineScaleSets.virtualMachines.get"
	MInstancePut      = "virtualMachineScaleSets.virtualMachines.put"
	MComputeOperation = "compute.operations.get"
	MScaleSetPIPGet   = "virtualMachineScaleSets.virtualMachines.networkInterfaces.ipConfigurations.publicIPAddresses.get"
	MPrefixGet        = "publicIPPrefixes.get"
	MPrefixPut        = "publicIPPrefixes.put"
	MPrefixDelete     = "publicIPPrefixes.delete"
	MPrefixList       = "publicIPPrefixes.list"
)

// computeAPIVersions are the api-versions the simulator serves for scale-set instances and
// Microsoft.Compute operations: armcompute/v7's 2025-04-01 and the stable ones before it.
var computeAPIVersions = []string{"2024-03-01", "2024-07-01", "2024-11-01", "2025-02-01", "2025-04-01"}

const (
	instanceType         = "virtualMachineScaleSets/virtualMachines"
	computeOperationType = "locations/operations (Microsoft.Compute)"
)

func isCompute(method string) bool {
	return method == MInstanceGet || method == MInstancePut || method == MComputeOperation
}

// Prefix lengths Azure allows for IPv4 public IP prefixes: /28 (16 addresses) to /31 (2).
const minPrefixLength, maxPrefixLength = 28, 31

// scaleSetModel is a scale set's own model, what UpgradeInstance gives an instance back.
type scaleSetModel struct {
	nics []any // networkInterfaceConfigurations
}

// ScaleSetInstanceID returns the resource ID of a Uniform scale-set instance's public IP.
func (s *Sim) ScaleSetPublicIPID(rg, vmss, instance, nic, ipConfig, name string) string {
	return s.ScaleSetNICID(rg, vmss, instance, nic) + "/ipConfigurations/" + ipConfig + "/publicIPAddresses/" + name
}

// addInstanceLocked stores a seeded instance's compute document with the scale set's model.
func (s *Sim) addInstanceLocked(ss ScaleSetSeed, in ScaleSetInstanceSeed, model []any) {
	id := s.ScaleSetVMID(ss.ResourceGroup, ss.Name, in.ID)
	doc := map[string]any{
		"name": ss.Name + "_" + in.ID, "id": id, "instanceId": in.ID, "location": s.location,
		"type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
		"properties": map[string]any{
			"latestModelApplied": true, "provisioningState": "Succeeded",
			"networkProfileConfiguration": map[string]any{"networkInterfaceConfigurations": cloneList(model)},
		},
	}
	s.stampComputeLocked(doc)
	s.instances[strings.ToLower(id)] = doc
}

func cloneList(l []any) []any {
	out := clone(map[string]any{"l": l})["l"]
	v, _ := out.([]any)
	return v
}

// stampComputeLocked gives a compute document a new etag. The compute API's etags are quoted
// integers ("\"3\""), not the network resource provider's weak GUIDs.
func (s *Sim) stampComputeLocked(doc map[string]any) {
	s.etagSeq++
	doc["etag"] = fmt.Sprintf("%q", fmt.Sprint(s.etagSeq))
}

// instanceOf returns the instance document of a path (its first 10 segments) or the 404 to
// answer.
func (s *Sim) instanceOf(parts []string) (map[string]any, *armError) {
	if !s.rgs[strings.ToLower(parts[3])] {
		return nil, aerr(http.StatusNotFound, "ResourceGroupNotFound", "Resource group '%s' could not be found.", parts[3])
	}
	d := s.instances[strings.ToLower(resID(parts[:10]))]
	if d == nil {
		return nil, aerr(http.StatusNotFound, "ResourceNotFound", "The Resource 'Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", parts[7], parts[9], parts[3])
	}
	return d, nil
}

func (s *Sim) getInstance(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	d, e := s.instanceOf(parts)
	if e != nil {
		return nil, e
	}
	return &response{status: 200, body: d, headers: map[string]string{"ETag": str(d["etag"])}}, nil
}

func nicConfigs(doc map[string]any) []map[string]any {
	raw, _ := mapOf(props(doc)["networkProfileConfiguration"])["networkInterfaceConfigurations"].([]any)
	var out []map[string]any
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// putInstance updates an instance: the body's top-level members and properties replace the
// stored ones, what it leaves out is kept (clients send partial bodies: cloud-provider-azure
// the location, SKU, hardware and network profiles; the REST reference does not say how
// Azure merges). The network profile is validated now and applied to the NIC when the
// operation completes. Read-only properties (latestModelApplied, provisioningState,
// instanceView...) come from the server whatever the body says.
func (s *Sim) putInstance(r *http.Request, parts []string, body []byte) (*response, *armError) {
	old, e := s.instanceOf(parts)
	if e != nil {
		return nil, e
	}
	key := strings.ToLower(str(old["id"]))
	if op := s.busy[key]; op.running() {
		return nil, inProgress(op)
	}
	if e := precondition(r, old, str(old["id"])); e != nil {
		return nil, e
	}
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, aerr(http.StatusBadRequest, "InvalidRequestFormat", "%v", err)
	}
	doc := clone(old)
	for k, v := range in {
		if k != "properties" {
			doc[k] = v
		}
	}
	for k, v := range mapOf(in["properties"]) {
		props(doc)[k] = v
	}
	for _, k := range []string{"id", "name", "type", "instanceId", "location", "etag"} {
		doc[k] = old[k]
	}
	np := props(doc)
	for _, k := range []string{"latestModelApplied", "instanceView", "vmId"} {
		if v, ok := props(old)[k]; ok {
			np[k] = v
		} else {
			delete(np, k)
		}
	}
	nic, pending, e := s.planNICLocked(parts, doc)
	if e != nil {
		return nil, e
	}
	np["provisioningState"] = "Updating"
	s.stampComputeLocked(doc)
	s.instances[key] = doc
	for k, p := range pending {
		s.ssPIPs[k] = p
	}
	s.pendingNICs[key] = nic
	nicKey := strings.ToLower(str(nic["id"]))
	_, h := s.newOpIn("Microsoft.Compute", computeAPIVersions, r, MInstancePut, key, func(fail *OpFailure) *OpFailure {
		delete(s.pendingNICs, key)
		if fail != nil {
			back := clone(old)
			if fail.KeepContent {
				back = doc
			}
			props(back)["provisioningState"] = "Failed"
			s.stampComputeLocked(back)
			s.instances[key] = back
			for k := range pending {
				delete(s.ssPIPs, k)
			}
			return fail
		}
		props(doc)["provisioningState"] = "Succeeded"
		s.replaceScaleSetNICLocked(nicKey, nic)
		return nil
	})
	return &response{status: 200, body: doc, headers: h}, nil
}

// planNICLocked validates the model of doc (an instance of the path's scale set) and builds
// the NIC it makes, allocating new ipConfigurations' addresses now (so two operations never
// take one address) and returning the public IPs it creates (lower(id) → document, provisioning).
func (s *Sim) planNICLocked(parts []string, doc map[string]any) (map[string]any, map[string]map[string]any, *armError) {
	cfgs := nicConfigs(doc)
	if len(cfgs) != 1 {
		return nil, nil, aerr(http.StatusBadRequest, "InvalidParameter", "The simulator's instances have exactly one network interface configuration; the request has %d.", len(cfgs))
	}
	nc := cfgs[0]
	prefix := strings.ToLower(resID(parts[:10])) + "/networkinterfaces/"
	var nicKey string
	for k := range s.scaleSetNICs {
		if strings.HasPrefix(k, prefix) {
			nicKey = k
		}
	}
	old := s.scaleSetNICs[nicKey]
	if !strings.EqualFold(str(nc["name"]), str(old["name"])) {
		return nil, nil, aerr(http.StatusBadRequest, "InvalidParameter", "Network interface configuration %q is not the instance's (%s); the simulator does not rename it.", str(nc["name"]), str(old["name"]))
	}
	oldCfg := map[string]map[string]any{}
	for _, c := range ipConfigs(old) {
		oldCfg[strings.ToLower(str(c["name"]))] = c
	}
	ipcs, _ := props(nc)["ipConfigurations"].([]any)
	var out []any
	pending := map[string]map[string]any{}
	primaries := 0
	seen := map[string]bool{}
	taken := map[netip.Addr]bool{}
	for _, raw := range ipcs {
		c, _ := raw.(map[string]any)
		name := str(c["name"])
		p := props(c)
		if name == "" || seen[strings.ToLower(name)] {
			return nil, nil, aerr(http.StatusBadRequest, "InvalidParameter", "ipConfiguration names must be set and unique (%q).", name)
		}
		seen[strings.ToLower(name)] = true
		primary, _ := p["primary"].(bool)
		if primary {
			primaries++
		}
		sn := s.subnets[strings.ToLower(str(mapOf(p["subnet"])["id"]))]
		if sn == nil {
			return nil, nil, aerr(http.StatusBadRequest, "InvalidParameter", "Subnet %s referenced by ipConfiguration %s was not found.", str(mapOf(p["subnet"])["id"]), name)
		}
		nicCfg := map[string]any{"name": name, "properties": map[string]any{
			"primary": primary, "privateIPAllocationMethod": "Dynamic", "privateIPAddressVersion": "IPv4",
			"subnet": map[string]any{"id": sn.ID},
		}}
		np := props(nicCfg)
		was := oldCfg[strings.ToLower(name)]
		if was != nil {
			np["privateIPAddress"] = props(was)["privateIPAddress"]
		} else {
			a, ok := s.freePrivateLocked(sn.CIDR, taken)
			if !ok {
				return nil, nil, aerr(http.StatusBadRequest, "SubnetIsFull", "Subnet %s has no free address for ipConfiguration %s.", sn.ID, name)
			}
			taken[a] = true
			np["privateIPAddress"] = a.String()
		}
		if pc := mapOf(p["publicIPAddressConfiguration"]); pc != nil {
			pipName := str(pc["name"])
			if pipName == "" {
				return nil, nil, aerr(http.StatusBadRequest, "InvalidParameter", "publicIPAddressConfiguration of %s has no name.", name)
			}
			pipID := s.ScaleSetPublicIPID(parts[3], parts[7], parts[9], str(old["name"]), name, pipName)
			prefixID := str(mapOf(props(pc)["publicIPPrefix"])["id"])
			var wasPIP map[string]any
			if was != nil {
				wasPIP = mapOf(props(was)["publicIPAddress"])
			}
			if wasPIP != nil && strings.EqualFold(str(wasPIP["id"]), pipID) &&
				strings.EqualFold(str(mapOf(props(s.ssPIPs[strings.ToLower(pipID)])["publicIPPrefix"])["id"]), prefixID) {
				np["publicIPAddress"] = map[string]any{"id": pipID}
			} else {
				pip, e := s.newScaleSetPIPLocked(pipID, prefixID, pending)
				if e != nil {
					return nil, nil, e
				}
				pending[strings.ToLower(pipID)] = pip
				np["publicIPAddress"] = map[string]any{"id": pipID}
			}
		}
		out = append(out, nicCfg)
	}
	if primaries != 1 {
		return nil, nil, aerr(http.StatusBadRequest, "InvalidParameter", "Network interface configuration %s must have exactly one primary ipConfiguration; it has %d.", str(nc["name"]), primaries)
	}
	nic := clone(old)
	props(nic)["ipConfigurations"] = out
	return nic, pending, nil
}

// newScaleSetPIPLocked draws a public IP for id from prefix prefixID: its lowest address that
// no public IP (pending ones included) has.
func (s *Sim) newScaleSetPIPLocked(id, prefixID string, pending map[string]map[string]any) (map[string]any, *armError) {
	pf := s.prefixes[strings.ToLower(prefixID)]
	if pf == nil {
		return nil, aerr(http.StatusBadRequest, "InvalidParameter", "Public IP prefix %s referenced by %s was not found.", prefixID, id)
	}
	if st := str(props(pf)["provisioningState"]); st != "Succeeded" {
		return nil, aerr(http.StatusConflict, "AnotherOperationInProgress", "Public IP prefix %s is %s.", prefixID, st)
	}
	cidr, _ := netip.ParsePrefix(str(props(pf)["ipPrefix"]))
	used := map[string]bool{}
	for _, p := range s.ssPIPs {
		used[str(props(p)["ipAddress"])] = true
	}
	for _, p := range pending {
		used[str(props(p)["ipAddress"])] = true
	}
	for a := cidr.Addr(); cidr.Contains(a); a = a.Next() {
		if !used[a.String()] {
			return map[string]any{"id": id, "name": id[strings.LastIndex(id, "/")+1:], "location": s.location,
				"sku": map[string]any{"name": "Standard", "tier": "Regional"},
				"properties": map[string]any{"ipAddress": a.String(), "publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4",
					"publicIPPrefix": map[string]any{"id": str(pf["id"])}, "ipConfiguration": map[string]any{"id": id[:strings.LastIndex(strings.ToLower(id), "/publicipaddresses/")]},
					"provisioningState": "Succeeded"}}, nil
		}
	}
	// The compute API's code for this is not documented; docs/testbed.md says so.
	return nil, aerr(http.StatusBadRequest, "PublicIPPrefixOutOfIpAddressesForVMScaleSet", "Public IP prefix %s has no free address for %s.", prefixID, id)
}

// freePrivateLocked returns the lowest address of cidr no NIC (standalone or scale-set) uses,
// past Azure's reserved first four and the broadcast address, and not in taken.
func (s *Sim) freePrivateLocked(cidr netip.Prefix, taken map[netip.Addr]bool) (netip.Addr, bool) {
	used := map[string]bool{}
	for _, docs := range []map[string]map[string]any{s.nics, s.scaleSetNICs} {
		for _, n := range docs {
			for _, c := range ipConfigs(n) {
				used[str(props(c)["privateIPAddress"])] = true
			}
		}
	}
	for _, op := range s.pendingNICs {
		for _, c := range ipConfigs(op) {
			used[str(props(c)["privateIPAddress"])] = true
		}
	}
	a := cidr.Masked().Addr().Next().Next().Next().Next()
	for ; cidr.Contains(a) && cidr.Contains(a.Next()); a = a.Next() {
		if !used[a.String()] && !taken[a] {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// replaceScaleSetNICLocked makes nic the instance NIC's content and releases the public IPs
// its ipConfigurations no longer reference.
func (s *Sim) replaceScaleSetNICLocked(key string, nic map[string]any) {
	old := s.scaleSetNICs[key]
	keep := map[string]bool{}
	for _, c := range ipConfigs(nic) {
		if pip := mapOf(props(c)["publicIPAddress"]); pip != nil {
			keep[strings.ToLower(str(pip["id"]))] = true
		}
	}
	s.finishNICLocked(nic, "Succeeded")
	s.stampLocked(nic)
	s.scaleSetNICs[key] = nic
	s.diffEvents(str(nic["name"]), old, nic)
	for _, c := range ipConfigs(old) {
		if pip := mapOf(props(c)["publicIPAddress"]); pip != nil && !keep[strings.ToLower(str(pip["id"]))] {
			delete(s.ssPIPs, strings.ToLower(str(pip["id"])))
		}
	}
}

func (s *Sim) getScaleSetPIP(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	if e := s.scaleSetVMExists(parts); e != nil {
		return nil, e
	}
	p := s.ssPIPs[strings.ToLower(resID(parts))]
	if p == nil {
		return nil, aerr(http.StatusNotFound, "NotFound", "Resource %s not found.", resID(parts))
	}
	return &response{status: 200, body: p}, nil
}

// UpgradeInstance does what an AKS upgrade (node image, a scale-set model change rolled out)
// does to an instance: its model becomes the scale set's, dropping every per-instance
// ipConfiguration and giving their addresses and public IPs back, and latestModelApplied is
// true. It fails while an operation on the instance runs.
func (s *Sim) UpgradeInstance(instanceID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	key := strings.ToLower(instanceID)
	d := s.instances[key]
	if d == nil {
		return fmt.Errorf("upgrading %s: no such instance", instanceID)
	}
	if op := s.busy[key]; op.running() {
		return fmt.Errorf("upgrading %s: operation %s is in progress", instanceID, op.id)
	}
	ss := s.scaleSetModels[strings.ToLower(instanceID[:strings.LastIndex(strings.ToLower(instanceID), "/virtualmachines/")])]
	mapOf(props(d)["networkProfileConfiguration"])["networkInterfaceConfigurations"] = cloneList(ss.nics)
	props(d)["latestModelApplied"] = true
	s.stampComputeLocked(d)
	for k, nic := range s.scaleSetNICs {
		if !strings.HasPrefix(k, key+"/networkinterfaces/") {
			continue
		}
		n := clone(nic)
		var keep []any
		for _, c := range ipConfigs(n) {
			if b, _ := props(c)["primary"].(bool); b {
				keep = append(keep, c)
			}
		}
		props(n)["ipConfigurations"] = keep
		s.replaceScaleSetNICLocked(k, n)
	}
	return nil
}

// ChangeScaleSetModel marks every instance of a scale set as not running its latest model
// (latestModelApplied false), as a change of the scale set's model does until the instances
// are upgraded (UpgradeInstance).
func (s *Sim) ChangeScaleSetModel(rg, vmss string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := strings.ToLower(fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines/", s.sub, rg, vmss))
	for k, d := range s.instances {
		if strings.HasPrefix(k, prefix) {
			props(d)["latestModelApplied"] = false
		}
	}
}

// InstanceUpgrade is what POST /admin/upgradeinstance accepts.
type InstanceUpgrade struct {
	// Instance is the scale-set instance's resource ID.
	Instance string `json:"instance"`
}

func (s *Sim) serveUpgradeInstance(w http.ResponseWriter, r *http.Request) {
	var u InstanceUpgrade
	if err := json.NewDecoder(r.Body).Decode(&u); err != nil || u.Instance == "" {
		http.Error(w, "want {\"instance\": \"<scale-set instance resource ID>\"}", http.StatusBadRequest)
		return
	}
	if err := s.UpgradeInstance(u.Instance); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}

// ---- public IP prefixes ----

func (s *Sim) prefixView(p map[string]any) map[string]any {
	out := clone(p)
	id := str(p["id"])
	var refs []any
	for _, k := range slices.Sorted(maps.Keys(s.ssPIPs)) {
		if strings.EqualFold(str(mapOf(props(s.ssPIPs[k])["publicIPPrefix"])["id"]), id) {
			refs = append(refs, map[string]any{"id": str(s.ssPIPs[k]["id"])})
		}
	}
	if refs != nil {
		props(out)["publicIPAddresses"] = refs
	}
	return out
}

func (s *Sim) listPrefixes(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	return s.list(r, parts, s.prefixes, s.prefixView)
}

func (s *Sim) getPrefix(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	return s.getDoc(parts, s.prefixes, s.prefixView)
}

// putPrefix creates a Standard IPv4 prefix of /28 to /31, or updates an existing one's tags
// (its length and range never change).
func (s *Sim) putPrefix(r *http.Request, parts []string, body []byte) (*response, *armError) {
	old, doc, e := s.readPut(r, parts, body, s.prefixes, "Microsoft.Network/publicIPPrefixes")
	if e != nil {
		return nil, e
	}
	id := str(doc["id"])
	if str(mapOf(doc["sku"])["name"]) != "Standard" {
		return nil, aerr(http.StatusBadRequest, "InvalidRequestFormat", "Public IP prefix %s: sku.name must be Standard.", id)
	}
	p := props(doc)
	delete(p, "publicIPAddresses")
	if old != nil {
		p["prefixLength"], p["ipPrefix"] = props(old)["prefixLength"], props(old)["ipPrefix"]
	} else {
		length, _ := p["prefixLength"].(float64)
		if length < minPrefixLength || length > maxPrefixLength || length != float64(int(length)) {
			return nil, aerr(http.StatusBadRequest, "InvalidPublicIpPrefixLength", "Public IP prefix %s: prefixLength %v is not between %d and %d.", id, p["prefixLength"], minPrefixLength, maxPrefixLength)
		}
		size := 1 << (32 - int(length))
		s.nextPrefix = (s.nextPrefix + size - 1) / size * size
		a := netip.AddrFrom4([4]byte{20, 60 + byte(s.nextPrefix>>16), byte(s.nextPrefix >> 8), byte(s.nextPrefix)})
		s.nextPrefix += size
		p["ipPrefix"] = netip.PrefixFrom(a, int(length)).String()
		p["publicIPAddressVersion"] = "IPv4"
	}
	h, status := s.storePutLocked(r, MPrefixPut, strings.ToLower(id), s.prefixes, old, doc)
	return &response{status: status, body: s.prefixView(doc), headers: h}, nil
}

// deletePrefix deletes a prefix no public IP is drawn from; one in use answers
// InUsePublicIpPrefixCannotBeDeleted, as ARM does.
func (s *Sim) deletePrefix(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	return s.deleteDoc(r, parts, MPrefixDelete, s.prefixes, func(old map[string]any) *armError {
		if refs, _ := props(s.prefixView(old))["publicIPAddresses"].([]any); len(refs) > 0 {
			return aerr(http.StatusBadRequest, "InUsePublicIpPrefixCannotBeDeleted", "Public IP prefix %s cannot be deleted: %d public IP addresses are allocated from it.", resID(parts), len(refs))
		}
		return nil
	})
}

// ---- inspection ----

// ScaleSetIPConfig is one ipConfiguration of a scale-set instance's NIC, as the network
// resource provider shows it.
type ScaleSetIPConfig struct {
	Instance  string `json:"instance"` // the instance's resource ID
	Name      string `json:"name"`
	PrivateIP string `json:"privateIP"`
	PublicIP  string `json:"publicIP,omitempty"`
	Prefix    string `json:"prefix,omitempty"` // the prefix the public IP is drawn from
}

// ScaleSetIPConfigs returns the non-primary ipConfigurations of every scale-set instance.
func (s *Sim) ScaleSetIPConfigs() []ScaleSetIPConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	var out []ScaleSetIPConfig
	for _, k := range slices.Sorted(maps.Keys(s.scaleSetNICs)) {
		n := s.scaleSetNICs[k]
		inst := str(mapOf(props(n)["virtualMachine"])["id"])
		for _, c := range ipConfigs(n) {
			p := props(c)
			if b, _ := p["primary"].(bool); b {
				continue
			}
			ic := ScaleSetIPConfig{Instance: inst, Name: str(c["name"]), PrivateIP: str(p["privateIPAddress"])}
			if pip := s.ssPIPs[strings.ToLower(str(mapOf(p["publicIPAddress"])["id"]))]; pip != nil {
				ic.PublicIP = str(props(pip)["ipAddress"])
				ic.Prefix = str(mapOf(props(pip)["publicIPPrefix"])["id"])
			}
			out = append(out, ic)
		}
	}
	return out
}

// Prefixes returns the public IP prefixes by resource ID, with their range.
func (s *Sim) Prefixes() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	out := map[string]string{}
	for _, p := range s.prefixes {
		out[str(p["id"])] = str(props(p)["ipPrefix"])
	}
	return out
}

// InstanceModel returns an instance's compute document as stored.
func (s *Sim) InstanceModel(instanceID string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	return clone(s.instances[strings.ToLower(instanceID)])
}

// ChangeInstance changes an instance's document as another writer would (an operator, AKS
// itself): a new etag, no operation.
func (s *Sim) ChangeInstance(instanceID string, change func(doc map[string]any)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	d := s.instances[strings.ToLower(instanceID)]
	change(d)
	s.stampComputeLocked(d)
}
