package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/test/netns"
)

// The monitors of the walkthrough: in every monitor pod, one logical client (a "flow" of the
// analysis) sending one HTTP request every MonitorInterval to the echo server, each on a new
// connection (which the datapath must steer to a live gateway), recording which egress IP the
// server saw or how the request failed.
// (cmd/egressctl/internal/probe does the same for egressctl probe, but Go's internal rule keeps
// it out of reach of test/lab, and the lab needs the pod's namespace for every socket.)
const (
	MonitorInterval = 50 * time.Millisecond
	MonitorTimeout  = time.Second
	// maxSamples bounds the record (about 14 h at 50 ms).
	maxSamples = 1 << 20
)

// Sample is one monitor request.
type Sample struct {
	// Pod and Zone name the monitor (the flow) that sent it.
	Pod    string        `json:"pod"`
	Zone   string        `json:"zone,omitempty"`
	Seq    int           `json:"seq"`
	Sent   time.Time     `json:"sent"`
	RTT    time.Duration `json:"rttNs"`
	Source string        `json:"source,omitempty"` // the egress IP the echo server saw
	Err    string        `json:"error,omitempty"`
}

// OK reports whether the request succeeded.
func (s Sample) OK() bool { return s.Err == "" }

// Done is when the request completed: answered or failed.
func (s Sample) Done() time.Time { return s.Sent.Add(s.RTT) }

// Monitor sends the requests and keeps the record.
type Monitor struct {
	pod      *netns.Pod
	zone     string
	url      string
	interval time.Duration
	client   *http.Client

	mu      sync.Mutex
	samples []Sample
	// OnSample, when set before Run, is called for every finished request (from several
	// goroutines; keep it quick).
	OnSample func(Sample)
}

// NewMonitor returns a monitor sending from pod to the echo server at dst.
func NewMonitor(pod *netns.Pod, dst netip.Addr) *Monitor {
	zone := ""
	if pod.Node != nil && pod.Node.Zone != nil {
		zone = pod.Node.Zone.Name
	}
	return &Monitor{pod: pod, zone: zone, url: fmt.Sprintf("http://%s/", netip.AddrPortFrom(dst, netns.HTTPPort)),
		interval: MonitorInterval, client: pod.HTTPClient()}
}

// Run sends requests until ctx ends, then waits for those in flight.
func (m *Monitor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for seq := 0; ; seq++ {
		m.mu.Lock()
		full := len(m.samples) >= maxSamples
		m.mu.Unlock()
		if full {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := m.request(ctx, seq)
			if ctx.Err() != nil && !s.OK() {
				return // cut short by the end of the run, not by egressd
			}
			m.mu.Lock()
			m.samples = append(m.samples, s)
			m.mu.Unlock()
			if m.OnSample != nil {
				m.OnSample(s)
			}
		}()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Monitor) request(ctx context.Context, seq int) Sample {
	s := Sample{Pod: m.pod.Name, Zone: m.zone, Seq: seq, Sent: time.Now()}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), MonitorTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, m.url, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = m.client.Do(req); err == nil {
			var b []byte
			b, err = io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			if err == nil {
				s.Source = strings.TrimSpace(string(b))
				if _, perr := netip.ParseAddr(s.Source); perr != nil {
					err = fmt.Errorf("unexpected answer %q", s.Source)
					s.Source = ""
				}
			}
		}
	}
	s.RTT = time.Since(s.Sent)
	if err != nil {
		s.Err = shortErr(err)
	}
	return s
}

func shortErr(err error) string {
	msg := err.Error()
	// Trim Go's "Get \"http://...\": " prefix; keep the cause.
	if i := strings.Index(msg, "\": "); i >= 0 {
		msg = msg[i+3:]
	}
	return msg
}

// Samples returns a copy of the record, ordered by send time.
func (m *Monitor) Samples() []Sample {
	m.mu.Lock()
	out := append([]Sample(nil), m.samples...)
	m.mu.Unlock()
	sortSamples(out)
	return out
}

// Since returns the samples sent at or after t.
func (m *Monitor) Since(t time.Time) []Sample { return since(m.Samples(), t) }

// Monitors are the monitors of several pods, run and read together.
type Monitors []*Monitor

// NewMonitors returns one monitor per monitor pod of the lab, sending to its echo server.
func (l *Lab) NewMonitors() Monitors {
	out := make(Monitors, 0, len(l.Monitors))
	for _, p := range l.Monitors {
		out = append(out, NewMonitor(p, l.Echo))
	}
	return out
}

// Run runs every monitor until ctx ends, then waits for them all.
func (ms Monitors) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { m.Run(ctx) })
	}
	wg.Wait()
}

// Samples returns every monitor's record, merged and ordered by send time.
func (ms Monitors) Samples() []Sample {
	var out []Sample
	for _, m := range ms {
		m.mu.Lock()
		out = append(out, m.samples...)
		m.mu.Unlock()
	}
	sortSamples(out)
	return out
}

// Since returns the samples of every monitor sent at or after t.
func (ms Monitors) Since(t time.Time) []Sample {
	return since(ms.Samples(), t)
}

func since(samples []Sample, t time.Time) []Sample {
	i := sort.Search(len(samples), func(i int) bool { return !samples[i].Sent.Before(t) })
	return samples[i:]
}

// TimedView is one reading of the gateway's status.
type TimedView struct {
	At   time.Time   `json:"at"`
	View GatewayView `json:"view"`
}

// ViewRecorder reads the gateway's status every interval and keeps the readings, for the
// settle time (Settled).
type ViewRecorder struct {
	mu    sync.Mutex
	views []TimedView
}

// RecordViews reads the gateway's view every interval (default 50 ms) until ctx ends; read
// errors are skipped. The readings are bounded like the monitor's samples.
func (l *Lab) RecordViews(ctx context.Context, interval time.Duration) *ViewRecorder {
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	r := &ViewRecorder{}
	l.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			// A reading is bounded: a call left waiting on a connection the API server dropped
			// (its restart) stops the recording until the client notices, tens of seconds.
			vctx, cancel := context.WithTimeout(ctx, max(10*interval, 2*time.Second))
			v, err := l.View(vctx)
			cancel()
			if err == nil {
				r.mu.Lock()
				if len(r.views) < maxSamples {
					r.views = append(r.views, TimedView{At: time.Now(), View: v})
				}
				r.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-l.ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return r
}

// Views returns the readings so far, in time order.
func (r *ViewRecorder) Views() []TimedView {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.views)
}
