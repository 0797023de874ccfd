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
	status int
	code   string
	msg    string
}

func (e *armError) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("x-ms-error-code", e.code)
	w.WriteHeader(e.status)
	_, _ = w.Write(simkit.MustJSON(map[string]any{"error": map[string]any{"code": e.code, "message": e.msg}}))
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
	// Unlike GCP's, a request whose client stops waiting still goes on.
	s.Delay(context.WithoutCancel(r.Context()))
	if r.URL.Query().Get("api-version") == "" {
		aerr(http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.").write(w)
		return
	}
	body, _ := io.ReadAll(r.Body)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
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
	n := len(lp)
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
	}
	return "", nil
}

func resID(parts []string) string { return "/" + strings.Join(parts, "/") }

// ---- operations ----

func (s *Sim) newOp(r *http.Request, method string, apply func() *OpFailure) (*operation, map[string]string) {
	s.seq++
	op := &operation{id: fmt.Sprintf("op-%d-%d", time.Now().UnixNano(), s.seq), Op: simkit.Op[OpFailure]{DoneAt: time.Now().Add(s.opDelay), Apply: apply}}
	if f, ok := s.failOps.Next(method); ok {
		op.Failure = &f
	}
	s.ops[op.id] = op
	s.started.Start(&op.Op)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := fmt.Sprintf("%s://%s/subscriptions/%s/providers/Microsoft.Network/locations/%s", scheme, r.Host, s.sub, s.location)
	h := map[string]string{
		"Azure-AsyncOperation": base + "/operations/" + op.id + "?api-version=" + r.URL.Query().Get("api-version"),
		"Location":             base + "/operationResults/" + op.id + "?api-version=" + r.URL.Query().Get("api-version"),
	}
	if s.retryAfter != "" {
		h["Retry-After"] = s.retryAfter
	}
	return op, h
}

func (s *Sim) asyncOperation(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	op := s.ops[parts[7]]
	if op == nil {
		return nil, aerr(http.StatusNotFound, "NotFound", "operation %s not found", parts[7])
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
		return nil, aerr(http.StatusNotFound, "NotFound", "operation %s not found", parts[7])
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

func (s *Sim) listNICs(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	prefix := strings.ToLower(resID(parts)) + "/"
	out := []any{}
	for _, k := range slices.Sorted(maps.Keys(s.nics)) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s.nics[k])
		}
	}
	return &response{status: 200, body: map[string]any{"value": out}}, nil
}

func (s *Sim) getNIC(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	n := s.nics[strings.ToLower(resID(parts))]
	if n == nil {
		return nil, aerr(http.StatusNotFound, "NotFound", "Resource %s not found.", resID(parts))
	}
	return &response{status: 200, body: n, headers: map[string]string{"ETag": fmt.Sprintf("W/\"%p\"", n)}}, nil
}

func (s *Sim) putNIC(r *http.Request, parts []string, body []byte) (*response, *armError) {
	id := resID(parts)
	key := strings.ToLower(id)
	old := s.nics[key]
	if old == nil {
		return nil, aerr(http.StatusBadRequest, "InvalidRequest", "egressd's simulator does not create network interfaces (%s)", id)
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
			if other := s.pipUser(pk, key); other != "" {
				return nil, aerr(http.StatusBadRequest, "PublicIPAddressInUse", "Resource %s is referenced by %s.", str(pip["id"]), other)
			}
		}
	}
	if primaries != 1 {
		return nil, aerr(http.StatusBadRequest, "NetworkInterfaceMustHaveExactlyOnePrimaryIpConfiguration", "%s has %d primary ipConfigurations.", id, primaries)
	}
	s.finishNICLocked(doc)
	pending := clone(doc)
	props(pending)["provisioningState"] = "Updating"
	_, h := s.newOp(r, MNICPut, func() *OpFailure {
		cur := s.nics[key]
		for _, c := range ipConfigs(doc) {
			if other := s.ipUser(str(props(c)["privateIPAddress"]), key); other != "" {
				return &OpFailure{Code: "PrivateIPAddressInUse", Message: "address taken while the operation ran by " + other}
			}
		}
		s.diffEvents(str(doc["name"]), cur, doc)
		s.nics[key] = doc
		return nil
	})
	return &response{status: 200, body: pending, headers: h}, nil
}

func mapOf(v any) map[string]any { m, _ := v.(map[string]any); return m }

func (s *Sim) ipUser(ip, skipNIC string) string {
	for k, n := range s.nics {
		if k == skipNIC {
			continue
		}
		for _, c := range ipConfigs(n) {
			if str(props(c)["privateIPAddress"]) == ip {
				return str(c["id"])
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
				pips[str(props(s.pips[strings.ToLower(str(pip["id"]))])["ipAddress"])] = true
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

func (s *Sim) listPIPs(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	prefix := strings.ToLower(resID(parts)) + "/"
	out := []any{}
	for _, k := range slices.Sorted(maps.Keys(s.pips)) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s.pipView(s.pips[k]))
		}
	}
	return &response{status: 200, body: map[string]any{"value": out}}, nil
}

func (s *Sim) getPIP(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	p := s.pips[strings.ToLower(resID(parts))]
	if p == nil {
		return nil, aerr(http.StatusNotFound, "ResourceNotFound", "The Resource '%s' was not found.", resID(parts))
	}
	return &response{status: 200, body: s.pipView(p)}, nil
}

func (s *Sim) putPIP(r *http.Request, parts []string, body []byte) (*response, *armError) {
	id := resID(parts)
	key := strings.ToLower(id)
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, aerr(http.StatusBadRequest, "InvalidRequestFormat", "%v", err)
	}
	if doc["location"] == nil {
		return nil, aerr(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
	}
	doc["id"], doc["name"], doc["type"] = id, parts[len(parts)-1], "Microsoft.Network/publicIPAddresses"
	p := props(doc)
	if old := s.pips[key]; old != nil {
		p["ipAddress"] = props(old)["ipAddress"]
	} else {
		s.nextPub++
		p["ipAddress"] = fmt.Sprintf("20.%d.%d.%d", 50+s.nextPub/65536, (s.nextPub/256)%256, s.nextPub%256)
	}
	if str(mapOf(doc["sku"])["name"]) == "Standard" && str(p["publicIPAllocationMethod"]) != "Static" {
		return nil, aerr(http.StatusBadRequest, "StandardSkuPublicIPAddressesMustBeStatic", "Standard sku publicIp %s must have AllocationMethod set to Static.", id)
	}
	p["provisioningState"] = "Succeeded"
	_, h := s.newOp(r, MPIPPut, func() *OpFailure {
		s.pips[key] = doc
		return nil
	})
	status := http.StatusCreated
	if s.pips[key] != nil {
		status = http.StatusOK
	}
	pending := clone(doc)
	props(pending)["provisioningState"] = "Updating"
	return &response{status: status, body: pending, headers: h}, nil
}

func (s *Sim) deletePIP(r *http.Request, parts []string, _ []byte) (*response, *armError) {
	key := strings.ToLower(resID(parts))
	if s.pips[key] == nil {
		return &response{status: http.StatusNoContent}, nil
	}
	if u := s.pipUser(key, ""); u != "" {
		return nil, aerr(http.StatusBadRequest, "PublicIPAddressCannotBeDeleted", "Public IP address %s can not be deleted since it is still allocated to resource %s.", resID(parts), u)
	}
	_, h := s.newOp(r, MPIPDelete, func() *OpFailure {
		delete(s.pips, key)
		return nil
	})
	delete(h, "Azure-AsyncOperation") // DELETE is tracked through Location
	return &response{status: http.StatusAccepted, headers: h}, nil
}

// ---- subnets ----

func (s *Sim) getSubnet(_ *http.Request, parts []string, _ []byte) (*response, *armError) {
	sn := s.subnets[strings.ToLower(resID(parts))]
	if sn == nil {
		return nil, aerr(http.StatusNotFound, "NotFound", "Resource %s not found.", resID(parts))
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
