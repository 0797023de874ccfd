// Package probe is the egress monitor: it sends one HTTP request per interval to an echo
// server that answers with the caller's IP, and records which source (egress) IP each request
// left with and every failure with its time. From the record it derives per-source counts and
// outage windows, the figures of a failover test. egressctl probe and the lab both use it.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config of a Prober.
type Config struct {
	// URL of the echo server. Required.
	URL string
	// Interval between request starts. Requests run concurrently, so a hanging request does not
	// delay the next one. Default 50ms.
	Interval time.Duration
	// Timeout of one request. Default 1s.
	Timeout time.Duration
	// Duration of the run; zero runs until the context ends.
	Duration time.Duration
	// KeepAlive reuses connections. Off by default: every request is a new flow, as a fleet of
	// short-lived clients would make, and as the published failover demos measure.
	KeepAlive bool
	// Client overrides the HTTP client (its Timeout is left alone). Nil: a client built from
	// Timeout and KeepAlive.
	Client *http.Client
	// OnResult, when set, is called with each result as it completes (from the Run goroutine,
	// never concurrently).
	OnResult func(Result)
}

// Result is one request.
type Result struct {
	// Seq numbers requests in the order they were sent, from 0.
	Seq int
	// Sent and Done are when the request started and finished.
	Sent, Done time.Time
	// Source is the IP the echo server saw; empty on failure.
	Source string
	// Err is why the request failed; nil on success.
	Err error
}

// Latency of the request.
func (r Result) Latency() time.Duration { return r.Done.Sub(r.Sent) }

// Outage is a run of failed requests: from the first failure's send time to the send time of
// the next successful request (or the last failure's end when none followed).
type Outage struct {
	Start, End time.Time
	// Failed is how many requests failed in the window.
	Failed int
}

// Duration of the outage.
func (o Outage) Duration() time.Duration { return o.End.Sub(o.Start) }

// SourceCount is how many requests left with one source IP.
type SourceCount struct {
	Source string
	Count  int
}

// Summary of a run.
type Summary struct {
	Start, End time.Time
	// Results in send order.
	Results []Result
	Total   int
	Failed  int
	// Sources by decreasing count, then by address.
	Sources []SourceCount
	// Failures in send order.
	Failures []Result
	// Outages in time order.
	Outages []Outage
	// Switches counts how often consecutive successful requests saw different source IPs.
	Switches int
}

// MaxOutage is the longest outage, zero when none.
func (s *Summary) MaxOutage() time.Duration {
	var longest time.Duration
	for _, o := range s.Outages {
		longest = max(longest, o.Duration())
	}
	return longest
}

// Prober sends the requests.
type Prober struct {
	cfg    Config
	client *http.Client
}

// New checks cfg and returns a Prober.
func New(cfg Config) (*Prober, error) {
	if cfg.URL == "" {
		return nil, errors.New("probe: URL is required")
	}
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("probe: URL %q must start with http:// or https://", cfg.URL)
	}
	if cfg.Interval == 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.Duration < 0 {
		return nil, errors.New("probe: interval, timeout and duration must not be negative")
	}
	client := cfg.Client
	if client == nil {
		dialer := &net.Dialer{Timeout: cfg.Timeout}
		client = &http.Client{
			Transport: &http.Transport{
				DialContext:       dialer.DialContext,
				DisableKeepAlives: !cfg.KeepAlive,
				MaxIdleConns:      16,
				IdleConnTimeout:   30 * time.Second,
			},
		}
	}
	return &Prober{cfg: cfg, client: client}, nil
}

// Run probes until cfg.Duration has passed or ctx ends, waits for the requests in flight, and
// summarises. It returns ctx's error only when ctx ended before the first request.
func (p *Prober) Run(ctx context.Context) (*Summary, error) {
	if p.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Duration)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	results := make(chan Result)
	var wg sync.WaitGroup
	var collected []Result
	collectDone := make(chan struct{})
	go func() {
		defer close(collectDone)
		for r := range results {
			collected = append(collected, r)
			if p.cfg.OnResult != nil {
				p.cfg.OnResult(r)
			}
		}
	}()

	ticker := time.NewTicker(p.cfg.Interval)
	seq := 0
	send := func() {
		wg.Add(1)
		go func(seq int) {
			defer wg.Done()
			// In-flight requests get their full timeout even when the run ends, so the last
			// ones are not counted as failures merely because the run stopped.
			results <- p.probe(context.WithoutCancel(ctx), seq)
		}(seq)
		seq++
	}
	send()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-ticker.C:
			send()
		}
	}
	ticker.Stop()
	wg.Wait()
	close(results)
	<-collectDone
	return summarize(start, time.Now(), collected), nil
}

func (p *Prober) probe(ctx context.Context, seq int) Result {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	r := Result{Seq: seq, Sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.URL, nil)
	if err != nil {
		r.Err = err
		r.Done = time.Now()
		return r
	}
	resp, err := p.client.Do(req)
	if err != nil {
		r.Err = err
		r.Done = time.Now()
		return r
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	r.Done = time.Now()
	switch {
	case err != nil:
		r.Err = fmt.Errorf("reading the answer: %w", err)
	case resp.StatusCode/100 != 2:
		r.Err = fmt.Errorf("HTTP %s", resp.Status)
	default:
		src := strings.TrimSpace(string(body))
		if ip := net.ParseIP(src); ip == nil {
			r.Err = fmt.Errorf("the answer %q is not an IP address", truncate(src, 64))
		} else {
			r.Source = ip.String()
		}
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// summarize derives counts and outages from results in any order.
func summarize(start, end time.Time, results []Result) *Summary {
	sort.Slice(results, func(i, j int) bool { return results[i].Seq < results[j].Seq })
	s := &Summary{Start: start, End: end, Results: results, Total: len(results)}
	counts := map[string]int{}
	var open *Outage
	lastSource := ""
	for _, r := range results {
		if r.Err != nil {
			s.Failed++
			s.Failures = append(s.Failures, r)
			if open == nil {
				open = &Outage{Start: r.Sent}
			}
			open.Failed++
			open.End = r.Done
			continue
		}
		if open != nil {
			open.End = r.Sent
			s.Outages = append(s.Outages, *open)
			open = nil
		}
		counts[r.Source]++
		if lastSource != "" && r.Source != lastSource {
			s.Switches++
		}
		lastSource = r.Source
	}
	if open != nil {
		s.Outages = append(s.Outages, *open)
	}
	for src, n := range counts {
		s.Sources = append(s.Sources, SourceCount{Source: src, Count: n})
	}
	sort.Slice(s.Sources, func(i, j int) bool {
		if s.Sources[i].Count != s.Sources[j].Count {
			return s.Sources[i].Count > s.Sources[j].Count
		}
		return s.Sources[i].Source < s.Sources[j].Source
	})
	return s
}

// WriteReport writes a human-readable summary.
func WriteReport(w io.Writer, s *Summary) error {
	var b strings.Builder
	pct := func(n int) float64 {
		if s.Total == 0 {
			return 0
		}
		return 100 * float64(n) / float64(s.Total)
	}
	fmt.Fprintf(&b, "%d requests in %s, %d failed (%.1f%%), %d source switches\n",
		s.Total, s.End.Sub(s.Start).Round(time.Millisecond), s.Failed, pct(s.Failed), s.Switches)
	if len(s.Sources) > 0 {
		fmt.Fprintf(&b, "\n%-40s %8s %7s\n", "SOURCE IP", "REQUESTS", "SHARE")
		for _, c := range s.Sources {
			fmt.Fprintf(&b, "%-40s %8d %6.1f%%\n", c.Source, c.Count, pct(c.Count))
		}
	}
	if len(s.Outages) > 0 {
		fmt.Fprintf(&b, "\nOUTAGES (longest %s)\n", s.MaxOutage().Round(time.Millisecond))
		for _, o := range s.Outages {
			fmt.Fprintf(&b, "  %s to %s  %8s  %d failed\n", o.Start.Format("15:04:05.000"), o.End.Format("15:04:05.000"),
				o.Duration().Round(time.Millisecond), o.Failed)
		}
	}
	if len(s.Failures) > 0 {
		fmt.Fprintf(&b, "\nFAILURES\n")
		for _, f := range s.Failures {
			fmt.Fprintf(&b, "  %s  #%d  %v\n", f.Sent.Format("15:04:05.000"), f.Seq, f.Err)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
