package bpf

import (
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestMarkLayoutFromC checks the Go mark constants against enum mark_layout in the compiled
// object's BTF (what the programs were built with), and the limits derived from it. It fails
// when egressd.c changes without `go generate ./bpf/...`.
func TestMarkLayoutFromC(t *testing.T) {
	spec, err := loadEgressd()
	if err != nil {
		t.Fatal(err)
	}
	var layout *btf.Enum
	if err := spec.Types.TypeByName("mark_layout", &layout); err != nil {
		t.Fatalf("enum mark_layout not in the object's BTF: %v", err)
	}
	want := map[string]uint32{
		"MARK_MAGIC": MarkMagic, "MARK_MAGIC_MASK": MarkMagicMask, "MARK_TUNNEL": MarkTunnel,
		"MARK_REPLY": MarkReply, "MARK_STEER": MarkSteer, "MARK_GROUP_MASK": MarkGroupMask, "VNI_REPLY": VNIReply,
	}
	for _, v := range layout.Values {
		w, ok := want[v.Name]
		if !ok {
			t.Errorf("enum mark_layout has %s, which bpf/datapath.go does not export", v.Name)
			continue
		}
		if uint32(v.Value) != w {
			t.Errorf("%s is %#x in C, %#x in Go", v.Name, v.Value, w)
		}
		delete(want, v.Name)
	}
	for name := range want {
		t.Errorf("%s missing from enum mark_layout", name)
	}
	if MaxGroup != MarkGroupMask {
		t.Errorf("MaxGroup %#x, but a group id travels in MARK_GROUP_MASK %#x", MaxGroup, MarkGroupMask)
	}
	// The group bits, the tunnel and reply bits and the magic byte must not overlap: nftables
	// and the ip rules mask one out of the others.
	fields := []uint32{MarkMagicMask, MarkTunnel, MarkReply, MarkSteer, MarkGroupMask}
	for i, a := range fields {
		for _, b := range fields[i+1:] {
			if a&b != 0 {
				t.Errorf("mark fields %#x and %#x overlap", a, b)
			}
		}
	}
	if MarkMagic&^MarkMagicMask != 0 {
		t.Errorf("magic %#x outside its mask %#x", MarkMagic, MarkMagicMask)
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
