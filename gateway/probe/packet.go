// Package probe is the UDP health probe protocol of docs/control-plane.md, shared by the node
// agent (which probes the gateways of its groups) and the coordinator (which probes every
// selected gateway): the packet format, a Responder that answers on a node's probe port, and a
// Prober that probes a changing set of targets and reports when one goes up or down.
//
// The package does no logging and owns no goroutine beyond the Run calls its caller makes.
package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format constants.
const (
	// Size is the length of a request and of a reply.
	Size = 16
	// Version is the protocol version this package speaks.
	Version = 1
	// FlagReply marks a reply.
	FlagReply byte = 0x80
	// FlagDraining in a reply says the responder's node is cordoned or shutting down: send it
	// no new flows.
	FlagDraining byte = 0x01
)

var magic = [4]byte{'E', 'G', 'R', 'P'}

// Packet is a request or a reply.
type Packet struct {
	Flags byte
	Seq   uint64
}

// Reply reports whether p is a reply.
func (p Packet) Reply() bool { return p.Flags&FlagReply != 0 }

// Draining reports whether a reply says the responder is draining.
func (p Packet) Draining() bool { return p.Flags&FlagDraining != 0 }

// Marshal encodes p: magic "EGRP", version, flags, two reserved bytes, big-endian sequence.
func (p Packet) Marshal() [Size]byte {
	var b [Size]byte
	copy(b[:4], magic[:])
	b[4] = Version
	b[5] = p.Flags
	binary.BigEndian.PutUint64(b[8:], p.Seq)
	return b
}

// ErrMalformed is returned by Parse for anything that is not a probe packet of this version.
var ErrMalformed = errors.New("malformed probe packet")

// Parse decodes a packet. Reserved bytes are ignored so that later versions may use them.
func Parse(b []byte) (Packet, error) {
	if len(b) != Size {
		return Packet{}, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), Size)
	}
	if [4]byte(b[:4]) != magic {
		return Packet{}, fmt.Errorf("%w: bad magic %q", ErrMalformed, b[:4])
	}
	if b[4] != Version {
		return Packet{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, b[4], Version)
	}
	return Packet{Flags: b[5], Seq: binary.BigEndian.Uint64(b[8:])}, nil
}
