package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/test/netns"
)

// Binaries the lab runs, from Config.BinDir.
const (
	AgentBinary      = "egressd-agent"
	ControllerBinary = "egressd-controller"
)

// startupGrace is how long a freshly started binary must stay up before the lab trusts it: a
// binary that exits at once (bad flag, missing config) is reported with its log instead of
// leaving the walkthrough waiting for a gateway that never becomes ready.
const startupGrace = 1500 * time.Millisecond

// CheckBinaries reports which of the binaries the lab needs are missing from dir.
func CheckBinaries(dir string) error {
	var missing []string
	for _, b := range []string{AgentBinary, ControllerBinary} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, filepath.Join(dir, b))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: build them with `go build -o bin/ ./cmd/...` (or `make build`)", strings.Join(missing, ", "))
	}
	return nil
}

// process is a binary running in a lab namespace.
type process struct {
	name string
	ns   *netns.Namespace
	argv []string
	env  []string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exited
	err  error         // exit status, valid after done
}

func (p *process) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "\n=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.argv, " "))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.env...)
	// Own process group: a Ctrl-C on the terminal reaches the lab, which stops its children
	// in order, rather than every process at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.ns.Start(cmd); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return nil
}

// running reports whether the process is up.
func (p *process) running() bool {
	if p == nil || p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop signals the process and waits up to grace for it to exit, then kills it.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill sends SIGKILL without waiting for the process to be reaped (wait for p.done).
func (p *process) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
	}
}

// checkAlive waits startupGrace and fails with the tail of the log if the process exited.
func (p *process) checkAlive(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(startupGrace):
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited right after start (%w); last lines of %s:\n%s", p.name, p.err, p.log, Tail(p.log, 15))
	}
}

// Tail returns the last n lines of a log file, indented, for error messages (empty when the
// file cannot be read).
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return "    " + strings.Join(lines, "\n    ")
}

func (l *Lab) awsEnv() []string {
	return []string{
		"AWS_REGION=" + Region, "AWS_DEFAULT_REGION=" + Region,
		"AWS_ACCESS_KEY_ID=AKIDEGRESSDLAB", "AWS_SECRET_ACCESS_KEY=egressd-lab",
		"AWS_ENDPOINT_URL_EC2=http://" + l.SimAddr,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://" + IMDSAddr,
	}
}

// cloudEnv is the environment of the lab's binaries: where the cloud's API and metadata are.
func (l *Lab) cloudEnv() []string {
	if l.Config.Cloud == CloudGCP {
		return gceEnv()
	}
	return l.awsEnv()
}

// controllerConfig is the --config file of egressd-controller.
func (l *Lab) controllerConfig() string {
	if l.Config.Cloud == CloudGCP {
		return l.gceControllerConfig()
	}
	return fmt.Sprintf(`clusterName: %s
namespace: %s
providers:
  aws:
    region: %s
    vpcId: %s
    endpoint: http://%s
    imdsEndpoint: http://%s
    clusterName: %s
`, ClusterName, SystemNS, Region, l.VPC, l.SimAddr, IMDSAddr, ClusterName)
}

func (l *Lab) startControlPlane(ctx context.Context) error {
	if err := l.mountBPF(); err != nil {
		return err
	}
	// What each node booted with, before any agent touched it: a cold reboot returns to it.
	for _, n := range l.Nodes {
		b, err := snapshotBoot(n)
		if err != nil {
			return fmt.Errorf("recording %s's boot state: %w", n.Name, err)
		}
		n.down.mu.Lock()
		n.down.boot = b
		n.down.mu.Unlock()
	}
	cfg := filepath.Join(l.workDir, "controller.yaml")
	if err := os.WriteFile(cfg, []byte(l.controllerConfig()), 0o644); err != nil {
		return err
	}
	if err := l.StartController(); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		if err := l.StartAgent(n.Name); err != nil {
			return err
		}
	}
	l.mu.Lock()
	c := l.controller
	l.mu.Unlock()
	if err := c.checkAlive(ctx); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		if err := n.agent.checkAlive(ctx); err != nil {
			return err
		}
	}
	return nil
}

// StartController starts (or restarts, after StopController) egressd-controller in the
// control-plane namespace. A restarted controller waits for the leader-election Lease of the
// one before it to expire (15 s) unless that one released it (SIGTERM).
func (l *Lab) StartController() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab closed")
	}
	if l.controller.running() {
		return nil
	}
	l.controller = &process{name: ControllerBinary, ns: l.CP.Namespace, env: l.cloudEnv(),
		log: filepath.Join(l.workDir, "logs", "controller.log"),
		argv: []string{filepath.Join(l.Config.BinDir, ControllerBinary), "--kubeconfig=" + l.Kubeconfig,
			"--config=" + filepath.Join(l.workDir, "controller.yaml"), "--leader-elect=true",
			"--metrics-bind-address=:8080", "--health-probe-bind-address=:8081",
			"--zap-time-encoding=rfc3339nano", "--zap-log-level=debug"}}
	return l.controller.start()
}

// StopController stops egressd-controller: SIGKILL models a crash (its leader Lease stays
// until it expires), SIGTERM a rollout. It returns once the process is gone.
func (l *Lab) StopController(sig syscall.Signal) error {
	l.mu.Lock()
	c := l.controller
	l.mu.Unlock()
	if c == nil {
		return errors.New("the lab runs without control plane")
	}
	c.stop(sig, 5*time.Second)
	return nil
}

// StartAgent starts (or restarts) the agent of a node.
func (l *Lab) StartAgent(name string) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("no node %q", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab closed")
	}
	if n.agent.running() {
		return nil
	}
	bpffs := filepath.Join(l.bpffs, n.Name)
	if err := os.MkdirAll(bpffs, 0o700); err != nil {
		return err
	}
	n.agent = &process{name: AgentBinary + " on " + n.Name, ns: n.Namespace, env: l.cloudEnv(),
		log: filepath.Join(l.workDir, "logs", "agent-"+n.Name+".log"),
		argv: []string{filepath.Join(l.Config.BinDir, AgentBinary), "--node-name=" + n.Name,
			"--kubeconfig=" + l.Kubeconfig, "--namespace=" + SystemNS,
			"--metrics-bind-address=:9090", "--health-probe-bind-address=:9091",
			fmt.Sprintf("--tunnel-port=%d", contract.DefaultTunnelPort), fmt.Sprintf("--probe-port=%d", contract.DefaultProbePort),
			"--pod-interface-patterns=" + l.Topo.Spec.HostIfacePrefix + "*", "--bpffs=" + bpffs,
			"--hold-established=" + l.HoldEstablished().String(),
			"--zap-time-encoding=rfc3339nano", "--zap-log-level=debug"}}
	return n.agent.start()
}

// StopAgent stops a node's agent: SIGKILL models a crash or power loss, SIGTERM a shutdown.
func (l *Lab) StopAgent(name string, sig syscall.Signal) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("no node %q", name)
	}
	l.mu.Lock()
	a := n.agent
	l.mu.Unlock()
	a.stop(sig, 5*time.Second)
	return nil
}

// AgentRunning reports whether a node's agent runs.
func (l *Lab) AgentRunning(name string) bool {
	n := l.Node(name)
	if n == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return n.agent.running()
}

// ControllerRunning reports whether the controller runs.
func (l *Lab) ControllerRunning() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.controller.running()
}

// LogPath returns the log file of a node's agent ("" for the controller).
func (l *Lab) LogPath(node string) string {
	if node == "" {
		return filepath.Join(l.workDir, "logs", "controller.log")
	}
	return filepath.Join(l.workDir, "logs", "agent-"+node+".log")
}

func (l *Lab) stopProcesses() {
	l.mu.Lock()
	procs := []*process{}
	for _, n := range l.Nodes {
		procs = append(procs, n.agent)
	}
	procs = append(procs, l.controller)
	l.mu.Unlock()
	for _, p := range procs {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		p.stop(syscall.SIGKILL, 3*time.Second)
	}
}

// mountBPF mounts a bpffs of the lab's own under the work directory; each agent pins under
// its node's subdirectory, as each real node has its own /sys/fs/bpf.
func (l *Lab) mountBPF() error {
	dir := filepath.Join(l.workDir, "bpffs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs on %s: %w", dir, err)
	}
	l.bpffs = dir
	return nil
}

func unmountBPF(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", dir, err)
	}
	return nil
}

// Sweep removes what crashed labs left behind: their namespaces (after killing the processes
// inside) and their bpffs mounts. Labs whose process still runs are left alone.
func Sweep() error {
	errs := []error{netns.Sweep(Prefix)}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "bpf" || !strings.Contains(f[1], "/egressd-lab-") {
			continue
		}
		// .../egressd-lab-<pid>-<random>/bpffs
		rest := f[1][strings.Index(f[1], "/egressd-lab-")+len("/egressd-lab-"):]
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		errs = append(errs, unmountBPF(f[1]))
		_ = os.RemoveAll(filepath.Dir(f[1]))
	}
	return errors.Join(errs...)
}
