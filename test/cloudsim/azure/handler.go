package azuresim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

type armError struct {
	status  int
	code    string
	msg     string
	details []any
}

func (e *armError) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("x-ms-error-code", e.code)
	w.WriteHeader(e.status)
	body := map[string]any{"code": e.code, "message": e.msg}
	if len(e.details) > 0 {
		body["details"] = e.details
	}
	_, _ = w.Write(simkit.MustJSON(map[string]any{"error": body}))
}

func aerr(status int, code, format string, args ...any) *armError {
	return &armError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

type response struct {
	status  int
	body    any
	headers map[string]string
}

// Handler serves ARM under /subscriptions/, IMDS under /metadata/ and the admin API under
// /admin/.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/subscriptions/", s.serveARM)
	mux.HandleFunc("/metadata/instance", s.serveIMDS)
	mux.Handle("/admin/", simkit.Admin[SeedDocument, FaultDocument, State, Event](s, s.seed, s.faults))
	mux.HandleFunc("POST /admin/nicchange", s.serveNICChange)
	mux.HandleFunc("POST /admin/upgradeinstance", s.serveUpgradeInstance)
	return mux
}

func (s *Sim) serveARM(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	method, h := s.route(r.Method, parts)
	if h == nil {
		aerr(http.StatusNotFound, "NoRegisteredProviderFound", "no route %s %s", r.Method, r.URL.Path).write(w)
		return
	}
	s.Count(method)
	s.mu.Lock()
	hook, hooked := s.before.Next(method)
	s.mu.Unlock()
	if hooked {
		hook()
	}
	// Unlike GCP's, a request whose client stops waiting still goes on.
	s.Delay(context.WithoutCancel(r.Context()))
	s.CallDelay(context.WithoutCancel(r.Context()), r.Method != http.MethodGet)
	if e := s.checkAPIVersion(r.URL.Query(), typeOf(method, parts)); e != nil {
		e.write(w)
		return
	}
	body, _ := io.ReadAll(r.Body)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	if e := s.takeTokenLocked(w, r.Method); e != nil {
		e.write(w)
		return
	}
	// Every ARM route the simulator serves is the network RP's (the scale-set NIC reads too),
	// but the compute API's.
	if !isCompute(method) {
		if e := s.takeNetworkRPLocked(w, r.Method); e != nil {
			e.write(w)
			return
		}
	}
	if s.throttleN != 0 {
		if s.throttleN > 0 {
			s.throttleN--
		}
		w.Header().Set("Retry-After", s.throttleRA)
		aerr(http.StatusTooManyRequests, "TooManyRequests", "The request is being throttled.").write(w)
		return
	}
	if f, ok := s.throttle.Next(method); ok {
		w.Header().Set("Retry-After", f.retryAfter)
		aerr(http.StatusTooManyRequests, "TooManyRequests", "The request is being throttled.").write(w)
		return
	}
	var after *scriptedFault
	if f, ok := s.scripted.Next(method); ok {
		if !f.afterApply {
			aerr(f.status, "InternalServerError", "An error occurred (injected).").write(w)
			return
		}
		after = &f
	}
	if !strings.EqualFold(parts[1], s.sub) {
		aerr(http.StatusNotFound, "SubscriptionNotFound", "The subscription '%s' could not be found.", parts[1]).write(w)
		return
	}
	resp, e := h(r, parts, body)
	if after != nil {
		aerr(after.status, "InternalServerError", "An error occurred after the change was accepted (injected).").write(w)
		return
	}
	if e != nil {
		e.write(w)
		return
	}
	for k, v := range resp.headers {
		w.Header().Set(k, v)
	}
	if resp.body == nil {
		w.WriteHeader(resp.status)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(resp.status)
	_, _ = w.Write(simkit.MustJSON(resp.body))
}

type handler func(r *http.Request, parts []string, body []byte) (*response, *armError)

func (s *Sim) route(method string, parts []string) (string, handler) {
	lp := make([]string, len(parts))
	for i, p := range parts {
		lp[i] = strings.ToLower(p)
	}
	if m, h := s.routeScaleSet(method, lp); h != nil {
		return m, h
	}
	n := len(lp)
	if n == 8 && lp[2] == "providers" && lp[3] == "microsoft.compute" && lp[4] == "locations" && lp[6] == "operations" {
		return MComputeOperation, s.asyncOperation
	}
	if n >= 6 && lp[2] == "providers" && lp[3] == "microsoft.network" && lp[4] == "locations" && n == 8 {
		switch lp[6] {
		case "operations":
			return MOperation, s.asyncOperation
		case "operationresults":
			return MOperation, s.locationOperation
		}
	}
	if n < 6 || lp[2] != "resourcegroups" || lp[4] != "providers" || lp[5] != "microsoft.network" {
		return "", nil
	}
	switch {
	case n == 7 && lp[6] == "networkinterfaces" && method == http.MethodGet:
		return MNICList, s.listNICs
	case n == 8 && lp[6] == "networkinterfaces" && method == http.MethodGet:
		return MNICGet, s.getNIC
	case n == 8 && lp[6] == "networkinterfaces" && method == http.MethodPut:
		return MNICPut, s.putNIC
	case n == 7 && lp[6] == "publicipaddresses" && method == http.MethodGet:
		return MPIPList, s.listPIPs
	case n == 8 && lp[6] == "publicipaddresses" && method == http.MethodGet:
		return MPIPGet, s.getPIP
	case n == 8 && lp[6] == "publicipaddresses" && method == http.MethodPut:
		return MPIPPut, s.putPIP
	case n == 8 && lp[6] == "publicipaddresses" && method == http.MethodDelete:
		return MPIPDelete, s.deletePIP
	case n == 10 && lp[6] == "virtualnetworks" && lp[8] == "subnets" && method == http.MethodGet:
		return MSubnetGet, s.getSubnet
	case n == 7 && lp[6] == "publicipprefixes" && method == http.MethodGet:
		return MPrefixList, s.listPrefixes
	case n == 8 && lp[6] == "publicipprefixes" && method == http.MethodGet:
		return MPrefixGet, s.getPrefix
	case n == 8 && lp[6] == "publicipprefixes" && method == http.MethodPut:
		return MPrefixPut, s.putPrefix
	case n == 8 && lp[6] == "publicipprefixes" && method == http.MethodDelete:
		return MPrefixDelete, s.deletePrefix
	}
	return "", nil
}

// typeOf names the resource type of a request as ARM's api-version errors do.
func typeOf(method string, parts []string) string {
	switch method {
	case MNICGet, MNICPut, MNICList:
		return "networkInterfaces"
	case MPIPGet, MPIPPut, MPIPDelete, MPIPList:
		return "publicIPAddresses"
	case MPrefixGet, MPrefixPut, MPrefixDelete, MPrefixList:
		return "publicIPPrefixes"
	case MInstanceGet, MInstancePut:
		return instanceType
	case MComputeOperation:
		return computeOperationType
	case MScaleSetPIPGet:
		return scaleSetNICType
	case MSubnetGet:
		return "virtualNetworks/subnets"
	case MScaleSetNICList, MScaleSetNICGet, MScaleSetNICListAll:
		return scaleSetNICType
	}
	return "locations/" + parts[6]
}

func resID(parts []string) string { return "/" + strings.Join(parts, "/") }

// ---- operations ----

// newOp starts the long-running operation of a write to the resource key; it completes after
// the operation delay by calling apply with the failure a FailNextOperation fault scripted for
// method (nil: none), and ends with the failure apply returns. r is the request (nil: a change
// by another actor, whose operation no client polls).
func (s *Sim) newOp(r *http.Request, method, key string, apply func(fail *OpFailure) *OpFailure) (*operation, map[string]string) {
	return s.newOpIn("Microsoft.Network", servedAPIVersions, r, method, key, apply)
}

// newOpIn is newOp for a resource provider namespace (Microsoft.Network, Microsoft.Compute)
// whose operations are served at versions.
func (s *Sim) newOpIn(namespace string, versions []string, r *http.Request, method, key string, apply func(fail *OpFailure) *OpFailure) (*operation, map[string]string) {
	s.seq++
	var fail *OpFailure
	if f, ok := s.failOps.Next(method); ok {
		fail = &f
	}
	op := &operation{id: fmt.Sprintf("%08x-%04x-4000-8000-%012x", s.seq, s.seq>>16, time.Now().UnixNano()&0xffffffffffff),
		Op: simkit.Op[OpFailure]{DoneAt: time.Now().Add(s.opDelay + s.OperationTime()), Apply: func() *OpFailure { return apply(fail) }}}
	s.ops[op.id] = op
	s.busy[key] = op
	s.started.Start(&op.Op)
	scheme, host, version := "https", "management.azure.com", versions[len(versions)-1]
	if r != nil {
		if r.TLS == nil {
			scheme = "http"
		}
		host, version = r.Host, r.URL.Query().Get("api-version")
	}
	base := fmt.Sprintf("%s://%s/subscriptions/%s/providers/%s/locations/%s", scheme, host, s.sub, namespace, s.location)
	op.url = base + "/operations/" + op.id + "?api-version=" + version
	h := map[string]string{
		"Azure-AsyncOperation": op.url,
		"Location":             base + "/operationResults/" + op.id + "?api-version=" + version,
	}
	if s.retryAfter != "" {
		h["Retry-After"] = s.retryAfter
	}
	return op, h
}

func (s *Sim) asyncOperation(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	op := s.ops[parts[7]]
	if op == nil {
		return nil, aerr(http.StatusNotFound, "NotFound", "Operation %s not found.", parts[7])
	}
	switch {
	case !op.Done:
		h := map[string]string{}
		if s.retryAfter != "" {
			h["Retry-After"] = s.retryAfter
		}
		return &response{status: 200, body: map[string]any{"status": "InProgress"}, headers: h}, nil
	case op.Failure != nil:
		return &response{status: 200, body: map[string]any{"status": "Failed", "error": map[string]any{"code": op.Failure.Code, "message": op.Failure.Message}}}, nil
	}
	return &response{status: 200, body: map[string]any{"status": "Succeeded"}}, nil
}

func (s *Sim) locationOperation(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	op := s.ops[parts[7]]
	if op == nil {
		return nil, aerr(http.StatusNotFound, "NotFound", "Operation %s not found.", parts[7])
	}
	switch {
	case !op.Done:
		return &response{status: http.StatusAccepted, headers: map[string]string{"Retry-After": "0"}}, nil
	case op.Failure != nil:
		return nil, aerr(http.StatusBadRequest, op.Failure.Code, "%s", op.Failure.Message)
	}
	return &response{status: http.StatusNoContent}, nil
}

// ---- network interfaces ----

// list answers one page of the stored documents under the request's path (a resource group's
// collection), shaped by view.
func (s *Sim) list(r *http.Request, parts []string, docs map[string]map[string]any, view func(map[string]any) map[string]any) (*response, *armError) {
	if !s.rgs[strings.ToLower(parts[3])] {
		return nil, aerr(http.StatusNotFound, "ResourceGroupNotFound", "Resource group '%s' could not be found.", parts[3])
	}
	prefix := strings.ToLower(resID(parts)) + "/"
	var keys []string
	for _, k := range slices.Sorted(maps.Keys(docs)) {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	from, to, next, e := s.pageOf(r, len(keys))
	if e != nil {
		return nil, e
	}
	out := []any{}
	for _, k := range keys[from:to] {
		out = append(out, view(docs[k]))
	}
	body := map[string]any{"value": out}
	if next != "" {
		body["nextLink"] = next
	}
	return &response{status: 200, body: body}, nil
}

func (s *Sim) listNICs(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	return s.list(r, parts, s.nics, clone)
}

func (s *Sim) getNIC(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	n := s.nics[strings.ToLower(resID(parts))]
	if n == nil {
		return nil, s.notFound(parts)
	}
	return &response{status: 200, body: n, headers: map[string]string{"ETag": str(n["etag"])}}, nil
}

// inProgress is ARM's answer to a write while the resource's previous operation runs.
func inProgress(op *operation) *armError {
	return aerr(http.StatusConflict, "AnotherOperationInProgress", "Another operation on this or dependent resource is in progress. To retrieve status of the operation use uri: %s.", op.url)
}

func (s *Sim) putNIC(r *http.Request, parts []string, body []byte) (*response, *armError) {
	id := resID(parts)
	key := strings.ToLower(id)
	old := s.nics[key]
	if old == nil {
		if !s.rgs[strings.ToLower(parts[3])] {
			return nil, s.notFound(parts)
		}
		if e := precondition(r, nil, id); e != nil {
			return nil, e
		}
		return nil, aerr(http.StatusBadRequest, "InvalidRequest", "egressd's simulator does not create network interfaces (%s)", id)
	}
	if op := s.busy[key]; op.running() {
		return nil, inProgress(op)
	}
	if e := precondition(r, old, id); e != nil {
		return nil, e
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, aerr(http.StatusBadRequest, "InvalidRequestFormat", "%v", err)
	}
	doc["id"], doc["name"], doc["type"] = str(old["id"]), str(old["name"]), "Microsoft.Network/networkInterfaces"
	if doc["location"] == nil {
		return nil, aerr(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
	}
	// Read-only properties come from the server.
	np := props(doc)
	op := props(old)
	np["macAddress"], np["virtualMachine"], np["primary"] = op["macAddress"], op["virtualMachine"], op["primary"]
	cfgs := ipConfigs(doc)
	if len(cfgs) > s.maxIPCfg[key] {
		return nil, aerr(http.StatusBadRequest, "NetworkInterfaceIpConfigurationCountLimitReached", "Network interface %s has %d IP configurations; the limit is %d.", str(old["name"]), len(cfgs), s.maxIPCfg[key])
	}
	primaries := 0
	seen := map[string]bool{}
	for _, c := range cfgs {
		p := props(c)
		if str(c["name"]) == "" {
			return nil, aerr(http.StatusBadRequest, "InvalidRequestFormat", "ipConfiguration name is required")
		}
		if b, _ := p["primary"].(bool); b {
			primaries++
		}
		sn := s.subnets[strings.ToLower(str(mapOf(p["subnet"])["id"]))]
		if sn == nil {
			return nil, aerr(http.StatusBadRequest, "InvalidResourceReference", "Resource %s referenced by %s was not found.", str(mapOf(p["subnet"])["id"]), id)
		}
		ipS := str(p["privateIPAddress"])
		ip, err := netip.ParseAddr(ipS)
		if err != nil || !sn.CIDR.Contains(ip) {
			return nil, aerr(http.StatusBadRequest, "PrivateIPAddressNotInSubnet", "Private static IP address %s does not belong to the range of subnet prefix %s.", ipS, sn.CIDR)
		}
		if seen[ipS] {
			return nil, aerr(http.StatusBadRequest, "DuplicatePrivateIPAddress", "%s is used twice on %s", ipS, id)
		}
		seen[ipS] = true
		if other := s.ipUser(ipS, key); other != "" {
			return nil, aerr(http.StatusBadRequest, "PrivateIPAddressInUse", "IP configuration %s is using the private IP address %s which is already allocated to resource %s.", str(c["name"]), ipS, other)
		}
		if pip := mapOf(p["publicIPAddress"]); pip != nil {
			pk := strings.ToLower(str(pip["id"]))
			if s.pips[pk] == nil {
				return nil, aerr(http.StatusBadRequest, "InvalidResourceReference", "Resource %s referenced by %s was not found.", str(pip["id"]), id)
			}
			if st := str(props(s.pips[pk])["provisioningState"]); st != "Succeeded" {
				// ARM answers 429 RetryableError with the detail ReferencedResourceNotProvisioned.
				e := aerr(http.StatusTooManyRequests, "RetryableError", "A retryable error occurred.")
				e.details = []any{map[string]any{"code": "ReferencedResourceNotProvisioned",
					"message": fmt.Sprintf("Cannot proceed with operation because resource %s used by resource %s is not in Succeeded state. Resource is in %s state and the last operation that updated/is updating the resource is PutPublicIpAddressOperation.", str(pip["id"]), id, st)}}
				return nil, e
			}
			if other := s.pipUser(pk, key); other != "" {
				return nil, aerr(http.StatusBadRequest, "PublicIPAddressInUse", "Resource %s is referenced by %s.", str(pip["id"]), other)
			}
		}
	}
	if primaries != 1 {
		return nil, aerr(http.StatusBadRequest, "NetworkInterfaceMustHaveExactlyOnePrimaryIpConfiguration", "%s has %d primary ipConfigurations.", id, primaries)
	}
	h := s.writeNICLocked(r, key, old, doc)
	return &response{status: 200, body: doc, headers: h}, nil
}

// writeNICLocked stores doc as the NIC's new content, Updating with a new etag, and starts the
// operation that makes it Succeeded, or on a scripted failure restores old's content (or keeps
// doc's, OpFailure.KeepContent) as Failed. It returns the operation's headers.
func (s *Sim) writeNICLocked(r *http.Request, key string, old, doc map[string]any) map[string]string {
	s.finishNICLocked(doc, "Updating")
	s.stampLocked(doc)
	s.nics[key] = doc
	_, h := s.newOp(r, MNICPut, key, func(fail *OpFailure) *OpFailure {
		if fail != nil {
			back := clone(old)
			if fail.KeepContent {
				back = doc
			}
			setStateLocked(back, "Failed")
			s.stampLocked(back)
			s.nics[key] = back
			return fail
		}
		setStateLocked(doc, "Succeeded")
		s.diffEvents(str(doc["name"]), old, doc)
		return nil
	})
	return h
}

func mapOf(v any) map[string]any { m, _ := v.(map[string]any); return m }

func (s *Sim) ipUser(ip, skipNIC string) string {
	for _, docs := range []map[string]map[string]any{s.nics, s.scaleSetNICs, s.pendingNICs} {
		for k, n := range docs {
			if k == skipNIC {
				continue
			}
			for _, c := range ipConfigs(n) {
				if str(props(c)["privateIPAddress"]) == ip {
					return str(c["id"])
				}
			}
		}
	}
	return ""
}

func (s *Sim) pipUser(pipKey, skipNIC string) string {
	for k, n := range s.nics {
		if k == skipNIC {
			continue
		}
		for _, c := range ipConfigs(n) {
			if strings.EqualFold(str(mapOf(props(c)["publicIPAddress"])["id"]), pipKey) {
				return str(c["id"])
			}
		}
	}
	return ""
}

func (s *Sim) diffEvents(nic string, before, after map[string]any) {
	set := func(n map[string]any) (map[string]bool, map[string]bool) {
		ips, pips := map[string]bool{}, map[string]bool{}
		for _, c := range ipConfigs(n) {
			p := props(c)
			if b, _ := p["primary"].(bool); !b {
				ips[str(p["privateIPAddress"])] = true
			}
			if pip := mapOf(p["publicIPAddress"]); pip != nil {
				doc := s.pips[strings.ToLower(str(pip["id"]))]
				if doc == nil {
					doc = s.ssPIPs[strings.ToLower(str(pip["id"]))]
				}
				if doc != nil {
					pips[str(props(doc)["ipAddress"])] = true
				}
			}
		}
		return ips, pips
	}
	bi, bp := set(before)
	ai, ap := set(after)
	now := time.Now()
	for ip := range bi {
		if !ai[ip] {
			s.events = append(s.events, Event{At: now, NIC: nic, IP: ip, Kind: "ip-"})
		}
	}
	for ip := range bp {
		if !ap[ip] {
			s.events = append(s.events, Event{At: now, NIC: nic, IP: ip, Kind: "pip-"})
		}
	}
	for ip := range ai {
		if !bi[ip] {
			s.events = append(s.events, Event{At: now, NIC: nic, IP: ip, Kind: "ip+"})
		}
	}
	for ip := range ap {
		if !bp[ip] {
			s.events = append(s.events, Event{At: now, NIC: nic, IP: ip, Kind: "pip+"})
		}
	}
}

// ---- public IP addresses ----

func (s *Sim) pipView(p map[string]any) map[string]any {
	out := clone(p)
	id := strings.ToLower(str(p["id"]))
	for _, n := range s.nics {
		for _, c := range ipConfigs(n) {
			if strings.EqualFold(str(mapOf(props(c)["publicIPAddress"])["id"]), id) {
				props(out)["ipConfiguration"] = map[string]any{"id": str(c["id"])}
			}
		}
	}
	return out
}

func (s *Sim) listPIPs(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	return s.list(r, parts, s.pips, s.pipView)
}

func (s *Sim) getPIP(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	return s.getDoc(parts, s.pips, s.pipView)
}

// getDoc answers the GET of a top-level resource stored in docs, shaped by view, with its etag.
func (s *Sim) getDoc(parts []string, docs map[string]map[string]any, view func(map[string]any) map[string]any) (*response, *armError) {
	d := docs[strings.ToLower(resID(parts))]
	if d == nil {
		return nil, s.notFound(parts)
	}
	return &response{status: 200, body: view(d), headers: map[string]string{"ETag": str(d["etag"])}}, nil
}

// readPut starts the PUT of a top-level resource stored in docs: its resource group exists, no
// operation on it runs, If-Match and If-None-Match hold, and the body is a JSON document with a
// location, given the path's id, name and type typ. old is the stored document (nil: a
// creation).
func (s *Sim) readPut(r *http.Request, parts []string, body []byte, docs map[string]map[string]any, typ string) (old, doc map[string]any, e *armError) {
	id := resID(parts)
	key := strings.ToLower(id)
	if !s.rgs[strings.ToLower(parts[3])] {
		return nil, nil, s.notFound(parts)
	}
	old = docs[key]
	if op := s.busy[key]; op.running() {
		return nil, nil, inProgress(op)
	}
	if e := precondition(r, old, id); e != nil {
		return nil, nil, e
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, aerr(http.StatusBadRequest, "InvalidRequestFormat", "%v", err)
	}
	if doc["location"] == nil {
		return nil, nil, aerr(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
	}
	doc["id"], doc["name"], doc["type"] = id, parts[len(parts)-1], typ
	return old, doc, nil
}

// storePutLocked stores doc (Updating, a new etag) in docs under key and starts the PUT's
// operation (method's): Succeeded when it completes; on a scripted failure the previous content
// (old; none: the resource is gone) or, with OpFailure.KeepContent, doc's, Failed. It returns the
// operation's headers and the PUT's status (201 for a creation).
func (s *Sim) storePutLocked(r *http.Request, method, key string, docs map[string]map[string]any, old, doc map[string]any) (map[string]string, int) {
	props(doc)["provisioningState"] = "Updating"
	s.stampLocked(doc)
	docs[key] = doc
	_, h := s.newOp(r, method, key, func(fail *OpFailure) *OpFailure {
		if fail != nil {
			back := old
			if fail.KeepContent {
				back = doc
			}
			if back == nil {
				delete(docs, key)
				return fail
			}
			back = clone(back)
			props(back)["provisioningState"] = "Failed"
			s.stampLocked(back)
			docs[key] = back
			return fail
		}
		props(doc)["provisioningState"] = "Succeeded"
		return nil
	})
	if old == nil {
		return h, http.StatusCreated
	}
	return h, http.StatusOK
}

// deleteDoc deletes a top-level resource stored in docs through an operation tracked by
// Location (method's), unless inUse refuses it; a missing one is 204.
func (s *Sim) deleteDoc(r *http.Request, parts []string, method string, docs map[string]map[string]any, inUse func(old map[string]any) *armError) (*response, *armError) {
	key := strings.ToLower(resID(parts))
	if !s.rgs[strings.ToLower(parts[3])] {
		return nil, s.notFound(parts)
	}
	old := docs[key]
	if old == nil {
		return &response{status: http.StatusNoContent}, nil
	}
	if op := s.busy[key]; op.running() {
		return nil, inProgress(op)
	}
	if e := precondition(r, old, resID(parts)); e != nil {
		return nil, e
	}
	if e := inUse(old); e != nil {
		return nil, e
	}
	props(old)["provisioningState"] = "Deleting"
	_, h := s.newOp(r, method, key, func(fail *OpFailure) *OpFailure {
		if fail != nil {
			props(old)["provisioningState"] = "Failed"
			return fail
		}
		delete(docs, key)
		return nil
	})
	delete(h, "Azure-AsyncOperation") // DELETE is tracked through Location
	return &response{status: http.StatusAccepted, headers: h}, nil
}

func (s *Sim) putPIP(r *http.Request, parts []string, body []byte) (*response, *armError) {
	old, doc, e := s.readPut(r, parts, body, s.pips, "Microsoft.Network/publicIPAddresses")
	if e != nil {
		return nil, e
	}
	p := props(doc)
	if str(mapOf(doc["sku"])["name"]) == "Standard" && str(p["publicIPAllocationMethod"]) != "Static" {
		return nil, aerr(http.StatusBadRequest, "StandardSkuPublicIPAddressesMustBeStatic", "Standard sku publicIp %s must have AllocationMethod set to Static.", str(doc["id"]))
	}
	delete(p, "ipConfiguration") // read-only: the simulator derives it from the NICs
	if old != nil {
		p["ipAddress"] = props(old)["ipAddress"]
	} else {
		s.nextPub++
		p["ipAddress"] = fmt.Sprintf("20.%d.%d.%d", 50+s.nextPub/65536, (s.nextPub/256)%256, s.nextPub%256)
	}
	h, status := s.storePutLocked(r, MPIPPut, strings.ToLower(str(doc["id"])), s.pips, old, doc)
	return &response{status: status, body: s.pipView(doc), headers: h}, nil
}

func (s *Sim) deletePIP(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	return s.deleteDoc(r, parts, MPIPDelete, s.pips, func(map[string]any) *armError {
		if u := s.pipUser(strings.ToLower(resID(parts)), ""); u != "" {
			return aerr(http.StatusBadRequest, "PublicIPAddressCannotBeDeleted", "Public IP address %s can not be deleted since it is still allocated to resource %s.", resID(parts), u)
		}
		return nil
	})
}

// ---- subnets ----

func (s *Sim) getSubnet(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	sn := s.subnets[strings.ToLower(resID(parts))]
	if sn == nil {
		return nil, s.notFound(parts)
	}
	return &response{status: 200, body: map[string]any{
		"id": sn.ID, "name": parts[len(parts)-1], "type": "Microsoft.Network/virtualNetworks/subnets",
		"properties": map[string]any{"addressPrefix": sn.CIDR.String(), "provisioningState": "Succeeded"},
	}}, nil
}

// ---- IMDS ----

func (s *Sim) serveIMDS(w http.ResponseWriter, r *http.Request) {
	s.Count(MIMDS)
	s.mu.Lock()
	m := s.imds
	s.mu.Unlock()
	if r.Header.Get("Metadata") != "true" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(simkit.MustJSON(map[string]string{"error": "Bad request. Required metadata header not specified"}))
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(simkit.MustJSON(map[string]string{"error": "Bad request. api-version was not specified in the request"}))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(simkit.MustJSON(map[string]any{"compute": map[string]any{
		"subscriptionId": m.SubscriptionID, "resourceGroupName": m.ResourceGroupName, "location": m.Location, "name": m.Name,
	}}))
}
