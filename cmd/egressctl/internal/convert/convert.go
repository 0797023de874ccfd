// Package convert turns Cilium egress gateway policies (CiliumEgressGatewayPolicy, cilium.io/v2,
// with the single egressGateway or the Cilium 1.18 egressGateways list) and Isovalent-style
// policies with egressGroups into egressd objects: one EgressGateway per distinct gateway
// definition, and per source selector an EgressPolicy (when the selector pins one namespace) or
// a ClusterEgressPolicy. Whatever has no exact egressd equivalent is reported as an Issue;
// nothing is dropped silently, and Result.Lossy says whether the output steers other traffic,
// or steers it otherwise, than the source did.
package convert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// Severity of an Issue. Error and Warning are losses: applying the output does not do what
// the source did (Result.Lossy).
type Severity string

const (
	// Error: the field or object could not be converted; the output lacks it, so it steers
	// less (a skipped policy or selector) or more (a dropped exclusion) than the source.
	Error Severity = "error"
	// Warning: converted, but egressd will behave differently from the source (another egress
	// IP, other gateway nodes, another zone preference).
	Warning Severity = "warning"
	// Info: converted; a difference worth knowing that changes nothing observable.
	Info Severity = "info"
)

// Issue is something the conversion could not carry over exactly.
type Issue struct {
	Severity Severity
	// Source is the input object, as kind/name.
	Source string
	// Field is the input field, such as spec.selectors[1].nodeSelector.
	Field   string
	Message string
}

func (i Issue) String() string {
	where := i.Source
	if i.Field != "" {
		where += " " + i.Field
	}
	return fmt.Sprintf("%s: %s: %s", i.Severity, where, i.Message)
}

// Options say how to convert what the source expresses with node-local addresses.
type Options struct {
	// Provider for gateways that name an egressIP: a cloud provider name (aws, gcp, azure...)
	// makes egressd provision its own addresses (the IP changes: a Warning), "static" keeps
	// the address in a static pool (needs Zone and Subnet). Empty: such gateways are Errors.
	Provider string
	// Zone and Subnet of static pools built from egressIP.
	Zone   string
	Subnet netip.Prefix
	// DefaultInterface stands for "the interface with the default route", which Cilium uses
	// when a gateway names neither interface nor egressIP. Empty: eth0, with a Warning.
	DefaultInterface string
}

// Result is the converted objects, in output order, and the issues.
type Result struct {
	Gateways        []*egressv1.EgressGateway
	Policies        []*egressv1.EgressPolicy
	ClusterPolicies []*egressv1.ClusterEgressPolicy
	Issues          []Issue
}

// Has reports whether the result has an issue of severity s.
func (r *Result) Has(s Severity) bool {
	return slices.ContainsFunc(r.Issues, func(i Issue) bool { return i.Severity == s })
}

// Lossy reports whether the output differs from the source in what it steers or how: some
// object, selector or exclusion was skipped (Error), or egressd will behave differently
// (Warning).
func (r *Result) Lossy() bool {
	return r.Has(Error) || r.Has(Warning)
}

// ciliumPolicy is the union of the CiliumEgressGatewayPolicy (cilium.io/v2) spec and the
// Isovalent egressGroups variant; strict decoding turns any other field into an Issue.
type ciliumPolicy struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       ciliumSpec        `json:"spec"`
	Status     map[string]any    `json:"status,omitempty"`
}

type ciliumSpec struct {
	Selectors        []ciliumSelector `json:"selectors"`
	DestinationCIDRs []string         `json:"destinationCIDRs"`
	ExcludedCIDRs    []string         `json:"excludedCIDRs,omitempty"`
	EgressGateway    *ciliumGateway   `json:"egressGateway,omitempty"`
	// EgressGateways (Cilium 1.18+): several gateways; Cilium assigns each selected pod to
	// one of them, and the first entry repeats egressGateway.
	EgressGateways []ciliumGateway `json:"egressGateways,omitempty"`
	EgressGroups   []ciliumGateway `json:"egressGroups,omitempty"`
	AZAffinity     string          `json:"azAffinity,omitempty"`
}

type ciliumSelector struct {
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	NodeSelector      *metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

type ciliumGateway struct {
	NodeSelector    *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	Interface       string                `json:"interface,omitempty"`
	EgressIP        string                `json:"egressIP,omitempty"`
	MaxGatewayNodes *int32                `json:"maxGatewayNodes,omitempty"`
}

// Cilium's label keys for a pod's namespace and its namespace's labels.
const (
	ciliumNamespaceLabel       = "io.kubernetes.pod.namespace"
	ciliumNamespaceLabelPrefix = "io.cilium.k8s.namespace.labels."
	// ciliumReservedPrefix starts Cilium's other pseudo-labels (service account, cluster),
	// which no pod carries as a label and egressd cannot select on.
	ciliumReservedPrefix = "io.cilium."
	// namespaceNameLabel is set by Kubernetes on every namespace.
	namespaceNameLabel = "kubernetes.io/metadata.name"
	// hostnameLabel is set by the kubelet on every node.
	hostnameLabel = "kubernetes.io/hostname"
)

// Cilium label sources that may prefix a selector key (k8s:app); for pods both mean the
// pod's Kubernetes labels.
var ciliumLabelSources = []string{"k8s:", "any:"}

// Input is one named stream of YAML documents, such as a file given with -f.
type Input struct {
	// Name prefixes the issues of the input's objects; empty for a single unnamed input.
	Name   string
	Reader io.Reader
}

// Convert reads YAML documents (single objects or kind: List) and converts every egress gateway
// policy among them. Documents of other kinds are reported and skipped.
func Convert(in io.Reader, opts Options) (*Result, error) {
	return ConvertInputs([]Input{{Reader: in}}, opts)
}

// ConvertInputs converts the documents of every input as one set: gateways shared by policies
// of different inputs are written once, and an object that two inputs both define is reported.
// An input that cannot be read or parsed fails the whole conversion (nothing is converted),
// with an error naming it.
func ConvertInputs(inputs []Input, opts Options) (*Result, error) {
	type named struct {
		input string
		doc   []byte
	}
	var all []named
	for _, in := range inputs {
		docs, err := splitDocuments(in.Reader)
		if err != nil {
			if in.Name != "" {
				return nil, fmt.Errorf("%s: %w", in.Name, err)
			}
			return nil, err
		}
		for _, d := range docs {
			all = append(all, named{in.Name, d})
		}
	}
	c := &converter{
		opts: opts, res: &Result{},
		gateways: map[string]*egressv1.EgressGateway{}, sources: map[string]string{},
		outputs: map[string]string{}, gatewayNames: map[string]bool{},
	}
	for _, d := range all {
		c.convertDocument(d.input, d.doc)
	}
	return c.res, nil
}

type converter struct {
	opts Options
	res  *Result
	// gateways by the canonical JSON of their spec, so identical gateways are emitted once.
	gateways     map[string]*egressv1.EgressGateway
	gatewayNames map[string]bool
	// sources: kind/name of every converted input object → where it was read, so a second
	// definition is reported instead of overwriting the first in kubectl apply.
	sources map[string]string
	// outputs: kind/namespace/name of every written policy → the source it came from.
	outputs map[string]string
}

func splitDocuments(in io.Reader) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML: %w", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var head struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("parsing YAML: %w", err)
		}
		if head.Kind == "" && len(head.Items) == 0 {
			continue // comments only
		}
		if head.Kind == "List" || (strings.HasSuffix(head.Kind, "List") && head.Items != nil) {
			for _, item := range head.Items {
				docs = append(docs, item)
			}
			continue
		}
		docs = append(docs, doc)
	}
}

func (c *converter) issue(sev Severity, source, field, format string, args ...any) {
	c.res.Issues = append(c.res.Issues, Issue{Severity: sev, Source: source, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (c *converter) convertDocument(input string, doc []byte) {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = yaml.Unmarshal(doc, &head)
	source := head.Kind + "/" + head.Metadata.Name
	if input != "" {
		source = input + ": " + source
	}
	switch head.Kind {
	case "CiliumEgressGatewayPolicy", "IsovalentEgressGatewayPolicy":
	default:
		c.issue(Error, source, "", "not an egress gateway policy; skipped")
		return
	}
	var p ciliumPolicy
	if err := yaml.UnmarshalStrict(doc, &p); err != nil {
		c.issue(Error, source, "", "cannot be read (%v); skipped", err)
		return
	}
	id := head.Kind + "/" + head.Metadata.Name
	if where, seen := c.sources[id]; seen && head.Metadata.Name != "" {
		c.issue(Error, source, "", "defined again (first in %s); this definition is skipped", orStdin(where))
		return
	}
	c.sources[id] = input
	c.convertPolicy(source, &p)
}

func orStdin(input string) string {
	if input == "" {
		return "the same input"
	}
	return input
}

func (c *converter) convertPolicy(source string, p *ciliumPolicy) {
	name := p.Metadata.Name
	if name == "" {
		c.issue(Error, source, "metadata.name", "missing; skipped")
		return
	}
	dests, excluded, ok := c.cidrs(source, &p.Spec)
	if !ok {
		return
	}
	if len(p.Spec.Selectors) == 0 {
		c.issue(Error, source, "spec.selectors", "no selectors: the policy selects no pod; skipped")
		return
	}
	for i, sel := range p.Spec.Selectors {
		if sel.PodSelector == nil && sel.NamespaceSelector == nil && sel.NodeSelector == nil {
			// Cilium refuses such a policy as a whole, so it steers nothing; converting it
			// would steer every pod of the cluster.
			c.issue(Error, source, fmt.Sprintf("spec.selectors[%d]", i),
				"neither podSelector nor namespaceSelector: Cilium rejects the policy, so it steers nothing; skipped")
			return
		}
	}
	gw, ok := c.gateway(source, &p.Spec)
	if !ok {
		return
	}
	if len(p.Spec.Selectors) > 1 {
		c.issue(Info, source, "spec.selectors", "%d selectors become %d policies (an egressd policy has one selector), named %s-0 to %s-%d",
			len(p.Spec.Selectors), len(p.Spec.Selectors), name, name, len(p.Spec.Selectors)-1)
	}
	// The gateway is written only when a policy uses it: a gateway of cloud addresses
	// provisions them whether or not anything is steered through it.
	var policies []*egressv1.EgressPolicy
	var clusterPolicies []*egressv1.ClusterEgressPolicy
	defer func() {
		if len(policies)+len(clusterPolicies) == 0 {
			return
		}
		gwName := c.addGateway(name, gw)
		for _, o := range policies {
			o.Spec.Gateway = gwName
		}
		for _, o := range clusterPolicies {
			o.Spec.Gateway = gwName
		}
		c.res.Policies = append(c.res.Policies, policies...)
		c.res.ClusterPolicies = append(c.res.ClusterPolicies, clusterPolicies...)
	}()
	for i, sel := range p.Spec.Selectors {
		field := fmt.Sprintf("spec.selectors[%d]", i)
		policyName := name
		if len(p.Spec.Selectors) > 1 {
			policyName = fmt.Sprintf("%s-%d", name, i)
		}
		if sel.NodeSelector != nil {
			c.issue(Error, source, field+".nodeSelector",
				"egressd policies cannot restrict source nodes; the selector is skipped")
			continue
		}
		ns, nsSel, podSel, ok := c.splitSelector(source, field, sel)
		if !ok {
			continue
		}
		rule := egressv1.EgressPolicyRule{
			PodSelector:      podSel,
			DestinationCIDRs: slices.Clone(dests),
			ExcludedCIDRs:    slices.Clone(excluded),
		}
		meta := metav1.ObjectMeta{Name: policyName, Labels: map[string]string{"egressd.io/converted-from": sanitizeLabel(name)}}
		kind := "ClusterEgressPolicy"
		if ns != "" {
			kind = "EgressPolicy"
		}
		key := kind + "/" + ns + "/" + policyName
		if from, taken := c.outputs[key]; taken {
			c.issue(Error, source, field, "would be written as %s %s, which %s already became; skipped", kind, strings.TrimPrefix(ns+"/"+policyName, "/"), from)
			continue
		}
		c.outputs[key] = source
		if ns != "" {
			meta.Namespace = ns
			policies = append(policies, &egressv1.EgressPolicy{
				TypeMeta:   metav1.TypeMeta{APIVersion: egressv1.GroupVersion.String(), Kind: "EgressPolicy"},
				ObjectMeta: meta,
				Spec:       rule,
			})
			continue
		}
		clusterPolicies = append(clusterPolicies, &egressv1.ClusterEgressPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: egressv1.GroupVersion.String(), Kind: "ClusterEgressPolicy"},
			ObjectMeta: meta,
			Spec:       egressv1.ClusterEgressPolicySpec{NamespaceSelector: nsSel, EgressPolicyRule: rule},
		})
	}
}

// cidrs validates and normalises the destination and excluded CIDRs the way egressd's CRD
// requires: parseable, no host bits, exclusions inside a destination.
func (c *converter) cidrs(source string, spec *ciliumSpec) (dests, excluded []string, ok bool) {
	if len(spec.DestinationCIDRs) == 0 {
		c.issue(Error, source, "spec.destinationCIDRs", "empty; skipped")
		return nil, nil, false
	}
	var destPrefixes []netip.Prefix
	for i, s := range spec.DestinationCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			c.issue(Error, source, fmt.Sprintf("spec.destinationCIDRs[%d]", i), "%q is not a CIDR; skipped the policy", s)
			return nil, nil, false
		}
		if m := p.Masked(); m != p {
			c.issue(Info, source, fmt.Sprintf("spec.destinationCIDRs[%d]", i), "%s has host bits set; written as %s, which matches the same addresses", p, m)
			p = m
		}
		if !slices.Contains(destPrefixes, p) {
			destPrefixes = append(destPrefixes, p)
			dests = append(dests, p.String())
		}
	}
	for i, s := range spec.ExcludedCIDRs {
		field := fmt.Sprintf("spec.excludedCIDRs[%d]", i)
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			c.issue(Error, source, field, "%q is not a CIDR; dropped: traffic to it now uses the gateway", s)
			continue
		}
		if m := p.Masked(); m != p {
			c.issue(Info, source, field, "%s has host bits set; written as %s, which matches the same addresses", p, m)
			p = m
		}
		inside := slices.ContainsFunc(destPrefixes, func(d netip.Prefix) bool {
			return d.Addr().Is4() == p.Addr().Is4() && d.Bits() <= p.Bits() && d.Contains(p.Addr())
		})
		if !inside {
			c.issue(Info, source, field, "%s lies outside every destination CIDR and changes nothing; dropped", p)
			continue
		}
		if !slices.Contains(excluded, p.String()) {
			excluded = append(excluded, p.String())
		}
	}
	return dests, excluded, true
}

// splitSelector maps a Cilium source selector to egressd's: either one namespace (an
// EgressPolicy) or a namespace selector (a ClusterEgressPolicy), plus a pod selector without
// Cilium's namespace pseudo-labels.
func (c *converter) splitSelector(source, field string, sel ciliumSelector) (ns string, nsSel, podSel metav1.LabelSelector, ok bool) {
	if sel.PodSelector != nil {
		podSel = *sel.PodSelector.DeepCopy()
	}
	if sel.NamespaceSelector != nil {
		nsSel = *sel.NamespaceSelector.DeepCopy()
	}
	if !c.stripLabelSources(source, field+".podSelector", &podSel) || !c.stripLabelSources(source, field+".namespaceSelector", &nsSel) {
		return "", nsSel, podSel, false
	}
	// Namespace pseudo-labels in the pod selector move to the namespace selector.
	for k, v := range podSel.MatchLabels {
		switch {
		case k == ciliumNamespaceLabel:
			setMatchLabel(&nsSel, namespaceNameLabel, v)
			delete(podSel.MatchLabels, k)
		case strings.HasPrefix(k, ciliumNamespaceLabelPrefix):
			setMatchLabel(&nsSel, strings.TrimPrefix(k, ciliumNamespaceLabelPrefix), v)
			delete(podSel.MatchLabels, k)
		}
	}
	var podExprs []metav1.LabelSelectorRequirement
	for _, e := range podSel.MatchExpressions {
		switch {
		case e.Key == ciliumNamespaceLabel:
			e.Key = namespaceNameLabel
			nsSel.MatchExpressions = append(nsSel.MatchExpressions, e)
		case strings.HasPrefix(e.Key, ciliumNamespaceLabelPrefix):
			e.Key = strings.TrimPrefix(e.Key, ciliumNamespaceLabelPrefix)
			nsSel.MatchExpressions = append(nsSel.MatchExpressions, e)
		default:
			podExprs = append(podExprs, e)
		}
	}
	podSel.MatchExpressions = podExprs
	if len(podSel.MatchLabels) == 0 {
		podSel.MatchLabels = nil
	}
	if len(nsSel.MatchLabels) == 0 {
		nsSel.MatchLabels = nil
	}
	if _, err := metav1.LabelSelectorAsSelector(&podSel); err != nil {
		c.issue(Error, source, field+".podSelector", "invalid selector (%v); skipped", err)
		return "", nsSel, podSel, false
	}
	if _, err := metav1.LabelSelectorAsSelector(&nsSel); err != nil {
		c.issue(Error, source, field+".namespaceSelector", "invalid selector (%v); skipped", err)
		return "", nsSel, podSel, false
	}
	// A selector that pins exactly one namespace by name and nothing else is a namespaced
	// policy, which a namespace's owners can read and which needs no cluster-wide rights.
	if len(nsSel.MatchExpressions) == 0 && len(nsSel.MatchLabels) == 1 {
		if name, ok := nsSel.MatchLabels[namespaceNameLabel]; ok {
			return name, metav1.LabelSelector{}, podSel, true
		}
	}
	return "", nsSel, podSel, true
}

// stripLabelSources removes Cilium's label-source prefixes (k8s:app is the label app) and
// refuses Cilium's other pseudo-labels: keeping one would select no pod, dropping it would
// select more pods than Cilium does.
func (c *converter) stripLabelSources(source, field string, s *metav1.LabelSelector) bool {
	strip := func(k string) string {
		for _, p := range ciliumLabelSources {
			k = strings.TrimPrefix(k, p)
		}
		return k
	}
	reserved := func(k string) bool {
		return strings.HasPrefix(k, ciliumReservedPrefix) && !strings.HasPrefix(k, ciliumNamespaceLabelPrefix)
	}
	if len(s.MatchLabels) > 0 {
		labels := make(map[string]string, len(s.MatchLabels))
		for k, v := range s.MatchLabels {
			labels[strip(k)] = v
		}
		s.MatchLabels = labels
	}
	for i := range s.MatchExpressions {
		s.MatchExpressions[i].Key = strip(s.MatchExpressions[i].Key)
	}
	for k := range s.MatchLabels {
		if reserved(k) {
			c.issue(Error, source, field, "Cilium pseudo-label %s has no egressd equivalent (pods do not carry it); the selector is skipped", k)
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		if reserved(e.Key) {
			c.issue(Error, source, field, "Cilium pseudo-label %s has no egressd equivalent (pods do not carry it); the selector is skipped", e.Key)
			return false
		}
	}
	return true
}

func setMatchLabel(s *metav1.LabelSelector, k, v string) {
	if s.MatchLabels == nil {
		s.MatchLabels = map[string]string{}
	}
	s.MatchLabels[k] = v
}

// gateway builds the EgressGateway spec of a policy.
func (c *converter) gateway(source string, spec *ciliumSpec) (egressv1.EgressGatewaySpec, bool) {
	var groups []ciliumGateway
	field := "spec.egressGateway"
	// onePerEntry: Cilium sends through one node per gateway entry (the first selected, by
	// name); Isovalent's egressGroups use every node of a group, as egressd does.
	onePerEntry := true
	switch {
	case (spec.EgressGateway != nil || len(spec.EgressGateways) > 0) && len(spec.EgressGroups) > 0:
		c.issue(Error, source, "spec", "both egressGateway(s) and egressGroups are set; skipped")
		return egressv1.EgressGatewaySpec{}, false
	case len(spec.EgressGateways) > 0:
		field = "spec.egressGateways"
		groups = spec.EgressGateways
		if spec.EgressGateway != nil && canonical(*spec.EgressGateway) != canonical(spec.EgressGateways[0]) {
			// Cilium 1.18 documents egressGateways[0] as repeating egressGateway; when it
			// does not, use both rather than guess which one Cilium would drop.
			groups = append([]ciliumGateway{*spec.EgressGateway}, spec.EgressGateways...)
			c.issue(Warning, source, field+"[0]", "differs from spec.egressGateway, which Cilium expects it to repeat; both are converted as gateways of the policy")
		}
		if len(groups) > 1 {
			c.issue(Info, source, field, "Cilium assigns each pod to one of the %d gateways; egressd spreads each pod's flows over all of them (ActiveActive), so a pod's traffic leaves with any of their egress IPs", len(groups))
		}
	case spec.EgressGateway != nil:
		groups = []ciliumGateway{*spec.EgressGateway}
	case len(spec.EgressGroups) > 0:
		onePerEntry = false
		groups = spec.EgressGroups
		field = "spec.egressGroups"
	default:
		c.issue(Error, source, "spec.egressGateway", "missing (and no egressGateways or egressGroups); skipped")
		return egressv1.EgressGatewaySpec{}, false
	}
	for i := range groups {
		if groups[i].NodeSelector == nil {
			c.issue(Error, source, fmt.Sprintf("%s[%d].nodeSelector", field, i), "missing: egressd needs a node selector for gateway nodes; skipped")
			return egressv1.EgressGatewaySpec{}, false
		}
	}

	gw := egressv1.EgressGatewaySpec{Mode: egressv1.ModeActiveActive}
	nodeSel, ok := mergeNodeSelectors(groups)
	if !ok {
		c.issue(Error, source, field, "%d egress groups with node selectors that do not differ in the value of one label; "+
			"an egressd policy uses one EgressGateway, so write one gateway whose nodeSelector selects all their nodes", len(groups))
		return egressv1.EgressGatewaySpec{}, false
	}
	gw.NodeSelector = nodeSel

	iface, ips := groups[0].Interface, []string{}
	for i, g := range groups {
		if g.Interface != iface {
			c.issue(Error, source, fmt.Sprintf("%s[%d].interface", field, i), "egress groups use different interfaces (%q, %q); skipped", iface, g.Interface)
			return egressv1.EgressGatewaySpec{}, false
		}
		if g.EgressIP != "" {
			ips = append(ips, g.EgressIP)
		}
	}
	if len(ips) > 0 && len(ips) != len(groups) {
		c.issue(Error, source, field, "some egress groups name an egressIP and some do not; skipped")
		return egressv1.EgressGatewaySpec{}, false
	}

	switch {
	case len(ips) > 0:
		addrs, ok := c.egressIPAddresses(source, field, ips, iface)
		if !ok {
			return egressv1.EgressGatewaySpec{}, false
		}
		gw.Addresses = addrs
	default:
		if iface == "" {
			iface = c.opts.DefaultInterface
			if iface == "" {
				iface = "eth0"
				c.issue(Warning, source, field, "no interface nor egressIP: Cilium uses the default-route interface; written as nodeInterface eth0 (say which with --default-interface)")
			} else {
				c.issue(Info, source, field, "no interface nor egressIP: Cilium uses the default-route interface; written as nodeInterface %s (--default-interface)", iface)
			}
		}
		gw.Addresses = egressv1.EgressAddresses{NodeInterface: &egressv1.NodeInterfaceAddresses{Interface: iface, Family: egressv1.IPv4}}
	}

	if onePerEntry && !pinsOneNodeEach(groups) {
		if gw.Addresses.NodeInterface != nil {
			// The egress address is the node's own: more nodes, more source addresses.
			c.issue(Warning, source, field, "Cilium sends through one node per gateway (the first its nodeSelector selects, by name); egressd uses every selected node (ActiveActive), so when a selector matches several nodes the traffic also leaves with the other nodes' %s addresses; select one node (%s) to keep one address", gw.Addresses.NodeInterface.Interface, hostnameLabel)
		} else {
			c.issue(Info, source, field, "Cilium sends through one node per gateway (the first by name); egressd uses every selected node (ActiveActive) and moves the same egress IPs between them")
		}
	}
	var maxNodes *int32
	for _, g := range groups {
		if g.MaxGatewayNodes != nil {
			n := *g.MaxGatewayNodes
			if maxNodes == nil || n > *maxNodes {
				maxNodes = &n
			}
		}
	}
	if maxNodes != nil || spec.AZAffinity != "" {
		gw.Zones = &egressv1.ZoneSpec{}
	}
	if maxNodes != nil {
		gw.Zones.MaxGatewaysPerZone = maxNodes
		c.issue(Warning, source, field+"[].maxGatewayNodes", "became zones.maxGatewaysPerZone %d: egressd caps gateways per zone, not per group", *maxNodes)
	}
	switch spec.AZAffinity {
	case "":
	case "disabled":
		gw.Zones.Affinity = egressv1.AffinityAny
	case "localOnly":
		gw.Zones.Affinity = egressv1.AffinityLocalOnly
	case "localOnlyFirst", "localPriority":
		gw.Zones.Affinity = egressv1.AffinityPreferLocal
		if spec.AZAffinity == "localPriority" {
			c.issue(Warning, source, "spec.azAffinity", "localPriority became PreferLocal: egressd does not weigh remote zones, it uses them only when the local zone has no healthy gateway")
		}
	default:
		c.issue(Error, source, "spec.azAffinity", "unknown value %q; left at egressd's default (PreferLocal)", spec.AZAffinity)
		gw.Zones.Affinity = ""
	}

	return gw, true
}

// addGateway writes the gateway of a policy, or reuses an identical one, and returns its name.
func (c *converter) addGateway(policyName string, gw egressv1.EgressGatewaySpec) string {
	key := canonical(gw)
	if existing, ok := c.gateways[key]; ok {
		return existing.Name
	}
	// Two kinds (Cilium and Isovalent) may hold policies of one name: give the second
	// gateway its own name rather than have kubectl apply replace the first.
	name := policyName
	for n := 2; c.gatewayNames[name]; n++ {
		name = fmt.Sprintf("%s-%d", policyName, n)
	}
	c.gatewayNames[name] = true
	obj := &egressv1.EgressGateway{
		TypeMeta:   metav1.TypeMeta{APIVersion: egressv1.GroupVersion.String(), Kind: "EgressGateway"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"egressd.io/converted-from": sanitizeLabel(policyName)}},
		Spec:       gw,
	}
	c.gateways[key] = obj
	c.res.Gateways = append(c.res.Gateways, obj)
	return obj.Name
}

// egressIPAddresses converts fixed egress IPs, which Cilium expects the operator to have put on
// the gateway nodes already.
func (c *converter) egressIPAddresses(source, field string, ips []string, iface string) (egressv1.EgressAddresses, bool) {
	var addrs []netip.Addr
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			c.issue(Error, source, field+".egressIP", "%q is not an IP address; skipped", s)
			return egressv1.EgressAddresses{}, false
		}
		addrs = append(addrs, a)
	}
	switch c.opts.Provider {
	case "":
		c.issue(Error, source, field+".egressIP",
			"egressIP %s is an address provisioned outside egressd; say how egressd should get it: --provider static --zone Z --subnet CIDR keeps it (bare metal, moved by ARP), --provider aws|gcp|azure lets egressd provision its own; skipped",
			strings.Join(ips, ", "))
		return egressv1.EgressAddresses{}, false
	case "static":
		if c.opts.Zone == "" || !c.opts.Subnet.IsValid() {
			c.issue(Error, source, field+".egressIP", "--provider static needs --zone and --subnet; skipped")
			return egressv1.EgressAddresses{}, false
		}
		pool := egressv1.StaticPool{Zone: c.opts.Zone, Subnet: c.opts.Subnet.Masked().String(), Interface: iface}
		for _, a := range addrs {
			if !c.opts.Subnet.Contains(a) {
				c.issue(Error, source, field+".egressIP", "%s lies outside --subnet %s; skipped", a, c.opts.Subnet)
				return egressv1.EgressAddresses{}, false
			}
			pool.IPs = append(pool.IPs, a.String())
		}
		return egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{Pools: []egressv1.StaticPool{pool}}}, true
	default:
		c.issue(Warning, source, field+".egressIP",
			"egressIP %s is not kept: egressd provisions its own addresses with provider %s, one per zone; allowlist the EgressGateway's status.egressIPs instead",
			strings.Join(ips, ", "), c.opts.Provider)
		family := egressv1.IPv4
		if addrs[0].Is6() {
			family = egressv1.IPv6
		}
		return egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: c.opts.Provider, IPsPerZone: 1, Family: family}}, true
	}
}

// pinsOneNodeEach reports whether every gateway's node selector names exactly one node by
// hostname, so that Cilium's "first selected node" and egressd's "every selected node" agree.
func pinsOneNodeEach(groups []ciliumGateway) bool {
	for _, g := range groups {
		s := g.NodeSelector
		if s == nil || len(s.MatchExpressions) != 0 || len(s.MatchLabels) != 1 || s.MatchLabels[hostnameLabel] == "" {
			return false
		}
	}
	return true
}

// mergeNodeSelectors returns one selector for all groups: the group's own when there is one,
// or, when the groups' selectors are all a single matchLabels entry on the same key, that key
// In the values.
func mergeNodeSelectors(groups []ciliumGateway) (metav1.LabelSelector, bool) {
	if len(groups) == 1 {
		return *groups[0].NodeSelector.DeepCopy(), true
	}
	var key string
	var values []string
	for _, g := range groups {
		s := g.NodeSelector
		if len(s.MatchExpressions) != 0 || len(s.MatchLabels) != 1 {
			return metav1.LabelSelector{}, false
		}
		for k, v := range s.MatchLabels {
			if key != "" && k != key {
				return metav1.LabelSelector{}, false
			}
			key = k
			if !slices.Contains(values, v) {
				values = append(values, v)
			}
		}
	}
	if len(values) == 1 {
		return metav1.LabelSelector{MatchLabels: map[string]string{key: values[0]}}, true
	}
	sort.Strings(values)
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: key, Operator: metav1.LabelSelectorOpIn, Values: values,
	}}}, true
}

func canonical(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// sanitizeLabel keeps a name usable as a label value (names may be 253 characters long).
func sanitizeLabel(s string) string {
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-.")
	}
	return s
}

// Write writes the result's objects as YAML documents: gateways first, so that applying the
// file in order creates them before the policies that name them.
func Write(w io.Writer, r *Result) error {
	var objs []any
	for _, o := range r.Gateways {
		objs = append(objs, o)
	}
	for _, o := range r.ClusterPolicies {
		objs = append(objs, o)
	}
	for _, o := range r.Policies {
		objs = append(objs, o)
	}
	for _, o := range objs {
		b, err := cleanYAML(o)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// cleanYAML marshals an object without the empty status and creationTimestamp that typed
// objects carry.
func cleanYAML(o any) ([]byte, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	return yaml.Marshal(m)
}
