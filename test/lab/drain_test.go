package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/test/netns"
)

// TestDrainNewConnOnPinnedPorts: a new connection that reuses the ports of one pinned to a
// gateway before it was drained leaves through another gateway. Ephemeral ports come round
// again and the datapath's pin outlives its connection; kept on the draining gateway, such
// connections were still in flight through it when its address moved at the grace end, and
// failed (issue 14's drain-long failures, docs/lab.md "Drain"). The test reuses a source port
// on purpose, so it needs neither load nor a long run, and checks where the connection left,
// not when.
func TestDrainNewConnOnPinnedPorts(t *testing.T) {
	skipUnlessRoot(t)
	skipUnlessBinaries(t)
	l := upLab(t, Config{Zones: 2, GatewaysPerZone: 2, BinDir: binDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := l.WaitFor(ctx, 3*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		t.Fatal(err)
	}
	victim := holderIn(t, before, l, zoneName(0))
	var seen []string // the victim's addresses as the echo server sees them
	for _, ip := range before.HeldBy(victim) {
		seen = append(seen, cmpOr(before.Public[ip], ip))
	}
	pod := l.Monitor
	via := func(port int) string {
		t.Helper()
		src, err := getFromPort(ctx, pod, l.Echo, port)
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	// Ports whose connection left through the victim: pinned there.
	var pinned []int
	for port := 41000; port < 41064 && len(pinned) < 8; port++ {
		if src := via(port); slices.Contains(seen, src) {
			pinned = append(pinned, port)
		}
	}
	if len(pinned) == 0 {
		t.Fatalf("no connection of 64 left through %s (%v)", victim, seen)
	}

	if err := l.Drain(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Undrain(context.WithoutCancel(ctx), victim) })
	if _, err := l.WaitFor(ctx, time.Minute, victim+" Draining", func(v GatewayView) bool {
		return v.States[victim] == string(egressv1.GatewayDraining)
	}); err != nil {
		t.Fatal(err)
	}
	// The worker has applied the drain once 20 connections on fresh ports in a row avoid it.
	for port, clean := 42000, 0; clean < 20; port++ {
		if port > 42400 {
			t.Fatalf("new connections still left through the draining %s after 400 tries", victim)
		}
		clean++
		if slices.Contains(seen, via(port)) {
			clean = 0
		}
	}
	var wrong []string
	for _, port := range pinned {
		if src := via(port); slices.Contains(seen, src) {
			wrong = append(wrong, fmt.Sprintf("port %d via %s", port, src))
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d new connections on ports pinned to %s before its drain left through it while it drained (%s): they fail once its address moves",
			len(wrong), len(pinned), victim, strings.Join(wrong, ", "))
	}
}

// getFromPort sends GET http://dst:HTTPPort/ from pod on a connection from local port port,
// closed with a reset (no TIME_WAIT: the port can be used again at once), and returns the
// source address the echo server saw.
func getFromPort(ctx context.Context, pod *netns.Pod, dst netip.Addr, port int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var c net.Conn
	if err := pod.Do(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{Port: port}}
		var err error
		c, err = d.DialContext(ctx, "tcp4", netip.AddrPortFrom(dst, netns.HTTPPort).String())
		return err
	}); err != nil {
		return "", fmt.Errorf("connecting from port %d: %w", port, err)
	}
	defer func() {
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", dst); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(c, 1024))
	if err != nil {
		return "", fmt.Errorf("reading the answer on port %d: %w", port, err)
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok {
		return "", fmt.Errorf("answer on port %d: %q", port, b)
	}
	return strings.TrimSpace(body), nil
}
