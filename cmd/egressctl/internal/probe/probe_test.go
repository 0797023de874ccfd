package probe

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers with the caller's IP, like the lab's echo server.
func echo(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	_, _ = w.Write([]byte(host + "\n"))
}

func TestRunAgainstEcho(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(echo))
	defer srv.Close()
	p, err := New(Config{URL: srv.URL, Interval: 20 * time.Millisecond, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Total < 5 || s.Failed != 0 {
		t.Fatalf("%d requests, %d failed; want several, none failed: %v", s.Total, s.Failed, s.Failures)
	}
	if len(s.Sources) != 1 || s.Sources[0].Source != "127.0.0.1" || s.Sources[0].Count != s.Total {
		t.Errorf("sources %v, want every request from 127.0.0.1", s.Sources)
	}
	for i, r := range s.Results {
		if r.Seq != i || r.Done.Before(r.Sent) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
}

// TestFailover scripts an echo server through a failover: ten answers from one egress IP,
// five failures, then a second egress IP.
func TestFailover(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch i := n.Add(1) - 1; {
		case i < 10:
			_, _ = w.Write([]byte("192.0.2.10"))
		case i < 15:
			http.Error(w, "gateway down", http.StatusBadGateway)
		default:
			_, _ = w.Write([]byte("2001:db8::20\n"))
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := 0
	p, err := New(Config{URL: srv.URL, Interval: 10 * time.Millisecond, KeepAlive: true, OnResult: func(Result) {
		if seen++; seen == 30 {
			cancel()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Failed != 5 || len(s.Failures) != 5 {
		t.Errorf("%d failed, want 5", s.Failed)
	}
	for _, f := range s.Failures {
		if !strings.Contains(f.Err.Error(), "502") {
			t.Errorf("failure %v does not name the status", f.Err)
		}
	}
	counts := map[string]int{}
	for _, c := range s.Sources {
		counts[c.Source] = c.Count
	}
	if counts["192.0.2.10"] != 10 || counts["2001:db8::20"] != s.Total-15 || len(counts) != 2 {
		t.Errorf("sources %v of %d requests", s.Sources, s.Total)
	}
	if len(s.Outages) == 0 || s.MaxOutage() <= 0 {
		t.Errorf("outages %v", s.Outages)
	}
	var b bytes.Buffer
	if err := WriteReport(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"192.0.2.10", "2001:db8::20", "OUTAGES", "FAILURES", "5 failed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestTimeoutAndBadAnswers(t *testing.T) {
	release := make(chan struct{})
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			select { // a black-holed request
			case <-release:
			case <-r.Context().Done():
			}
		case 2:
			_, _ = w.Write([]byte("<html>proxy error</html>"))
		default:
			echo(w, r)
		}
	}))
	defer srv.Close()
	defer close(release)
	p, err := New(Config{URL: srv.URL, Interval: 30 * time.Millisecond, Timeout: 100 * time.Millisecond, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	s, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("Run took %s; in-flight requests must end at their timeout", took)
	}
	if s.Failed != 2 {
		t.Fatalf("%d failed, want the hung request and the bad answer: %v", s.Failed, s.Failures)
	}
	var timedOut, badAnswer bool
	for _, f := range s.Failures {
		timedOut = timedOut || errors.Is(f.Err, context.DeadlineExceeded) || strings.Contains(f.Err.Error(), "deadline")
		badAnswer = badAnswer || strings.Contains(f.Err.Error(), "not an IP address")
		if f.Latency() > time.Second {
			t.Errorf("failure %v took %s", f.Err, f.Latency())
		}
	}
	if !timedOut || !badAnswer {
		t.Errorf("failures %v: want a timeout and a bad answer", s.Failures)
	}
}

func TestSummarizeOutages(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	fail := errors.New("refused")
	results := []Result{
		{Seq: 3, Sent: at(150), Done: at(160), Err: fail},
		{Seq: 0, Sent: at(0), Done: at(5), Source: "192.0.2.1"},
		{Seq: 1, Sent: at(50), Done: at(55), Source: "192.0.2.2"},
		{Seq: 2, Sent: at(100), Done: at(1100), Err: fail},
		{Seq: 4, Sent: at(200), Done: at(205), Source: "192.0.2.2"},
		{Seq: 5, Sent: at(250), Done: at(255), Source: "192.0.2.1"},
		{Seq: 6, Sent: at(300), Done: at(310), Err: fail},
	}
	s := summarize(t0, at(400), results)
	if s.Total != 7 || s.Failed != 3 || s.Switches != 2 {
		t.Errorf("total %d failed %d switches %d", s.Total, s.Failed, s.Switches)
	}
	if len(s.Outages) != 2 {
		t.Fatalf("outages %v, want 2", s.Outages)
	}
	// The first outage runs from the first failed send to the next successful send.
	if o := s.Outages[0]; !o.Start.Equal(at(100)) || !o.End.Equal(at(200)) || o.Failed != 2 {
		t.Errorf("first outage %+v", o)
	}
	// The last, unfinished one ends with its last failure.
	if o := s.Outages[1]; !o.Start.Equal(at(300)) || !o.End.Equal(at(310)) || o.Failed != 1 {
		t.Errorf("last outage %+v", o)
	}
	if s.MaxOutage() != 100*time.Millisecond {
		t.Errorf("max outage %s", s.MaxOutage())
	}
	if s.Sources[0].Source != "192.0.2.1" || s.Sources[0].Count != 2 || s.Sources[1].Count != 2 {
		t.Errorf("sources %v", s.Sources)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{{}, {URL: "ftp://x"}, {URL: "http://127.0.0.1:1", Interval: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
