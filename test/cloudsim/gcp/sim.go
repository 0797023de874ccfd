// Package gcpsim is an in-process Compute Engine simulator speaking the Compute REST JSON
// protocol (the subset egressd's GCP provider calls) and the GCE metadata server, so that the
// real cloud.google.com/go/compute REST clients can be driven against it through
// option.WithEndpoint.
//
// It models projects, subnetworks (primary and secondary ranges), instances with their network
// interfaces (fingerprints, alias IP ranges, access configs), regional addresses (internal and
// external, with labels and users, RESERVING until their insert operation is DONE) and
// zone/region operations that go RUNNING → DONE, where an alias another resource holds fails
// (IP_IN_USE_BY_ANOTHER_RESOURCE); list calls apply their filter and page. Faults:
// per-method rate limits (403 rateLimitExceeded or 429), scripted errors (also after the change
// was applied), failed operations, latency, stale fingerprint races and describe lag.
//
// It deliberately imports no Google SDK: the wire format is written down here independently,
// so a mismatch with the SDK shows up as a failing provider test.
package gcpsim

import (
	"fmt"
	"hash/fnv"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// Method names used for call counters and fault injection.
const (
	MInstancesGet          = "instances.get"
	MInstancesList         = "instances.list"
	MInstancesAggregated   = "instances.aggregatedList"
	MUpdateNetworkIface    = "instances.updateNetworkInterface"
	MAddAccessConfig       = "instances.addAccessConfig"
	MDeleteAccessConfig    = "instances.deleteAccessConfig"
	MAddressesGet          = "addresses.get"
	MAddressesInsert       = "addresses.insert"
	MAddressesDelete       = "addresses.delete"
	MAddressesSetLabels    = "addresses.setLabels"
	MAddressesList         = "addresses.list"
	MAddressesAggregated   = "addresses.aggregatedList"
	MSubnetworksGet        = "subnetworks.get"
	MZoneOperationsGet     = "zoneOperations.get"
	MZoneOperationsWait    = "zoneOperations.wait"
	MRegionOperationsGet   = "regionOperations.get"
	MRegionOperationsWait  = "regionOperations.wait"
	MMetadata              = "metadata"
	defaultMaxAliasesPerIf = 10
)

// Event records when a change became effective (an operation reached DONE), so tests can
// measure how long an address was held by no instance during a move.
type Event struct {
	At       time.Time
	Instance string // projects/p/zones/z/instances/name
	IP       string
	// Kind: "alias+", "alias-", "nat+", "nat-".
	Kind string
}

// Sim is the simulator. Create it with New; serve it with Handler. Its counters (Calls,
// CallCounts, ResetCalls) are per method name (the M constants).
type Sim struct {
	simkit.Counters
	simkit.Latency
	// Timed: a write's call latency, and its operation's duration drawn from the profile's
	// propagation (SetOperationDelay adds to it).
	simkit.Timed
	mu       sync.Mutex
	projects map[string]*project
	ops      map[string]*operation
	started  simkit.Ops[opError]
	seq      uint64
	events   []Event
	meta     MetadataSeed

	// faults
	opDelay     time.Duration
	lag         time.Duration
	limits      map[string]*bucket
	scripted    simkit.Queue[scriptedFault]
	failOps     simkit.Queue[OpFailure]
	fpRaces     map[string]int // instance key → stale fingerprint races left
	extPoolNext uint32
	extQuota    int
	pageSize    int // list page size: Compute's default 500 unless a test sets fewer
	throttleAll int // calls left to throttle on every method; < 0: all
}

type project struct {
	id        string
	number    uint64
	subnets   map[string]*subnet   // region/name
	instances map[string]*instance // zone/name
	addresses map[string]*address  // region/name
}

type subnet struct {
	Name, Region, Network string
	CIDR                  netip.Prefix
	Secondary             map[string]netip.Prefix
	id                    uint64
}

type instance struct {
	Name, Zone string
	id         uint64
	nics       []*nic
	maxAliases int
	history    []snapshot // for describe lag
}

type snapshot struct {
	at   time.Time
	nics []*nic
}

type nic struct {
	Name          string `json:"name"`
	Network       string `json:"network"`
	Subnetwork    string `json:"subnetwork"`
	NetworkIP     string `json:"networkIP"`
	Fingerprint   string `json:"fingerprint"`
	Aliases       []aliasRange
	AccessConfigs []accessConfig
}

type aliasRange struct {
	IPCidrRange         string `json:"ipCidrRange"`
	SubnetworkRangeName string `json:"subnetworkRangeName,omitempty"`
}

type accessConfig struct {
	Kind        string `json:"kind,omitempty"`
	Name        string `json:"name,omitempty"`
	Type        string `json:"type,omitempty"`
	NatIP       string `json:"natIP,omitempty"`
	NetworkTier string `json:"networkTier,omitempty"`
}

type address struct {
	Name, Region, Address, AddressType, Purpose, Subnetwork, NetworkTier string
	Labels                                                               map[string]string
	id                                                                   uint64
	created, deleted                                                     time.Time
	// reserving: the insert operation has not finished (status RESERVING).
	reserving bool
}

type operation struct {
	name, zone, region, project, opType, target string
	id                                          uint64
	simkit.Op[opError]                          // Done: status DONE, else RUNNING
}

type opError struct {
	HTTPStatus int
	Code       string
	Message    string
}

type bucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
	status int // 403 or 429
}

type scriptedFault struct {
	status     int
	reason     string
	afterApply bool
}

// OpFailure makes an operation end DONE with an error instead of applying its change.
type OpFailure struct {
	HTTPStatus int
	Code       string
	Message    string
}

// New returns an empty simulator.
func New() *Sim {
	return &Sim{
		projects: map[string]*project{},
		ops:      map[string]*operation{},
		limits:   map[string]*bucket{},
		scripted: simkit.Queue[scriptedFault]{},
		failOps:  simkit.Queue[OpFailure]{},
		fpRaces:  map[string]int{},
		extQuota: 1 << 30,
		pageSize: 500,
	}
}

// ---- seeding ----

// SubnetSeed describes a subnetwork.
type SubnetSeed struct {
	Name      string            `json:"name"`
	Region    string            `json:"region"`
	Network   string            `json:"network"`
	CIDR      string            `json:"cidr"`
	Secondary map[string]string `json:"secondary,omitempty"`
}

// InstanceSeed describes an instance with one or more NICs (nic0, nic1...).
type InstanceSeed struct {
	Name string `json:"name"`
	Zone string `json:"zone"`
	// NICs: subnet name and primary IP of each interface, in order.
	NICs []NICSeed `json:"nics"`
	// MaxAliasRanges per interface; 0 means 10.
	MaxAliasRanges int `json:"maxAliasRanges,omitempty"`
}

// NICSeed describes one network interface.
type NICSeed struct {
	Subnet    string `json:"subnet"`
	NetworkIP string `json:"networkIP"`
	// ExternalIP, when set, gives the NIC an (ephemeral) access config, as GKE public nodes have.
	ExternalIP string `json:"externalIP,omitempty"`
}

// ProjectSeed is the admin seeding document.
type ProjectSeed struct {
	ID        string         `json:"id"`
	Number    uint64         `json:"number,omitempty"`
	Subnets   []SubnetSeed   `json:"subnets"`
	Instances []InstanceSeed `json:"instances"`
}

// MetadataSeed is what the metadata server answers (the controller's own instance).
type MetadataSeed struct {
	Project  string `json:"project"`
	Number   uint64 `json:"number"`
	Zone     string `json:"zone"`
	Instance string `json:"instance"`
}

// Seed adds a project with its subnets and instances.
func (s *Sim) Seed(p ProjectSeed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr := s.projects[p.ID]
	if pr == nil {
		num := p.Number
		if num == 0 {
			num = 100000 + uint64(len(s.projects))
		}
		pr = &project{id: p.ID, number: num, subnets: map[string]*subnet{}, instances: map[string]*instance{}, addresses: map[string]*address{}}
		s.projects[p.ID] = pr
	}
	for _, sn := range p.Subnets {
		cidr, err := netip.ParsePrefix(sn.CIDR)
		if err != nil {
			return fmt.Errorf("subnet %s: %w", sn.Name, err)
		}
		sec := map[string]netip.Prefix{}
		for n, c := range sn.Secondary {
			pc, err := netip.ParsePrefix(c)
			if err != nil {
				return fmt.Errorf("subnet %s range %s: %w", sn.Name, n, err)
			}
			sec[n] = pc
		}
		netw := sn.Network
		if netw == "" {
			netw = "default"
		}
		s.seq++
		pr.subnets[sn.Region+"/"+sn.Name] = &subnet{Name: sn.Name, Region: sn.Region, Network: netw, CIDR: cidr, Secondary: sec, id: s.seq}
	}
	for _, in := range p.Instances {
		region := zoneRegion(in.Zone)
		inst := &instance{Name: in.Name, Zone: in.Zone, maxAliases: in.MaxAliasRanges}
		if inst.maxAliases == 0 {
			inst.maxAliases = defaultMaxAliasesPerIf
		}
		s.seq++
		inst.id = 5000000000 + s.seq
		for i, ns := range in.NICs {
			sn := pr.subnets[region+"/"+ns.Subnet]
			if sn == nil {
				return fmt.Errorf("instance %s: no subnet %s in %s", in.Name, ns.Subnet, region)
			}
			n := &nic{
				Name:       fmt.Sprintf("nic%d", i),
				Network:    fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/global/networks/%s", p.ID, sn.Network),
				Subnetwork: subnetLink(p.ID, region, sn.Name),
				NetworkIP:  ns.NetworkIP,
			}
			if ns.ExternalIP != "" {
				n.AccessConfigs = []accessConfig{{Kind: "compute#accessConfig", Name: "external-nat", Type: "ONE_TO_ONE_NAT", NatIP: ns.ExternalIP, NetworkTier: "PREMIUM"}}
			}
			n.Fingerprint = s.newFingerprint()
			inst.nics = append(inst.nics, n)
		}
		inst.snapshot(time.Now())
		pr.instances[in.Zone+"/"+in.Name] = inst
	}
	return nil
}

// SetMetadata sets what the metadata server answers.
func (s *Sim) SetMetadata(m MetadataSeed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta = m
}

// ---- faults ----

// SetOperationDelay sets how long operations stay RUNNING before their change applies.
func (s *Sim) SetOperationDelay(d time.Duration) { s.mu.Lock(); s.opDelay = d; s.mu.Unlock() }

// SetDescribeLag makes instances.get and addresses get/list show the state as it was d ago.
func (s *Sim) SetDescribeLag(d time.Duration) { s.mu.Lock(); s.lag = d; s.mu.Unlock() }

// SetExternalAddressQuota limits the number of external addresses per project (QUOTA_EXCEEDED).
func (s *Sim) SetExternalAddressQuota(n int) { s.mu.Lock(); s.extQuota = n; s.mu.Unlock() }

// SetPageSize caps list pages at n items (Compute's default and maximum is 500), so tests can
// cross page boundaries with a few resources. n <= 0 restores 500.
func (s *Sim) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 || n > 500 {
		n = 500
	}
	s.pageSize = n
}

// SetRateLimit installs a token bucket on method; status is 403 (rateLimitExceeded) or 429.
// A rate of 0 removes the limit.
func (s *Sim) SetRateLimit(method string, perSecond float64, burst int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if perSecond <= 0 && burst <= 0 {
		delete(s.limits, method)
		return
	}
	s.limits[method] = &bucket{rate: perSecond, burst: float64(burst), tokens: float64(burst), last: time.Now(), status: status}
}

// FailNext makes the next n calls of method return status (5xx, 429, 403...). With afterApply,
// the change is applied first and the error returned anyway.
func (s *Sim) FailNext(method string, n int, status int, afterApply bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reason := "backendError"
	switch status {
	case http.StatusTooManyRequests:
		reason = "rateLimitExceeded"
	case http.StatusForbidden:
		reason = "rateLimitExceeded"
	}
	s.scripted.Add(method, n, scriptedFault{status: status, reason: reason, afterApply: afterApply})
}

// FailNextWithReason makes the next n calls of method answer status with reason (for
// example 403 forbidden: a permission the caller's role lacks).
func (s *Sim) FailNextWithReason(method string, n, status int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripted.Add(method, n, scriptedFault{status: status, reason: reason})
}

// ThrottleAll makes the next n requests of any Compute method answer 429
// rateLimitExceeded; n < 0 throttles every request until ClearFaults.
func (s *Sim) ThrottleAll(n int) { s.mu.Lock(); s.throttleAll = n; s.mu.Unlock() }

// ClearFaults removes every injected fault (latency, lag, limits, scripted errors).
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.SetLatency(0)
	s.lag, s.throttleAll = 0, 0
	s.limits = map[string]*bucket{}
	clear(s.scripted)
	clear(s.failOps)
	s.fpRaces = map[string]int{}
}

// FailNextOperation makes the next operation created by method end with an error.
func (s *Sim) FailNextOperation(method string, f OpFailure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failOps.Add(method, 1, f)
}

// RaceFingerprint makes the next n updateNetworkInterface calls on the instance see a
// concurrent change: the NIC fingerprint changes just before each is checked.
func (s *Sim) RaceFingerprint(project, zone, name string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fpRaces[project+"/"+zone+"/"+name] += n
}

// ---- inspection ----

// Events returns the effective changes so far.
func (s *Sim) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	return append([]Event(nil), s.events...)
}

// State is the admin view: which instance holds which alias IP and external IP.
type State struct {
	// Aliases maps an alias IP to its instance (project/zone/name).
	Aliases map[string]string `json:"aliases"`
	// External maps an access config's NAT IP to its instance.
	External map[string]string `json:"external"`
	// NAT maps an access config's NAT IP to the one internal address it translates: the
	// primary internal address (networkIP) of its interface, never an alias IP range.
	NAT map[string]string `json:"nat"`
	// Addresses lists the reserved addresses.
	Addresses []AddressState `json:"addresses"`
}

// AddressState is one reserved address.
type AddressState struct {
	Name    string            `json:"name"`
	Region  string            `json:"region"`
	Address string            `json:"address"`
	Type    string            `json:"addressType"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// Snapshot returns the current state (operations that are due are applied first).
func (s *Sim) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	st := State{Aliases: map[string]string{}, External: map[string]string{}, NAT: map[string]string{}}
	for pid, p := range s.projects {
		for _, in := range p.instances {
			key := pid + "/" + in.Zone + "/" + in.Name
			for _, n := range in.nics {
				for _, a := range n.Aliases {
					st.Aliases[strings.TrimSuffix(a.IPCidrRange, "/32")] = key
				}
				for _, ac := range n.AccessConfigs {
					st.External[ac.NatIP] = key
					st.NAT[ac.NatIP] = n.NetworkIP
				}
			}
		}
		for _, a := range p.addresses {
			if !a.deleted.IsZero() {
				continue
			}
			st.Addresses = append(st.Addresses, AddressState{Name: a.Name, Region: a.Region, Address: a.Address, Type: a.AddressType, Labels: a.Labels})
		}
	}
	sort.Slice(st.Addresses, func(i, j int) bool { return st.Addresses[i].Name < st.Addresses[j].Name })
	return st
}

// Egress says which external address a packet from src leaves the VPC with towards the
// internet, as Compute Engine's one-to-one NAT does: the natIP of the access config of the
// interface whose primary internal address is src. An external IP address "never performs
// one-to-one NAT for alias IP ranges" (Cloud NAT, "Public NAT" specifications), so a packet
// from an alias IP, or from any address no access config translates, has none (ok false):
// without Cloud NAT, which the simulator does not model, the internet never sees it.
func (s *Sim) Egress(src string) (natIP string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	for _, p := range s.projects {
		for _, in := range p.instances {
			for _, n := range in.nics {
				if n.NetworkIP == src && len(n.AccessConfigs) > 0 {
					return n.AccessConfigs[0].NatIP, true
				}
			}
		}
	}
	return "", false
}

// Holder returns the instance (project/zone/name) holding ip as an alias, or "".
func (s *Sim) Holder(ip string) string { return s.Snapshot().Aliases[ip] }

// AliasCount returns how many instances hold ip as an alias (a duplicate shows as > 1).
func (s *Sim) AliasCount(ip string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	n := 0
	for _, p := range s.projects {
		for _, in := range p.instances {
			for _, ni := range in.nics {
				for _, a := range ni.Aliases {
					if strings.TrimSuffix(a.IPCidrRange, "/32") == ip {
						n++
					}
				}
			}
		}
	}
	return n
}

// AddressCount returns the number of live reserved addresses of the given type (INTERNAL,
// EXTERNAL).
func (s *Sim) AddressCount(addrType string) int {
	n := 0
	for _, a := range s.Snapshot().Addresses {
		if a.Type == addrType {
			n++
		}
	}
	return n
}

// PutAddress creates an address directly (for foreign or unlabelled resources in tests).
func (s *Sim) PutAddress(projectID, region, name, addr, addrType string, labels map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectID]
	s.seq++
	p.addresses[region+"/"+name] = &address{Name: name, Region: region, Address: addr, AddressType: addrType, Labels: labels, id: s.seq, created: time.Now().Add(-time.Hour)}
}

// PutAlias adds an alias IP to an instance's nic0 directly (for foreign resources in tests).
func (s *Sim) PutAlias(projectID, zone, name, cidr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.projects[projectID].instances[zone+"/"+name]
	in.nics[0].Aliases = append(in.nics[0].Aliases, aliasRange{IPCidrRange: cidr})
	in.nics[0].Fingerprint = s.newFingerprint()
	in.snapshot(time.Now().Add(-time.Hour))
}

// ---- helpers ----

func zoneRegion(zone string) string {
	if i := strings.LastIndex(zone, "-"); i > 0 {
		return zone[:i]
	}
	return zone
}

func subnetLink(projectID, region, name string) string {
	return fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s/subnetworks/%s", projectID, region, name)
}

func instanceLink(projectID, zone, name string) string {
	return fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/zones/%s/instances/%s", projectID, zone, name)
}

func (s *Sim) newFingerprint() string {
	s.seq++
	h := fnv.New64a()
	fmt.Fprintf(h, "fp-%d", s.seq)
	return strconv.FormatUint(h.Sum64(), 36)
}

func cloneNICs(in []*nic) []*nic {
	out := make([]*nic, len(in))
	for i, n := range in {
		c := *n
		c.Aliases = append([]aliasRange(nil), n.Aliases...)
		c.AccessConfigs = append([]accessConfig(nil), n.AccessConfigs...)
		out[i] = &c
	}
	return out
}

func (in *instance) snapshot(at time.Time) {
	in.history = append(in.history, snapshot{at: at, nics: cloneNICs(in.nics)})
	if len(in.history) > 64 {
		in.history = in.history[len(in.history)-64:]
	}
}

// view returns the NICs as a reader sees them under describe lag.
func (in *instance) view(now time.Time, lag time.Duration) []*nic {
	if lag <= 0 || len(in.history) == 0 {
		return in.nics
	}
	cut := now.Add(-lag)
	v := in.history[0].nics
	for _, h := range in.history {
		if !h.at.After(cut) {
			v = h.nics
		}
	}
	return v
}

// settleLocked applies every operation whose time has come, in creation order.
func (s *Sim) settleLocked() { s.started.Settle(time.Now()) }

func (s *Sim) emit(instanceKey, ip, kind string) {
	s.events = append(s.events, Event{At: time.Now(), Instance: instanceKey, IP: ip, Kind: kind})
}

// ipInUse reports which instance (other than skip) uses ip as primary or alias address in the
// network, looking at the effective state.
func (p *project) ipInUse(network string, ip netip.Addr, skipKey string) string {
	for k, in := range p.instances {
		for _, n := range in.nics {
			if n.Network != network {
				continue
			}
			if n.NetworkIP == ip.String() {
				return k
			}
			if k == skipKey {
				continue
			}
			for _, a := range n.Aliases {
				if pr, err := parseAlias(a.IPCidrRange); err == nil && pr.Contains(ip) {
					return k
				}
			}
		}
	}
	return ""
}

func parseAlias(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

func (s *Sim) subnetByLink(p *project, link string) *subnet {
	i := strings.Index(link, "/regions/")
	if i < 0 {
		return nil
	}
	parts := strings.Split(link[i+len("/regions/"):], "/")
	if len(parts) != 3 {
		return nil
	}
	return p.subnets[parts[0]+"/"+parts[2]]
}
