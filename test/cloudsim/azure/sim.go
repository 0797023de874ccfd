// Package azuresim is an in-process Azure Resource Manager simulator for the Microsoft.Network
// subset egressd's Azure provider calls (network interfaces get/put/list, public IP addresses
// get/put/delete/list, subnets get) with long-running operations (Azure-AsyncOperation for
// PUT, Location for DELETE, Retry-After), plus the Instance Metadata Service.
//
// Network interfaces are stored as the JSON documents clients PUT, so everything a client does
// not understand (load-balancer backend pools, application security groups...) survives only
// if the client sends it back, as on the real API. The simulator validates private addresses
// (inside the subnet, unique in the virtual network), the per-NIC ipConfiguration limit, public
// IP association (one ipConfiguration per public IP) and exactly one primary ipConfiguration.
//
// As strict as ARM where egressd depends on it (docs/testbed.md, "Azure", gives each rule's
// reference): every NIC and public IP carries an etag that changes on every write, also on
// writes by another actor (ChangeNIC); PUT honours If-Match and If-None-Match (412
// PreconditionFailed); a write while the resource's previous operation runs answers 409
// AnotherOperationInProgress; a resource shows provisioningState Updating while its operation
// runs, and Failed (with its previous content) when the operation failed; lists page with
// nextLink (SetPageSize); api-version is validated; unknown resources answer ResourceNotFound,
// ResourceGroupNotFound or, for a subnet, NotFound, in ARM's {"error":{"code","message"}} body.
//
// Throttling: ARM's token buckets per request class (reads, writes, deletes; SetRateLimit),
// answering 429 SubscriptionRequestsThrottled with Retry-After and the
// x-ms-ratelimit-remaining-subscription-* headers.
//
// Faults: latency, per-method 429 with Retry-After, scripted 5xx (also after the change was
// applied), failed long-running operations, a function run between two calls (BeforeNext).
// It imports no Azure SDK.
package azuresim

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// Method names for counters and faults.
const (
	MNICGet    = "networkInterfaces.get"
	MNICPut    = "networkInterfaces.put"
	MNICList   = "networkInterfaces.list"
	MPIPGet    = "publicIPAddresses.get"
	MPIPPut    = "publicIPAddresses.put"
	MPIPDelete = "publicIPAddresses.delete"
	MPIPList   = "publicIPAddresses.list"
	MSubnetGet = "subnets.get"
	MOperation = "operations.get"
	MIMDS      = "imds"
)

// Event records when a change became effective (a long-running operation completed).
type Event struct {
	At   time.Time
	NIC  string // NIC name
	IP   string
	Kind string // "ip+", "ip-", "pip+", "pip-"
}

// Sim is the simulator.
//
// Its counters (Calls, CallCounts, ResetCalls) are per method name (the M constants).
type Sim struct {
	simkit.Counters
	simkit.Latency
	// Timed: a write's call latency, and its operation's duration drawn from the profile's
	// propagation (SetOperationDelay adds to it).
	simkit.Timed
	mu       sync.Mutex
	sub      string
	location string
	subnets  map[string]*subnet // lower(id)
	nics     map[string]map[string]any
	maxIPCfg map[string]int
	pips     map[string]map[string]any
	ops      map[string]*operation
	started  simkit.Ops[OpFailure]
	seq      int
	events   []Event
	imds     IMDSSeed
	nextPub  int

	// scaleSetNICs are the NICs of Uniform scale-set instances (vmss.go), lower(id) → document.
	scaleSetNICs map[string]map[string]any
	// instances are the compute documents of Uniform scale-set instances (compute.go), lower(id)
	// → document; scaleSetModels the scale sets' own models, lower(scale set ID) → model.
	instances      map[string]map[string]any
	scaleSetModels map[string]*scaleSetModel
	// pendingNICs are the NICs instance operations will write, lower(instance ID) → NIC: their
	// new addresses are taken.
	pendingNICs map[string]map[string]any
	// ssPIPs are the scale-set instances' public IPs, lower(id) → document; prefixes the public
	// IP prefixes, lower(id) → document; nextPrefix the offset of the next prefix's range.
	ssPIPs     map[string]map[string]any
	prefixes   map[string]map[string]any
	nextPrefix int

	rgs      map[string]bool // lower(resource group name)
	parents  map[string]bool // lower(virtual network ID), the parents of subnets
	busy     map[string]*operation
	etagSeq  int
	pageSize int

	opDelay    time.Duration
	retryAfter string // Retry-After value on LRO responses
	throttle   simkit.Queue[throttleFault]
	scripted   simkit.Queue[scriptedFault]
	failOps    simkit.Queue[OpFailure]
	throttleN  int // requests left to throttle on every method; < 0: all
	throttleRA string
	buckets    map[string]*armBucket // ARM throttling per request class (ratelimit.go)
	nrp        map[string]*rpWindow  // the network RP's own limits per class (ratelimit.go)
	before     simkit.Queue[func()]
}

type subnet struct {
	ID   string
	CIDR netip.Prefix
}

type operation struct {
	id  string
	url string // its Azure-AsyncOperation URL
	simkit.Op[OpFailure]
}

// running reports whether op has not completed (nil: none).
func (op *operation) running() bool { return op != nil && !op.Done }

type throttleFault struct{ retryAfter string }

type scriptedFault struct {
	status     int
	afterApply bool
}

// OpFailure makes a long-running operation end Failed.
type OpFailure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// KeepContent leaves the resource with the failed write's content (provisioningState
	// Failed) instead of its previous content. The ARM resource provider contract does not say
	// which a resource provider keeps; clients must handle both.
	KeepContent bool `json:"keepContent,omitempty"`
}

// New returns a simulator for one subscription.
func New(subscription, location string) *Sim {
	return &Sim{
		sub: subscription, location: location,
		subnets: map[string]*subnet{}, nics: map[string]map[string]any{}, maxIPCfg: map[string]int{},
		pips: map[string]map[string]any{}, ops: map[string]*operation{},
		rgs: map[string]bool{}, parents: map[string]bool{}, busy: map[string]*operation{},
		scaleSetNICs: map[string]map[string]any{}, instances: map[string]map[string]any{}, scaleSetModels: map[string]*scaleSetModel{},
		pendingNICs: map[string]map[string]any{}, ssPIPs: map[string]map[string]any{}, prefixes: map[string]map[string]any{},
		throttle: simkit.Queue[throttleFault]{}, scripted: simkit.Queue[scriptedFault]{}, failOps: simkit.Queue[OpFailure]{},
		before: simkit.Queue[func()]{},
	}
}

// ---- seeding ----

// SubnetSeed describes a subnet.
type SubnetSeed struct {
	ResourceGroup string `json:"resourceGroup"`
	VNet          string `json:"vnet"`
	Name          string `json:"name"`
	CIDR          string `json:"cidr"`
}

// VMSeed describes a VM with one NIC (named <vm>-nic).
type VMSeed struct {
	ResourceGroup string `json:"resourceGroup"`
	Name          string `json:"name"`
	// Subnet is the subnet's resource ID.
	Subnet    string `json:"subnet"`
	PrimaryIP string `json:"primaryIP"`
	// BackendPools and ASGs are resource IDs put on the primary ipConfiguration.
	BackendPools []string `json:"backendPools,omitempty"`
	ASGs         []string `json:"asgs,omitempty"`
	// MaxIPConfigurations per NIC; 0 means 256.
	MaxIPConfigurations int `json:"maxIPConfigurations,omitempty"`
}

// IMDSSeed is what IMDS answers.
type IMDSSeed struct {
	SubscriptionID    string `json:"subscriptionId"`
	ResourceGroupName string `json:"resourceGroupName"`
	Location          string `json:"location"`
	Name              string `json:"name"`
}

// SubnetID returns a subnet's resource ID.
func (s *Sim) SubnetID(rg, vnet, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/virtualNetworks/%s/subnets/%s", s.sub, rg, vnet, name)
}

// NICID returns a NIC's resource ID.
func (s *Sim) NICID(rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/networkInterfaces/%s", s.sub, rg, name)
}

// VMID returns a VM's resource ID.
func (s *Sim) VMID(rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", s.sub, rg, name)
}

// AddSubnet seeds a subnet.
func (s *Sim) AddSubnet(sn SubnetSeed) error {
	cidr, err := netip.ParsePrefix(sn.CIDR)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.SubnetID(sn.ResourceGroup, sn.VNet, sn.Name)
	s.subnets[strings.ToLower(id)] = &subnet{ID: id, CIDR: cidr}
	s.rgs[strings.ToLower(sn.ResourceGroup)] = true
	s.parents[strings.ToLower(id[:strings.LastIndex(id, "/subnets/")])] = true
	return nil
}

// AddVM seeds a VM and its NIC.
func (s *Sim) AddVM(vm VMSeed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nicName := vm.Name + "-nic"
	id := s.NICID(vm.ResourceGroup, nicName)
	refs := func(ids []string) []any {
		out := []any{}
		for _, i := range ids {
			out = append(out, map[string]any{"id": i})
		}
		return out
	}
	props := map[string]any{
		"primary":                   true,
		"privateIPAddress":          vm.PrimaryIP,
		"privateIPAllocationMethod": "Dynamic",
		"privateIPAddressVersion":   "IPv4",
		"subnet":                    map[string]any{"id": vm.Subnet},
	}
	if len(vm.BackendPools) > 0 {
		props["loadBalancerBackendAddressPools"] = refs(vm.BackendPools)
	}
	if len(vm.ASGs) > 0 {
		props["applicationSecurityGroups"] = refs(vm.ASGs)
	}
	s.nics[strings.ToLower(id)] = map[string]any{
		"name": nicName, "id": id, "location": s.location, "type": "Microsoft.Network/networkInterfaces",
		"properties": map[string]any{
			"ipConfigurations": []any{map[string]any{"name": "ipconfig1", "id": id + "/ipConfigurations/ipconfig1", "properties": props}},
			"macAddress":       fmt.Sprintf("00-0D-3A-00-00-%02X", len(s.nics)+1),
			"primary":          true,
			"virtualMachine":   map[string]any{"id": s.VMID(vm.ResourceGroup, vm.Name)},
		},
	}
	mx := vm.MaxIPConfigurations
	if mx == 0 {
		mx = 256
	}
	s.maxIPCfg[strings.ToLower(id)] = mx
	s.rgs[strings.ToLower(vm.ResourceGroup)] = true
	s.finishNICLocked(s.nics[strings.ToLower(id)], "Succeeded")
	s.stampLocked(s.nics[strings.ToLower(id)])
}

// SetIMDS sets what IMDS answers.
func (s *Sim) SetIMDS(m IMDSSeed) { s.mu.Lock(); s.imds = m; s.mu.Unlock() }

// PutPublicIP creates a public IP directly (foreign resources in tests).
func (s *Sim) PutPublicIP(rg, name, ip string, tags map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/publicIPAddresses/%s", s.sub, rg, name)
	t := map[string]any{}
	for k, v := range tags {
		t[k] = v
	}
	s.pips[strings.ToLower(id)] = map[string]any{"name": name, "id": id, "location": s.location, "tags": t,
		"sku":        map[string]any{"name": "Standard", "tier": "Regional"},
		"properties": map[string]any{"ipAddress": ip, "publicIPAllocationMethod": "Static", "provisioningState": "Succeeded"}}
	s.stampLocked(s.pips[strings.ToLower(id)])
	s.rgs[strings.ToLower(rg)] = true
}

// ---- faults ----

// SetOperationDelay sets how long long-running operations stay InProgress.
func (s *Sim) SetOperationDelay(d time.Duration) { s.mu.Lock(); s.opDelay = d; s.mu.Unlock() }

// SetLRORetryAfter sets the Retry-After header sent with long-running operation responses
// (seconds, as ARM sends it); empty sends none.
func (s *Sim) SetLRORetryAfter(v string) { s.mu.Lock(); s.retryAfter = v; s.mu.Unlock() }

// Throttle makes the next n calls of method answer 429 with Retry-After: retryAfter seconds.
func (s *Sim) Throttle(method string, n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle.Add(method, n, throttleFault{retryAfter: retryAfter})
}

// ThrottleAll makes the next n ARM requests answer 429 with Retry-After: retryAfter; n < 0
// throttles every request until ClearFaults.
func (s *Sim) ThrottleAll(n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttleN, s.throttleRA = n, retryAfter
}

// ClearFaults removes every injected fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.SetLatency(0)
	s.throttleN = 0
	clear(s.throttle)
	clear(s.scripted)
	clear(s.failOps)
	clear(s.before)
}

// BeforeNext runs f before the simulator serves the next call of method (after counting it,
// outside the simulator's lock), so a test can change a resource between a client's read and
// its write, as a concurrent writer would.
func (s *Sim) BeforeNext(method string, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before.Add(method, 1, f)
}

// AddIPConfig adds a secondary ipConfiguration to a NIC directly (foreign resources in tests).
func (s *Sim) AddIPConfig(nicID, name, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nics[strings.ToLower(nicID)]
	prim := ipConfigs(n)[0]
	cfg := map[string]any{"name": name, "properties": map[string]any{
		"primary": false, "privateIPAddress": ip, "privateIPAllocationMethod": "Static",
		"subnet": map[string]any{"id": str(mapOf(props(prim)["subnet"])["id"])},
	}}
	props(n)["ipConfigurations"] = append(props(n)["ipConfigurations"].([]any), cfg)
	s.finishNICLocked(n, "Succeeded")
	s.stampLocked(n)
}

// ChangeNIC changes a NIC as another writer would (cloud-provider-azure adding the node to a
// load-balancer pool, an operator): a PUT of the NIC as stored with change applied. The NIC
// gets a new etag and, while its operation runs (SetOperationDelay), shows Updating; a
// FailNextOperation(MNICPut) fault fails that operation. Like such a PUT it fails while the
// NIC's previous operation runs. It applies none of the PUT's validation.
func (s *Sim) ChangeNIC(nicID string, change func(nic map[string]any)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	key := strings.ToLower(nicID)
	old := s.nics[key]
	if old == nil {
		return fmt.Errorf("changing NIC %s: no such NIC", nicID)
	}
	if op := s.busy[key]; op.running() {
		return fmt.Errorf("changing NIC %s: operation %s is in progress", nicID, op.id)
	}
	doc := clone(old)
	change(doc)
	s.writeNICLocked(nil, key, old, doc)
	return nil
}

// AddBackendPool puts the NIC's primary ipConfiguration into load-balancer backend pools, as
// cloud-provider-azure does, in one write (ChangeNIC).
func (s *Sim) AddBackendPool(nicID string, poolIDs ...string) error {
	return s.ChangeNIC(nicID, func(nic map[string]any) {
		for _, c := range ipConfigs(nic) {
			if b, _ := props(c)["primary"].(bool); b {
				pools, _ := props(c)["loadBalancerBackendAddressPools"].([]any)
				for _, id := range poolIDs {
					pools = append(pools, map[string]any{"id": id})
				}
				props(c)["loadBalancerBackendAddressPools"] = pools
			}
		}
	})
}

// ETag returns the etag of a NIC or public IP by resource ID ("" when there is none).
func (s *Sim) ETag(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	if n := s.nics[strings.ToLower(id)]; n != nil {
		return str(n["etag"])
	}
	return str(s.pips[strings.ToLower(id)]["etag"])
}

// ProvisioningState returns the provisioningState of a NIC or public IP by resource ID.
func (s *Sim) ProvisioningState(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	if n := s.nics[strings.ToLower(id)]; n != nil {
		return str(props(n)["provisioningState"])
	}
	if p := s.pips[strings.ToLower(id)]; p != nil {
		return str(props(p)["provisioningState"])
	}
	return ""
}

// FailNext makes the next n calls of method answer status; with afterApply the change is
// applied (its operation started) first.
func (s *Sim) FailNext(method string, n, status int, afterApply bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripted.Add(method, n, scriptedFault{status: status, afterApply: afterApply})
}

// FailNextOperation makes the next long-running operation started by method fail.
func (s *Sim) FailNextOperation(method string, f OpFailure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failOps.Add(method, 1, f)
}

// ---- inspection ----

// Events returns the effective changes so far.
func (s *Sim) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	return append([]Event(nil), s.events...)
}

// State is the admin view.
type State struct {
	// PrivateIPs maps each non-primary private IP to "nic/ipConfiguration".
	PrivateIPs map[string]string `json:"privateIPs"`
	// PublicIPs maps each public IP address to the private IP it is associated with ("" when
	// unassociated).
	PublicIPs map[string]string `json:"publicIPs"`
	// IPConfigCount per NIC name.
	IPConfigCount map[string]int `json:"ipConfigCount"`
}

// Snapshot returns the current state.
func (s *Sim) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	st := State{PrivateIPs: map[string]string{}, PublicIPs: map[string]string{}, IPConfigCount: map[string]int{}}
	pipTo := map[string]string{}
	for _, n := range s.nics {
		cfgs := ipConfigs(n)
		st.IPConfigCount[str(n["name"])] = len(cfgs)
		for _, c := range cfgs {
			p := props(c)
			if pip, ok := p["publicIPAddress"].(map[string]any); ok {
				pipTo[strings.ToLower(str(pip["id"]))] = str(p["privateIPAddress"])
			}
			if b, _ := p["primary"].(bool); b {
				continue
			}
			st.PrivateIPs[str(p["privateIPAddress"])] = str(n["name"]) + "/" + str(c["name"])
		}
	}
	for id, p := range s.pips {
		st.PublicIPs[str(props(p)["ipAddress"])] = pipTo[id]
	}
	return st
}

// IPConfigurations returns a NIC's ipConfigurations as stored (for preservation checks).
func (s *Sim) IPConfigurations(nicID string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	var out []map[string]any
	out = append(out, ipConfigs(s.nics[strings.ToLower(nicID)])...)
	return out
}

// ---- JSON helpers ----

func str(v any) string { s, _ := v.(string); return s }

func props(m map[string]any) map[string]any {
	p, _ := m["properties"].(map[string]any)
	if p == nil {
		p = map[string]any{}
		m["properties"] = p
	}
	return p
}

func ipConfigs(n map[string]any) []map[string]any {
	if n == nil {
		return nil
	}
	raw, _ := props(n)["ipConfigurations"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// finishNICLocked fills server-side fields (ids, provisioning state, public IP addresses).
func (s *Sim) finishNICLocked(n map[string]any, state string) {
	id := str(n["id"])
	props(n)["provisioningState"] = state
	for _, c := range ipConfigs(n) {
		c["id"] = id + "/ipConfigurations/" + str(c["name"])
		p := props(c)
		p["provisioningState"] = state
		if p["privateIPAddressVersion"] == nil {
			p["privateIPAddressVersion"] = "IPv4"
		}
		if pip, ok := p["publicIPAddress"].(map[string]any); ok {
			p["publicIPAddress"] = map[string]any{"id": str(pip["id"])}
		}
	}
}

// stampLocked gives a stored document a new etag, a weak entity tag around a GUID as the network
// resource provider's are.
func (s *Sim) stampLocked(doc map[string]any) {
	s.etagSeq++
	doc["etag"] = fmt.Sprintf("W/\"%08x-0000-4000-8000-%012x\"", s.etagSeq, time.Now().UnixNano()&0xffffffffffff)
}

// setStateLocked sets the provisioningState of a stored document (and of a NIC's
// ipConfigurations).
func setStateLocked(doc map[string]any, state string) {
	props(doc)["provisioningState"] = state
	for _, c := range ipConfigs(doc) {
		props(c)["provisioningState"] = state
	}
}

// settleLocked applies every operation whose time has come, in creation order.
func (s *Sim) settleLocked() { s.started.Settle(time.Now()) }
