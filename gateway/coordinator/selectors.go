package coordinator

import (
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// The selector fields the coordinator matches objects against, by kind: the key of a parsed
// selector in selectorCache.
const (
	kindEgressPolicy        = "EgressPolicy"
	kindClusterEgressPolicy = "ClusterEgressPolicy"
	kindEgressGateway       = "EgressGateway"

	fieldPodSelector       = "podSelector"
	fieldNamespaceSelector = "namespaceSelector"
	fieldNodeSelector      = "nodeSelector"
)

// selectorCache keeps the parsed label selectors of policies and gateways, by object and
// field. The policy controllers' pod watch matches every pod event against the selectors of
// every policy of the pod's namespace and every ClusterEgressPolicy (policiesOf), and parsing
// them each time (label keys and values checked by regular expressions) was 18% of the
// coordinator's CPU in BenchmarkScale at 5,000 nodes: 50,000 pod events × 120 selectors at
// start-up. An entry holds a copy of the selector it was parsed from and is parsed again when
// the object's selector differs: comparing is a fraction of parsing, and it needs no
// generation (which the API server bumps on spec changes but fake clients and hand-built
// objects may leave at 0). forget drops an object's entries when it is deleted, so the cache
// holds what exists.
type selectorCache struct {
	mu sync.Mutex
	m  map[selectorKey]parsedSelector
}

// selectorKey names one selector field of one object.
type selectorKey struct {
	kind  string
	name  types.NamespacedName
	field string
}

type parsedSelector struct {
	src *metav1.LabelSelector // a copy of what sel was parsed from
	sel labels.Selector
	err error
}

// get returns ls parsed, from the cache when it was parsed from an equal selector.
func (c *selectorCache) get(key selectorKey, ls *metav1.LabelSelector) (labels.Selector, error) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && selectorEqual(e.src, ls) {
		return e.sel, e.err
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[selectorKey]parsedSelector{}
	}
	c.m[key] = parsedSelector{src: ls.DeepCopy(), sel: sel, err: err}
	return sel, err
}

// forget drops the entries of a deleted object.
func (c *selectorCache) forget(kind string, name types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range []string{fieldPodSelector, fieldNamespaceSelector, fieldNodeSelector} {
		delete(c.m, selectorKey{kind: kind, name: name, field: f})
	}
}

// len is the number of entries, for tests.
func (c *selectorCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// selectorEqual reports whether two selectors select the same by construction: same labels,
// same expressions in the same order. nil (selects nothing) and empty (selects everything)
// differ.
func selectorEqual(a, b *metav1.LabelSelector) bool {
	if a == nil || b == nil {
		return a == b
	}
	return maps.Equal(a.MatchLabels, b.MatchLabels) &&
		slices.EqualFunc(a.MatchExpressions, b.MatchExpressions, func(x, y metav1.LabelSelectorRequirement) bool {
			return x.Key == y.Key && x.Operator == y.Operator && slices.Equal(x.Values, y.Values)
		})
}

// matches reports whether sel, parsed with err, selects set; a selector that does not parse
// matches, so that the reconcile it triggers reports it.
func matches(sel labels.Selector, err error, set map[string]string) bool {
	return err != nil || sel.Matches(labels.Set(set))
}

// gatewaySelector is the gateway's parsed spec.nodeSelector.
func (c *Coordinator) gatewaySelector(gw *egressv1.EgressGateway) (labels.Selector, error) {
	return c.selectors.get(selectorKey{kind: kindEgressGateway, name: types.NamespacedName{Name: gw.Name}, field: fieldNodeSelector}, &gw.Spec.NodeSelector)
}

// gatewaysOfNode are the gateways an event of node n can change: those whose node selector
// matches n's labels (or does not parse: the reconcile reports it) and those whose status lists
// n. An update maps the old and the new node both, so a node leaving a selector still reaches
// the gateway it left. Every Node event that passed nodeChanged used to enqueue every gateway,
// and each of those reconciles reads the group's nodes: events × gateways reconciles, where
// most events (worker nodes, the cluster's bulk) concern none.
func gatewaysOfNode(gws []egressv1.EgressGateway, n *corev1.Node, selector func(*egressv1.EgressGateway) (labels.Selector, error)) []reconcile.Request {
	var reqs []reconcile.Request
	for i := range gws {
		gw := &gws[i]
		sel, err := selector(gw)
		if matches(sel, err, n.Labels) || gw.Status.ListsNode(n.Name) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: gw.Name}})
		}
	}
	return reqs
}
