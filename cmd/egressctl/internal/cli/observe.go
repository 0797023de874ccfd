package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/egressd/egressd/cmd/egressctl/internal/kube"
	"github.com/egressd/egressd/cmd/egressctl/internal/observe"
	"github.com/egressd/egressd/gateway/contract"
)

const observeSynopsis = `observe [--node NODE | --agent URL] [--pod NAMESPACE/NAME|IP] [-n NAMESPACE] [--drops] [flags]

Streams the flows a node's datapath handles, as they happen, one line each:
  TIME NODE POINT [POD] SRC -> DST PROTO group=G gateway=N underlay=IP egress=IP:PORT VERDICT [reason=R]
On a source node the egress port is "-": the gateway's conntrack picks it; watch the gateway
for it. --pod alone watches the pod's node. Reached through the API server's pod proxy
(list pods and get pods/proxy in --agent-namespace), or --agent http://NODE:9090 directly.`

func runObserve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("observe", stderr, observeSynopsis)
	conn, _ := apiFlags(fs)
	out := outputFlag(fs)
	var f observe.Filter
	var node, agent, agentNS string
	fs.StringVar(&node, "node", "", "node whose agent to watch (default: the node of --pod)")
	fs.StringVar(&agent, "agent", "", "the agent's metrics address, http://HOST:PORT, instead of the API server's pod proxy")
	fs.StringVar(&agentNS, "agent-namespace", contract.DefaultNamespace, "namespace of the agent pods")
	fs.StringVar(&f.Pod, "pod", "", "only this pod's flows: NAMESPACE/NAME (NAME with -n), or its IP (on a gateway only the IP matches)")
	fs.StringVar(&f.Namespace, "n", "", "only flows of pods in this namespace")
	fs.StringVar(&f.Namespace, "namespace", "", "only flows of pods in this namespace")
	fs.BoolVar(&f.Drops, "drops", false, "only dropped packets")
	fs.UintVar(&f.Sample, "sample", 0, "ask the datapath for 1 in N packets (default every one); on a busy gateway")
	positional, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(positional) != 0 || (*out != "table" && *out != "json") || (node != "" && agent != "") {
		fs.Usage()
		return ExitUsage
	}
	if f.Pod != "" && !strings.Contains(f.Pod, "/") && f.Namespace != "" && !looksLikeIP(f.Pod) {
		f.Pod = f.Namespace + "/" + f.Pod
	}
	var body io.ReadCloser
	var err error
	if agent != "" {
		body, err = observe.Direct(ctx, agent, f)
	} else {
		body, err = observeViaAPI(ctx, *conn, agentNS, node, f, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "egressctl observe: %v\n", err)
		if errors.Is(err, observe.ErrNoNode) {
			return ExitUsage
		}
		return ExitFailure
	}
	defer body.Close()
	stop := context.AfterFunc(ctx, func() { _ = body.Close() })
	defer stop()
	enc := json.NewEncoder(stdout)
	err = observe.Read(ctx, body, func(r contract.FlowRecord) error {
		if *out == "json" {
			return enc.Encode(r)
		}
		_, err := fmt.Fprintln(stdout, r.Line())
		return err
	})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "egressctl observe: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func observeViaAPI(ctx context.Context, conn kube.Flags, agentNS, node string, f observe.Filter, stderr io.Writer) (io.ReadCloser, error) {
	cfg, _, err := kube.Config(conn)
	if err != nil {
		return nil, err
	}
	body, node, pod, err := observe.ViaAPI(ctx, cfg, agentNS, node, f)
	if err == nil {
		fmt.Fprintf(stderr, "Watching node %s (agent pod %s/%s); Ctrl-C stops.\n", node, agentNS, pod)
	}
	return body, err
}

func looksLikeIP(s string) bool { return strings.ContainsAny(s, ".:") && !strings.ContainsAny(s, "/") }
