// Package observe streams the flow records of a node's agent (egressctl observe): directly
// from its metrics port, or through the API server's pod proxy to the agent pod of a node.
package observe

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/egressd/egressd/gateway/contract"
)

// AgentSelector selects the chart's agent pods.
const AgentSelector = "app.kubernetes.io/name=egressd,app.kubernetes.io/component=agent"

// defaultMetricsPort is the agent's --metrics-bind-address port when its pod names none.
const defaultMetricsPort = 9090

// Filter is what the agent sends.
type Filter struct {
	// Pod is namespace/name or a pod IP. On a gateway the tunnelled pods are not the node's:
	// only their IP matches.
	Pod       string
	Namespace string
	Drops     bool
	// Sample asks the datapath for 1 in Sample packets; 0: the agent's default (every one).
	Sample uint
}

// Query is the filter as the agent's query parameters.
func (f Filter) Query() url.Values {
	q := url.Values{}
	if f.Pod != "" {
		q.Set(contract.FlowsPodParam, f.Pod)
	}
	if f.Namespace != "" {
		q.Set(contract.FlowsNamespaceParam, f.Namespace)
	}
	if f.Drops {
		q.Set(contract.FlowsDropsParam, "true")
	}
	if f.Sample != 0 {
		q.Set(contract.FlowsSampleParam, strconv.FormatUint(uint64(f.Sample), 10))
	}
	return q
}

// Direct opens the stream of the agent at base (http://HOST:PORT, its metrics address).
func Direct(ctx context.Context, base string, f Filter) (io.ReadCloser, error) {
	u := strings.TrimSuffix(base, "/") + contract.FlowsPath + "?" + f.Query().Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("connecting to the agent at %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		_ = resp.Body.Close()
		return nil, fmt.Errorf("agent at %s: %s: %s", base, resp.Status, strings.TrimSpace(string(b)))
	}
	return resp.Body, nil
}

// ErrNoNode: neither a node nor a pod by name says whose agent to watch.
var ErrNoNode = errors.New("--node, --agent or a --pod NAMESPACE/NAME is needed to pick the agent to watch")

// podNode returns the node a pod (namespace/name) runs on.
func podNode(ctx context.Context, cs kubernetes.Interface, ns, name string) (string, error) {
	p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("getting pod %s/%s: %w", ns, name, err)
	}
	if p.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled", ns, name)
	}
	return p.Spec.NodeName, nil
}

// ViaAPI opens the stream of the agent pod on node (in namespace agentNS) through the API
// server's pod proxy: it needs list on pods and get on pods/proxy there. An empty node is the
// node of f.Pod (namespace/name). It returns the node and the agent pod's name.
func ViaAPI(ctx context.Context, cfg *rest.Config, agentNS, node string, f Filter) (io.ReadCloser, string, string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", "", err
	}
	if node == "" {
		ns, name, ok := strings.Cut(f.Pod, "/")
		if !ok {
			return nil, "", "", ErrNoNode
		}
		if node, err = podNode(ctx, cs, ns, name); err != nil {
			return nil, "", "", err
		}
	}
	pods, err := cs.CoreV1().Pods(agentNS).List(ctx, metav1.ListOptions{LabelSelector: AgentSelector, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, "", "", fmt.Errorf("finding the agent on node %s: %w", node, err)
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		if pods.Items[i].Status.Phase == corev1.PodRunning {
			pod = &pods.Items[i]
		}
	}
	if pod == nil {
		return nil, "", "", fmt.Errorf("no running egressd agent pod on node %s in namespace %s (selector %s)", node, agentNS, AgentSelector)
	}
	port := defaultMetricsPort
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "metrics" {
				port = int(p.ContainerPort)
			}
		}
	}
	params := map[string]string{}
	for k, v := range f.Query() {
		params[k] = v[0]
	}
	rc, err := cs.CoreV1().Pods(agentNS).ProxyGet("http", pod.Name, strconv.Itoa(port), contract.FlowsPath, params).Stream(ctx)
	if err != nil {
		return nil, "", "", fmt.Errorf("streaming flows from pod %s/%s: %w", agentNS, pod.Name, err)
	}
	return rc, node, pod.Name, nil
}

// Read calls fn with each record of the stream until it ends, fn fails or ctx ends.
func Read(ctx context.Context, r io.Reader, fn func(contract.FlowRecord) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec contract.FlowRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("reading the flow stream: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the flow stream: %w", err)
	}
	return nil
}
