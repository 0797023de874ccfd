package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
)

var errAddrNotAvail = unix.EADDRNOTAVAIL

func writeSysctl(path, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting %s=%s: %w", path, value, err)
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

// ensureTunnel creates (or keeps) the collect-metadata VXLAN device and
// attaches the tunnel programs. An existing device with the right
// parameters is reused as is, so an agent restart does not disturb it.
func (d *Dataplane) ensureTunnel(nodeIP netip.Addr) error {
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
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + name + "/rp_filter", "0"},
		{"net/ipv4/conf/" + name + "/forwarding", "1"},
		{"net/ipv4/conf/" + name + "/accept_local", "1"},
	} {
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return err
		}
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
	return d.dp.SetTunnel(idx)
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
