package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
)

var errAddrNotAvail = unix.EADDRNOTAVAIL

// IPv4 per-device settings (IPV4_DEVCONF_* in linux/ip.h), the indexes of
// net.ipv4.conf.<dev>.* in netlink's IFLA_INET_CONF.
const (
	devconfForwarding  = 1
	devconfRPFilter    = 8
	devconfAcceptLocal = 23
)

// setIPv4DevConf sets IPv4 per-device settings of link idx through rtnetlink
// (RTM_SETLINK, IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), what writing
// /proc/sys/net/ipv4/conf/<dev>/* does. A container runtime mounts /proc/sys
// read-only in every unprivileged container, host network or not, and NET_ADMIN
// is all the kernel asks for here, so the agent needs no privileged mount.
func setIPv4DevConf(idx int, name string, conf map[int]uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(idx)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	inet := spec.AddRtAttr(unix.AF_INET, nil)
	attrs := inet.AddRtAttr(unix.IFLA_INET_CONF, nil)
	for k, v := range conf {
		attrs.AddRtAttr(k, nl.Uint32Attr(v))
	}
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("setting IPv4 device settings %v of %s: %w", conf, name, err)
	}
	return nil
}

// underlayLink returns the interface that holds nodeIP.
func underlayLink(nodeIP netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == nodeIP {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("finding link of %s: %w", nodeIP, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("node IP %s is on no interface", nodeIP)
}

// ensureTunnel creates (or keeps) the collect-metadata VXLAN device,
// attaches the tunnel programs and reserves the tunnel and probe ports. An existing device with the right
// parameters is reused as is, so an agent restart does not disturb it.
func (d *Dataplane) ensureTunnel(nodeIP netip.Addr, probePort uint16) error {
	ul, err := underlayLink(nodeIP)
	if err != nil {
		return err
	}
	mtu := ul.Attrs().MTU
	name := d.cfg.TunnelDevice
	l, err := netlink.LinkByName(name)
	if err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || !vx.FlowBased || vx.Port != int(d.cfg.TunnelPort) {
			if err := netlink.LinkDel(l); err != nil {
				return fmt.Errorf("replacing %s: %w", name, err)
			}
			l = nil
		}
	} else {
		l = nil
	}
	if l == nil {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu - vxlanOverhead},
			FlowBased: true,
			Port:      int(d.cfg.TunnelPort),
			Learning:  false,
		}
		if err := netlink.LinkAdd(vx); err != nil {
			return fmt.Errorf("creating tunnel device %s: %w", name, err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("finding tunnel device %s: %w", name, err)
		}
		// No IPv6 link-local address: the device must never originate
		// neighbour discovery or router solicitations.
		if err := netlink.LinkSetIP6AddrGenMode(l, 1 /* none */); err != nil {
			return fmt.Errorf("setting addrgenmode on %s: %w", name, err)
		}
	}
	if l.Attrs().MTU != mtu-vxlanOverhead {
		if err := netlink.LinkSetMTU(l, mtu-vxlanOverhead); err != nil {
			return fmt.Errorf("setting MTU of %s: %w", name, err)
		}
	}
	// Routed replies use the device's own MAC as next hop (NOARP).
	if err := netlink.LinkSetARPOff(l); err != nil {
		return fmt.Errorf("disabling ARP on %s: %w", name, err)
	}
	// Tunnelled requests carry pod source addresses that the main table
	// routes elsewhere; strict reverse-path filtering would drop them.
	err = setIPv4DevConf(l.Attrs().Index, name, map[int]uint32{
		devconfRPFilter: 0, devconfForwarding: 1, devconfAcceptLocal: 1,
	})
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	idx := l.Attrs().Index
	if err := d.attach(bpf.HookTunnelIngress, idx, name); err != nil {
		return err
	}
	if err := d.attach(bpf.HookTunnelEgress, idx, name); err != nil {
		return err
	}
	// Pods may not send to the tunnel port, nor to the probe port unless
	// they are Probers (the controller probes gateways from a pod).
	reserved := []uint16{d.cfg.TunnelPort}
	if probePort != 0 {
		reserved = append(reserved, probePort)
	}
	return d.dp.SetTunnel(bpf.TunnelConfig{Ifindex: idx, NodeIP: nodeIP, ReservedPorts: reserved, Redirect: d.cfg.Redirect,
		Hold: d.cfg.HoldEstablished})
}

func (d *Dataplane) removeTunnel() error {
	l, err := netlink.LinkByName(d.cfg.TunnelDevice)
	if err != nil {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", d.cfg.TunnelDevice, err)
	}
	return nil
}
