// Command egressd-lab runs the egressd lab (test/lab): a cluster in network namespaces with
// the real egressd-agent and egressd-controller against envtest and the EC2 simulator. It is
// a test tool and lives under test/ so that egressctl, which users install, links no lab,
// simulator or envtest code. `make build` puts it in bin/; `make demo` runs its demo.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/egressd/egressd/test/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runLab(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const labUsage = `Usage: egressd-lab COMMAND [flags]

The egressd lab: a cluster in network namespaces on this machine, driven by the EC2 simulator
(or the Compute Engine simulator: up --cloud gcp), with the real egressd-agent and
egressd-controller (needs root).

  up                  start a lab and keep it running in the foreground; prints its kubeconfig
  down                stop the lab started by 'up' (or clean up after a crashed one)
  status              nodes, agents, what the cloud holds, the gateway's status
  reboot NODE[,NODE]  take gateways down (agent killed, port cut) and back after --down
  drain NODE          remove the gateway label; 'undrain NODE' puts it back
  demo                the walkthrough of DESIGN.md §7 (make demo): prints a table, writes a report
`

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, labUsage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join("out", "lab"), "directory of the running lab's state and kubeconfig")
	var cfg lab.Config
	var demo lab.DemoOptions
	var down time.Duration
	noPolicy := false
	switch cmd {
	case "up", "demo":
		fs.IntVar(&cfg.Zones, "zones", 4, "zones (one subnet each)")
		fs.IntVar(&cfg.GatewaysPerZone, "gateways-per-zone", 2, "gateway nodes per zone (1-4)")
		fs.StringVar(&cfg.Timing, "timing", "aws", "the simulated cloud's timing profile: instant, aws, azure or gcp (name[:scale])")
		fs.Int64Var(&cfg.TimingSeed, "timing-seed", 0, "seed of the timing profile's draws (0: from the clock, printed)")
		fs.StringVar(&cfg.BinDir, "bin", defaultBinDir(), "directory holding egressd-agent and egressd-controller")
		fs.DurationVar(&cfg.NotReadyAfter, "not-ready-after", 5*time.Second, "how long after a crash the Node turns NotReady")
		fs.BoolVar(&cfg.NoControlPlane, "no-control-plane", false, "do not start the agents and the controller")
	}
	switch cmd {
	case "up":
		fs.BoolVar(&noPolicy, "no-policy", false, "do not apply the walkthrough's EgressGateway and EgressPolicy")
		fs.StringVar(&cfg.Cloud, "cloud", lab.CloudAWS, "the simulated cloud: aws (EC2) or gcp (Compute Engine, the group with public egress; --timing defaults to gcp)")
	case "demo":
		fs.StringVar(&demo.OutDir, "out", filepath.Join("out", "demo"), "directory for report.html and report.json")
		fs.DurationVar(&demo.DownFor, "down", 0, "how long a rebooted gateway stays down (default: past NotReady and the agent Lease, so its address moves)")
		fs.DurationVar(&demo.DrainFor, "drain", 0, "how long the drained gateway stays unlabelled (default: past the drain grace period, so its address moves)")
		fs.BoolVar(&cfg.KeepWorkDir, "keep-logs", false, "keep the lab's work directory (logs) after the run")
	case "reboot":
		fs.DurationVar(&down, "down", 10*time.Second, "how long the nodes stay down")
	}
	// Flags may follow the node name: egressd-lab reboot gw-a1 --down 5s.
	var positional []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "egressd-lab %s: %v\n", cmd, err)
		return 1
	}
	switch cmd {
	case "up":
		cfg.Log = stderr
		timingSet := false
		fs.Visit(func(f *flag.Flag) { timingSet = timingSet || f.Name == "timing" })
		if cfg.Cloud == lab.CloudGCP && !timingSet {
			cfg.Timing = "gcp"
		}
		return labUp(ctx, cfg, *dir, !noPolicy, stdout, stderr)
	case "demo":
		demo.Config, demo.Out = cfg, stdout
		if _, err := lab.Demo(ctx, demo); err != nil {
			return fail(err)
		}
		return 0
	case "down":
		if err := lab.Down(ctx, *dir); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, "lab down")
		return 0
	case "status":
		return labCall(ctx, *dir, http.MethodGet, "/status", stdout, stderr)
	case "reboot", "drain", "undrain":
		if len(positional) != 1 {
			fmt.Fprint(stderr, labUsage)
			return 2
		}
		q := url.Values{"node": {positional[0]}}
		if cmd == "reboot" {
			q.Set("down", down.String())
		}
		return labCall(ctx, *dir, http.MethodPost, "/"+cmd+"?"+q.Encode(), stdout, stderr)
	default:
		fmt.Fprintf(stderr, "egressd-lab: unknown command %q\n\n%s", cmd, labUsage)
		return 2
	}
}

func labUp(ctx context.Context, cfg lab.Config, dir string, policy bool, stdout, stderr io.Writer) int {
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "egressd-lab up: %v\n", err)
		return 1
	}
	defer func() {
		fmt.Fprintln(stderr, "egressd-lab: tearing down")
		if err := l.Close(); err != nil {
			fmt.Fprintf(stderr, "egressd-lab: teardown: %v\n", err)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, stop, err := l.ServeControl(ctx, dir, cancel)
	if err != nil {
		fmt.Fprintf(stderr, "egressd-lab up: %v\n", err)
		return 1
	}
	defer func() { _ = stop() }()
	if policy && !cfg.NoControlPlane {
		if err := l.ApplyDemoPolicy(ctx); err != nil {
			fmt.Fprintf(stderr, "egressd-lab up: %v\n", err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "lab up. kubectl:\n  export KUBECONFIG=%s\n  kubectl get egressgateways,egressips,nodes\n"+
		"explore: egressd-lab status | reboot NODE | drain NODE | undrain NODE   (--dir %s)\nstop: Ctrl-C or egressd-lab down\n", st.Kubeconfig, dir)
	<-ctx.Done()
	return 0
}

func labCall(ctx context.Context, dir, method, path string, stdout, stderr io.Writer) int {
	out, err := lab.Call(ctx, dir, method, path)
	if err != nil {
		fmt.Fprintf(stderr, "egressd-lab: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, out)
	return 0
}

// defaultBinDir is the directory of this executable when the egressd binaries sit next to it
// (bin/ after make build), else the checkout's bin/.
func defaultBinDir() string {
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(exe)
		if _, err := os.Stat(filepath.Join(d, lab.AgentBinary)); err == nil {
			return d
		}
	}
	return filepath.Join("bin")
}
