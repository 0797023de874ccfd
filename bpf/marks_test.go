package bpf

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf/btf"
	"github.com/egressd/egressd/bpf/marks"
)

// dm is the default layout the program tests run with.
var dm = marks.Default()

// TestLoadRefusesBadLayout: a hand-built layout is checked before the loader writes it into
// the programs (marks.Layout.Validate; its cases are in bpf/marks).
func TestLoadRefusesBadLayout(t *testing.T) {
	l := marks.Default()
	l.Steer = 0x1
	if _, err := Load(Options{PinRoot: t.TempDir(), Marks: l}); err == nil || !strings.Contains(err.Error(), "steer bits 0x00000001 and group bits 0x0000ffff overlap") {
		t.Errorf("Load with steer in the group field: %v, want the layout refused", err)
	}
}

// TestMarkLayoutFromC: the defaults of the programs' mark_* globals in the compiled object are
// marks.Default, so an object loaded without setting them still agrees with Go; fails when
// egressd.c changes without `go generate ./bpf/...`.
func TestMarkLayoutFromC(t *testing.T) {
	spec, err := loadEgressd()
	if err != nil {
		t.Fatal(err)
	}
	l := marks.Default()
	for name, want := range map[string]uint32{
		egressdVarMarkMask: l.Mask, egressdVarMarkMagic: l.Magic, egressdVarMarkMagicMask: l.MagicMask,
		egressdVarMarkTunnel: l.Tunnel, egressdVarMarkReply: l.Reply, egressdVarMarkSteer: l.Steer,
		egressdVarMarkGroupMask: l.GroupMask, egressdVarMarkGroupShift: uint32(l.GroupShift),
	} {
		v, ok := spec.Variables[name]
		if !ok {
			t.Errorf("%s not in the object", name)
			continue
		}
		var got uint32
		if err := v.Get(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s is %#x in C, %#x in marks.Default", name, got, want)
		}
	}
	var vni *btf.Enum
	if err := spec.Types.TypeByName("vni_layout", &vni); err != nil {
		t.Fatalf("enum vni_layout not in the object's BTF: %v", err)
	}
	for _, v := range vni.Values {
		want := map[string]uint32{"VNI_REPLY": VNIReply, "VNI_GROUP_MASK": VNIGroupMask}[v.Name]
		if uint32(v.Value) != want {
			t.Errorf("%s is %#x in C, %#x in Go", v.Name, v.Value, want)
		}
	}
	if VNIReply&VNIGroupMask != 0 || MaxGroup > VNIGroupMask {
		t.Errorf("VNI reply bit %#x and group field %#x overlap, or MaxGroup %#x does not fit", VNIReply, VNIGroupMask, MaxGroup)
	}
}

// TestMarkLayouts loads the programs with several layouts and runs packets through them: the
// classifier marks a steered packet Steered(group) and a packet for this node as gateway
// Local(group); the tunnel egress program takes exactly the marks nftables and the ip rules
// are built from (Steered, Magic|Reply) and clears only egressd's bits. Every packet starts
// with foreign bits set outside the mask (a CNI's), which must come out untouched. The
// dataplane's TestMarkLayoutsNFT ties the same layouts to the nftables rules and ip rules.
func TestMarkLayouts(t *testing.T) {
	tcp := uint8(unix.IPPROTO_TCP)
	for _, mask := range []uint32{marks.DefaultMask, 0x00003fff, 0xffff0000, 0x842100f0} {
		t.Run(fmt.Sprintf("%08x", mask), func(t *testing.T) {
			l, err := marks.New(mask)
			must(t, err)
			root := mountBPFFS(t)
			d, err := Load(Options{PinRoot: root, Marks: l})
			must(t, err)
			t.Cleanup(func() { d.Close(); _ = Remove(root) })
			if d.Marks() != l {
				t.Fatalf("Marks() = %v, want %v", d.Marks(), l)
			}
			must(t, d.SetTunnel(TunnelConfig{Ifindex: 1, NodeIP: testNodeIP}))
			gid := min(l.MaxGroup(), 5)
			local := Gateway{ID: 3, Underlay: testNodeIP, Healthy: true, Local: true}
			must(t, d.SetEndpoint(pod4, Endpoint{PolicySet: 1, Ifindex: 1}))
			must(t, d.SetEndpoint(other4, Endpoint{PolicySet: 2, Ifindex: 1}))
			must(t, d.SetRule(RuleKey{1, netip.MustParsePrefix("203.0.113.0/24")}, Rule{Group: gid}))
			must(t, d.SetGroup(gid, []Gateway{gwA}))
			lgid := uint32(1)
			if gid == 1 {
				lgid = 0 // one group bit: the local case shares the group
			}
			if lgid != 0 {
				must(t, d.SetRule(RuleKey{2, netip.MustParsePrefix("203.0.113.0/24")}, Rule{Group: lgid}))
				must(t, d.SetGroup(lgid, []Gateway{local}))
			}
			if err := d.SetGroup(l.MaxGroup()+1, []Gateway{gwA}); l.MaxGroup() < MaxGroup && err == nil {
				t.Errorf("group %d past the layout's field accepted", l.MaxGroup()+1)
			}
			if err := d.SetServed(l.MaxGroup() + 1); l.MaxGroup() < MaxGroup && err == nil {
				t.Errorf("served group %d past the layout's field accepted", l.MaxGroup()+1)
			}
			foreign := ^l.Mask & 0xa5a5a5a5

			pkt := packet(pod4, dst4, tcp, 40000, 80)
			ret, mark := runCtx(t, d.Program(HookPod), pkt, foreign)
			if ret != actNext || mark != foreign|l.Steered(gid) {
				t.Errorf("classifier: verdict %#x mark %#x, want next and %#x (foreign %#x | Steered(%d))", ret, mark, foreign|l.Steered(gid), foreign, gid)
			}
			if lgid != 0 {
				ret, mark = runCtx(t, d.Program(HookPod), packet(other4, dst4, tcp, 40000, 80), foreign)
				if ret != actNext || mark != foreign|l.Local(lgid) {
					t.Errorf("classifier, local gateway: verdict %#x mark %#x, want next and %#x", ret, mark, foreign|l.Local(lgid))
				}
			}
			// The steered packet, routed to the tunnel device by the ip rule built from the same
			// layout, is encapsulated and loses egressd's bits only.
			ret, mark = runCtx(t, d.Program(HookTunnelEgress), pkt, foreign|l.Steered(gid))
			if ret != actOK || mark != foreign {
				t.Errorf("tunnel egress, steered: verdict %#x mark %#x, want OK and %#x", ret, mark, foreign)
			}
			// A reply as nftables marks it (Magic|Reply) goes back to its source node.
			setReturnFlow(t, d, FlowKey{Src: pod4, Dst: dst4, Sport: 40001, Dport: 80, Proto: tcp}, testNodeIP, gid)
			ret, mark = runCtx(t, d.Program(HookTunnelEgress), packet(dst4, pod4, tcp, 80, 40001), foreign|l.Magic|l.Reply)
			if ret != actOK || mark != foreign {
				t.Errorf("tunnel egress, reply: verdict %#x mark %#x, want OK and %#x", ret, mark, foreign)
			}
			// Foreign bits alone, and egressd's bits of another layout, are not egressd's.
			other := marks.Default()
			if mask == marks.DefaultMask {
				other, _ = marks.New(0x00003fff)
			}
			for _, m := range []uint32{foreign, other.Steered(1) &^ l.Mask} {
				if ret, _ := runCtx(t, d.Program(HookTunnelEgress), pkt, m); ret != actNext {
					t.Errorf("tunnel egress took mark %#x (verdict %#x), which is not this layout's", m, ret)
				}
			}
		})
	}
}

// TestDropReasonNames: every drop reason of enum drop_reason has a metric label.
func TestDropReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for i, n := range DropReasonNames {
		if n == "" || seen[n] {
			t.Errorf("drop reason %d has label %q: empty or repeated (add it to DropReasonNames)", i, n)
		}
		seen[n] = true
	}
}
