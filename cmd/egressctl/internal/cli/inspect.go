package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/cmd/egressctl/internal/datapath"
	"github.com/egressd/egressd/cmd/egressctl/internal/explain"
	"github.com/egressd/egressd/cmd/egressctl/internal/kube"
	"github.com/egressd/egressd/cmd/egressctl/internal/status"
)

// parseInterleaved parses flags that may come before, between or after positional arguments
// (kubectl style: egressctl explain web-1 -n team) and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
}

// apiFlags registers the kubectl-style connection flags.
func apiFlags(fs *flag.FlagSet) (*kube.Flags, *time.Duration) {
	var f kube.Flags
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, ~/.kube/config, else in-cluster)")
	fs.StringVar(&f.Context, "context", "", "kubeconfig context (default the current one)")
	timeout := fs.Duration("request-timeout", 30*time.Second, "give up on the API server after this long")
	return &f, timeout
}

func outputFlag(fs *flag.FlagSet) *string {
	o := new(string)
	fs.StringVar(o, "o", "table", "output: table, json or yaml")
	fs.StringVar(o, "output", "table", "output: table, json or yaml")
	return o
}

// write renders doc as JSON or YAML, or with table for "table".
func write(stdout io.Writer, format string, doc any, table func() error) error {
	switch format {
	case "table", "text", "wide", "":
		return table()
	case "json":
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	return fmt.Errorf("unknown output format %q (table, json or yaml)", format)
}

func validOutput(format string) bool {
	switch format {
	case "table", "text", "wide", "", "json", "yaml":
		return true
	}
	return false
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", stderr, "status [GATEWAY] [flags]")
	conn, timeout := apiFlags(fs)
	out := outputFlag(fs)
	positional, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(positional) > 1 || !validOutput(*out) {
		fs.Usage()
		return ExitUsage
	}
	name := ""
	if len(positional) == 1 {
		name = strings.TrimPrefix(strings.TrimPrefix(positional[0], "egressgateway/"), "egw/")
	}
	c, _, err := kube.Connect(*conn)
	if err != nil {
		fmt.Fprintf(stderr, "egressctl status: %v\n", err)
		return ExitFailure
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := status.Gather(ctx, c, name)
	if err != nil {
		fmt.Fprintf(stderr, "egressctl status: %v\n", err)
		return ExitFailure
	}
	if err := write(stdout, *out, rep, func() error { return status.WriteTable(stdout, rep, time.Now()) }); err != nil {
		fmt.Fprintf(stderr, "egressctl status: writing: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("explain", stderr, "explain POD [-n NAMESPACE] [flags]   (POD may be NAMESPACE/NAME or pod/NAME)")
	conn, timeout := apiFlags(fs)
	out := outputFlag(fs)
	var ns string
	fs.StringVar(&ns, "n", "", "namespace of the pod (default the context's namespace)")
	fs.StringVar(&ns, "namespace", "", "namespace of the pod (default the context's namespace)")
	positional, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(positional) != 1 || !validOutput(*out) {
		fs.Usage()
		return ExitUsage
	}
	name := strings.TrimPrefix(strings.TrimPrefix(positional[0], "pod/"), "pods/")
	if before, after, ok := strings.Cut(name, "/"); ok {
		if ns != "" && ns != before {
			fmt.Fprintf(stderr, "egressctl explain: %s names namespace %s, but -n says %s\n", positional[0], before, ns)
			return ExitUsage
		}
		ns, name = before, after
	}
	c, ctxNS, err := kube.Connect(*conn)
	if err != nil {
		fmt.Fprintf(stderr, "egressctl explain: %v\n", err)
		return ExitFailure
	}
	if ns == "" {
		ns = ctxNS
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	pod, in, err := explain.Gather(ctx, c, ns, name)
	if err != nil {
		fmt.Fprintf(stderr, "egressctl explain: %v\n", err)
		return ExitFailure
	}
	ex := explain.Explain(pod, in)
	if err := write(stdout, *out, ex, func() error { return explain.WriteText(stdout, ex) }); err != nil {
		fmt.Fprintf(stderr, "egressctl explain: writing: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func runList(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("list", stderr, "list [--bpffs /sys/fs/bpf] [flags]")
	bpffs := fs.String("bpffs", "/sys/fs/bpf", "bpffs mount the agent pins under (its --bpffs); maps are read from <bpffs>/egressd/"+bpf.Version)
	out := outputFlag(fs)
	positional, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(positional) != 0 || !validOutput(*out) {
		fs.Usage()
		return ExitUsage
	}
	t, err := datapath.Read(filepath.Join(*bpffs, "egressd"))
	if err != nil {
		fmt.Fprintf(stderr, "egressctl list: %v\n", err)
		if errors.Is(err, bpf.ErrNotPinned) {
			fmt.Fprintln(stderr, "Run it on a node where egressd-agent runs (kubectl exec into the agent pod, or as root on the node),\n"+
				"with --bpffs set to the agent's --bpffs.")
		}
		return ExitFailure
	}
	if err := write(stdout, *out, t, func() error { return datapath.WriteText(stdout, t) }); err != nil {
		fmt.Fprintf(stderr, "egressctl list: writing: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
