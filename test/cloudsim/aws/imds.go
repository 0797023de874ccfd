package awssim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// IMDSInstanceHeader picks the instance an IMDS request speaks for, when one listener serves
// several instances. A handler bound to an instance (IMDSHandler(id)) ignores it.
const IMDSInstanceHeader = "X-Ec2sim-Instance-Id"

type imdsState struct {
	tokens      map[string]time.Time
	defaultInst string
}

// SetIMDSInstance sets the instance an unbound IMDS listener answers for by default.
func (s *Server) SetIMDSInstance(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.imds.defaultInst = id
}

// IMDSHandler serves IMDSv2 for one instance ("" : the instance named by IMDSInstanceHeader,
// else the default set by SetIMDSInstance). Only the token flow is accepted: IMDSv1 GETs
// without a token get 401, as on an instance with HttpTokens=required.
func (s *Server) IMDSHandler(instanceID string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latest/api/token" {
			if r.Method != http.MethodPut {
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
			if err != nil || ttl < 1 || ttl > 21600 {
				http.Error(w, "bad ttl", http.StatusBadRequest)
				return
			}
			b := make([]byte, 24)
			_, _ = rand.Read(b)
			tok := hex.EncodeToString(b)
			s.mu.Lock()
			s.imds.tokens[tok] = s.now().Add(time.Duration(ttl) * time.Second)
			s.mu.Unlock()
			w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
			_, _ = w.Write([]byte(tok))
			return
		}
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s.mu.Lock()
		exp, ok := s.imds.tokens[r.Header.Get("X-aws-ec2-metadata-token")]
		valid := ok && s.now().Before(exp)
		id := instanceID
		if id == "" {
			id = r.Header.Get(IMDSInstanceHeader)
		}
		if id == "" {
			id = s.imds.defaultInst
		}
		body, found := s.metadataLocked(id, r.URL.Path)
		s.mu.Unlock()
		if !valid {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		if !found {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	})
}

func (s *Server) metadataLocked(id, path string) (string, bool) {
	in := s.w.Instances[id]
	if in == nil {
		return "", false
	}
	enis := s.w.enisOf(id)
	if path == "/latest/dynamic/instance-identity/document" {
		b, _ := json.Marshal(map[string]any{
			"accountId": accountID, "availabilityZone": in.Zone, "instanceId": in.ID, "instanceType": in.Type,
			"region": s.Region, "privateIp": s.instanceLocked(in).PrivateIP.String(), "version": "2017-09-30",
		})
		return string(b), true
	}
	p, ok := strings.CutPrefix(path, "/latest/meta-data/")
	if !ok {
		return "", false
	}
	p = strings.TrimSuffix(p, "/")
	switch p {
	case "instance-id":
		return in.ID, true
	case "instance-type":
		return in.Type, true
	case "placement/availability-zone":
		return in.Zone, true
	case "placement/region":
		return s.Region, true
	case "local-ipv4":
		return s.instanceLocked(in).PrivateIP.String(), true
	case "mac":
		return s.instanceLocked(in).MAC, true
	case "network/interfaces/macs":
		var macs []string
		for _, e := range enis {
			macs = append(macs, e.MAC+"/")
		}
		return strings.Join(macs, "\n"), true
	}
	rest, ok := strings.CutPrefix(p, "network/interfaces/macs/")
	if !ok {
		return "", false
	}
	mac, field, _ := strings.Cut(rest, "/")
	i := slices.IndexFunc(enis, func(e *eni) bool { return e.MAC == mac })
	if i < 0 {
		return "", false
	}
	e := enis[i]
	switch field {
	case "vpc-id":
		return e.VPC, true
	case "subnet-id":
		return e.Subnet, true
	case "interface-id":
		return e.ID, true
	case "device-number":
		return strconv.Itoa(e.Attach.DeviceIndex), true
	case "security-group-ids":
		return strings.Join(e.Groups, "\n"), true
	case "local-ipv4s":
		return strings.Join(strs(append([]netip.Addr{e.Primary}, e.Secondary...)), "\n"), true
	case "subnet-ipv4-cidr-block":
		return s.w.Subnets[e.Subnet].CIDR.String(), true
	case "vpc-ipv4-cidr-block":
		return s.w.VPCs[e.VPC].CIDR.String(), true
	}
	return "", false
}
