// Package cli holds egressctl's subcommands: flag parsing and output around the importable
// packages that do the work (convert, probe, status, explain, datapath).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/egressd/egressd/cmd/egressctl/internal/convert"
	"github.com/egressd/egressd/cmd/egressctl/internal/probe"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command failed or found a problem (API unreachable, no pinned datapath, strict conversion issues, failed probes)
	ExitUsage   = 2
)

const usage = `egressctl: operate egressd egress gateways

Usage:
  egressctl status [GATEWAY] [flags]     gateways by zone, their state, egress IPs, health, and the policies using them
  egressctl explain POD -n NAMESPACE     which policy, gateway and egress IP a pod's traffic uses, and why (or why none)
  egressctl list [--bpffs /sys/fs/bpf]   this node's datapath tables, read from the pinned bpf maps (run on the node)
  egressctl convert [flags] [FILE|-]     CiliumEgressGatewayPolicy / egressGroups YAML -> egressd YAML
  egressctl probe [flags] URL            send a request every interval to an echo server, report egress IPs and outages

status and explain read the API server like kubectl: --kubeconfig, else $KUBECONFIG, else
~/.kube/config, else in-cluster; --context picks a context. Output: -o table (default), json, yaml.

Run 'egressctl COMMAND -h' for a command's flags. Copied or linked as kubectl-egressd on PATH, it is
'kubectl egressd COMMAND' (flags go after the command: kubectl egressd status --context prod).
`

// Run runs egressctl with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "convert":
		return runConvert(args[1:], stdin, stdout, stderr)
	case "probe":
		return runProbe(ctx, args[1:], stdout, stderr)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr)
	case "explain":
		return runExplain(ctx, args[1:], stdout, stderr)
	case "list":
		return runList(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(stderr, "egressctl: unknown command %q\n\n%s", args[0], usage)
		return ExitUsage
	}
}

func newFlagSet(name string, stderr io.Writer, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: egressctl %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func runConvert(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("convert", stderr, "convert [flags] [FILE|-]")
	var (
		opts   convert.Options
		subnet string
		strict bool
	)
	fs.StringVar(&opts.Provider, "provider", "", "how gateways with an egressIP get addresses: static (keep the IP; needs --zone, --subnet) or a cloud provider name (aws, gcp, azure: egressd provisions new IPs)")
	fs.StringVar(&opts.Zone, "zone", "", "zone of static pools made from egressIP")
	fs.StringVar(&subnet, "subnet", "", "subnet (CIDR) of static pools made from egressIP")
	fs.StringVar(&opts.DefaultInterface, "default-interface", "", "interface standing for Cilium's default-route interface (default eth0)")
	fs.BoolVar(&strict, "strict", false, "exit 1 when anything could not be converted exactly (errors or warnings)")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if subnet != "" {
		p, err := netip.ParsePrefix(subnet)
		if err != nil {
			fmt.Fprintf(stderr, "egressctl convert: --subnet: %v\n", err)
			return ExitUsage
		}
		opts.Subnet = p
	}
	in := stdin
	switch fs.NArg() {
	case 0:
	case 1:
		if path := fs.Arg(0); path != "-" {
			f, err := os.Open(path)
			if err != nil {
				fmt.Fprintf(stderr, "egressctl convert: %v\n", err)
				return ExitFailure
			}
			defer f.Close()
			in = f
		}
	default:
		fs.Usage()
		return ExitUsage
	}
	res, err := convert.Convert(in, opts)
	if err != nil {
		fmt.Fprintf(stderr, "egressctl convert: %v\n", err)
		return ExitFailure
	}
	if err := convert.Write(stdout, res); err != nil {
		fmt.Fprintf(stderr, "egressctl convert: writing: %v\n", err)
		return ExitFailure
	}
	for _, i := range res.Issues {
		fmt.Fprintln(stderr, i)
	}
	if strict && (res.Has(convert.Error) || res.Has(convert.Warning)) {
		return ExitFailure
	}
	return ExitOK
}

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("probe", stderr, "probe [flags] URL")
	var cfg probe.Config
	var quiet bool
	var maxFailed int
	fs.DurationVar(&cfg.Interval, "interval", 50*time.Millisecond, "time between request starts")
	fs.DurationVar(&cfg.Timeout, "timeout", time.Second, "timeout of one request")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to probe; 0 until interrupted")
	fs.BoolVar(&cfg.KeepAlive, "keepalive", false, "reuse connections (default: a new connection, hence a new flow, per request)")
	fs.BoolVar(&quiet, "quiet", false, "print only the summary, not each failure and source change as it happens")
	fs.IntVar(&maxFailed, "max-failed", -1, "exit 1 when more requests fail; -1 never")
	// Flags may follow the URL: egressctl probe URL --interval 50ms.
	positional, err := parseInterleaved(fs, args)
	if err != nil {
		return ExitUsage
	}
	if len(positional) != 1 {
		fs.Usage()
		return ExitUsage
	}
	cfg.URL = positional[0]
	if !quiet {
		last := ""
		cfg.OnResult = func(r probe.Result) {
			switch {
			case r.Err != nil:
				fmt.Fprintf(stderr, "%s  #%d  failed: %v\n", r.Sent.Format("15:04:05.000"), r.Seq, r.Err)
			case r.Source != last:
				fmt.Fprintf(stderr, "%s  #%d  source %s\n", r.Sent.Format("15:04:05.000"), r.Seq, r.Source)
				last = r.Source
			}
		}
	}
	p, err := probe.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "egressctl probe: %v\n", err)
		return ExitUsage
	}
	s, err := p.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "egressctl probe: %v\n", err)
		return ExitFailure
	}
	if s == nil {
		return ExitFailure
	}
	if err := probe.WriteReport(stdout, s); err != nil {
		return ExitFailure
	}
	if maxFailed >= 0 && s.Failed > maxFailed {
		return ExitFailure
	}
	return ExitOK
}
