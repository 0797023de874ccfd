package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/egressd/egressd/bpf/marks"
)

// Version names the bpffs subdirectory the maps and links are pinned under.
// Bump it whenever a map's layout changes: an agent of the new version then
// starts with fresh maps instead of failing on incompatible pins.
const Version = "v4"

// DefaultPinRoot is where egressd pins its objects on a node.
const DefaultPinRoot = "/sys/fs/bpf/egressd"

// VNI layout shared with the programs (enum vni_layout in egressd.c, through bpf2go): the
// group id, with VNIReply set on replies sent back to a source node. The packet mark's layout
// is chosen per node: marks.Layout.
const (
	VNIReply     = uint32(egressdVniLayoutVNI_REPLY)
	VNIGroupMask = uint32(egressdVniLayoutVNI_GROUP_MASK)
)

const (
	// MaxGateways is how many gateways a group entry holds.
	MaxGateways = 8
	// MaxGroup is the largest group id any mark layout carries (the API's 1-65535; the VNI
	// holds 23 bits). A node's layout may carry fewer: marks.Layout.MaxGroup.
	MaxGroup = marks.MaxGroup
)

// Limits sizes the maps. Zero fields keep the compiled-in defaults. Maps
// already pinned with other sizes make Load fail with ebpf.ErrMapIncompatible.
type Limits struct {
	Endpoints   uint32
	Rules       uint32 // per family
	Flows       uint32
	ReturnFlows uint32
	Sources     uint32
}

// Options configures Load.
type Options struct {
	// PinRoot is egressd's bpffs directory; objects go under PinRoot/Version.
	// Empty means DefaultPinRoot.
	PinRoot string
	Limits  Limits
	// Marks is the packet mark layout the programs use; the zero value is
	// marks.Default. The caller builds its nftables and ip rules from the
	// same layout (Datapath.Marks).
	Marks marks.Layout
}

// Datapath is the loaded programs and maps. Closing it releases file
// descriptors only: pinned maps and links keep the datapath running.
type Datapath struct {
	dir   string
	objs  objects
	marks marks.Layout
}

// objects are the programs and maps the datapath uses. The generated
// egressdObjects also holds the unused_* globals, which only exist to put the
// enums shared with Go (vni_layout, drop_reason, gw_flags) into BTF for
// bpf2go; leaving them out means no .bss map is ever created for them.
type objects struct {
	egressdPrograms
	egressdMaps
}

// Close closes the programs and maps.
func (o *objects) Close() error {
	return errors.Join(o.egressdPrograms.Close(), o.egressdMaps.Close())
}

// PinDir returns the versioned directory under root.
func PinDir(root string) string {
	if root == "" {
		root = DefaultPinRoot
	}
	return filepath.Join(root, Version)
}

// Load loads the programs and opens the pinned maps under the versioned pin
// directory, creating and pinning maps that do not exist yet. The bpffs that
// holds the directory must be mounted.
func Load(opts Options) (*Datapath, error) {
	dir := PinDir(opts.PinRoot)
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("creating pin directory %s: %w", dir, err)
	}
	spec, err := loadEgressd()
	if err != nil {
		return nil, fmt.Errorf("loading egressd spec: %w", err)
	}
	setMax := func(name string, n uint32) {
		if n != 0 {
			spec.Maps[name].MaxEntries = n
		}
	}
	setMax("endpoints", opts.Limits.Endpoints)
	setMax("rules4", opts.Limits.Rules)
	setMax("rules6", opts.Limits.Rules)
	setMax("flows", opts.Limits.Flows)
	setMax("return_flows", opts.Limits.ReturnFlows)
	setMax("sources", opts.Limits.Sources)
	marks := opts.Marks.OrDefault()
	if err := setMarks(spec, marks); err != nil {
		return nil, err
	}

	d := &Datapath{dir: dir, marks: marks}
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: dir},
	})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading egressd programs: %w\n%s", err, fmt.Sprintf("%+v", verr))
		}
		return nil, fmt.Errorf("loading egressd objects into %s: %w", dir, err)
	}
	return d, nil
}

// setMarks writes the layout into the programs' read-only mark_* globals. They live in
// .rodata, which is created with each load and never pinned: a restarted agent with another
// layout loads programs with it, and the pinned maps hold no mark (served's are rewritten by
// SetServed on every Apply).
func setMarks(spec *ebpf.CollectionSpec, l marks.Layout) error {
	if err := l.Validate(); err != nil {
		return err
	}
	for name, v := range map[string]uint32{
		egressdVarMarkMask: l.Mask, egressdVarMarkMagic: l.Magic, egressdVarMarkMagicMask: l.MagicMask,
		egressdVarMarkTunnel: l.Tunnel, egressdVarMarkReply: l.Reply, egressdVarMarkSteer: l.Steer,
		egressdVarMarkGroupMask: l.GroupMask, egressdVarMarkGroupShift: uint32(l.GroupShift),
	} {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("setting the mark layout: variable %s not in the object", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting the mark layout: %s: %w", name, err)
		}
	}
	return nil
}

// Marks is the packet mark layout the programs were loaded with.
func (d *Datapath) Marks() marks.Layout { return d.marks }

// Dir is the versioned pin directory in use.
func (d *Datapath) Dir() string { return d.dir }

// Close releases the file descriptors. Pinned objects stay.
func (d *Datapath) Close() error {
	return d.objs.Close()
}

// Hook says where a program is attached.
type Hook string

const (
	// HookPod is tc ingress of a pod's host-side interface.
	HookPod Hook = "pod"
	// HookTunnelIngress is tc ingress of the egressd tunnel device.
	HookTunnelIngress Hook = "tunin"
	// HookTunnelEgress is tc egress of the egressd tunnel device.
	HookTunnelEgress Hook = "tunout"
	// HookProbe is tc ingress of the node's underlay interface (the one
	// holding its node IP), where probe requests are answered.
	HookProbe Hook = "probe"
)

func (d *Datapath) program(h Hook) (*ebpf.Program, ebpf.AttachType, error) {
	switch h {
	case HookPod:
		return d.objs.EgressdPod, ebpf.AttachTCXIngress, nil
	case HookTunnelIngress:
		return d.objs.EgressdTunIngress, ebpf.AttachTCXIngress, nil
	case HookTunnelEgress:
		return d.objs.EgressdTunEgress, ebpf.AttachTCXEgress, nil
	case HookProbe:
		return d.objs.EgressdProbe, ebpf.AttachTCXIngress, nil
	}
	return nil, 0, fmt.Errorf("unknown hook %q", h)
}

// Program returns the program of a hook, for tests and benchmarks.
func (d *Datapath) Program(h Hook) *ebpf.Program {
	p, _, _ := d.program(h)
	return p
}

func (d *Datapath) linkPin(h Hook, ifname string) string {
	return filepath.Join(d.dir, "links", string(h)+"_"+ifname)
}

// AttachTCX attaches the program of hook h to interface ifindex (named
// ifname) with tcx and pins the link. When a live pinned link already exists
// for that interface its program is replaced atomically, so a restarted
// agent never opens a gap. Must be called in the interface's network
// namespace.
func (d *Datapath) AttachTCX(h Hook, ifindex int, ifname string) error {
	prog, at, err := d.program(h)
	if err != nil {
		return err
	}
	pin := d.linkPin(h, ifname)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		live := false
		if info, ierr := l.Info(); ierr == nil {
			if tcx := info.TCX(); tcx != nil && int(tcx.Ifindex) == ifindex {
				live = true
			}
		}
		if live {
			uerr := l.Update(prog)
			l.Close()
			if uerr != nil {
				return fmt.Errorf("updating %s link on %s: %w", h, ifname, uerr)
			}
			return nil
		}
		// The interface was deleted (and maybe recreated): drop the
		// defunct link.
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    at,
		Anchor:    link.Head(),
	})
	if err != nil {
		return fmt.Errorf("attaching %s to %s: %w", h, ifname, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning %s link of %s: %w", h, ifname, err)
	}
	return nil
}

// DetachTCX removes the pinned link of hook h on ifname, if any.
func (d *Datapath) DetachTCX(h Hook, ifname string) error {
	return unpinLink(d.linkPin(h, ifname))
}

// Attachment is a pinned link.
type Attachment struct {
	Hook      Hook
	Interface string
	// Ifindex is 0 when the interface is gone.
	Ifindex int
}

// Attachments lists the pinned links.
func (d *Datapath) Attachments() ([]Attachment, error) {
	ents, err := os.ReadDir(filepath.Join(d.dir, "links"))
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []Attachment
	for _, e := range ents {
		h, name, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		a := Attachment{Hook: Hook(h), Interface: name}
		if l, err := link.LoadPinnedLink(filepath.Join(d.dir, "links", e.Name()), nil); err == nil {
			if info, err := l.Info(); err == nil && info.TCX() != nil {
				a.Ifindex = int(info.TCX().Ifindex)
			}
			l.Close()
		}
		out = append(out, a)
	}
	return out, nil
}

func unpinLink(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link (or unreadable): remove the pin file anyway.
		if rerr := os.Remove(pin); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("removing pin %s: %w", pin, rerr)
		}
		return nil
	}
	defer l.Close()
	// Detach explicitly: another process may still hold the link open.
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		_ = err // a defunct link cannot be detached; unpinning is enough
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpinning %s: %w", pin, err)
	}
	return nil
}

// Remove detaches every pinned link and removes every pinned map under the
// versioned directory of root, then the directories. It works without a
// loaded Datapath, so a crashed agent's leftovers can be cleaned.
func Remove(root string) error {
	return removeDir(root, PinDir(root))
}

// RemoveOtherVersions removes what an agent of another datapath version pinned under root
// (v1/ when Version is v2): it detaches its links, so its programs stop classifying, and
// removes its maps. Call it once the datapath of this version is in place: until then the old
// programs keep the node's traffic going.
func RemoveOtherVersions(root string) error {
	if root == "" {
		root = DefaultPinRoot
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("listing %s: %w", root, err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || name == Version || !versionDir.MatchString(name) {
			continue
		}
		if err := removeDir(root, filepath.Join(root, name)); err != nil {
			errs = append(errs, fmt.Errorf("removing datapath %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

var versionDir = regexp.MustCompile(`^v[0-9]+$`)

// removeDir detaches the links and removes the pins of one version directory of root.
func removeDir(root, dir string) error {
	links, err := os.ReadDir(filepath.Join(dir, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, e := range links {
		if err := unpinLink(filepath.Join(dir, "links", e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(filepath.Join(dir, "links"))
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("listing %s: %w", dir, err))
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("removing pin: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
	}
	// The root is egressd's own; remove it when nothing else lives there.
	if root == "" {
		root = DefaultPinRoot
	}
	_ = os.Remove(root)
	return errors.Join(errs...)
}
