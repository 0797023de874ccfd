package gcpsim

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// apiError is a Compute error response.
type apiError struct {
	status  int
	reason  string
	message string
}

func (e *apiError) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(e.status)
	_, _ = w.Write(simkit.MustJSON(map[string]any{"error": map[string]any{
		"code":    e.status,
		"message": e.message,
		"errors":  []map[string]string{{"message": e.message, "domain": "global", "reason": e.reason}},
	}}))
}

func errf(status int, reason, format string, args ...any) *apiError {
	return &apiError{status: status, reason: reason, message: fmt.Sprintf(format, args...)}
}

// Handler serves the Compute REST API under /compute/v1/, the metadata server under
// /computeMetadata/v1/ and the admin API under /admin/.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/compute/v1/", s.serveCompute)
	mux.HandleFunc("/computeMetadata/v1/", s.serveMetadata)
	mux.Handle("/admin/", simkit.Admin[SeedDocument, FaultDocument, State, Event](s, s.seed, s.faults))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The metadata client probes the root to detect GCE.
		w.Header().Set("Metadata-Flavor", "Google")
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

func (s *Sim) serveCompute(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/compute/v1/projects/"), "/")
	name, handler := s.route(r.Method, parts)
	if handler == nil {
		errf(http.StatusNotFound, "notFound", "no route %s %s", r.Method, r.URL.Path).write(w)
		return
	}
	s.Count(name)
	if !s.Delay(r.Context()) || !s.CallDelay(r.Context(), r.Method != http.MethodGet) {
		return
	}
	if name == MZoneOperationsWait || name == MRegionOperationsWait {
		s.waitOperation(r, parts)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	if e := s.admitLocked(name); e != nil {
		e.write(w)
		return
	}
	var after *scriptedFault
	if f, ok := s.scripted.Next(name); ok {
		if !f.afterApply {
			(&apiError{status: f.status, reason: f.reason, message: "injected fault"}).write(w)
			return
		}
		after = &f
	}
	p := s.projects[parts[0]]
	if p == nil {
		errf(http.StatusNotFound, "notFound", "The resource 'projects/%s' was not found", parts[0]).write(w)
		return
	}
	out, e := handler(p, r, parts)
	if after != nil {
		(&apiError{status: after.status, reason: after.reason, message: "injected fault after the change was applied"}).write(w)
		return
	}
	if e != nil {
		e.write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_, _ = w.Write(simkit.MustJSON(out))
}

// admitLocked applies the method's rate limit.
func (s *Sim) admitLocked(method string) *apiError {
	if s.throttleAll != 0 {
		if s.throttleAll > 0 {
			s.throttleAll--
		}
		return errf(http.StatusTooManyRequests, "rateLimitExceeded", "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'")
	}
	b := s.limits[method]
	if b == nil {
		return nil
	}
	now := time.Now()
	b.tokens += now.Sub(b.last).Seconds() * b.rate
	if b.tokens > b.burst {
		b.tokens = b.burst
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return nil
	}
	if b.status == http.StatusForbidden {
		return errf(http.StatusForbidden, "rateLimitExceeded", "Rate Limit Exceeded")
	}
	return errf(http.StatusTooManyRequests, "rateLimitExceeded", "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'")
}

func (s *Sim) route(method string, parts []string) (string, func(*project, *http.Request, []string) (any, *apiError)) {
	n := len(parts)
	switch {
	case n == 5 && parts[1] == "zones" && parts[3] == "instances" && method == http.MethodGet:
		return MInstancesGet, s.getInstance
	case n == 4 && parts[1] == "zones" && parts[3] == "instances" && method == http.MethodGet:
		return MInstancesList, s.listInstances
	case n == 3 && parts[1] == "aggregated" && parts[2] == "instances" && method == http.MethodGet:
		return MInstancesAggregated, s.listInstances
	case n == 6 && parts[1] == "zones" && parts[3] == "instances" && parts[5] == "updateNetworkInterface" && method == http.MethodPatch:
		return MUpdateNetworkIface, s.updateNetworkInterface
	case n == 6 && parts[1] == "zones" && parts[3] == "instances" && parts[5] == "addAccessConfig" && method == http.MethodPost:
		return MAddAccessConfig, s.addAccessConfig
	case n == 6 && parts[1] == "zones" && parts[3] == "instances" && parts[5] == "deleteAccessConfig" && method == http.MethodPost:
		return MDeleteAccessConfig, s.deleteAccessConfig
	case n == 5 && parts[1] == "zones" && parts[3] == "operations" && method == http.MethodGet:
		return MZoneOperationsGet, s.getOperation
	case n == 6 && parts[1] == "zones" && parts[3] == "operations" && parts[5] == "wait" && method == http.MethodPost:
		return MZoneOperationsWait, s.getOperation
	case n == 5 && parts[1] == "regions" && parts[3] == "operations" && method == http.MethodGet:
		return MRegionOperationsGet, s.getOperation
	case n == 6 && parts[1] == "regions" && parts[3] == "operations" && parts[5] == "wait" && method == http.MethodPost:
		return MRegionOperationsWait, s.getOperation
	case n == 4 && parts[1] == "regions" && parts[3] == "addresses" && method == http.MethodGet:
		return MAddressesList, s.listAddresses
	case n == 4 && parts[1] == "regions" && parts[3] == "addresses" && method == http.MethodPost:
		return MAddressesInsert, s.insertAddress
	case n == 5 && parts[1] == "regions" && parts[3] == "addresses" && method == http.MethodGet:
		return MAddressesGet, s.getAddress
	case n == 5 && parts[1] == "regions" && parts[3] == "addresses" && method == http.MethodDelete:
		return MAddressesDelete, s.deleteAddress
	case n == 6 && parts[1] == "regions" && parts[3] == "addresses" && parts[5] == "setLabels" && method == http.MethodPost:
		return MAddressesSetLabels, s.setAddressLabels
	case n == 3 && parts[1] == "aggregated" && parts[2] == "addresses" && method == http.MethodGet:
		return MAddressesAggregated, s.listAddresses
	case n == 5 && parts[1] == "regions" && parts[3] == "subnetworks" && method == http.MethodGet:
		return MSubnetworksGet, s.getSubnetwork
	}
	return "", nil
}

// ---- instances ----

func (s *Sim) instanceJSON(projectID string, in *instance, nics []*nic) map[string]any {
	ifs := make([]map[string]any, 0, len(nics))
	for _, n := range nics {
		m := map[string]any{
			"kind":        "compute#networkInterface",
			"name":        n.Name,
			"network":     n.Network,
			"subnetwork":  n.Subnetwork,
			"networkIP":   n.NetworkIP,
			"fingerprint": n.Fingerprint,
			"stackType":   "IPV4_ONLY",
		}
		if len(n.Aliases) > 0 {
			m["aliasIpRanges"] = n.Aliases
		}
		if len(n.AccessConfigs) > 0 {
			m["accessConfigs"] = n.AccessConfigs
		}
		ifs = append(ifs, m)
	}
	return map[string]any{
		"kind":              "compute#instance",
		"id":                strconv.FormatUint(in.id, 10),
		"name":              in.Name,
		"zone":              fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/zones/%s", projectID, in.Zone),
		"status":            "RUNNING",
		"machineType":       fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/zones/%s/machineTypes/e2-standard-4", projectID, in.Zone),
		"selfLink":          instanceLink(projectID, in.Zone, in.Name),
		"networkInterfaces": ifs,
		"creationTimestamp": "2025-01-01T00:00:00.000-07:00",
	}
}

func (s *Sim) findInstance(p *project, parts []string) (*instance, *apiError) {
	in := p.instances[parts[2]+"/"+parts[4]]
	if in == nil {
		return nil, errf(http.StatusNotFound, "notFound", "The resource 'projects/%s/zones/%s/instances/%s' was not found", parts[0], parts[2], parts[4])
	}
	return in, nil
}

// findInstanceNIC finds the instance of parts and its interface named by ?networkInterface;
// key is the instance's project/zone/name.
func (s *Sim) findInstanceNIC(p *project, r *http.Request, parts []string) (in *instance, n *nic, key string, e *apiError) {
	in, e = s.findInstance(p, parts)
	if e != nil {
		return nil, nil, "", e
	}
	name := r.URL.Query().Get("networkInterface")
	if n = findNIC(in, name); n == nil {
		return nil, nil, "", errf(http.StatusBadRequest, "invalid", "Invalid value for field 'networkInterface': '%s'.", name)
	}
	return in, n, p.id + "/" + in.Zone + "/" + in.Name, nil
}

// nicOp starts a zone operation changing interface n of in: the fingerprint changes now, and
// when the operation is done apply changes the interface (found again by name) and the
// instance's history records it unless apply failed.
func (s *Sim) nicOp(p *project, in *instance, n *nic, opType, method string, apply func(*nic) *opError) map[string]any {
	n.Fingerprint = s.newFingerprint()
	name := n.Name
	return s.newOp(p, "zone", in.Zone, opType, instanceLink(p.id, in.Zone, in.Name), method, func() *opError {
		if e := apply(findNIC(in, name)); e != nil {
			return e
		}
		in.snapshot(time.Now())
		return nil
	})
}

func findNIC(in *instance, name string) *nic {
	for _, n := range in.nics {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (s *Sim) getInstance(p *project, _ *http.Request, parts []string) (any, *apiError) {
	in, e := s.findInstance(p, parts)
	if e != nil {
		return nil, e
	}
	return s.instanceJSON(p.id, in, in.view(time.Now(), s.lag)), nil
}

// listInstances is instances.list of one zone, or instances.aggregatedList of every zone:
// the filter applied (name and status), pages of maxResults (at most 500) in zone then name
// order, each instance as instances.get shows it. The aggregated list names only the zones
// with a match on the page (Compute also lists the others, each with a NO_RESULTS_ON_PAGE
// warning; a client reads no instances from those).
func (s *Sim) listInstances(p *project, r *http.Request, parts []string) (any, *apiError) {
	q := r.URL.Query()
	f, e := listFilter(q.Get("filter"), func(field string) bool { return field == "name" || field == "status" })
	if e != nil {
		return nil, e
	}
	page, e := s.pageOf(q)
	if e != nil {
		return nil, e
	}
	zone := ""
	if parts[1] == "zones" {
		zone = parts[2]
	}
	var matched []*instance
	for _, k := range slices.Sorted(maps.Keys(p.instances)) {
		in := p.instances[k]
		if zone != "" && in.Zone != zone {
			continue
		}
		if f.match(func(field string) (string, bool) {
			if field == "name" {
				return in.Name, true
			}
			return "RUNNING", true
		}) {
			matched = append(matched, in)
		}
	}
	matched, next := cut(page, matched)
	var out map[string]any
	if zone != "" {
		items := make([]map[string]any, 0, len(matched))
		for _, in := range matched {
			items = append(items, s.instanceJSON(p.id, in, in.view(time.Now(), s.lag)))
		}
		out = map[string]any{"kind": "compute#instanceList", "items": items,
			"selfLink": fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/zones/%s/instances", p.id, zone)}
	} else {
		byZone := map[string][]map[string]any{}
		for _, in := range matched {
			byZone[in.Zone] = append(byZone[in.Zone], s.instanceJSON(p.id, in, in.view(time.Now(), s.lag)))
		}
		items := map[string]any{}
		for z, list := range byZone {
			items["zones/"+z] = map[string]any{"instances": list}
		}
		out = map[string]any{"kind": "compute#instanceAggregatedList", "items": items,
			"selfLink": fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/aggregated/instances", p.id)}
	}
	if next != "" {
		out["nextPageToken"] = next
	}
	return out, nil
}

func (s *Sim) updateNetworkInterface(p *project, r *http.Request, parts []string) (any, *apiError) {
	in, n, key, e := s.findInstanceNIC(p, r, parts)
	if e != nil {
		return nil, e
	}
	// PATCH semantics, as instances.updateNetworkInterface documents: a field left out of the
	// body is left unchanged. Only an explicit "aliasIpRanges": [] removes every alias.
	var body struct {
		Fingerprint   string        `json:"fingerprint"`
		AliasIPRanges *[]aliasRange `json:"aliasIpRanges"`
	}
	if err := decode(r, &body); err != nil {
		return nil, errf(http.StatusBadRequest, "parseError", "%v", err)
	}
	if s.fpRaces[key] > 0 {
		s.fpRaces[key]--
		n.Fingerprint = s.newFingerprint()
	}
	if body.Fingerprint == "" {
		return nil, errf(http.StatusBadRequest, "required", "Required field 'resource.fingerprint' not specified")
	}
	if body.Fingerprint != n.Fingerprint {
		return nil, errf(http.StatusPreconditionFailed, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint.")
	}
	if body.AliasIPRanges == nil {
		body.AliasIPRanges = &n.Aliases
	}
	ranges := *body.AliasIPRanges
	if len(ranges) > in.maxAliases {
		return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.aliasIpRanges': exceeded the maximum number of alias IP ranges (%d) per network interface.", in.maxAliases)
	}
	sn := s.subnetByLink(p, n.Subnetwork)
	seen := map[netip.Addr]bool{}
	for _, a := range ranges {
		pr, err := parseAlias(a.IPCidrRange)
		if err != nil || !pr.Addr().Is4() {
			return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.aliasIpRanges[].ipCidrRange': '%s'.", a.IPCidrRange)
		}
		parent := sn.CIDR
		if a.SubnetworkRangeName != "" {
			sec, ok := sn.Secondary[a.SubnetworkRangeName]
			if !ok {
				return nil, errf(http.StatusBadRequest, "invalid", "Secondary range '%s' does not exist in subnetwork '%s'.", a.SubnetworkRangeName, sn.Name)
			}
			parent = sec
		}
		if !parent.Contains(pr.Addr()) || pr.Bits() < parent.Bits() {
			return nil, errf(http.StatusBadRequest, "invalid", "Alias IP range '%s' is not within the range '%s' of subnetwork '%s'.", a.IPCidrRange, parent, sn.Name)
		}
		if pr.Addr().String() == n.NetworkIP || seen[pr.Addr()] {
			return nil, errf(http.StatusBadRequest, "invalid", "Alias IP range '%s' overlaps the primary IP or another alias of the interface.", a.IPCidrRange)
		}
		seen[pr.Addr()] = true
	}
	// An address another resource uses is not refused here: the call returns its operation,
	// and the operation ends DONE with IP_IN_USE_BY_ANOTHER_RESOURCE in its error, as Compute
	// reports it (compute-image-tools#659, f5-google-gdm-templates#78).
	want := append([]aliasRange(nil), ranges...)
	return s.nicOp(p, in, n, "updateNetworkInterface", MUpdateNetworkIface, func(n *nic) *opError {
		for _, a := range want {
			pr, _ := parseAlias(a.IPCidrRange)
			if other := p.ipInUse(n.Network, pr.Addr(), key); other != "" && other != in.Zone+"/"+in.Name {
				return &opError{HTTPStatus: 400, Code: "IP_IN_USE_BY_ANOTHER_RESOURCE", Message: fmt.Sprintf("IP '%s' is already being used by another resource.", pr.Addr())}
			}
		}
		before := map[string]bool{}
		for _, a := range n.Aliases {
			before[strings.TrimSuffix(a.IPCidrRange, "/32")] = true
		}
		after := map[string]bool{}
		for _, a := range want {
			pr, _ := parseAlias(a.IPCidrRange)
			after[pr.Addr().String()] = true
		}
		for ip := range before {
			if !after[ip] {
				s.emit(key, ip, "alias-")
			}
		}
		for ip := range after {
			if !before[ip] {
				s.emit(key, ip, "alias+")
			}
		}
		n.Aliases = want
		return nil
	}), nil
}

func (s *Sim) addAccessConfig(p *project, r *http.Request, parts []string) (any, *apiError) {
	in, n, key, e := s.findInstanceNIC(p, r, parts)
	if e != nil {
		return nil, e
	}
	var ac accessConfig
	if err := decode(r, &ac); err != nil {
		return nil, errf(http.StatusBadRequest, "parseError", "%v", err)
	}
	if len(n.AccessConfigs) > 0 {
		return nil, errf(http.StatusBadRequest, "invalid", "At most one access config currently supported.")
	}
	if ac.Type == "" {
		ac.Type = "ONE_TO_ONE_NAT"
	}
	if ac.Type != "ONE_TO_ONE_NAT" {
		// AccessConfig.type: in accessConfigs (IPv4) the default and only option is ONE_TO_ONE_NAT.
		return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.type': '%s'. Must be ONE_TO_ONE_NAT.", ac.Type)
	}
	if ac.NatIP != "" {
		var found *address
		for _, a := range p.addresses {
			if a.deleted.IsZero() && a.AddressType == "EXTERNAL" && a.Address == ac.NatIP && a.Region == zoneRegion(in.Zone) {
				found = a
			}
		}
		if found == nil {
			return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.natIP': '%s'. The specified external IP address is not reserved in region '%s'.", ac.NatIP, zoneRegion(in.Zone))
		}
		if found.reserving {
			return nil, errf(http.StatusBadRequest, "resourceNotReady", "The resource 'projects/%s/regions/%s/addresses/%s' is not ready", p.id, found.Region, found.Name)
		}
		if users := s.users(p, found); len(users) > 0 {
			return nil, errf(http.StatusBadRequest, "invalid", "The IP address '%s' is already in use by '%s'.", ac.NatIP, users[0])
		}
		// AccessConfig.networkTier: with a static natIP it must match the address's tier.
		if tier := cmp.Or(found.NetworkTier, "PREMIUM"); ac.NetworkTier != "" && ac.NetworkTier != tier {
			return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.networkTier': '%s'. The network tier of the access config must match the network tier of the address '%s' (%s).", ac.NetworkTier, ac.NatIP, tier)
		}
		if ac.NetworkTier == "" {
			ac.NetworkTier = cmp.Or(found.NetworkTier, "PREMIUM")
		}
	} else {
		ac.NatIP = s.allocExternalLocked()
	}
	ac.Kind = "compute#accessConfig"
	if ac.NetworkTier == "" {
		ac.NetworkTier = "PREMIUM"
	}
	return s.nicOp(p, in, n, "addAccessConfig", MAddAccessConfig, func(n *nic) *opError {
		if len(n.AccessConfigs) > 0 {
			return &opError{HTTPStatus: 400, Code: "INVALID_USAGE", Message: "At most one access config currently supported."}
		}
		n.AccessConfigs = append(n.AccessConfigs, ac)
		s.emit(key, ac.NatIP, "nat+")
		return nil
	}), nil
}

func (s *Sim) deleteAccessConfig(p *project, r *http.Request, parts []string) (any, *apiError) {
	in, n, key, e := s.findInstanceNIC(p, r, parts)
	if e != nil {
		return nil, e
	}
	name := r.URL.Query().Get("accessConfig")
	idx := -1
	for i, ac := range n.AccessConfigs {
		if ac.Name == name {
			idx = i
		}
	}
	if idx < 0 {
		return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'accessConfig': '%s'. The access config does not exist.", name)
	}
	return s.nicOp(p, in, n, "deleteAccessConfig", MDeleteAccessConfig, func(n *nic) *opError {
		var keep []accessConfig
		for _, ac := range n.AccessConfigs {
			if ac.Name == name {
				s.emit(key, ac.NatIP, "nat-")
				continue
			}
			keep = append(keep, ac)
		}
		n.AccessConfigs = keep
		return nil
	}), nil
}

func (s *Sim) allocExternalLocked() string {
	for {
		s.extPoolNext++
		i := s.extPoolNext
		// 203.0.113.0/24 then 198.51.100.0/24 (documentation ranges).
		var ip string
		if i < 255 {
			ip = fmt.Sprintf("203.0.113.%d", i)
		} else {
			ip = fmt.Sprintf("198.51.100.%d", i%254+1)
		}
		used := false
		for _, p := range s.projects {
			for _, a := range p.addresses {
				if a.Address == ip && a.deleted.IsZero() {
					used = true
				}
			}
		}
		if !used {
			return ip
		}
	}
}

// ---- addresses ----

func (s *Sim) users(p *project, a *address) []string {
	var out []string
	for _, in := range p.instances {
		for _, n := range in.nics {
			if a.AddressType == "EXTERNAL" {
				for _, ac := range n.AccessConfigs {
					if ac.NatIP == a.Address {
						out = append(out, instanceLink(p.id, in.Zone, in.Name))
					}
				}
				continue
			}
			if n.NetworkIP == a.Address {
				out = append(out, instanceLink(p.id, in.Zone, in.Name))
			}
			for _, al := range n.Aliases {
				if strings.TrimSuffix(al.IPCidrRange, "/32") == a.Address {
					out = append(out, instanceLink(p.id, in.Zone, in.Name))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func (s *Sim) visible(a *address) bool {
	cut := time.Now().Add(-s.lag)
	if a.created.After(cut) {
		return false
	}
	return a.deleted.IsZero() || a.deleted.After(cut)
}

// addressStatus is the address's status as Compute reports it: RESERVING while its insert
// operation runs, then RESERVED, or IN_USE while a resource uses it.
func (s *Sim) addressStatus(p *project, a *address) string {
	switch {
	case a.reserving:
		return "RESERVING"
	case len(s.users(p, a)) > 0:
		return "IN_USE"
	}
	return "RESERVED"
}

func (s *Sim) addressJSON(p *project, a *address) map[string]any {
	users := s.users(p, a)
	status := s.addressStatus(p, a)
	m := map[string]any{
		"kind":              "compute#address",
		"id":                strconv.FormatUint(a.id, 10),
		"name":              a.Name,
		"address":           a.Address,
		"addressType":       a.AddressType,
		"region":            fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s", p.id, a.Region),
		"selfLink":          fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s/addresses/%s", p.id, a.Region, a.Name),
		"status":            status,
		"creationTimestamp": a.created.Format(time.RFC3339Nano),
		"ipVersion":         "IPV4",
	}
	if a.Purpose != "" {
		m["purpose"] = a.Purpose
	}
	if a.Subnetwork != "" {
		m["subnetwork"] = a.Subnetwork
	}
	if a.NetworkTier != "" {
		m["networkTier"] = a.NetworkTier
	}
	if len(users) > 0 {
		m["users"] = users
	}
	if len(a.Labels) > 0 {
		m["labels"] = a.Labels
	}
	m["labelFingerprint"] = labelFingerprint(a.Labels)
	return m
}

// labelFingerprint is the address's labelFingerprint: a hash of its labels, which setLabels
// must be sent.
func labelFingerprint(l map[string]string) string {
	h := fnv.New64a()
	for _, k := range slices.Sorted(maps.Keys(l)) {
		fmt.Fprintf(h, "%s=%s;", k, l[k])
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// setAddressLabels is addresses.setLabels: the labels replaced as a whole, with the
// labelFingerprint last read (412 conditionNotMet when the labels changed since), in a region
// operation.
func (s *Sim) setAddressLabels(p *project, r *http.Request, parts []string) (any, *apiError) {
	a := p.addresses[parts[2]+"/"+parts[4]]
	if a == nil || !a.deleted.IsZero() {
		return nil, errf(http.StatusNotFound, "notFound", "The resource 'projects/%s/regions/%s/addresses/%s' was not found", p.id, parts[2], parts[4])
	}
	var body struct {
		LabelFingerprint string            `json:"labelFingerprint"`
		Labels           map[string]string `json:"labels"`
	}
	if err := decode(r, &body); err != nil {
		return nil, errf(http.StatusBadRequest, "parseError", "%v", err)
	}
	if body.LabelFingerprint == "" {
		return nil, errf(http.StatusBadRequest, "required", "Required field 'labelFingerprint' not specified")
	}
	if body.LabelFingerprint != labelFingerprint(a.Labels) {
		return nil, errf(http.StatusPreconditionFailed, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
	}
	labels := maps.Clone(body.Labels)
	return s.newOp(p, "region", parts[2], "setLabels", fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s/addresses/%s", p.id, parts[2], a.Name),
		MAddressesSetLabels, func() *opError {
			a.Labels = labels
			return nil
		}), nil
}

func (s *Sim) getAddress(p *project, _ *http.Request, parts []string) (any, *apiError) {
	a := p.addresses[parts[2]+"/"+parts[4]]
	if a == nil || !s.visible(a) {
		return nil, errf(http.StatusNotFound, "notFound", "The resource 'projects/%s/regions/%s/addresses/%s' was not found", p.id, parts[2], parts[4])
	}
	return s.addressJSON(p, a), nil
}

// resourceName is Compute's rule for resource names (RFC 1035 labels, at most 63 characters).
var resourceName = regexp.MustCompile(`^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$`)

func (s *Sim) listAddresses(p *project, r *http.Request, parts []string) (any, *apiError) {
	q := r.URL.Query()
	f, e := listFilter(q.Get("filter"), func(field string) bool {
		return strings.HasPrefix(field, "labels.") || slices.Contains([]string{"name", "address", "addressType", "status", "purpose"}, field)
	})
	if e != nil {
		return nil, e
	}
	page, e := s.pageOf(q)
	if e != nil {
		return nil, e
	}
	region := ""
	if parts[1] == "regions" {
		region = parts[2]
	}
	// Keys sort by region, then name: a stable order for page tokens.
	var matched []*address
	for _, k := range slices.Sorted(maps.Keys(p.addresses)) {
		a := p.addresses[k]
		if !s.visible(a) || (region != "" && a.Region != region) {
			continue
		}
		status := s.addressStatus(p, a)
		if f.match(func(field string) (string, bool) {
			switch field {
			case "name":
				return a.Name, true
			case "address":
				return a.Address, a.Address != ""
			case "addressType":
				return a.AddressType, true
			case "status":
				return status, true
			case "purpose":
				return a.Purpose, a.Purpose != ""
			}
			v, ok := a.Labels[strings.TrimPrefix(field, "labels.")]
			return v, ok
		}) {
			matched = append(matched, a)
		}
	}
	matched, next := cut(page, matched)
	byRegion := map[string][]map[string]any{}
	for _, a := range matched {
		byRegion[a.Region] = append(byRegion[a.Region], s.addressJSON(p, a))
	}
	var out map[string]any
	if region != "" {
		out = map[string]any{"kind": "compute#addressList", "items": byRegion[region]}
	} else {
		items := map[string]any{}
		for reg, list := range byRegion {
			items["regions/"+reg] = map[string]any{"addresses": list}
		}
		out = map[string]any{"kind": "compute#addressAggregatedList", "items": items}
	}
	if next != "" {
		out["nextPageToken"] = next
	}
	return out, nil
}

// listPage is one page of a list call: Compute's maxResults (default and maximum 500) and an
// opaque pageToken from the previous page's nextPageToken.
type listPage struct{ offset, size int }

func (s *Sim) pageOf(q url.Values) (listPage, *apiError) {
	pg := listPage{size: s.pageSize}
	if v := q.Get("maxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 500 {
			return pg, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'maxResults': '%s'. Must be less than or equal to 500", v)
		}
		if n > 0 && n < pg.size {
			pg.size = n
		}
	}
	if t := q.Get("pageToken"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		off, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(b), "offset:") || off < 0 {
			return pg, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'pageToken': '%s'.", t)
		}
		pg.offset = off
	}
	return pg, nil
}

// cut returns the page's part of all and the token of the next page ("" on the last one).
func cut[T any](pg listPage, all []T) ([]T, string) {
	if pg.offset >= len(all) {
		return nil, ""
	}
	end := min(pg.offset+pg.size, len(all))
	next := ""
	if end < len(all) {
		next = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(end)))
	}
	return all[pg.offset:end], next
}

func (s *Sim) insertAddress(p *project, r *http.Request, parts []string) (any, *apiError) {
	region := parts[2]
	var body struct {
		Name        string            `json:"name"`
		Address     string            `json:"address"`
		AddressType string            `json:"addressType"`
		Purpose     string            `json:"purpose"`
		Subnetwork  string            `json:"subnetwork"`
		NetworkTier string            `json:"networkTier"`
		Labels      map[string]string `json:"labels"`
	}
	if err := decode(r, &body); err != nil {
		return nil, errf(http.StatusBadRequest, "parseError", "%v", err)
	}
	if body.Name == "" {
		return nil, errf(http.StatusBadRequest, "required", "Required field 'resource.name' not specified")
	}
	if !resourceName.MatchString(body.Name) {
		return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.name': '%s'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'", body.Name)
	}
	if a := p.addresses[region+"/"+body.Name]; a != nil && a.deleted.IsZero() {
		return nil, errf(http.StatusConflict, "alreadyExists", "The resource 'projects/%s/regions/%s/addresses/%s' already exists", p.id, region, body.Name)
	}
	if body.AddressType == "" {
		body.AddressType = "EXTERNAL"
	}
	a := &address{Name: body.Name, Region: region, AddressType: body.AddressType, Purpose: body.Purpose, NetworkTier: body.NetworkTier, Labels: body.Labels}
	var fail *opError
	switch body.AddressType {
	case "INTERNAL":
		sn := s.subnetByLink(p, body.Subnetwork)
		if sn == nil || sn.Region != region {
			return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.subnetwork': '%s'.", body.Subnetwork)
		}
		ip, err := netip.ParseAddr(body.Address)
		if err != nil || !sn.CIDR.Contains(ip) {
			return nil, errf(http.StatusBadRequest, "invalid", "Requested internal IP address '%s' is outside the subnetwork's range '%s'.", body.Address, sn.CIDR)
		}
		for _, o := range p.addresses {
			if o.deleted.IsZero() && o.AddressType == "INTERNAL" && o.Address == body.Address {
				return nil, errf(http.StatusBadRequest, "invalid", "IP '%s' is already reserved by address '%s'.", body.Address, o.Name)
			}
		}
		a.Address = body.Address
		a.Subnetwork = subnetLink(p.id, region, sn.Name)
	case "EXTERNAL":
		n := 0
		for _, o := range p.addresses {
			if o.deleted.IsZero() && o.AddressType == "EXTERNAL" {
				n++
			}
		}
		if n >= s.extQuota {
			fail = &opError{HTTPStatus: 403, Code: "QUOTA_EXCEEDED", Message: fmt.Sprintf("Quota 'STATIC_ADDRESSES' exceeded. Limit: %d.0 in region %s.", s.extQuota, region)}
			break
		}
		a.Address = s.allocExternalLocked()
	default:
		return nil, errf(http.StatusBadRequest, "invalid", "Invalid value for field 'resource.addressType': '%s'.", body.AddressType)
	}
	key := region + "/" + body.Name
	if fail == nil {
		// The address exists at once, RESERVING until the insert operation is DONE (Address.status
		// in the Compute reference): reads show it, and it cannot be used or deleted yet.
		s.seq++
		a.id = 8000000000 + s.seq
		a.created = time.Now()
		a.reserving = true
		p.addresses[key] = a
	}
	op := s.newOp(p, "region", region, "insert", fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s/addresses/%s", p.id, region, body.Name), MAddressesInsert, nil)
	o := s.ops[op["name"].(string)]
	failure := o.Failure
	if failure == nil {
		failure = fail
	}
	o.Failure = nil
	o.Apply = func() *opError {
		if failure != nil {
			if p.addresses[key] == a {
				delete(p.addresses, key) // a failed insert leaves no address
			}
			return failure
		}
		a.reserving = false
		return nil
	}
	return op, nil
}

func (s *Sim) deleteAddress(p *project, _ *http.Request, parts []string) (any, *apiError) {
	a := p.addresses[parts[2]+"/"+parts[4]]
	if a == nil || !a.deleted.IsZero() {
		return nil, errf(http.StatusNotFound, "notFound", "The resource 'projects/%s/regions/%s/addresses/%s' was not found", p.id, parts[2], parts[4])
	}
	if a.reserving {
		return nil, errf(http.StatusBadRequest, "resourceNotReady", "The resource 'projects/%s/regions/%s/addresses/%s' is not ready", p.id, parts[2], a.Name)
	}
	if u := s.users(p, a); len(u) > 0 {
		return nil, errf(http.StatusBadRequest, "resourceInUseByAnotherResource", "The address resource '%s' is already being used by '%s'", a.Name, u[0])
	}
	a.deleted = time.Now().Add(s.opDelay)
	return s.newOp(p, "region", parts[2], "delete", fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s/addresses/%s", p.id, parts[2], a.Name), MAddressesDelete, nil), nil
}

// ---- subnetworks ----

func (s *Sim) getSubnetwork(p *project, _ *http.Request, parts []string) (any, *apiError) {
	sn := p.subnets[parts[2]+"/"+parts[4]]
	if sn == nil {
		return nil, errf(http.StatusNotFound, "notFound", "The resource 'projects/%s/regions/%s/subnetworks/%s' was not found", p.id, parts[2], parts[4])
	}
	sec := []map[string]string{}
	names := make([]string, 0, len(sn.Secondary))
	for n := range sn.Secondary {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sec = append(sec, map[string]string{"rangeName": n, "ipCidrRange": sn.Secondary[n].String()})
	}
	gw := sn.CIDR.Addr().Next()
	return map[string]any{
		"kind":              "compute#subnetwork",
		"id":                strconv.FormatUint(sn.id, 10),
		"name":              sn.Name,
		"network":           fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/global/networks/%s", p.id, sn.Network),
		"region":            fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s", p.id, sn.Region),
		"ipCidrRange":       sn.CIDR.String(),
		"gatewayAddress":    gw.String(),
		"secondaryIpRanges": sec,
		"selfLink":          subnetLink(p.id, sn.Region, sn.Name),
		"fingerprint":       "subnetfp",
	}, nil
}

// ---- operations ----

// newOp registers an operation. A zero operation delay still returns RUNNING: the change
// applies on the next request, as on the real API where an operation is never DONE at once.
func (s *Sim) newOp(p *project, scope, where, opType, target, method string, apply func() *opError) map[string]any {
	s.seq++
	op := &operation{
		name:    fmt.Sprintf("operation-%d-%x", time.Now().UnixMilli(), s.seq),
		project: p.id, opType: opType, target: target,
		id: 9000000000 + s.seq, Op: simkit.Op[opError]{DoneAt: time.Now().Add(s.opDelay + s.OperationTime()), Apply: apply},
	}
	if scope == "zone" {
		op.zone = where
	} else {
		op.region = where
	}
	if f, ok := s.failOps.Next(method); ok {
		op.Failure = &opError{HTTPStatus: f.HTTPStatus, Code: f.Code, Message: f.Message}
	}
	s.ops[op.name] = op
	s.started.Start(&op.Op)
	return s.opJSON(op)
}

func (s *Sim) opJSON(op *operation) map[string]any {
	m := map[string]any{
		"kind":          "compute#operation",
		"id":            strconv.FormatUint(op.id, 10),
		"name":          op.name,
		"operationType": op.opType,
		"targetLink":    op.target,
		"status":        "RUNNING",
		"progress":      0,
		"insertTime":    time.Now().Format(time.RFC3339Nano),
	}
	if op.zone != "" {
		m["zone"] = fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/zones/%s", op.project, op.zone)
		m["selfLink"] = fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/zones/%s/operations/%s", op.project, op.zone, op.name)
	} else {
		m["region"] = fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s", op.project, op.region)
		m["selfLink"] = fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/regions/%s/operations/%s", op.project, op.region, op.name)
	}
	if op.Done {
		m["status"] = "DONE"
		m["progress"] = 100
		m["endTime"] = time.Now().Format(time.RFC3339Nano)
		if f := op.Failure; f != nil {
			m["error"] = map[string]any{"errors": []map[string]string{{"code": f.Code, "message": f.Message}}}
			m["httpErrorStatusCode"] = f.HTTPStatus
			m["httpErrorMessage"] = strings.ToUpper(http.StatusText(f.HTTPStatus))
		}
	}
	return m
}

func (s *Sim) getOperation(p *project, _ *http.Request, parts []string) (any, *apiError) {
	op := s.ops[parts[4]]
	if op == nil || op.project != p.id || (parts[1] == "zones" && op.zone != parts[2]) || (parts[1] == "regions" && op.region != parts[2]) {
		return nil, errf(http.StatusNotFound, "notFound", "The resource 'projects/%s/%s/%s/operations/%s' was not found", p.id, parts[1], parts[2], parts[4])
	}
	return s.opJSON(op), nil
}

// waitOperation blocks (without the lock) until the operation is due, at most 2 minutes as
// the real wait method does.
func (s *Sim) waitOperation(r *http.Request, parts []string) {
	if len(parts) < 5 {
		return
	}
	s.mu.Lock()
	op := s.ops[parts[4]]
	var until time.Time
	if op != nil {
		until = op.DoneAt
	}
	s.mu.Unlock()
	d := time.Until(until)
	if d <= 0 {
		return
	}
	if d > 2*time.Minute {
		d = 2 * time.Minute
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
}

// ---- metadata ----

func (s *Sim) serveMetadata(w http.ResponseWriter, r *http.Request) {
	s.Count(MMetadata)
	s.mu.Lock()
	m := s.meta
	s.mu.Unlock()
	w.Header().Set("Metadata-Flavor", "Google")
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
		return
	}
	var v string
	switch strings.TrimPrefix(r.URL.Path, "/computeMetadata/v1/") {
	case "project/project-id":
		v = m.Project
	case "project/numeric-project-id":
		v = strconv.FormatUint(m.Number, 10)
	case "instance/zone":
		v = fmt.Sprintf("projects/%d/zones/%s", m.Number, m.Zone)
	case "instance/name", "instance/hostname":
		v = m.Instance
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/text")
	_, _ = io.WriteString(w, v)
}

func decode(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	return json.Unmarshal(b, v)
}
