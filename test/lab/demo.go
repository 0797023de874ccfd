package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// DemoOptions tune the walkthrough.
type DemoOptions struct {
	Config
	// OutDir receives report.html and report.json (default out/demo).
	OutDir string
	// DownFor is how long a rebooted gateway stays down (default Lab.LongDown: past NotReady
	// and the agent Lease, so the coordinator moves its address to the zone's other gateway).
	DownFor time.Duration
	// DrainFor is how long the drained gateway stays unlabelled (default Lab.LongDrain: past
	// the drain grace period, so its address moves).
	DrainFor time.Duration
	// Settle is how long the monitor keeps running after the gateway is whole again, before the
	// next event (default 5 s).
	Settle time.Duration
	// ReadyTimeout bounds every wait for the gateway to be whole (default 2 min).
	ReadyTimeout time.Duration
	// Out receives the walkthrough's narration and table.
	Out io.Writer
}

func (o *DemoOptions) defaults() {
	if o.OutDir == "" {
		o.OutDir = filepath.Join("out", "demo")
	}
	if o.Timing == "" {
		o.Timing = "aws"
	}
	if o.Settle == 0 {
		o.Settle = 5 * time.Second
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = o.Out
	}
}

// StepError names the walkthrough step that failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %q failed: %v", e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// Demo runs the walkthrough of DESIGN.md §7 on a new lab and tears it down: four zones, two
// gateways per zone (one Active with the zone's egress IP, one Standby), the EC2 simulator with
// the aws timing profile, a monitor flow in every zone and long-lived connections through every
// gateway; one Active gateway cold-rebooted long enough for its address to move to its zone's
// Standby (the cloud's delay shows on the time plot), then three at once, then a drain past the
// grace period. It
// prints the table and writes the report even when a step fails, with what was measured up to
// there; the error then names the step.
func Demo(ctx context.Context, opts DemoOptions) (rep *Report, err error) {
	opts.defaults()
	out := opts.Out
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	l, err := Up(ctx, opts.Config)
	if err != nil {
		return nil, &StepError{"start the lab", err}
	}
	defer func() {
		say("tearing the lab down")
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tearing down: %w", cerr))
		}
	}()
	say("lab up: %d zones, gateways %s, monitor pod %s (%s) on %s; kubeconfig %s; logs in %s",
		opts.Zones, strings.Join(names(l.Gateways()), " "), l.Monitor.Name, l.Monitor.IP, l.Monitor.Node.Name, l.Kubeconfig, filepath.Join(l.WorkDir(), "logs"))

	var (
		events    []Event
		notes     []string
		ipsBefore []string
		ipsAfter  []string
		public    = map[string]string{}
		mon       = l.NewMonitors()
		conns     *ConnSet
		monWG     sync.WaitGroup
		stopMon   = func() {}
	)
	finish := func(stepErr error) (*Report, error) {
		stopMon()
		monWG.Wait()
		if len(events) > 0 && events[len(events)-1].End.IsZero() {
			events[len(events)-1].End = time.Now()
		}
		if v, verr := l.View(context.WithoutCancel(ctx)); verr == nil {
			ipsAfter = v.EgressIPs
			for k, p := range v.Public {
				public[k] = p
			}
		}
		rec := RunRecord{Samples: mon.Samples(), Events: events, IPSetBefore: ipsBefore, IPSetAfter: ipsAfter, PublicOf: public,
			Moves: l.moveWindows()}
		if conns != nil {
			rec.Conns = conns.Records()
			conns.Close()
		}
		r := rec.Report()
		if stepErr != nil {
			notes = append(notes, "the walkthrough stopped early: "+stepErr.Error())
		}
		r.Notes = notes
		r.WriteTable(out)
		if werr := r.Write(opts.OutDir); werr != nil {
			stepErr = errors.Join(stepErr, werr)
		} else {
			fmt.Fprintf(out, "\nReport: %s\n", filepath.Join(opts.OutDir, "report.html"))
		}
		return r, stepErr
	}

	say("applying EgressGateway %q (aws, one egress IP per zone, affinity Any) and EgressPolicy monitor-egress", GatewayGroup)
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		return finish(&StepError{"apply the policy", err})
	}
	v, err := l.WaitFor(ctx, opts.ReadyTimeout, "the gateway to be Ready with an egress IP on every gateway", l.AllActive)
	if err != nil {
		return finish(&StepError{"wait until Ready", err})
	}
	ipsBefore = v.EgressIPs
	say("gateway ready: egress IPs %s", holdersString(v))

	mctx, mcancel := context.WithCancel(ctx)
	stopMon = mcancel
	monWG.Add(1)
	go func() {
		defer monWG.Done()
		mon.Run(mctx)
	}()
	conns = l.NewConns(mctx, ConnOptions{})
	if err := conns.Open(ctx, egressSources(v)); err != nil {
		return finish(&StepError{"open long-lived connections", err})
	}
	say("monitors: one request every %s from each of %d pods (one per zone) to http://%s:8080/; long-lived connections through every egress IP", MonitorInterval, len(mon), l.Echo)
	if err := sleep(ctx, opts.Settle); err != nil {
		return finish(&StepError{"warm up", err})
	}
	seen := sources(mon.Samples())
	say("echo server sees: %s", strings.Join(seen, " "))
	if want := egressSources(v); !slices.Equal(seen, want) {
		notes = append(notes, fmt.Sprintf("before any event the echo server saw %v, not the egress IPs %v: steering is incomplete", seen, want))
		say("WARNING: %s", notes[len(notes)-1])
	}

	if opts.DownFor == 0 {
		opts.DownFor = l.LongDown()
	}
	if opts.DrainFor == 0 {
		if opts.DrainFor, err = l.LongDrain(ctx); err != nil {
			return finish(&StepError{"read the drain grace period", err})
		}
	}
	// Each step hits Active gateways (holders of an egress IP) of the zones it names, in zone
	// order: with a Standby in the zone, the address moves there.
	zones := l.ZoneNames()
	type step struct {
		name, kind string
		zones      []string
	}
	steps := []step{{"cold reboot 1 of 4 active", KindColdReboot, zones[:1]}}
	if len(zones) >= 4 {
		steps = append(steps, step{"cold reboot 3 of 4 active", KindColdReboot, zones[1:4]})
	}
	if len(zones) >= 2 {
		steps = append(steps, step{"drain past the grace period", KindDrain, zones[1:2]})
	}
	for _, st := range steps {
		before, err := l.View(ctx)
		if err != nil {
			return finish(&StepError{st.name, err})
		}
		var nodes []string
		for _, z := range st.zones {
			if n := l.HolderIn(before, z); n != "" {
				nodes = append(nodes, n)
			}
		}
		if len(nodes) == 0 {
			return finish(&StepError{st.name, fmt.Errorf("no Active gateway in zones %v: %s", st.zones, before)})
		}
		var inc Incident
		switch st.kind {
		case KindColdReboot:
			say("%s: %s (agents killed, ports cut, all node state wiped; Node NotReady after %s; back after %s)", st.name, strings.Join(nodes, " "), opts.NotReadyAfter, opts.DownFor)
			inc, err = l.ColdReboot(ctx, opts.DownFor, nodes...)
		case KindDrain:
			say("%s: removing %s from %s for %s", st.name, GatewayLabel, nodes[0], opts.DrainFor)
			inc, err = l.DrainFor(ctx, opts.DrainFor, nodes[0])
		}
		ev := inc.Event(st.name)
		ev.IPSetBefore = before.EgressIPs
		for _, n := range nodes {
			for _, ip := range before.HeldBy(n) {
				ev.AffectedIPs = append(ev.AffectedIPs, ip)
				if p := before.Public[ip]; p != "" {
					ev.AffectedIPs = append(ev.AffectedIPs, p)
				}
			}
		}
		if n := len(events); n > 0 {
			events[n-1].End = ev.At
		}
		events = append(events, ev)
		cur := &events[len(events)-1]
		if cur.RestoredAt.IsZero() {
			cur.RestoredAt = time.Now()
		}
		if err != nil {
			return finish(&StepError{st.name, err})
		}
		say("%s: nodes back; waiting for the gateway to be whole", st.name)
		after, err := l.WaitFor(ctx, opts.ReadyTimeout, "the gateway to be whole again after "+st.name, l.AllActive)
		cur.IPSetAfter = after.EgressIPs
		if err != nil {
			return finish(&StepError{st.name, err})
		}
		cur.SettledAt = time.Now()
		say("%s: whole again after %s: %s", st.name, time.Since(cur.RestoredAt).Round(time.Millisecond), holdersString(after))
		// Connections that survived may wait for their next retransmission: Refill would
		// take them for stalled.
		conns.WaitFresh(ctx, l.ConnWait())
		if err := conns.Refill(ctx, egressSources(after)); err != nil {
			notes = append(notes, fmt.Sprintf("%s: reopening long-lived connections: %v", st.name, err))
		}
		if err := sleep(ctx, opts.Settle); err != nil {
			return finish(&StepError{st.name, err})
		}
	}
	return finish(nil)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func names(ns []*Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

func sources(s []Sample) []string {
	set := map[string]bool{}
	for _, x := range s {
		if x.OK() {
			set[x.Source] = true
		}
	}
	return slices.Sorted(keys(set))
}

func holdersString(v GatewayView) string {
	var parts []string
	for _, ip := range slices.Sorted(keys(v.Holders)) {
		s := ip + "@" + v.Holders[ip]
		if p := v.Public[ip]; p != "" {
			s += "(" + p + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
