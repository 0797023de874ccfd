// Package coordinator is the cluster-wide half of egressd's control plane (DESIGN.md §5): it
// selects gateway nodes, tracks their health (its own probes, agent Leases, Node conditions),
// places egress IPs with ipalloc, drives the providers to ensure, move and release them, keeps
// the EgressIP ledger and the status of gateways and policies, and garbage-collects cloud
// resources tagged as this cluster's that no EgressIP claims.
//
// Decisions are made by pure planners (PlanGateway); the reconcilers only read state, call the
// planner and carry out its plan, ledger first: an EgressIP (with its finalizer) is written
// before any cloud call for it, so a crash at any point leaves state the next run converges.
package coordinator

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/bpf/marks"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/providers"
)

// Config is the controller's configuration file.
type Config struct {
	// ClusterName tags every cloud resource (egressd.io/cluster); GC only ever touches
	// resources carrying it.
	ClusterName string `json:"clusterName"`
	// Namespace holds the agents' Leases and the leader-election Lease.
	Namespace string `json:"namespace,omitempty"`
	// Providers maps a provider name (as EgressGateway spec.addresses.cloud.provider says it) to
	// its configuration. "type" picks the implementation (aws, gcp, azure, static, plugin) and
	// defaults to the name.
	Providers map[string]json.RawMessage `json:"providers,omitempty"`
	// RateLimits of cloud calls, per provider.
	RateLimits *providers.RateLimits `json:"rateLimits,omitempty"`
	// GCGracePeriod: an unclaimed cloud resource younger than this is never released.
	GCGracePeriod metav1.Duration `json:"gcGracePeriod,omitempty"`
	// GCInterval between garbage-collection passes.
	GCInterval metav1.Duration `json:"gcInterval,omitempty"`
	// ResyncPeriod: every gateway is reconciled at least this often, even with no event.
	ResyncPeriod metav1.Duration `json:"resyncPeriod,omitempty"`
	// ProbePort is the agents' UDP probe port.
	ProbePort int `json:"probePort,omitempty"`
	// PolicyPrefixBudget bounds the prefixes of each namespace's EgressPolicies and of the
	// ClusterEgressPolicies; a policy over it is Accepted=False (PrefixBudgetExceeded). The
	// agents must be given the same (--namespace-prefix-budget, --cluster-prefix-budget).
	PolicyPrefixBudget contract.PrefixBudget `json:"policyPrefixBudget,omitempty"`
	// MarkMask is the agents' packet mark mask (their --mark-mask, chart agent.markMask; the
	// chart gives both the same). A group whose id it cannot carry is Ready=False
	// (GroupIDTooLarge): the agents skip it. Empty: marks.DefaultMask.
	MarkMask string `json:"markMask,omitempty"`
	// AgentLeaseTimeout: an agent whose Lease is older is unhealthy.
	AgentLeaseTimeout metav1.Duration `json:"agentLeaseTimeout,omitempty"`
	// CapacityTTL: how long a node's discovered capacity and subnets are reused. Capacity only
	// changes when egressd itself assigns addresses (which refreshes it) or when the instance is
	// replaced (a new node name), so a long TTL costs nothing and saves Describe calls.
	CapacityTTL metav1.Duration `json:"capacityTTL,omitempty"`
}

// Defaults of the coordinator's own settings. The namespace, the probe port, the agent Lease
// timeout and the policy prefix budget default to gateway/contract's values, which the agents
// use too.
const (
	DefaultGCGracePeriod = 10 * time.Minute
	DefaultGCInterval    = time.Minute
	DefaultResyncPeriod  = 5 * time.Minute
	DefaultCapacityTTL   = 10 * time.Minute
)

// LoadConfig reads and defaults a configuration file.
func LoadConfig(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	return ParseConfig(raw)
}

// ParseConfig parses YAML or JSON configuration and applies defaults.
func ParseConfig(raw []byte) (Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return Config{}, fmt.Errorf("parsing config: %w", err)
	}
	if c.ClusterName == "" {
		return Config{}, fmt.Errorf("config: clusterName is required (it tags every cloud resource egressd creates)")
	}
	def := func(d *metav1.Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	if c.Namespace == "" {
		c.Namespace = contract.DefaultNamespace
	}
	if c.ProbePort == 0 {
		c.ProbePort = contract.DefaultProbePort
	}
	if err := c.PolicyPrefixBudget.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: policyPrefixBudget: %w", err)
	}
	c.PolicyPrefixBudget = c.PolicyPrefixBudget.WithDefaults()
	if _, err := marks.ParseMask(c.MarkMask); err != nil {
		return Config{}, fmt.Errorf("config: markMask: %w", err)
	}
	def(&c.GCGracePeriod, DefaultGCGracePeriod)
	def(&c.GCInterval, DefaultGCInterval)
	def(&c.ResyncPeriod, DefaultResyncPeriod)
	def(&c.AgentLeaseTimeout, contract.AgentLeaseDuration)
	def(&c.CapacityTTL, DefaultCapacityTTL)
	return c, nil
}

// MaxGroupID is the largest group id the agents' mark layout carries (MarkMask).
func (c Config) MaxGroupID() uint32 {
	l, err := marks.ParseMask(c.MarkMask)
	if err != nil {
		return 0 // ParseConfig refused it
	}
	return l.MaxGroup()
}

// ProviderType is the implementation a provider entry names ("type", else the entry's name).
func ProviderType(name string, raw json.RawMessage) (string, error) {
	var t struct {
		Type string `json:"type"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &t); err != nil {
			return "", fmt.Errorf("provider %s: %w", name, err)
		}
	}
	if t.Type == "" {
		return name, nil
	}
	return t.Type, nil
}
