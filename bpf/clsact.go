package bpf

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// clsactPriority is the tc filter priority egressd uses on kernels without
// tcx; low numbers run first.
const clsactPriority = 1

// clsactName prefixes the names of egressd's cls_bpf filters.
const clsactName = "egressd_"

func (h Hook) parent() uint32 {
	if h == HookTunnelEgress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

// handle keeps the probe reflector apart from the classifier when an
// underlay interface also matches a pod interface pattern.
func (h Hook) handle() uint32 {
	if h == HookProbe {
		return 2
	}
	return 1
}

// AttachClsact attaches the program of hook h to ifindex as a direct-action
// cls_bpf filter under a clsact qdisc (created if missing). Filters are not
// links: they stay attached until removed, so a restarted agent replaces the
// program in place. Must be called in the interface's network namespace.
func (d *Datapath) AttachClsact(h Hook, ifindex int) error {
	prog, _, err := d.program(h)
	if err != nil {
		return err
	}
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("adding clsact to %d: %w", ifindex, err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    h.parent(),
			Handle:    h.handle(),
			Protocol:  unix.ETH_P_ALL,
			Priority:  clsactPriority,
		},
		Fd:           prog.FD(),
		Name:         clsactName + string(h),
		DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("attaching %s filter to %d: %w", h, ifindex, err)
	}
	return nil
}

// DetachClsact removes egressd's filters from ifindex and reports whether
// it found any. The clsact qdisc stays: other users may share it.
func DetachClsact(ifindex int) (bool, error) {
	return detachClsact(ifindex, clsactName)
}

// DetachClsactHook removes the filter of hook h from ifindex and reports
// whether it found it.
func DetachClsactHook(h Hook, ifindex int) (bool, error) {
	return detachClsact(ifindex, clsactName+string(h))
}

func detachClsact(ifindex int, prefix string) (bool, error) {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return false, fmt.Errorf("finding link %d: %w", ifindex, err)
	}
	found := false
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlink.FilterList(link, parent)
		if err != nil {
			continue // no clsact qdisc
		}
		for _, f := range filters {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !strings.HasPrefix(bf.Name, prefix) {
				continue
			}
			found = true
			if err := netlink.FilterDel(bf); err != nil {
				return found, fmt.Errorf("removing filter %s from %d: %w", bf.Name, ifindex, err)
			}
		}
	}
	return found, nil
}
