package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// Responder answers probe requests on one UDP socket. Every agent runs one, gateway or not.
type Responder struct {
	conn     net.PacketConn
	draining atomic.Bool
}

// NewResponder returns a Responder that will answer on conn once Run is called. Run closes conn.
func NewResponder(conn net.PacketConn) *Responder {
	return &Responder{conn: conn}
}

// SetDraining sets the draining bit of every later reply.
func (r *Responder) SetDraining(draining bool) { r.draining.Store(draining) }

// Draining reports the current draining bit.
func (r *Responder) Draining() bool { return r.draining.Load() }

// Addr is the address the Responder listens on.
func (r *Responder) Addr() net.Addr { return r.conn.LocalAddr() }

// Run answers requests until ctx ends, then closes the socket and returns nil. Malformed
// packets and replies are ignored; a failed send is not fatal (the prober counts a miss).
func (r *Responder) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = r.conn.Close() })
	defer stop()
	defer r.conn.Close()
	buf := make([]byte, 64)
	for {
		n, from, err := r.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("reading probes: %w", err)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("reading probes: %w", err)
		}
		p, err := Parse(buf[:n])
		if err != nil || p.Reply() {
			continue
		}
		p.Flags = FlagReply
		if r.draining.Load() {
			p.Flags |= FlagDraining
		}
		b := p.Marshal()
		_, _ = r.conn.WriteTo(b[:], from)
	}
}
