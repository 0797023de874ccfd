package awssim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// Topology seeds a VPC with one subnet per zone and instances in each, in one call.
type Topology struct {
	VPCCIDR string         `json:"vpcCidr"`
	Zones   []ZoneTopology `json:"zones"`
}

type ZoneTopology struct {
	Zone       string `json:"zone"`
	SubnetCIDR string `json:"subnetCidr"`
	// SubnetIPv6CIDR makes the zone's subnet dual-stack (an IPv6 /64).
	SubnetIPv6CIDR string `json:"subnetIpv6Cidr,omitempty"`
	// Instances to launch, by instance type.
	Instances []string `json:"instances"`
}

// Seeded is what SeedTopology created.
type Seeded struct {
	VPC       string            `json:"vpcId"`
	Subnets   map[string]string `json:"subnets"` // zone → subnet ID
	Instances []Instance        `json:"instances"`
}

// SeedTopology creates a VPC, its subnets and instances.
func (s *Server) SeedTopology(t Topology) (Seeded, error) {
	vpcID, err := s.AddVPC(VPCSpec{CIDR: t.VPCCIDR})
	if err != nil {
		return Seeded{}, err
	}
	out := Seeded{VPC: vpcID, Subnets: map[string]string{}}
	for _, z := range t.Zones {
		sn, err := s.AddSubnet(SubnetSpec{VPC: vpcID, Zone: z.Zone, CIDR: z.SubnetCIDR, IPv6CIDR: z.SubnetIPv6CIDR})
		if err != nil {
			return Seeded{}, err
		}
		out.Subnets[z.Zone] = sn
		for _, typ := range z.Instances {
			in, err := s.AddInstance(InstanceSpec{Type: typ, Subnet: sn})
			if err != nil {
				return Seeded{}, err
			}
			out.Instances = append(out.Instances, in)
		}
	}
	return out, nil
}

// Faults is the admin API's fault-injection request; every field is optional.
type Faults struct {
	Throttle []struct {
		Action string  `json:"action"`
		QPS    float64 `json:"qps"`
		Burst  int     `json:"burst"`
	} `json:"throttle,omitempty"`
	Inject []struct {
		Action string `json:"action"`
		Fault
	} `json:"inject,omitempty"`
	Latency []struct {
		Action string `json:"action"`
		MS     int    `json:"ms"`
	} `json:"latency,omitempty"`
	DescribeLagMS  *int `json:"describeLagMs,omitempty"`
	ElasticIPLimit *int `json:"elasticIpLimit,omitempty"`
}

// AdminHandler serves the JSON admin API:
//
//	GET    /admin/state              whole account (instances, ENIs, EIPs, subnets)
//	GET    /admin/holdings           private IP → instance, ENI, Elastic IP (the lab's routing input)
//	GET    /admin/calls              requests per action;  DELETE resets them
//	POST   /admin/topology           Topology → Seeded
//	POST   /admin/vpcs               VPCSpec → {"vpcId"}
//	POST   /admin/subnets            SubnetSpec → {"subnetId"}
//	POST   /admin/instances          InstanceSpec → Instance
//	POST   /admin/instance-types     InstanceType
//	DELETE /admin/instances/{id}     terminate
//	POST   /admin/faults             Faults;  DELETE clears every fault
//	POST   /admin/imds-instance      {"instanceId"}: default identity of the IMDS endpoint
//	GET    /admin/timing             the timing profile and seed
//	POST   /admin/timing             {"profile": "aws", "seed": 0} (simkit.ParseProfile; seed 0: from the clock)
//	GET    /admin/fabric             FabricHoldings: what the network delivers (holdings after propagation)
//	GET    /admin/moves?since=N      the move log, after move N (all without since)
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/state", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.Snapshot()) })
	mux.HandleFunc("GET /admin/holdings", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.Holdings()) })
	mux.HandleFunc("GET /admin/calls", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.Calls()) })
	mux.HandleFunc("DELETE /admin/calls", func(w http.ResponseWriter, r *http.Request) { s.ResetCalls(); writeJSON(w, struct{}{}) })
	post(mux, "POST /admin/topology", func(t Topology) (any, error) { return s.SeedTopology(t) })
	post(mux, "POST /admin/vpcs", func(v VPCSpec) (any, error) {
		id, err := s.AddVPC(v)
		return map[string]string{"vpcId": id}, err
	})
	post(mux, "POST /admin/subnets", func(v SubnetSpec) (any, error) {
		id, err := s.AddSubnet(v)
		return map[string]string{"subnetId": id}, err
	})
	post(mux, "POST /admin/instances", func(v InstanceSpec) (any, error) { return s.AddInstance(v) })
	post(mux, "POST /admin/instance-types", func(v InstanceType) (any, error) { s.AddInstanceType(v); return v, nil })
	mux.HandleFunc("DELETE /admin/instances/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, s.TerminateInstance(r.PathValue("id")))
	})
	mux.HandleFunc("POST /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if !decode(w, r, &f) {
			return
		}
		for _, t := range f.Throttle {
			s.Throttle(t.Action, t.QPS, t.Burst)
		}
		for _, i := range f.Inject {
			s.Inject(i.Action, i.Fault)
		}
		for _, l := range f.Latency {
			s.SetLatency(l.Action, time.Duration(l.MS)*time.Millisecond)
		}
		if f.DescribeLagMS != nil {
			s.SetDescribeLag(time.Duration(*f.DescribeLagMS) * time.Millisecond)
		}
		if f.ElasticIPLimit != nil {
			s.SetElasticIPLimit(*f.ElasticIPLimit)
		}
		writeJSON(w, struct{}{})
	})
	mux.HandleFunc("DELETE /admin/faults", func(w http.ResponseWriter, r *http.Request) { s.ClearFaults(); writeJSON(w, struct{}{}) })
	mux.HandleFunc("GET /admin/fabric", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.FabricHoldings()) })
	mux.HandleFunc("GET /admin/moves", func(w http.ResponseWriter, r *http.Request) {
		var since uint64
		if v := r.URL.Query().Get("since"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				reply(w, nil, fmt.Errorf("since %q: want a move number", v))
				return
			}
			since = n
		}
		writeJSON(w, s.MovesSince(since))
	})
	mux.HandleFunc("GET /admin/timing", func(w http.ResponseWriter, r *http.Request) {
		p, seed := s.Timing()
		writeJSON(w, simkit.TimingDoc{Profile: p.String(), Seed: seed})
	})
	post(mux, "POST /admin/timing", func(v simkit.TimingDoc) (any, error) {
		p, err := simkit.ParseProfile(v.Profile)
		if err != nil {
			return nil, err
		}
		return simkit.TimingDoc{Profile: p.String(), Seed: s.SetTiming(p, v.Seed)}, nil
	})
	post(mux, "POST /admin/imds-instance", func(v struct {
		InstanceID string `json:"instanceId"`
	}) (any, error) {
		s.SetIMDSInstance(v.InstanceID)
		return v, nil
	})
	return mux
}

// post serves pattern by decoding the request body into a T and answering what f returns
// (400 with the error when decoding or f fails).
func post[T any](mux *http.ServeMux, pattern string, f func(T) (any, error)) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		var v T
		if decode(w, r, &v) {
			out, err := f(v)
			reply(w, out, err)
		}
	})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, v)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
