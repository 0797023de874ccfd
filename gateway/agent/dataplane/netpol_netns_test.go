package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/test/netns"
)

// policyEngine installs, in a node's namespace, a rule that denies pod a's traffic to dstG1,
// as a CNI's NetworkPolicy implementation would, and returns its removal.
type policyEngine struct {
	name    string
	install func(t *testing.T, n *netns.Node, pod *netns.Pod) func()
}

var policyEngines = []policyEngine{
	{"nftables forward rule (Calico, kube-router)", denyNFT},
	{"legacy tc BPF on the pod's host veth (AWS VPC CNI policy agent)", denyClsBPF},
}

// denyNFT adds a filter rule on the forward hook that drops pod → dstG1, the kind of rule
// Calico's and kube-router's iptables/nftables policies put on a node.
func denyNFT(t *testing.T, n *netns.Node, pod *netns.Pod) func() {
	t.Helper()
	tbl := &nftables.Table{Name: "netpol-test", Family: nftables.TableFamilyIPv4}
	err := n.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.AddTable(tbl)
		ch := c.AddChain(&nftables.Chain{Table: tbl, Name: "forward", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: pod.IP.AsSlice()},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: dstG1.AsSlice()},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
		return c.Flush()
	})
	if err != nil {
		t.Fatalf("adding the deny rule: %v", err)
	}
	return func() {
		_ = n.Do(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			c.DelTable(tbl)
			return c.Flush()
		})
	}
}

// denyClsBPF attaches a direct-action cls_bpf program at tc ingress of the pod's host-side
// veth (clsact, after egressd's tcx program) that drops IPv4 packets to dstG1, as the AWS VPC
// CNI's network policy agent enforces a pod's egress policy.
func denyClsBPF(t *testing.T, n *netns.Node, pod *netns.Pod) func() {
	t.Helper()
	d := dstG1.As4()
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 76, asm.Word), // skb->data
		asm.LoadMem(asm.R3, asm.R1, 80, asm.Word), // skb->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 34),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm32(asm.R5, int32(binary.NativeEndian.Uint16([]byte{0x08, 0x00})), "pass"),
		asm.LoadMem(asm.R5, asm.R2, 30, asm.Word),
		asm.JNE.Imm32(asm.R5, int32(binary.NativeEndian.Uint32(d[:])), "pass"),
		asm.Mov.Imm(asm.R0, 2), // TC_ACT_SHOT
		asm.Return(),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("pass"), // TC_ACT_UNSPEC
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: insns, License: "GPL"})
	if err != nil {
		t.Fatalf("loading the deny program: %v", err)
	}
	var link netlink.Link
	err = n.Do(func() error {
		if link, err = netlink.LinkByName(pod.HostIface); err != nil {
			return err
		}
		q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index,
			Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
		if err := netlink.QdiscReplace(q); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		return netlink.FilterAdd(&netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: link.Attrs().Index,
			Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Priority: 10, Protocol: unix.ETH_P_ALL},
			Fd: prog.FD(), Name: "netpol-test", DirectAction: true})
	})
	if err != nil {
		prog.Close()
		t.Fatalf("attaching the deny program: %v", err)
	}
	return func() {
		_ = n.Do(func() error {
			q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index,
				Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
			return netlink.QdiscDel(q)
		})
		prog.Close()
	}
}

// TestNetworkPolicyStillApplies: with each policy engine denying pod a → dstG1 on worker1, the
// denied traffic stays denied although an EgressPolicy steers it (egressd counts it steered to
// gw1, then the engine drops it), while pod a's allowed steered traffic (dstG2, group 2) still
// leaves with a gateway's egress IP and pod c of worker2 still reaches dstG1. Removing the rule
// lets a through again. In redirect steering (the design before v3) the same rule is skipped:
// a reaches dstG1, which is why it is not the default.
func TestNetworkPolicyStillApplies(t *testing.T) {
	skipUnlessRoot(t)
	for _, mode := range []struct {
		name     string
		redirect bool
	}{{"stack steering", false}, {"redirect steering", true}} {
		t.Run(mode.name, func(t *testing.T) {
			c := newClusterWith(t, func(cfg *Config) { cfg.Redirect = mode.redirect })
			w1 := c.topo.Node("worker1")
			a, pc := c.topo.Pod("a"), c.topo.Pod("c")
			eg1, eg2 := c.eg["gw1"], c.eg["gw2"]
			for _, e := range policyEngines {
				t.Run(e.name, func(t *testing.T) {
					steered := func() uint64 {
						st, err := c.dps["worker1"].Stats()
						if err != nil {
							t.Fatal(err)
						}
						return st[bpf.StatsKey{Group: 1, Gateway: c.gwIDs["gw1"]}].Packets
					}
					expectUDP(t, a, dstG1, eg1[0])
					remove := e.install(t, w1, a)
					before := steered()
					ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
					got, err := a.UDPEcho(ctx, dstG1)
					cancel()
					switch {
					case !mode.redirect && err == nil:
						t.Errorf("pod a reached %s (server saw %s) through a rule that denies it", dstG1, got)
					case mode.redirect && err != nil:
						t.Errorf("redirect steering: pod a → %s failed (%v); this mode skips the rule", dstG1, err)
					}
					if steered() == before {
						t.Errorf("egressd did not steer pod a's datagram to %s", dstG1)
					}
					expectUDP(t, a, dstG2, eg1[0], eg2[0])
					expectUDP(t, pc, dstG1, eg1[0])
					remove()
					expectUDP(t, a, dstG1, eg1[0])
				})
			}
		})
	}
}

func expectUDP(t *testing.T, from *netns.Pod, dst netip.Addr, want ...netip.Addr) {
	t.Helper()
	got, err := from.UDPEcho(ctxT(t), dst)
	if err != nil {
		t.Errorf("%s → %s: %v", from.Name, dst, err)
		return
	}
	if !slices.Contains(want, got) {
		t.Errorf("%s → %s: server saw %s, want one of %v", from.Name, dst, got, want)
	}
}
