// Command client is the e2e suite's workload: from inside a pod it asks the echo host which
// source address it sees (HTTP, a new connection every -interval) and keeps one long-lived TCP
// connection to the echo host's line-echo port, sending a line every -interval. Each second it
// prints one status line that the suite reads from the pod's log:
//
//	status http_ok=N http_err=N last_ip=IP flow_ok=N flow_err=N flow_conns=N flow_ip=IP last_err=...
//
// flow_conns counts the connections the flow needed: 1 as long as the first one survives.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

type stats struct {
	mu                                      sync.Mutex
	httpOK, httpErr, flowOK, flowErr, conns int
	lastIP, flowIP, lastErr                 string
}

func (s *stats) update(f func(*stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func main() {
	target := flag.String("target", "", "echo host address (required)")
	httpPort := flag.Int("http-port", 8080, "echo host's HTTP port (answers the caller's IP)")
	flowPort := flag.Int("flow-port", 5002, "echo host's line-echo port (prefixes the caller's IP)")
	interval := flag.Duration("interval", 200*time.Millisecond, "time between requests")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "client: -target is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s := &stats{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pollHTTP(ctx, s, fmt.Sprintf("http://%s/", net.JoinHostPort(*target, fmt.Sprint(*httpPort))), *interval)
	}()
	go func() { defer wg.Done(); flow(ctx, s, net.JoinHostPort(*target, fmt.Sprint(*flowPort)), *interval) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			s.update(func(s *stats) {
				fmt.Printf("status http_ok=%d http_err=%d last_ip=%s flow_ok=%d flow_err=%d flow_conns=%d flow_ip=%s last_err=%q\n",
					s.httpOK, s.httpErr, s.lastIP, s.flowOK, s.flowErr, s.conns, s.flowIP, s.lastErr)
			})
		}
	}
}

func pollHTTP(ctx context.Context, s *stats, url string, interval time.Duration) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for ctx.Err() == nil {
		ip, err := get(ctx, c, url)
		s.update(func(s *stats) {
			if err != nil {
				s.httpErr++
				s.lastErr = err.Error()
				return
			}
			s.httpOK++
			s.lastIP = ip
		})
		sleep(ctx, interval)
	}
}

func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// flow keeps one connection and sends a line every interval; on an error it counts it and
// dials again.
func flow(ctx context.Context, s *stats, addr string, interval time.Duration) {
	for ctx.Err() == nil {
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			s.update(func(s *stats) { s.flowErr++; s.lastErr = err.Error() })
			sleep(ctx, interval)
			continue
		}
		s.update(func(s *stats) { s.conns++ })
		r := bufio.NewReader(conn)
		for i := 0; ctx.Err() == nil; i++ {
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err = fmt.Fprintf(conn, "line %d\n", i); err == nil {
				var line string
				if line, err = r.ReadString('\n'); err == nil {
					ip, _, _ := strings.Cut(line, " ")
					s.update(func(s *stats) { s.flowOK++; s.flowIP = ip })
					sleep(ctx, interval)
					continue
				}
			}
			s.update(func(s *stats) { s.flowErr++; s.lastErr = err.Error() })
			break
		}
		conn.Close()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
