package bpf

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf/btf"
)

// dm is the default layout the program tests run with.
var dm = DefaultMarkLayout()

// TestMarkLayout lays out masks: the default is datapath v4's layout, each field lands where
// the doc comment of NewMarkLayout says, and masks that cannot hold a layout are refused with
// an error naming them.
func TestMarkLayout(t *testing.T) {
	for _, tc := range []struct {
		mask uint32
		want MarkLayout // zero: refused
		err  string
	}{
		// Datapath v4, before the layout was configurable.
		{mask: DefaultMarkMask, want: MarkLayout{Mask: 0xffe0ffff, Magic: 0x6e000000, MagicMask: 0xff000000,
			Tunnel: 0x00800000, Reply: 0x00400000, Steer: 0x00200000, GroupMask: 0x0000ffff}},
		// Calico (mask 0xffff0000) and kube-proxy (0xc000) leave 14 low bits.
		{mask: 0x00003fff, want: MarkLayout{Mask: 0x3fff, Magic: 0x2000, MagicMask: 0x3000,
			Tunnel: 0x0800, Reply: 0x0400, Steer: 0x0200, GroupMask: 0x01ff}},
		// The upper half: Cilium reads it only under its magic 0x0f00, which egressd never sets.
		{mask: 0xffff0000, want: MarkLayout{Mask: 0xffff0000, Magic: 0x80000000, MagicMask: 0xc0000000,
			Tunnel: 0x20000000, Reply: 0x10000000, Steer: 0x08000000, GroupMask: 0x07ff0000, GroupShift: 16}},
		// Scattered bits: the group takes the lowest run, flags and magic whatever is left.
		{mask: 0x8421_00f0, want: MarkLayout{Mask: 0x842100f0, Magic: 0x80000000, MagicMask: 0x84000000,
			Tunnel: 0x00200000, Reply: 0x00010000, Steer: 0x00000080, GroupMask: 0x00000070, GroupShift: 4}},
		// All bits: the group stops at 16 bits, the magic takes 13, of which 0x6e sets five.
		{mask: 0xffffffff, want: MarkLayout{Mask: 0xffffffff, Magic: 0x6e << 19, MagicMask: 0xfff80000,
			Tunnel: 0x00040000, Reply: 0x00020000, Steer: 0x00010000, GroupMask: 0x0000ffff}},
		// Six bits, the fewest: one group bit.
		{mask: 0x3f00, want: MarkLayout{Mask: 0x3f00, Magic: 0x2000, MagicMask: 0x3000,
			Tunnel: 0x0800, Reply: 0x0400, Steer: 0x0200, GroupMask: 0x0100, GroupShift: 8}},
		{mask: 0x1f00, err: "mark mask 0x00001f00 has 5 bits; egressd needs at least 6"},
		{mask: 0, err: "mark mask 0x00000000 has 0 bits"},
	} {
		l, err := NewMarkLayout(tc.mask)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("mask %#x: error %v, want one containing %q", tc.mask, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("mask %#x: %v", tc.mask, err)
			continue
		}
		if l != tc.want {
			t.Errorf("mask %#x:\n got %v\nwant %v", tc.mask, l, tc.want)
		}
		if got := l.MaxGroup(); got != min(tc.want.GroupMask>>tc.want.GroupShift, MaxGroup) {
			t.Errorf("mask %#x: MaxGroup %d", tc.mask, got)
		}
		for _, id := range []uint32{1, l.MaxGroup()} {
			if got := l.GroupOf(l.Steered(id)); got != id {
				t.Errorf("mask %#x: group %d reads back as %d", tc.mask, id, got)
			}
			if m := l.Served(id) | l.Reply | l.Steer; m&^l.Mask != 0 || !l.IsEgressd(m) {
				t.Errorf("mask %#x: mark %#x of group %d outside the mask or without the magic", tc.mask, m, id)
			}
		}
		if err := l.CheckGroup(l.MaxGroup() + 1); l.MaxGroup() < MaxGroup && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("0x%08x", tc.mask))) {
			t.Errorf("mask %#x: group %d past the field: error %v, want one naming the mask", tc.mask, l.MaxGroup()+1, err)
		}
	}
	if _, err := ParseMarkMask("0xffff"); err != nil {
		t.Errorf("ParseMarkMask(0xffff): %v", err)
	}
	if _, err := ParseMarkMask("ffzz"); err == nil || !strings.Contains(err.Error(), `"ffzz"`) {
		t.Errorf("ParseMarkMask(ffzz): %v, want an error naming it", err)
	}
	if _, err := ParseMarkMask("0x1ffffffff"); err == nil {
		t.Errorf("ParseMarkMask of 33 bits: no error")
	}
}

// TestMarkLayoutValidate: a layout built by hand is checked before the loader writes it into
// the programs.
func TestMarkLayoutValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*MarkLayout)
		err  string
	}{
		{"steer overlaps the group", func(l *MarkLayout) { l.Steer = 0x1 }, "steer bits 0x00000001 and group bits 0x0000ffff overlap"},
		{"two-bit flag", func(l *MarkLayout) { l.Reply = 0x00c00000 }, "reply flag 0x00c00000 is not one bit"},
		{"magic outside its mask", func(l *MarkLayout) { l.Magic = 0x6e00 }, "magic 0x00006e00 is zero or outside its mask"},
		{"holes in the group", func(l *MarkLayout) { l.GroupMask = 0xff0f }, "not a contiguous run"},
		{"mask is not the fields", func(l *MarkLayout) { l.Mask = 0xffffffff }, "not the union of the fields"},
	} {
		l := DefaultMarkLayout()
		tc.edit(&l)
		err := l.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
		if _, err := Load(Options{PinRoot: t.TempDir(), Marks: l}); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: Load: %v, want the layout refused", tc.name, err)
		}
	}
}

// TestMarkLayoutFromC: the defaults of the programs' mark_* globals in the compiled object are
// DefaultMarkLayout, so an object loaded without setting them still agrees with Go; fails when
// egressd.c changes without `go generate ./bpf/...`.
func TestMarkLayoutFromC(t *testing.T) {
	spec, err := loadEgressd()
	if err != nil {
		t.Fatal(err)
	}
	l := DefaultMarkLayout()
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
			t.Errorf("%s is %#x in C, %#x in DefaultMarkLayout", name, got, want)
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
	for _, mask := range []uint32{DefaultMarkMask, 0x00003fff, 0xffff0000, 0x842100f0} {
		t.Run(fmt.Sprintf("%08x", mask), func(t *testing.T) {
			l, err := NewMarkLayout(mask)
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
			other := DefaultMarkLayout()
			if mask == DefaultMarkMask {
				other, _ = NewMarkLayout(0x00003fff)
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
