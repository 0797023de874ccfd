package marks

import (
	"fmt"
	"strings"
	"testing"
)

// TestNew lays out masks: the default is datapath v4's layout, each field lands where
// the doc comment of New says, and masks that cannot hold a layout are refused with
// an error naming them.
func TestNew(t *testing.T) {
	for _, tc := range []struct {
		mask uint32
		want Layout // zero: refused
		err  string
	}{
		// Datapath v4, before the layout was configurable.
		{mask: DefaultMask, want: Layout{Mask: 0xffe0ffff, Magic: 0x6e000000, MagicMask: 0xff000000,
			Tunnel: 0x00800000, Reply: 0x00400000, Steer: 0x00200000, GroupMask: 0x0000ffff}},
		// Calico (mask 0xffff0000) and kube-proxy (0xc000) leave 14 low bits.
		{mask: 0x00003fff, want: Layout{Mask: 0x3fff, Magic: 0x2000, MagicMask: 0x3000,
			Tunnel: 0x0800, Reply: 0x0400, Steer: 0x0200, GroupMask: 0x01ff}},
		// The upper half: Cilium reads it only under its magic 0x0f00, which egressd never sets.
		{mask: 0xffff0000, want: Layout{Mask: 0xffff0000, Magic: 0x80000000, MagicMask: 0xc0000000,
			Tunnel: 0x20000000, Reply: 0x10000000, Steer: 0x08000000, GroupMask: 0x07ff0000, GroupShift: 16}},
		// Scattered bits: the group takes the lowest run, flags and magic whatever is left.
		{mask: 0x8421_00f0, want: Layout{Mask: 0x842100f0, Magic: 0x80000000, MagicMask: 0x84000000,
			Tunnel: 0x00200000, Reply: 0x00010000, Steer: 0x00000080, GroupMask: 0x00000070, GroupShift: 4}},
		// All bits: the group stops at 16 bits, the magic takes 13, of which 0x6e sets five.
		{mask: 0xffffffff, want: Layout{Mask: 0xffffffff, Magic: 0x6e << 19, MagicMask: 0xfff80000,
			Tunnel: 0x00040000, Reply: 0x00020000, Steer: 0x00010000, GroupMask: 0x0000ffff}},
		// Six bits, the fewest: one group bit.
		{mask: 0x3f00, want: Layout{Mask: 0x3f00, Magic: 0x2000, MagicMask: 0x3000,
			Tunnel: 0x0800, Reply: 0x0400, Steer: 0x0200, GroupMask: 0x0100, GroupShift: 8}},
		{mask: 0x1f00, err: "mark mask 0x00001f00 has 5 bits; egressd needs at least 6"},
		{mask: 0, err: "mark mask 0x00000000 has 0 bits"},
	} {
		l, err := New(tc.mask)
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
	if _, err := ParseMask("0xffff"); err != nil {
		t.Errorf("ParseMask(0xffff): %v", err)
	}
	if _, err := ParseMask("ffzz"); err == nil || !strings.Contains(err.Error(), `"ffzz"`) {
		t.Errorf("ParseMask(ffzz): %v, want an error naming it", err)
	}
	if _, err := ParseMask("0x1ffffffff"); err == nil {
		t.Errorf("ParseMask of 33 bits: no error")
	}
}

// TestValidate: a layout built by hand is checked before the loader writes it into
// the programs (bpf.Load calls it).
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Layout)
		err  string
	}{
		{"steer overlaps the group", func(l *Layout) { l.Steer = 0x1 }, "steer bits 0x00000001 and group bits 0x0000ffff overlap"},
		{"two-bit flag", func(l *Layout) { l.Reply = 0x00c00000 }, "reply flag 0x00c00000 is not one bit"},
		{"magic outside its mask", func(l *Layout) { l.Magic = 0x6e00 }, "magic 0x00006e00 is zero or outside its mask"},
		{"holes in the group", func(l *Layout) { l.GroupMask = 0xff0f }, "not a contiguous run"},
		{"mask is not the fields", func(l *Layout) { l.Mask = 0xffffffff }, "not the union of the fields"},
	} {
		l := Default()
		tc.edit(&l)
		err := l.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
}
