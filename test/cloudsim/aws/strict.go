package awssim

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// What EC2 refuses before it looks at state, checked against the EC2 API reference (Query
// API, "Common client error codes", DescribeInstances and DescribeNetworkInterfaces).

// idParams are the request parameters that carry resource IDs (single, or lists as Name.N), with
// the ID's prefix and the error code of a malformed one.
var idParams = []struct {
	param, prefix, code string
}{
	{"InstanceId", "i", "InvalidInstanceID.Malformed"},
	{"NetworkInterfaceId", "eni", "InvalidNetworkInterfaceID.Malformed"},
	{"AllocationId", "eipalloc", "InvalidAllocationID.Malformed"},
	{"AssociationId", "eipassoc", "InvalidAssociationID.Malformed"},
	{"AttachmentId", "eni-attach", "InvalidAttachmentID.Malformed"},
	{"SubnetId", "subnet", "InvalidSubnetID.Malformed"},
}

// resourceID is EC2's ID shape: a prefix, a dash, and 8 (older resources) or 17 hex digits.
var resourceID = regexp.MustCompile(`^(.+)-([0-9a-f]{8}|[0-9a-f]{17})$`)

// checkIDs refuses a request naming an ID that is not of its parameter's shape, as EC2 does
// (InvalidInstanceID.Malformed and kin) before looking anything up.
func checkIDs(q url.Values) *apiError {
	for key, vals := range q {
		base := key
		if i := strings.LastIndexByte(key, '.'); i > 0 {
			if _, err := strconv.Atoi(key[i+1:]); err == nil {
				base = key[:i]
			}
		}
		for _, p := range idParams {
			if base != p.param {
				continue
			}
			for _, v := range vals {
				if m := resourceID.FindStringSubmatch(v); m == nil || m[1] != p.prefix {
					return errf(p.code, "Invalid id: \"%s\"", v)
				}
			}
		}
	}
	return nil
}

// dryRun reports whether the request asks only to check permissions and parameters.
func dryRun(q url.Values) bool { return q.Get("DryRun") == "true" }

// dryRunOK is EC2's answer to a dry run that would have succeeded.
var dryRunOK = &apiError{Status: http.StatusPreconditionFailed, Code: "DryRunOperation",
	Message: "Request would have succeeded, but DryRun flag is set."}

// page cuts one page out of n results the way EC2's paginated describes do: MaxResults (5 to
// 1000) may not be combined with an ID list (InvalidParameterCombination), NextToken is the
// opaque token of the previous page, and a page may hold fewer than MaxResults (the server's
// s.pageSize, when a test sets one). It returns the range to serve and the next token.
func (s *Server) page(q url.Values, n int, idParam string) (from, to int, next string, e *apiError) {
	size := n
	if v := q.Get("MaxResults"); v != "" {
		m, err := strconv.Atoi(v)
		if err != nil || m < 5 || m > 1000 {
			return 0, 0, "", errf("InvalidParameterValue", "Value ( %s ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", v)
		}
		if len(list(q, idParam)) > 0 {
			return 0, 0, "", errf("InvalidParameterCombination", "The parameter %sSet cannot be used with the parameter maxResults", strings.ToLower(idParam[:1])+idParam[1:])
		}
		size = m
	}
	if s.pageSize > 0 && s.pageSize < size {
		size = s.pageSize
	}
	if t := q.Get("NextToken"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		off, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "page:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(b), "page:") || off < 0 || off > n {
			return 0, 0, "", errf("InvalidNextToken", "The specified token %s is not valid.", t)
		}
		from = off
	}
	to = min(from+size, n)
	if to < n {
		next = base64.RawURLEncoding.EncodeToString([]byte("page:" + strconv.Itoa(to)))
	}
	return from, to, next, nil
}

// SetPageSize makes paginated describes serve at most n results per page whatever MaxResults
// asks (EC2 may return fewer), so tests cross page boundaries with a few resources. 0: no cap.
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}
