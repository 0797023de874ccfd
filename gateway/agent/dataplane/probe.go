package dataplane

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/bpf"
)

// applyProbe configures the probe reflector and attaches it to tc ingress of
// the interface holding the node IP; without a probe port it turns it off
// and detaches it. The reflector answers probes whether or not the agent
// runs, for as long as the datapath is pinned.
func (d *Dataplane) applyProbe(s *State) error {
	if s.ProbePort == 0 {
		// Off before detaching, so no stale attachment answers.
		if err := d.dp.SetProbe(bpf.ProbeConfig{}); err != nil {
			return err
		}
		return d.detachProbe(0)
	}
	l, err := underlayLink(s.NodeIP)
	if err != nil {
		return err
	}
	idx, name := l.Attrs().Index, l.Attrs().Name
	if err := d.dp.SetProbe(bpf.ProbeConfig{Port: s.ProbePort, NodeIP: s.NodeIP, Draining: s.Draining}); err != nil {
		return err
	}
	if err := d.attach(bpf.HookProbe, idx, name); err != nil {
		return err
	}
	return d.detachProbe(idx)
}

// detachProbe removes the probe reflector from every interface but keep
// (0: from all). It looks only when the reflector may be elsewhere: on the
// first call of this Dataplane (a restarted agent does not know where the
// previous one attached it) and when the underlay interface changed.
func (d *Dataplane) detachProbe(keep int) error {
	if d.probeKnown && d.probeIfindex == keep {
		return nil
	}
	if d.cfg.Clsact {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("listing links: %w", err)
		}
		for _, l := range links {
			if idx := l.Attrs().Index; idx != keep {
				if _, err := bpf.DetachClsactHook(bpf.HookProbe, idx); err != nil {
					return err
				}
			}
		}
	} else {
		atts, err := d.dp.Attachments()
		if err != nil {
			return err
		}
		for _, a := range atts {
			if a.Hook == bpf.HookProbe && (keep == 0 || a.Ifindex != keep) {
				if err := d.dp.DetachTCX(bpf.HookProbe, a.Interface); err != nil {
					return err
				}
			}
		}
	}
	d.probeKnown, d.probeIfindex = true, keep
	return nil
}
