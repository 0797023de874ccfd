// Package netns is egressd's network-namespace test bed: an underlay fabric, nodes, pods wired as
// a CNI would wire them, a router and an external host running echo servers, with the hostile
// host rules real clusters carry. The datapath e2e tests and the lab (test/lab) build on it.
//
// Everything lives inside namespaces the bed creates: the root namespace gets no interface, route
// or nftables object. Namespaces are named <prefix><random>-<pid>-<role>, so concurrent runs never
// collide and Sweep can tell the leftovers of a dead run from the namespaces of a live one.
package netns

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// runDir is where iproute2 and vishvananda/netns keep the bind mounts of named namespaces.
const runDir = "/var/run/netns"

// Namespace is one network namespace of the bed. Its handle stays open for the Topology's
// lifetime, so the namespace exists as long as the Topology does.
type Namespace struct {
	// Name is the namespace's name under /var/run/netns (usable with `ip netns exec`).
	Name string

	handle netns.NsHandle
	nl     *netlink.Handle
	owner  *tracker
}

// Path is the bind-mount path of the namespace, for tools that take a path (nsenter --net=...).
func (n *Namespace) Path() string { return filepath.Join(runDir, n.Name) }

// Handle is the open namespace file descriptor (e.g. for nftables.WithNetNSFd).
func (n *Namespace) Handle() netns.NsHandle { return n.handle }

// Netlink is a netlink handle bound to the namespace; it is closed by Topology.Close.
func (n *Namespace) Netlink() *netlink.Handle { return n.nl }

// Do runs fn on an OS thread switched into the namespace. Sockets created inside fn stay in the
// namespace after Do returns and may be used from any goroutine; goroutines started inside fn do
// not inherit the namespace. A panic in fn is re-raised in the caller.
func (n *Namespace) Do(fn func() error) error { return doIn(n.handle, fn) }

func doIn(target netns.NsHandle, fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		// The thread is only handed back to the runtime when it is certainly back in its
		// original namespace; otherwise the goroutine exits locked and the runtime kills the
		// thread, so no other goroutine ever runs in the wrong namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{err: fmt.Errorf("getting current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			done <- result{err: fmt.Errorf("entering namespace: %w", err)}
			return
		}
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panic = p
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		done <- r
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// createNamespace creates a named namespace without leaving the calling thread in it.
func createNamespace(name string) (netns.NsHandle, error) {
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("getting current namespace: %w", err)
			return
		}
		defer orig.Close()
		nh, err := netns.NewNamed(name)
		if err != nil {
			_ = os.Remove(filepath.Join(runDir, name)) // NewNamed may leave the mount point behind
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("creating namespace %s: %w", name, err)
			return
		}
		if err := netns.Set(orig); err != nil {
			nh.Close()
			errc <- fmt.Errorf("returning from namespace %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		h = nh
		errc <- nil
	}()
	return h, <-errc
}

// deleteNamespace removes the name of a namespace. The kernel frees the namespace, and with it
// every interface, route and nftables table inside (veth peers in other namespaces included),
// once the last reference (open fd, socket, process) is gone.
func deleteNamespace(name string) error {
	p := filepath.Join(runDir, name)
	if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}

func writeSysctlHere(name, value string) error {
	p := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting %s=%s: %w", name, value, err)
	}
	return nil
}

// Start starts cmd inside the namespace (the child inherits the namespace of the thread that
// forks it). The Topology kills and reaps the process on Close if it is still running; the
// caller may Wait for it as usual.
func (n *Namespace) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// The child dies with the test process even if Close never runs (SIGKILL of the test).
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	// Pdeathsig is tied to the forking thread, which Do hands back to the runtime (which keeps
	// it) after restoring its namespace; Close and Sweep cover the other paths.
	err := n.Do(cmd.Start)
	if err != nil {
		return fmt.Errorf("starting %s in %s: %w", cmd.Path, n.Name, err)
	}
	n.owner.addProcess(cmd)
	return nil
}

// ApplyNFT writes an nft script to file and loads it in the namespace with `nft -f` (a file,
// so nft's message names the failing line, and the script stays for a post-mortem).
func (n *Namespace) ApplyNFT(file, script string) error {
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		return err
	}
	_, err := n.Run("nft", "-f", file)
	return err
}

// NFTSetElem is one element of an nftables set with counters: its value (one part, or the
// parts of a concatenation) and its counter.
type NFTSetElem struct {
	Val     []string
	Packets uint64
	Bytes   uint64
}

// NFTSetCounters lists the elements of the counter-carrying set family/table/set.
func (n *Namespace) NFTSetCounters(family, table, set string) ([]NFTSetElem, error) {
	out, err := n.Run("nft", "-j", "list", "set", family, table, set)
	if err != nil {
		return nil, fmt.Errorf("listing set %s %s %s: %w: %s", family, table, set, err, out)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []struct {
					Elem struct {
						Val     json.RawMessage `json:"val"`
						Counter struct {
							Packets uint64 `json:"packets"`
							Bytes   uint64 `json:"bytes"`
						} `json:"counter"`
					} `json:"elem"`
				} `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("parsing set %s %s %s: %w", family, table, set, err)
	}
	var res []NFTSetElem
	for _, x := range doc.Nftables {
		if x.Set == nil {
			continue
		}
		for _, e := range x.Set.Elem {
			el := NFTSetElem{Packets: e.Elem.Counter.Packets, Bytes: e.Elem.Counter.Bytes}
			var one string
			var concat struct {
				Concat []string `json:"concat"`
			}
			switch {
			case json.Unmarshal(e.Elem.Val, &one) == nil:
				el.Val = []string{one}
			case json.Unmarshal(e.Elem.Val, &concat) == nil:
				el.Val = concat.Concat
			default:
				return nil, fmt.Errorf("parsing set %s %s %s: element value %s", family, table, set, e.Elem.Val)
			}
			res = append(res, el)
		}
	}
	return res, nil
}

// Run runs a command in the namespace and returns its combined output (for `ip`, `nft`, ss...).
func (n *Namespace) Run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var out []byte
	err := n.Do(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return out, fmt.Errorf("running %s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return out, nil
}

// tracker owns everything that must go when the Topology closes: processes and closers
// (servers, flows, client sockets) which would otherwise keep namespaces alive.
type tracker struct {
	mu      sync.Mutex
	closers []func() error
	procs   []*exec.Cmd
	closed  bool
}

func (t *tracker) addCloser(f func() error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closers = append(t.closers, f)
}

func (t *tracker) addProcess(c *exec.Cmd) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.procs = append(t.procs, c)
}

func (t *tracker) close() error {
	t.mu.Lock()
	closers, procs := t.closers, t.procs
	t.closers, t.procs, t.closed = nil, nil, true
	t.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range procs {
		if c.Process == nil || c.ProcessState != nil {
			continue
		}
		_ = c.Process.Kill()
		// Reap without blocking forever if the caller is already Waiting on it.
		done := make(chan struct{})
		go func() { _, _ = c.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("process %d did not exit after SIGKILL", c.Process.Pid))
		}
	}
	return errors.Join(errs...)
}

// Sweep removes the namespaces left by crashed runs whose names start with prefix (for example
// DefaultPrefix): every namespace whose owning process (the pid in its name) is gone. Processes
// still running inside such a namespace are killed first, since they would keep it alive.
// Namespaces of live runs are left alone, so Sweep is safe to call while other tests run.
func Sweep(prefix string) error {
	if prefix == "" {
		return errors.New("sweep: empty prefix")
	}
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		pid, ok := ownerPID(name)
		if !ok || processAlive(pid) {
			continue
		}
		killProcessesIn(name)
		if err := deleteNamespace(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ownerPID extracts the pid from <prefix><id>-<pid>-<role>.
func ownerPID(name string) (int, bool) {
	parts := strings.Split(name, "-")
	for i := len(parts) - 2; i >= 1; i-- {
		if pid, err := strconv.Atoi(parts[i]); err == nil && pid > 0 {
			return pid, true
		}
	}
	return 0, false
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killProcessesIn kills the processes whose network namespace is the named one.
func killProcessesIn(name string) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(runDir, name), &st); err != nil {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var ps syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &ps) != nil {
			continue
		}
		if ps.Ino == st.Ino && ps.Dev == st.Dev {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
