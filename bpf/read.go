package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// ErrNotPinned says no egressd datapath is pinned under a pin root.
var ErrNotPinned = errors.New("no egressd datapath pinned")

// Reader reads the maps a running datapath pinned, without loading programs, creating maps or
// writing anything: an inspection tool can use it next to a live agent.
type Reader struct {
	d *Datapath
}

// OpenPinned opens the maps pinned under root's versioned directory (empty root:
// DefaultPinRoot) read-only. It fails with ErrNotPinned when the directory or one of the maps
// is missing, and when a pinned map's layout is not the one this build knows (another
// datapath version).
func OpenPinned(root string) (*Reader, error) {
	dir := PinDir(root)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w under %s", ErrNotPinned, dir)
		}
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	spec, err := loadEgressd()
	if err != nil {
		return nil, fmt.Errorf("loading egressd spec: %w", err)
	}
	r := &Reader{d: &Datapath{dir: dir}}
	m := &r.d.objs.egressdMaps
	for name, dst := range map[string]**ebpf.Map{
		"endpoints": &m.Endpoints, "rules4": &m.Rules4, "rules6": &m.Rules6, "groups": &m.Groups,
		"served": &m.Served, "stats": &m.Stats, "owned_addrs": &m.OwnedAddrs,
	} {
		pm, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			_ = r.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w under %s: map %s missing", ErrNotPinned, dir, name)
			}
			return nil, fmt.Errorf("opening pinned map %s: %w", name, err)
		}
		*dst = pm
		want := spec.Maps[name]
		if pm.Type() != want.Type || pm.KeySize() != want.KeySize || pm.ValueSize() != want.ValueSize {
			_ = r.Close()
			return nil, fmt.Errorf("pinned map %s under %s: type %s key %d value %d bytes, this build expects %s %d %d",
				name, dir, pm.Type(), pm.KeySize(), pm.ValueSize(), want.Type, want.KeySize, want.ValueSize)
		}
	}
	return r, nil
}

// Dir is the versioned pin directory read.
func (r *Reader) Dir() string { return r.d.dir }

// Close releases the file descriptors.
func (r *Reader) Close() error { return r.d.objs.egressdMaps.Close() }

// Endpoints returns every pod address and its policy set.
func (r *Reader) Endpoints() (map[netip.Addr]Endpoint, error) { return r.d.Endpoints() }

// Rules returns every destination rule of both families.
func (r *Reader) Rules() (map[RuleKey]Rule, error) { return r.d.Rules() }

// Groups returns every group's gateway list.
func (r *Reader) Groups() (map[uint32][]Gateway, error) { return r.d.Groups() }

// Served lists the groups this node serves as a gateway.
func (r *Reader) Served() ([]uint32, error) { return r.d.Served() }

// Stats returns the counters, summed over CPUs.
func (r *Reader) Stats() (map[StatsKey]Stats, error) { return r.d.Stats() }

// OwnedAddrs lists the egress addresses the agent added to interfaces.
func (r *Reader) OwnedAddrs() ([]OwnedAddr, error) { return r.d.OwnedAddrs() }
