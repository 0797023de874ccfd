package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/test/netns"
)

// Long-lived connections (issue 14): from every monitor pod, established TCP connections to the
// echo server's ConnPort, each sending a short line every ConnOptions.Interval and expecting
// it back, prefixed with the source address:port the server saw, within ConnOptions.Timeout.
// An event's analysis (ConnsAt) tells, per connection open at the crash, whether it went
// through a failed gateway (its seen egress IP among the event's affected IPs) and whether it
// survived, and from which address:port it was seen afterwards.
const (
	DefaultConnsPerPod  = 4
	DefaultConnInterval = 100 * time.Millisecond
	// DefaultConnTimeout is as long as the datapath holds an established connection whose
	// egress IP is moving (--hold-established, 60 s): a connection through a failed gateway
	// is silent for the cloud's move plus TCP's retransmission backoff (an AWS move delivers
	// in about 5.5 s, when retransmissions are 6.4 s apart), and one that gave up sooner would
	// count as broken a connection the datapath kept.
	DefaultConnTimeout = time.Minute
	// connGap is the silence after which the next echo starts a new segment of the record:
	// three missed echoes.
	connGap = 3 * DefaultConnInterval
	// connFresh: a connection survived an event when it is still open at the event's End and
	// had an echo in the connFresh before it.
	connFresh = time.Second
	// connWait bounds how long an event's window waits for its connections to carry data
	// again (WaitFresh): a move of a few seconds plus the retransmission it waits for.
	connWait = 30 * time.Second
	// maxSegments bounds one connection's record (a segment per source change or stall).
	maxSegments = 10000
)

// ConnOptions tune a ConnSet. Zero values take the defaults above.
type ConnOptions struct {
	PerPod   int
	Interval time.Duration
	// Timeout is how long a connection waits for an echo before it counts as broken and is
	// closed.
	Timeout time.Duration
}

// ConnSegment is a run of echoes seen from one source without a gap longer than connGap.
type ConnSegment struct {
	Source string    `json:"source"` // egress address:port the echo server saw
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
	Echoes int       `json:"echoes"`
}

// ConnRecord is one long-lived connection's history.
type ConnRecord struct {
	ID       int           `json:"id"`
	Pod      string        `json:"pod"`
	Zone     string        `json:"zone,omitempty"`
	Node     string        `json:"node,omitempty"` // the pod's node
	Local    string        `json:"local"`          // the pod's address:port
	Opened   time.Time     `json:"opened"`
	Segments []ConnSegment `json:"segments"`
	// Closed is when the connection broke or was closed (zero while open); Err says why it
	// broke, empty when the lab closed it (Close, or Refill closing a stalled one says so).
	Closed time.Time `json:"closed,omitzero"`
	Err    string    `json:"error,omitempty"`
}

// LastEcho is the time of the last echo (zero if none).
func (r ConnRecord) LastEcho() time.Time {
	if len(r.Segments) == 0 {
		return time.Time{}
	}
	return r.Segments[len(r.Segments)-1].Last
}

// segmentBefore returns the segment holding the last echo before t, or false.
func (r ConnRecord) segmentBefore(t time.Time) (ConnSegment, bool) {
	for i := len(r.Segments) - 1; i >= 0; i-- {
		if r.Segments[i].First.Before(t) {
			return r.Segments[i], true
		}
	}
	return ConnSegment{}, false
}

// ConnSet keeps long-lived connections from pods to the echo server.
type ConnSet struct {
	pods []*netns.Pod
	dst  netip.Addr
	opts ConnOptions
	ctx  context.Context // lives until Close
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  []*conn // open or closed, in ID order
	nextID int
	// replaced are the closed connections Refill already replaced (Refill runs from one
	// goroutine at a time, its caller's).
	replaced map[*conn]bool
}

type conn struct {
	nc     net.Conn
	cancel context.CancelFunc
	first  chan struct{} // closed at the first echo or when the connection ends
	mu     sync.Mutex
	rec    ConnRecord
}

// NewConns returns a set of connections from every monitor pod of the lab to its echo server;
// nothing is opened before Open. The connections live until Close or the end of ctx.
// A zero opts.Timeout is the agents' hold (HoldEstablished), so a connection the datapath
// keeps for its moving address is not given up by its own client first.
func (l *Lab) NewConns(ctx context.Context, opts ConnOptions) *ConnSet {
	if opts.Timeout <= 0 {
		opts.Timeout = l.HoldEstablished()
	}
	return NewConnSet(ctx, l.Monitors, l.Echo, opts)
}

// HoldEstablished is the agents' --hold-established, what the chart gives them on the cloud
// the timing profile stands for: 5 minutes for azure (NIC updates take 30-90 s, with outliers
// of minutes), the agent's default (60 s) otherwise.
func (l *Lab) HoldEstablished() time.Duration {
	if strings.HasPrefix(l.Config.Timing, "azure") {
		return 5 * time.Minute
	}
	return dataplane.DefaultHoldEstablished
}

// ConnWait bounds how long an event's window waits for its connections to carry data again
// (ConnSet.WaitFresh): connWait, or with the azure profile, whose moves take about a minute,
// long enough for TCP's retransmission timer, backed off to about a minute by then.
func (l *Lab) ConnWait() time.Duration {
	if strings.HasPrefix(l.Config.Timing, "azure") {
		return 2 * time.Minute
	}
	return connWait
}

// NewConnSet returns a set of connections from pods to the echo server at dst's ConnPort.
func NewConnSet(ctx context.Context, pods []*netns.Pod, dst netip.Addr, opts ConnOptions) *ConnSet {
	if opts.PerPod <= 0 {
		opts.PerPod = DefaultConnsPerPod
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultConnInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultConnTimeout
	}
	cctx, cancel := context.WithCancel(ctx)
	return &ConnSet{pods: pods, dst: dst, opts: opts, ctx: cctx, stop: cancel, replaced: map[*conn]bool{}}
}

// Open opens PerPod connections from every pod, then, while some address of want (the egress
// sources the echo server should see, e.g. egressSources of the gateway's view) carries none
// of them, one more at a time from each pod in turn: which gateway a connection leaves through
// is the datapath's choice, so the set is grown until every gateway carries some. It returns
// an error naming the sources left without a connection after 4×PerPod extra per pod, or a
// connection that could not be opened.
func (cs *ConnSet) Open(ctx context.Context, want []string) error {
	if len(cs.pods) == 0 {
		return errors.New("opening long-lived connections: no pods")
	}
	for _, p := range cs.pods {
		for range cs.opts.PerPod {
			if _, err := cs.open(ctx, p); err != nil {
				return err
			}
		}
	}
	return cs.cover(ctx, want)
}

// Refill replaces the connections that broke or stalled (no echo in the last second; those are
// closed first) with new ones from the same pods, then grows the set again until every source
// of want carries one: call it after each event so the next one starts with a full set.
func (cs *ConnSet) Refill(ctx context.Context, want []string) error {
	now := time.Now()
	var reopen []*netns.Pod
	cs.mu.Lock()
	open := slices.Clone(cs.conns)
	cs.mu.Unlock()
	for _, c := range open {
		c.mu.Lock()
		closed, last := !c.rec.Closed.IsZero(), c.rec.LastEcho()
		c.mu.Unlock()
		if !closed && now.Sub(last) > connFresh {
			c.end(now, "closed by Refill: no echo for "+now.Sub(last).Round(time.Millisecond).String())
			closed = true
		}
		if closed && !cs.replaced[c] {
			cs.replaced[c] = true
			reopen = append(reopen, cs.podOf(c))
		}
	}
	for _, p := range reopen {
		if _, err := cs.open(ctx, p); err != nil {
			return err
		}
	}
	return cs.cover(ctx, want)
}

func (cs *ConnSet) cover(ctx context.Context, want []string) error {
	for extra := 0; ; extra++ {
		missing := cs.uncovered(want)
		if len(missing) == 0 {
			return nil
		}
		if extra >= 4*cs.opts.PerPod*len(cs.pods) {
			return fmt.Errorf("no long-lived connection through %s after %d extra connections", strings.Join(missing, ", "), extra)
		}
		if _, err := cs.open(ctx, cs.pods[extra%len(cs.pods)]); err != nil {
			return err
		}
	}
}

// uncovered returns the sources of want that no open connection was last seen from.
func (cs *ConnSet) uncovered(want []string) []string {
	seen := map[string]bool{}
	for _, r := range cs.Records() {
		if r.Closed.IsZero() && len(r.Segments) > 0 {
			seen[sourceIP(r.Segments[len(r.Segments)-1].Source)] = true
		}
	}
	var out []string
	for _, w := range want {
		if !seen[w] {
			out = append(out, w)
		}
	}
	return out
}

// open dials one connection from pod and waits for its first echo (so its source is known).
func (cs *ConnSet) open(ctx context.Context, pod *netns.Pod) (*conn, error) {
	if cs.ctx.Err() != nil {
		return nil, errors.New("opening a long-lived connection: the set is closed")
	}
	dctx, cancel := context.WithTimeout(ctx, cs.opts.Timeout)
	defer cancel()
	addr := netip.AddrPortFrom(cs.dst, netns.ConnPort).String()
	nc, err := pod.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("opening a long-lived connection from %s to %s: %w", pod.Name, addr, err)
	}
	cctx, ccancel := context.WithCancel(cs.ctx)
	c := &conn{nc: nc, cancel: ccancel, first: make(chan struct{})}
	c.rec = ConnRecord{Pod: pod.Name, Local: nc.LocalAddr().String(), Opened: time.Now()}
	if pod.Node != nil {
		c.rec.Node = pod.Node.Name
		if pod.Node.Zone != nil {
			c.rec.Zone = pod.Node.Zone.Name
		}
	}
	cs.mu.Lock()
	cs.nextID++
	c.rec.ID = cs.nextID
	cs.conns = append(cs.conns, c)
	cs.mu.Unlock()
	cs.wg.Go(func() { c.run(cctx, cs.opts) })
	select {
	case <-c.first:
	case <-dctx.Done():
	}
	if r := c.record(); len(r.Segments) == 0 {
		c.end(time.Now(), "no first echo within "+cs.opts.Timeout.String())
		return nil, fmt.Errorf("long-lived connection %d from %s (%s): %s", r.ID, pod.Name, r.Local, c.record().Err)
	}
	return c, nil
}

func (cs *ConnSet) podOf(c *conn) *netns.Pod {
	name := c.record().Pod
	for _, p := range cs.pods {
		if p.Name == name {
			return p
		}
	}
	return cs.pods[0]
}

// Records returns every connection's record so far, open and closed, in the order opened.
func (cs *ConnSet) Records() []ConnRecord {
	cs.mu.Lock()
	conns := slices.Clone(cs.conns)
	cs.mu.Unlock()
	out := make([]ConnRecord, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.record())
	}
	return out
}

// WaitFresh waits until every open connection had an echo in the last connFresh (TCP's
// retransmission backoff can leave a connection whose path is back silent for seconds after
// it), or for at most timeout. It returns how many were still silent then.
func (cs *ConnSet) WaitFresh(ctx context.Context, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		silent := 0
		now := time.Now()
		for _, r := range cs.Records() {
			if r.Closed.IsZero() && now.Sub(r.LastEcho()) > connFresh {
				silent++
			}
		}
		if silent == 0 || !now.Before(deadline) || sleep(ctx, 100*time.Millisecond) != nil {
			return silent
		}
	}
}

// Close closes every connection and waits for them.
func (cs *ConnSet) Close() {
	cs.stop()
	cs.wg.Wait()
}

func (c *conn) record() ConnRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rec
	r.Segments = slices.Clone(r.Segments)
	return r
}

// end closes the connection once, recording when and why.
func (c *conn) end(at time.Time, why string) {
	c.mu.Lock()
	if c.rec.Closed.IsZero() {
		c.rec.Closed, c.rec.Err = at, why
	}
	c.mu.Unlock()
	c.cancel()
	_ = c.nc.Close()
}

func (c *conn) echo(at time.Time, src string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.rec.Segments)
	if n > 0 && c.rec.Segments[n-1].Source == src && at.Sub(c.rec.Segments[n-1].Last) <= connGap {
		c.rec.Segments[n-1].Last = at
		c.rec.Segments[n-1].Echoes++
		return
	}
	if n == 0 {
		close(c.first)
	}
	if n < maxSegments {
		c.rec.Segments = append(c.rec.Segments, ConnSegment{Source: src, First: at, Last: at, Echoes: 1})
	}
}

func (c *conn) run(ctx context.Context, opts ConnOptions) {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.Close() })
	defer stop()
	fail := func(err error) {
		if ctx.Err() != nil {
			c.end(time.Now(), "") // closed by the lab
		} else {
			c.end(time.Now(), err.Error())
		}
		c.mu.Lock()
		if len(c.rec.Segments) == 0 {
			select {
			case <-c.first:
			default:
				close(c.first)
			}
		}
		c.mu.Unlock()
	}
	r := bufio.NewReader(c.nc)
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		_ = c.nc.SetDeadline(time.Now().Add(opts.Timeout))
		if _, err := fmt.Fprintf(c.nc, "%d\n", seq); err != nil {
			fail(fmt.Errorf("sending %d: %w", seq, err))
			return
		}
		line, err := r.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("no echo of %d within %s", seq, opts.Timeout)
			}
			fail(err)
			return
		}
		src, num, _ := strings.Cut(strings.TrimSpace(line), " ")
		if num != strconv.Itoa(seq) {
			fail(fmt.Errorf("echo %q to %d", strings.TrimSpace(line), seq))
			return
		}
		c.echo(time.Now(), src)
		select {
		case <-ctx.Done():
			fail(ctx.Err())
			return
		case <-tick.C:
		}
	}
}

// sourceIP is the address part of an address:port.
func sourceIP(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String()
	}
	return s
}

// ConnOutcome is what one long-lived connection open at an event's crash went through.
type ConnOutcome struct {
	ID  int    `json:"id"`
	Pod string `json:"pod"`
	// Before is the source the echo server saw just before the crash; After the one it saw
	// last before the event's End (empty when the connection broke).
	Before string `json:"before"`
	After  string `json:"after,omitempty"`
	// ThroughFailed: Before's IP is one of the event's affected egress IPs.
	ThroughFailed bool `json:"throughFailed"`
	// Survived: still open at End with an echo in the second before it.
	Survived bool `json:"survived"`
	// SameSource: survived, seen from the same address and port as before.
	SameSource bool `json:"sameSource"`
	// MaxGap is the longest time without an echo between the crash and End.
	MaxGap time.Duration `json:"maxGapNs"`
	Err    string        `json:"error,omitempty"`
}

// ConnResult is what the long-lived connections saw of one event.
type ConnResult struct {
	Open                    int `json:"open"` // connections with an echo before the crash and open at it
	ThroughFailed           int `json:"throughFailed"`
	ThroughFailedSurvived   int `json:"throughFailedSurvived"`
	ThroughFailedSameSource int `json:"throughFailedSameSource"`
	ThroughSurvivors        int `json:"throughSurvivors"`
	// SurvivorsBroken counts connections through gateways the event did not touch that broke
	// or stalled: it must be 0.
	SurvivorsBroken int `json:"survivorsBroken"`
	// SourceLost counts connections whose own pod's node the event took down (a lost zone's
	// worker): they are in none of the counts above, whatever gateway they used.
	SourceLost int           `json:"sourceLost"`
	Conns      []ConnOutcome `json:"conns"`
}

// ConnsAt analyses the connections open at ev.At over [ev.At, ev.End); affected holds the egress
// IPs (private and public) the event's nodes held.
func ConnsAt(records []ConnRecord, ev Event, affected map[string]bool) *ConnResult {
	res := &ConnResult{}
	for _, r := range records {
		if !r.Opened.Before(ev.At) || (!r.Closed.IsZero() && r.Closed.Before(ev.At)) {
			continue
		}
		before, ok := r.segmentBefore(ev.At)
		if !ok {
			continue
		}
		if r.Node != "" && slices.Contains(ev.Nodes, r.Node) {
			res.SourceLost++
			continue
		}
		o := ConnOutcome{ID: r.ID, Pod: r.Pod, Before: before.Source, ThroughFailed: affected[sourceIP(before.Source)]}
		last, _ := r.segmentBefore(ev.End)
		// A close without Err is the lab's own (Close at the end of a run, which can fall a
		// moment before the last event's End): not a break.
		closedInside := !r.Closed.IsZero() && r.Closed.Before(ev.End) && r.Err != ""
		o.Survived = !closedInside && !last.Last.Before(ev.End.Add(-connFresh))
		if o.Survived {
			o.After = last.Source
			o.SameSource = o.After == o.Before
		}
		if closedInside {
			o.Err = r.Err
		}
		o.MaxGap = r.maxGap(ev.At, ev.End)
		res.Open++
		if o.ThroughFailed {
			res.ThroughFailed++
			if o.Survived {
				res.ThroughFailedSurvived++
			}
			if o.SameSource {
				res.ThroughFailedSameSource++
			}
		} else {
			res.ThroughSurvivors++
			if !o.Survived {
				res.SurvivorsBroken++
			}
		}
		res.Conns = append(res.Conns, o)
	}
	return res
}

// maxGap is the longest silence between from and to: between echoes, or from the last echo
// to the connection's end or to.
func (r ConnRecord) maxGap(from, to time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, s := range r.Segments {
		if !s.Last.After(from) {
			continue
		}
		if !s.First.Before(to) {
			break
		}
		if s.First.After(prev) {
			gap = max(gap, s.First.Sub(prev))
		}
		prev = s.Last
	}
	end := to
	if !r.Closed.IsZero() && r.Closed.Before(to) {
		end = r.Closed
	}
	return max(gap, end.Sub(prev))
}
