package netns

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// icmpObserveWait is how long Ping waits, after the echo reply, for the destination's observer
// to report the source it saw (the observer reads its copy of the request concurrently).
const icmpObserveWait = 200 * time.Millisecond

// defaultTimeout bounds a request whose context has no deadline, so a black-holed packet
// fails a call instead of hanging the test.
const defaultTimeout = 5 * time.Second

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultTimeout)
}

// DialContext dials from inside the namespace (the socket is created there). It fits
// http.Transport.DialContext and grpc dialers.
func (n *Namespace) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the namespace; the caller closes the listener.
func (n *Namespace) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace; the caller closes it.
func (n *Namespace) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// HTTPClient is an HTTP client whose connections start in the namespace. Keep-alives are off:
// every request is a new TCP flow, as failover tests need.
func (n *Namespace) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}}
}

// HTTPGet sends GET http://dst:HTTPPort/ from the namespace and returns the source address the
// echo server saw. Without a context deadline it gives up after 5 s.
func (n *Namespace) HTTPGet(ctx context.Context, dst netip.Addr) (netip.Addr, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	u := "http://" + netip.AddrPortFrom(dst, HTTPPort).String() + "/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return netip.Addr{}, err
	}
	c := n.HTTPClient()
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("GET %s from %s: %w", u, n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("GET %s from %s: %w", u, n.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return netip.Addr{}, fmt.Errorf("GET %s from %s: %s", u, n.Name, resp.Status)
	}
	return parseAddrLine(b)
}

// UDPEcho sends one datagram to dst:UDPPort from the namespace and returns the source address
// the echo server saw. It does not retry: a lost datagram is an error (5 s without deadline).
func (n *Namespace) UDPEcho(ctx context.Context, dst netip.Addr) (netip.Addr, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	c, err := n.DialContext(ctx, "udp", netip.AddrPortFrom(dst, UDPPort).String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("UDP to %s from %s: %w", dst, n.Name, err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := c.Write([]byte("?")); err != nil {
		return netip.Addr{}, fmt.Errorf("UDP to %s from %s: %w", dst, n.Name, err)
	}
	buf := make([]byte, 256)
	k, err := c.Read(buf)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("UDP to %s from %s: %w", dst, n.Name, err)
	}
	return parseAddrLine(buf[:k])
}

// Ping sends one ICMP echo request to dst from the namespace and waits for the reply. When
// the destination namespace runs StartServers (the external host does), it returns the source
// address the destination saw; otherwise an invalid Addr, after waiting 200 ms for it.
func (n *Namespace) Ping(ctx context.Context, dst netip.Addr) (netip.Addr, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	proto, laddr, typ, num := "ip4:icmp", "0.0.0.0", icmp.Type(ipv4.ICMPTypeEcho), 1
	if dst.Is6() {
		proto, laddr, typ, num = "ip6:ipv6-icmp", "::", ipv6.ICMPTypeEchoRequest, 58
	}
	var c *icmp.PacketConn
	if err := n.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(proto, laddr)
		return err
	}); err != nil {
		return netip.Addr{}, fmt.Errorf("ping %s from %s: %w", dst, n.Name, err)
	}
	defer c.Close()
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	payload := append(append([]byte(nil), icmpMagic...), []byte(fmt.Sprintf("%x", tok))...)
	id := int(binary.BigEndian.Uint16(tok[:2]))
	seenc, unregister := expectICMP(payload)
	defer unregister()
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: 1, Data: payload}}
	b, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
	if err != nil {
		return netip.Addr{}, err
	}
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return netip.Addr{}, fmt.Errorf("ping %s from %s: %w", dst, n.Name, err)
	}
	buf := make([]byte, 64<<10)
	for {
		k, _, err := c.ReadFrom(buf)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("ping %s from %s: %w", dst, n.Name, err)
		}
		m, err := icmp.ParseMessage(num, buf[:k])
		if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && string(e.Data) == string(payload) {
			select {
			case seen := <-seenc:
				return seen, nil
			case <-time.After(icmpObserveWait):
				return netip.Addr{}, nil // nobody observes ICMP at dst
			case <-ctx.Done():
				return netip.Addr{}, nil
			}
		}
	}
}

// Direction of a bulk transfer, seen from the namespace that starts it.
type Direction int

const (
	Upload   Direction = iota // the caller sends
	Download                  // the server sends
)

// TransferResult reports a bulk transfer.
type TransferResult struct {
	Bytes    int64
	Duration time.Duration
}

// BytesPerSecond is the goodput of the transfer.
func (r TransferResult) BytesPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Duration.Seconds()
}

func (r TransferResult) String() string {
	return fmt.Sprintf("%d bytes in %v (%.1f MB/s)", r.Bytes, r.Duration.Round(time.Millisecond), r.BytesPerSecond()/1e6)
}

// Transfer moves size bytes over one TCP connection between the namespace and the bulk server
// on dst (BulkPort), and fails unless every byte arrived. It is bounded by ctx (10 min at most
// without a deadline) and by a 64 GiB cap on size.
func (n *Namespace) Transfer(ctx context.Context, dst netip.Addr, size int64, dir Direction) (TransferResult, error) {
	if size < 0 || size > maxTransfer {
		return TransferResult{}, fmt.Errorf("transfer size %d out of range", size)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
	}
	fail := func(err error) (TransferResult, error) {
		return TransferResult{}, fmt.Errorf("transfer %d bytes %s %s from %s: %w", size, map[Direction]string{Upload: "to", Download: "from"}[dir], dst, n.Name, err)
	}
	start := time.Now()
	c, err := n.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, BulkPort).String())
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	var hdr [9]byte
	hdr[0] = "UD"[dir]
	binary.BigEndian.PutUint64(hdr[1:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return fail(err)
	}
	var got int64
	switch dir {
	case Upload:
		if _, err := io.CopyBuffer(c, io.LimitReader(zeroReader{}, size), make([]byte, 256<<10)); err != nil {
			return fail(ctxErr(ctx, err))
		}
		var ack [8]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return fail(ctxErr(ctx, err))
		}
		got = int64(binary.BigEndian.Uint64(ack[:]))
	case Download:
		got, err = io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		if err != nil {
			return fail(ctxErr(ctx, err))
		}
	}
	res := TransferResult{Bytes: got, Duration: time.Since(start)}
	if got != size {
		return res, fmt.Errorf("transfer from %s with %s: %d of %d bytes arrived", n.Name, dst, got, size)
	}
	return res, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// FlowOptions tune StartFlow.
type FlowOptions struct {
	// Interval between messages (default 10 ms).
	Interval time.Duration
	// Stall is how long an answer may take before the flow records an error (default 1 s).
	// The flow keeps waiting for that answer afterwards: TCP may still recover.
	Stall time.Duration
}

// FlowError is one problem a flow met.
type FlowError struct {
	Time time.Time
	Err  error
}

// FlowStats describe a flow so far.
type FlowStats struct {
	Sent, Answered int
	// Errors are stalls and the fatal error, if any (at most 100 kept).
	Errors []FlowError
	// MaxGap is the longest time between two answers (or between start and the first one).
	MaxGap time.Duration
	// Sources are the addresses the server saw, in order of first appearance.
	Sources []netip.Addr
	// Done is true when the connection failed or the flow was stopped.
	Done bool
}

// Flow is a long-running TCP connection exchanging a line every Interval with the server's
// FlowPort, for failover tests: a disturbed established flow shows up in Errors and MaxGap.
type Flow struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	stats  FlowStats
	conn   net.Conn
}

// StartFlow opens the connection from the namespace and starts exchanging. Stop it with
// Stop; the Topology stops it on Close otherwise.
func (n *Namespace) StartFlow(ctx context.Context, dst netip.Addr, opts FlowOptions) (*Flow, error) {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Millisecond
	}
	if opts.Stall <= 0 {
		opts.Stall = time.Second
	}
	dctx, dcancel := withDefaultTimeout(ctx)
	c, err := n.DialContext(dctx, "tcp", netip.AddrPortFrom(dst, FlowPort).String())
	dcancel()
	if err != nil {
		return nil, fmt.Errorf("starting flow to %s from %s: %w", dst, n.Name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Flow{cancel: cancel, done: make(chan struct{}), conn: c}
	n.owner.addCloser(func() error { f.Stop(); return nil })
	go f.run(ctx, opts)
	return f, nil
}

func (f *Flow) record(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.stats.Errors) < 100 {
		f.stats.Errors = append(f.stats.Errors, FlowError{Time: time.Now(), Err: err})
	}
}

func (f *Flow) run(ctx context.Context, opts FlowOptions) {
	defer close(f.done)
	defer func() {
		f.mu.Lock()
		f.stats.Done = true
		f.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { _ = f.conn.Close() })
	defer stop()
	r := bufio.NewReader(f.conn)
	last := time.Now()
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		if _, err := fmt.Fprintf(f.conn, "%d\n", seq); err != nil {
			if ctx.Err() == nil {
				f.record(fmt.Errorf("sending %d: %w", seq, err))
			}
			return
		}
		f.mu.Lock()
		f.stats.Sent++
		f.mu.Unlock()
		stalled := false
		for {
			_ = f.conn.SetReadDeadline(time.Now().Add(opts.Stall))
			line, err := r.ReadString('\n')
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				if !stalled {
					f.record(fmt.Errorf("no answer to %d within %v", seq, opts.Stall))
					stalled = true
				}
				continue
			}
			if err != nil {
				if ctx.Err() == nil {
					f.record(fmt.Errorf("reading answer to %d: %w", seq, err))
				}
				return
			}
			src, num, _ := strings.Cut(strings.TrimSpace(line), " ")
			if num != strconv.Itoa(seq) {
				f.record(fmt.Errorf("answer %q to %d", line, seq))
				return
			}
			now := time.Now()
			f.mu.Lock()
			f.stats.Answered++
			if gap := now.Sub(last); gap > f.stats.MaxGap {
				f.stats.MaxGap = gap
			}
			if a, err := netip.ParseAddr(src); err == nil && !containsAddr(f.stats.Sources, a) {
				f.stats.Sources = append(f.stats.Sources, a)
			}
			f.mu.Unlock()
			last = now
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func containsAddr(s []netip.Addr, a netip.Addr) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}

// Stats returns a snapshot of the flow's statistics.
func (f *Flow) Stats() FlowStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Errors = append([]FlowError(nil), s.Errors...)
	s.Sources = append([]netip.Addr(nil), s.Sources...)
	return s
}

// Done is closed when the flow ends (fatal error or Stop).
func (f *Flow) Done() <-chan struct{} { return f.done }

// Stop ends the flow, closes its connection and returns the final statistics. It is
// idempotent.
func (f *Flow) Stop() FlowStats {
	f.cancel()
	<-f.done
	_ = f.conn.Close()
	return f.Stats()
}
