// Package cli holds egressctl's subcommands: flag parsing and output around the importable
// packages that do the work (convert, probe, status, explain, datapath).
package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/egressd/egressd/cmd/egressctl/internal/convert"
	"github.com/egressd/egressd/cmd/egressctl/internal/probe"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command failed or found a problem (API unreachable, no pinned datapath, bad convert input, failed probes)
	ExitUsage   = 2
	// ExitLossy: convert wrote what it could, but the output does not do exactly what the
	// input did (something skipped, or behaving differently).
	ExitLossy = 3
)

const usage = `egressctl: operate egressd egress gateways

Usage:
  egressctl status [GATEWAY] [flags]     gateways by zone, their state, egress IPs, health, and the policies using them
  egressctl explain POD -n NAMESPACE     which policy, gateway and egress IP a pod's traffic uses, and why (or why none)
  egressctl list [--bpffs /sys/fs/bpf]   this node's datapath tables, read from the pinned bpf maps (run on the node)
  egressctl observe [--node NODE] [--pod NAMESPACE/NAME] [--drops]
                                         the flows a node or gateway handles as they happen: pod, destination, gateway, egress IP, verdict
  egressctl convert -f FILE [flags]      CiliumEgressGatewayPolicy (egressGateway/egressGateways) / egressGroups YAML -> egressd YAML
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
	case "observe":
		return runObserve(ctx, args[1:], stdout, stderr)
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
		fmt.Fprintf(fs.Output(), "Usage: egressctl %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// convertHelp is the text of 'egressctl convert --help', above the flags.
const convertHelp = `Usage: egressctl convert [-f FILE]... [flags]

Converts CiliumEgressGatewayPolicy (cilium.io/v2: egressGateway, or the egressGateways list of
Cilium 1.18+) and Isovalent-style egressGroups policies into EgressGateway, EgressPolicy and
ClusterEgressPolicy YAML on stdout, gateways first:

  kubectl get ciliumegressgatewaypolicies -o yaml | egressctl convert -f - | kubectl apply -f -

-f takes a file, a directory (its .yaml, .yml and .json files) or - for stdin, and repeats;
without -f (or a FILE argument) convert reads stdin. Every difference from the source is
reported on stderr, naming the object and field and what was lost. The objects that did
convert are still written to stdout.

Exit codes:
  0  converted exactly: applying the output steers what the source steered
  1  bad input: a file cannot be read or is not YAML; nothing is written
  2  usage: unknown flag or bad flag value; nothing is written
  3  converted with losses: something was skipped (an object, a selector, an exclusion) or
     will behave differently (another egress IP, other gateway nodes); the rest is written,
     and stderr says what. With 'set -o pipefail' a pipe into kubectl apply then fails.

Flags:
`

// fileList is a repeatable -f flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func runConvert(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts   convert.Options
		subnet string
		files  fileList
	)
	fs.Var(&files, "f", "file, directory or - (stdin) to convert; repeatable")
	fs.Var(&files, "filename", "same as -f")
	fs.StringVar(&opts.Provider, "provider", "", "how gateways with an egressIP get addresses: static (keep the IP; needs --zone, --subnet) or a cloud provider name (aws, gcp, azure: egressd provisions new IPs)")
	fs.StringVar(&opts.Zone, "zone", "", "zone of static pools made from egressIP")
	fs.StringVar(&subnet, "subnet", "", "subnet (CIDR) of static pools made from egressIP")
	fs.StringVar(&opts.DefaultInterface, "default-interface", "", "interface standing for Cilium's default-route interface (default eth0, reported as a loss)")
	// --strict was how to fail on losses before that became the default; scripts pass it.
	fs.Bool("strict", true, "no effect: losses always exit 3 (kept for scripts that pass it)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), convertHelp)
		fs.PrintDefaults()
	}
	positional, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if subnet != "" {
		p, err := netip.ParsePrefix(subnet)
		if err != nil {
			fmt.Fprintf(stderr, "egressctl convert: --subnet: %v\n", err)
			return ExitUsage
		}
		opts.Subnet = p
	}
	// A FILE argument, as before -f existed, is one more -f.
	files = append(files, positional...)
	if len(files) == 0 {
		files = fileList{"-"}
	}
	inputs, closeAll, err := openInputs(files, stdin)
	defer closeAll()
	if err != nil {
		fmt.Fprintf(stderr, "egressctl convert: %v\n", err)
		return ExitFailure
	}
	res, err := convert.ConvertInputs(inputs, opts)
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
	if res.Lossy() {
		fmt.Fprintln(stderr, "egressctl convert: converted with losses (see above); the output does not do exactly what the input did")
		return ExitLossy
	}
	return ExitOK
}

// openInputs opens every -f argument: a file, a directory's .yaml, .yml and .json files in
// name order (not recursive, as kubectl without -R), or - for stdin (once).
func openInputs(names []string, stdin io.Reader) ([]convert.Input, func(), error) {
	var inputs []convert.Input
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	open := func(path string) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		files = append(files, f)
		inputs = append(inputs, convert.Input{Name: path, Reader: f})
		return nil
	}
	stdinUsed := false
	for _, name := range names {
		if name == "-" {
			if stdinUsed {
				return nil, closeAll, errors.New("-f - given twice: stdin can be read once")
			}
			stdinUsed = true
			inputs = append(inputs, convert.Input{Name: "<stdin>", Reader: stdin})
			continue
		}
		st, err := os.Stat(name)
		if err != nil {
			return nil, closeAll, err
		}
		if !st.IsDir() {
			if err := open(name); err != nil {
				return nil, closeAll, err
			}
			continue
		}
		entries, err := os.ReadDir(name)
		if err != nil {
			return nil, closeAll, err
		}
		found := false
		for _, e := range entries {
			switch filepath.Ext(e.Name()) {
			case ".yaml", ".yml", ".json":
			default:
				continue
			}
			if e.IsDir() {
				continue
			}
			found = true
			if err := open(filepath.Join(name, e.Name())); err != nil {
				return nil, closeAll, err
			}
		}
		if !found {
			return nil, closeAll, fmt.Errorf("%s: no .yaml, .yml or .json file in the directory", name)
		}
	}
	if len(names) == 1 && names[0] == "-" {
		// One unnamed input keeps issues as short as before -f.
		inputs[0].Name = ""
	}
	return inputs, closeAll, nil
}

// parseFlags parses a command's flags and positional arguments. On -h or --help it prints the
// command's help on stdout and returns ExitOK, as kubectl does; on a bad flag it prints the
// error and the help on stderr and returns ExitUsage. ok is false in both cases.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (positional []string, code int, ok bool) {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	positional, err := parseInterleaved(fs, args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return nil, ExitOK, false
	case err != nil:
		_, _ = io.Copy(stderr, &buf)
		return nil, ExitUsage, false
	}
	return positional, ExitOK, true
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
	positional, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
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
