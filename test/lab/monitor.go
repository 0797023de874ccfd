package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/test/netns"
)

// The monitor of the walkthrough: one HTTP request every MonitorInterval from the monitor pod
// to the echo server, each on a new connection (a new flow, which the datapath must steer to a
// live gateway), recording which egress IP the server saw or how the request failed.
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
	Seq    int           `json:"seq"`
	Sent   time.Time     `json:"sent"`
	RTT    time.Duration `json:"rttNs"`
	Source string        `json:"source,omitempty"` // the egress IP the echo server saw
	Err    string        `json:"error,omitempty"`
}

// OK reports whether the request succeeded.
func (s Sample) OK() bool { return s.Err == "" }

// Monitor sends the requests and keeps the record.
type Monitor struct {
	pod      *netns.Pod
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
	return &Monitor{pod: pod, url: fmt.Sprintf("http://%s/", netip.AddrPortFrom(dst, netns.HTTPPort)),
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
	s := Sample{Seq: seq, Sent: time.Now()}
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
func (m *Monitor) Since(t time.Time) []Sample {
	var out []Sample
	for _, s := range m.Samples() {
		if !s.Sent.Before(t) {
			out = append(out, s)
		}
	}
	return out
}
