package azuresim

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// What ARM and the network resource provider refuse before they look at state, and how they
// page lists. Each rule names its reference in docs/testbed.md ("Azure"); where the reference
// is unclear the simulator's choice is written down there.

// servedAPIVersions are the api-versions the simulator serves for every Microsoft.Network type
// it knows (networkInterfaces, publicIPAddresses, virtualNetworks/subnets, locations/operations
// and locations/operationResults). Azure serves a longer list; these are the recent stable ones,
// armnetwork/v7's 2025-01-01 among them.
var servedAPIVersions = []string{
	"2023-09-01", "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01", "2024-07-01",
	"2024-10-01", "2025-01-01", "2025-03-01", "2025-05-01",
}

// apiVersionShape is ARM's api-version format: a date, optionally -preview (or another
// suffix such as -privatepreview).
var apiVersionShape = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-[a-z]+)?$`)

// checkAPIVersion refuses a request without an api-version (MissingApiVersionParameter), with
// one that is not an api-version (InvalidApiVersionParameter) or with one the type is not
// served at (NoRegisteredProviderFound, the code ARM answers for a resource provider's type),
// all 400.
func (s *Sim) checkAPIVersion(q url.Values, typ string) *armError {
	v := q.Get("api-version")
	served := servedAPIVersions
	switch typ {
	case scaleSetNICType:
		served = scaleSetNICAPIVersions
	case instanceType, computeOperationType:
		served = computeAPIVersions
	}
	supported := supportedAPIVersions(served)
	switch {
	case v == "":
		return aerr(http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
	case !apiVersionShape.MatchString(v):
		return aerr(http.StatusBadRequest, "InvalidApiVersionParameter", "The api-version '%s' is invalid. The supported versions are '%s'.", v, supported)
	case !slices.Contains(served, v):
		return aerr(http.StatusBadRequest, "NoRegisteredProviderFound",
			"No registered resource provider found for location '%s' and API version '%s' for type '%s'. The supported api-versions are '%s'. The supported locations are '%s'.",
			s.location, v, typ, supported, s.location)
	}
	return nil
}

// scaleSetNICType names the scale-set NIC read path's type in api-version errors.
const scaleSetNICType = "virtualMachineScaleSets/virtualMachines/networkInterfaces"

// supportedAPIVersions lists served api-versions newest first, as ARM's messages do.
func supportedAPIVersions(served []string) string {
	v := slices.Clone(served)
	slices.Reverse(v)
	return strings.Join(v, ", ")
}

// pageOf cuts one page out of n list items: $skiptoken is the opaque token of the previous
// page's nextLink, a page holds at most s.pageSize items (0: all). It returns the range to
// serve and the nextLink ("" on the last page), which carries the api-version as ARM's do.
func (s *Sim) pageOf(r *http.Request, n int) (from, to int, next string, e *armError) {
	q := r.URL.Query()
	if t := q.Get("$skiptoken"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		off, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(b), "offset:") || off < 0 || off > n {
			return 0, 0, "", aerr(http.StatusBadRequest, "InvalidSkipToken", "The skip token '%s' is not valid.", t)
		}
		from = off
	}
	to = n
	if s.pageSize > 0 {
		to = min(from+s.pageSize, n)
	}
	if to < n {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		nq := url.Values{"api-version": {q.Get("api-version")}, "$skiptoken": {base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(to)))}}
		next = fmt.Sprintf("%s://%s%s?%s", scheme, r.Host, r.URL.Path, nq.Encode())
	}
	return from, to, next, nil
}

// precondition checks If-Match and If-None-Match against the stored document (nil: the
// resource does not exist) and answers 412 PreconditionFailed when they do not hold. If-Match
// compares the whole entity tag as ARM returns it (W/"..."), or "*" for any existing resource.
func precondition(r *http.Request, doc map[string]any, id string) *armError {
	if m := r.Header.Get("If-Match"); m != "" {
		if doc == nil {
			return aerr(http.StatusPreconditionFailed, "PreconditionFailed", "The condition specified using HTTP conditional header(s) is not met: resource %s does not exist.", id)
		}
		if m != "*" && m != str(doc["etag"]) {
			return aerr(http.StatusPreconditionFailed, "PreconditionFailed", "The condition specified using HTTP conditional header(s) is not met: If-Match %s, the resource's etag is %s.", m, str(doc["etag"]))
		}
	}
	if m := r.Header.Get("If-None-Match"); m == "*" && doc != nil {
		return aerr(http.StatusPreconditionFailed, "PreconditionFailed", "The condition specified using HTTP conditional header(s) is not met: If-None-Match *, and resource %s exists.", id)
	}
	return nil
}

// notFound is ARM's 404 for a resource that is not there: ResourceGroupNotFound when its
// resource group is unknown, else ResourceNotFound for a top-level resource and NotFound for
// a child resource (a subnet of an existing virtual network), as the network resource
// provider answers.
func (s *Sim) notFound(parts []string) *armError {
	rg := parts[3]
	if !s.rgs[strings.ToLower(rg)] {
		return aerr(http.StatusNotFound, "ResourceGroupNotFound", "Resource group '%s' could not be found.", rg)
	}
	if len(parts) > 8 {
		parent := strings.ToLower(resID(parts[:8]))
		if !s.parents[parent] {
			return aerr(http.StatusNotFound, "ResourceNotFound", "The Resource '%s/%s/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", parts[5], parts[6], parts[7], rg)
		}
		return aerr(http.StatusNotFound, "NotFound", "Resource %s not found.", resID(parts))
	}
	return aerr(http.StatusNotFound, "ResourceNotFound", "The Resource '%s/%s/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", parts[5], parts[6], parts[7], rg)
}

// SetPageSize makes list calls answer at most n items per page with a nextLink to the rest, so
// tests cross page boundaries with a few resources. 0 (the default) answers every item in one
// page.
func (s *Sim) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}
