package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/envtest"
)

// The soak's knobs (make soak sets EGRESSD_SOAK from SOAK_DURATION).
const (
	// soakEnv is how long the soak plays events (a Go duration). Unset: TestSoak is skipped,
	// so make test never runs it.
	soakEnv = "EGRESSD_SOAK"
	// soakSeedEnv seeds the choice of events (default: the clock); soakTimingEnv is the EC2
	// simulator's timing profile (default "aws"), soakTimingSeedEnv its seed (default: derived
	// from the soak's seed).
	soakSeedEnv       = "EGRESSD_SOAK_SEED"
	soakTimingEnv     = "EGRESSD_SOAK_TIMING"
	soakTimingSeedEnv = "EGRESSD_SOAK_TIMING_SEED"

	// soakSettleTimeout bounds the wait for the cluster to settle after one event.
	soakSettleTimeout = 3 * time.Minute
	// soakQuiet is the window after each settle in which every monitor request must succeed.
	soakQuietFrom, soakQuietTo = 500 * time.Millisecond, 2500 * time.Millisecond
	// soakCheckEvery is the period of the continuous "held twice" check.
	soakCheckEvery = 250 * time.Millisecond
)

// soakPlay is what one played event reports to the soak loop.
type soakPlay struct {
	inc Incident
	// lostPods are the monitor pods the event took down with their worker (zone loss): their
	// requests until the settle are left out of the success rate.
	lostPods []string
	// rebaseline: the event changes the IP set on purpose (ipsPerZone churn); the set it
	// settles on is the new expected set.
	rebaseline bool
}

// soakKind is one kind of event the soak picks from.
type soakKind struct {
	name string
	play func(ctx context.Context, s *soak) (soakPlay, error)
}

// soakViolation is one broken invariant.
type soakViolation struct {
	At    time.Time
	Event string // the event under way or just played ("" before the first)
	What  string
}

// soakRecord is one event as the soak saw it.
type soakRecord struct {
	Kind       string
	Nodes      []string
	At         time.Time
	SettledAt  time.Time // zero: did not settle within soakSettleTimeout
	Requests   int       // monitor requests sent between At and SettledAt
	Failed     int
	Violations int
	Err        string
}

// soak is the state of one soak run.
type soak struct {
	l        *Lab
	rng      *rand.Rand
	mons     Monitors
	baseline []string // the expected status.egressIPs once settled
	extra    int      // churned EgressPolicies so far

	mu         sync.Mutex
	current    string
	violations []soakViolation
	lastCont   map[string]bool // continuous-check messages seen while still true (deduplicated)
	excluded   []excludedWindow
}

// excludedWindow: requests of pod sent in [from, to) are left out of the success rate.
type excludedWindow struct {
	pod      string
	from, to time.Time
}

func (s *soak) nViolations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.violations)
}

func (s *soak) violate(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, soakViolation{At: time.Now(), Event: s.current, What: what})
}

// TestSoak is the soak of issue 14 §6 (docs/lab.md, "Soak"): on one 4x2 lab with the EC2
// simulator's AWS timing and the four monitors running throughout, it plays random events
// (the short and long variants of every lab event, plus policy and ipsPerZone churn) for
// EGRESSD_SOAK, and checks: no egress IP held twice (cloud, fabric, gateway status, EgressIP
// ledger; continuously), no leaked cloud resource once settled (secondary IP, ENI or
// Elastic IP that no EgressIP owns), the IP set equal to the expected one after every settle,
// and every monitor request answered in a quiet window after every settle. It prints a
// summary (also written to out/soak.txt) and fails on any broken invariant. make soak runs it.
func TestSoak(t *testing.T) {
	raw := os.Getenv(soakEnv)
	if raw == "" {
		t.Skipf("the soak runs only when asked: %s=30m (make soak)", soakEnv)
	}
	if testing.Short() {
		t.Skip("the soak is not short")
	}
	dur, err := time.ParseDuration(raw)
	if err != nil || dur <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration such as 30m", soakEnv, raw)
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < dur+10*time.Minute {
		t.Fatalf("%s=%s does not fit in the test's -timeout (%s left): give go test -timeout at least %s (make soak SOAK_TIMEOUT=...)",
			soakEnv, dur, time.Until(dl).Round(time.Second), dur+10*time.Minute)
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv(soakSeedEnv); v != "" {
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: want an integer", soakSeedEnv, v)
		}
	}
	timing := "aws"
	if v := os.Getenv(soakTimingEnv); v != "" {
		timing = v
	}
	timingSeed := seed ^ 0x5eed
	if v := os.Getenv(soakTimingSeedEnv); v != "" {
		if timingSeed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: want an integer", soakTimingSeedEnv, v)
		}
	}
	skipUnlessRoot(t)
	skipUnlessBinaries(t)
	t.Logf("soak: %s, events seed %d (%s), timing %q seed %d (%s)", dur, seed, soakSeedEnv, timing, timingSeed, soakTimingSeedEnv)

	l := upLab(t, Config{Zones: 4, GatewaysPerZone: 2, BinDir: binDir(), Timing: timing, TimingSeed: timingSeed})
	ctx, cancel := context.WithTimeout(context.Background(), dur+8*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := l.WaitFor(ctx, 3*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitCloudConsistent(ctx, l, time.Minute); err != nil {
		t.Fatal(err)
	}
	s := &soak{l: l, rng: rand.New(rand.NewPCG(uint64(seed), 0x50a4)), mons: l.NewMonitors(),
		baseline: v.EgressIPs, lastCont: map[string]bool{}}
	t.Logf("soak: IP set at start %v (%s)", s.baseline, holdersString(v))

	mctx, mcancel := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() { s.mons.Run(mctx) })
	bg.Go(func() { s.checkContinuously(mctx) })
	stopBG := func() { mcancel(); bg.Wait() }
	defer stopBG()
	_ = sleep(ctx, 3*time.Second)

	kinds := s.kinds()
	start := time.Now()
	var records []soakRecord
	for time.Since(start) < dur && ctx.Err() == nil {
		k := kinds[s.rng.IntN(len(kinds))]
		s.mu.Lock()
		s.current = k.name
		s.mu.Unlock()
		rec, ok := s.playOne(ctx, t, k)
		records = append(records, rec)
		if !ok {
			t.Logf("soak: %s did not settle; stopping the soak", k.name)
			break
		}
	}
	elapsed := time.Since(start)
	stopBG()

	var b strings.Builder
	s.summary(&b, records, kinds, elapsed, seed, timing, timingSeed)
	fmt.Print(b.String())
	out := filepath.Join(envtest.RepoRoot(), "out")
	if err := os.MkdirAll(out, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(out, "soak.txt"), []byte(b.String()), 0o644)
	}
	if n := s.nViolations(); n > 0 {
		t.Errorf("soak: %d invariant violations (above)", n)
	}
}

// playOne plays one event, waits for the settle and checks the invariants; false when the
// cluster did not settle.
func (s *soak) playOne(ctx context.Context, t *testing.T, k soakKind) (soakRecord, bool) {
	nv := s.nViolations()
	t.Logf("soak: %s ...", k.name)
	p, err := k.play(ctx, s)
	rec := soakRecord{Kind: k.name, Nodes: p.inc.Nodes, At: p.inc.At}
	if rec.At.IsZero() {
		rec.At = time.Now()
	}
	if err != nil {
		rec.Err = err.Error()
		s.violate(fmt.Sprintf("%s failed: %v", k.name, err))
	}
	settled, view, serr := s.settle(ctx, p)
	if serr != nil {
		s.violate(fmt.Sprintf("not settled within %s after %s: %v", soakSettleTimeout, k.name, serr))
		rec.Violations = s.nViolations() - nv
		return rec, false
	}
	rec.SettledAt = settled
	for _, pod := range p.lostPods {
		s.mu.Lock()
		s.excluded = append(s.excluded, excludedWindow{pod, rec.At, settled})
		s.mu.Unlock()
	}
	if p.rebaseline {
		t.Logf("soak: %s changed the IP set on purpose: expected set %v → %v", k.name, s.baseline, view.EgressIPs)
		s.baseline = view.EgressIPs
	} else if !slices.Equal(view.EgressIPs, s.baseline) {
		s.violate(fmt.Sprintf("IP set after %s settled: %v, want %v", k.name, view.EgressIPs, s.baseline))
		s.baseline = view.EgressIPs // one violation per change, not one per later event
	}
	if err := s.leaks(ctx); err != nil {
		s.violate(fmt.Sprintf("after %s settled: %v", k.name, err))
	}
	// The quiet window: settled means every request is answered.
	_ = sleep(ctx, time.Until(settled.Add(soakQuietTo+MonitorTimeout)))
	var bad []string
	for _, smp := range s.mons.Since(settled.Add(soakQuietFrom)) {
		if smp.Sent.After(settled.Add(soakQuietTo)) {
			break
		}
		if !smp.OK() {
			bad = append(bad, fmt.Sprintf("%s@%s: %s", smp.Pod, smp.Sent.Format("15:04:05.000"), smp.Err))
		}
	}
	if len(bad) > 0 {
		s.violate(fmt.Sprintf("%d monitor requests failed in the quiet window after %s settled: %s", len(bad), k.name, strings.Join(bad[:min(len(bad), 5)], "; ")))
	}
	for _, smp := range s.mons.Since(rec.At) {
		if smp.Sent.After(settled) {
			break
		}
		if !slices.Contains(p.lostPods, smp.Pod) {
			rec.Requests++
			if !smp.OK() {
				rec.Failed++
			}
		}
	}
	rec.Violations = s.nViolations() - nv
	t.Logf("soak: %s on %v settled %s after its start (%d/%d monitor requests failed, %d violations); %s",
		k.name, p.inc.Nodes, settled.Sub(rec.At).Round(time.Millisecond), rec.Failed, rec.Requests, rec.Violations, holdersString(view))
	return rec, true
}

// settle waits until the gateway is whole (AllActive) with as many egress IPs as expected
// (the new count for a rebaseline), the cloud matches the ledger (cloudConsistent), the
// fabric delivers what the API holds, every agent and the controller renewed their Lease
// since the event ended (a restarted agent is up), and every monitor answered once since.
func (s *soak) settle(ctx context.Context, p soakPlay) (time.Time, GatewayView, error) {
	l := s.l
	deadline := time.Now().Add(soakSettleTimeout)
	restored := p.inc.RestoredAt
	if restored.IsZero() {
		restored = time.Now()
	}
	var last error
	for {
		v, err := l.View(ctx)
		switch {
		case err != nil:
			last = err
		case !l.AllActive(v):
			last = fmt.Errorf("gateway not whole: %s", v)
		case !p.rebaseline && len(v.EgressIPs) != len(s.baseline):
			last = fmt.Errorf("%d egress IPs, want %d: %v", len(v.EgressIPs), len(s.baseline), v.EgressIPs)
		case len(v.Holders) != len(v.EgressIPs):
			last = fmt.Errorf("%d egress IPs, %d held: %s", len(v.EgressIPs), len(v.Holders), holdersString(v))
		default:
			if err := cloudConsistent(ctx, l); err != nil {
				last = err
			} else if err := s.fabricCaughtUp(); err != nil {
				last = err
			} else if err := waitLeasesRenewed(ctx, l, restored, 5*time.Second); err != nil {
				// A restarted agent (or every agent, after the API server) is up and renewing.
				last = err
			} else {
				at := time.Now()
				if err := s.monitorsAnswer(ctx, at, time.Until(deadline)); err != nil {
					last = err
				} else {
					return at, v, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, GatewayView{}, last
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return time.Time{}, GatewayView{}, errors.Join(last, err)
		}
	}
}

// monitorsAnswer waits until every monitor has a successful request sent after t.
func (s *soak) monitorsAnswer(ctx context.Context, t time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(max(timeout, 5*time.Second))
	for {
		ok := map[string]bool{}
		for _, smp := range s.mons.Since(t) {
			if smp.OK() {
				ok[smp.Pod] = true
			}
		}
		var missing []string
		for _, p := range s.l.Monitors {
			if !ok[p.Name] {
				missing = append(missing, p.Name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("monitors %v answered nothing since %s", missing, t.Format("15:04:05.000"))
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// fabricCaughtUp checks the fabric delivers every secondary address to the instance the API
// holds it on, and nothing else.
func (s *soak) fabricCaughtUp() error {
	key := func(hs []awssim.Holding) []string {
		var out []string
		for _, h := range hs {
			if !h.Primary {
				out = append(out, h.PrivateIP.String()+"@"+h.Instance)
			}
		}
		slices.Sort(out)
		return out
	}
	api, fab := key(s.l.Sim.Holdings()), key(s.l.Sim.FabricHoldings())
	if !slices.Equal(api, fab) {
		return fmt.Errorf("fabric %v, API %v", fab, api)
	}
	return nil
}

// leaks checks, once settled, that every Elastic IP belongs to an EgressIP (cloudConsistent,
// part of the settle, covers the secondary addresses and the ENIs).
func (s *soak) leaks(ctx context.Context) error {
	ips, err := s.l.EgressIPs(ctx)
	if err != nil {
		return err
	}
	owned := map[string]bool{}
	for _, e := range ips {
		if a := e.Status.Handle.PublicAllocation; a != "" {
			owned[a] = true
		}
	}
	var errs []error
	for _, e := range s.l.Sim.Snapshot().EIPs {
		if !owned[e.Allocation] {
			errs = append(errs, fmt.Errorf("Elastic IP %s (%s) is no EgressIP's (leaked)", e.PublicIP, e.Allocation))
		}
	}
	return errors.Join(errs...)
}

// checkContinuously checks, every soakCheckEvery until ctx ends, that no egress IP is held
// twice: in the cloud's API state, in the fabric, in the gateway's status, in the ledger.
// A condition is recorded once when it starts to hold, not at every check.
func (s *soak) checkContinuously(ctx context.Context) {
	t := time.NewTicker(soakCheckEvery)
	defer t.Stop()
	for {
		var found []string
		twice := func(where string, ips []string) {
			n := map[string]int{}
			for _, ip := range ips {
				n[ip]++
			}
			for _, ip := range slices.Sorted(func(yield func(string) bool) {
				for ip := range n {
					if !yield(ip) {
						return
					}
				}
			}) {
				if n[ip] > 1 {
					found = append(found, fmt.Sprintf("%s held %d times in %s", ip, n[ip], where))
				}
			}
		}
		addrs := func(hs []awssim.Holding) []string {
			out := make([]string, len(hs))
			for i, h := range hs {
				out[i] = h.PrivateIP.String()
			}
			return out
		}
		twice("the cloud (Holdings)", addrs(s.l.Sim.Holdings()))
		twice("the fabric (FabricHoldings)", addrs(s.l.Sim.FabricHoldings()))
		if gw, err := s.l.GatewayStatus(ctx); err == nil {
			var st []string
			for _, z := range gw.Status.Zones {
				for _, e := range z.EgressIPs {
					st = append(st, e.IP)
				}
			}
			twice("the gateway status", st)
		}
		if ips, err := s.l.EgressIPs(ctx); err == nil {
			var led []string
			for _, e := range ips {
				led = append(led, e.Spec.IP)
			}
			twice("the EgressIP ledger", led)
		}
		now := map[string]bool{}
		for _, f := range found {
			now[f] = true
			s.mu.Lock()
			seen := s.lastCont[f]
			s.mu.Unlock()
			if !seen {
				s.violate(f)
			}
		}
		s.mu.Lock()
		s.lastCont = now
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pickGateway returns a random gateway: a holder of an egress IP three times in four (the
// events that move addresses), or always when holder is set; any gateway otherwise.
func (s *soak) pickGateway(ctx context.Context, holder bool) (string, error) {
	v, err := s.l.View(ctx)
	if err != nil {
		return "", err
	}
	var holders []string
	for _, n := range v.Holders {
		if !slices.Contains(holders, n) {
			holders = append(holders, n)
		}
	}
	slices.Sort(holders)
	if len(holders) > 0 && (holder || s.rng.IntN(4) < 3) {
		return holders[s.rng.IntN(len(holders))], nil
	}
	gws := names(s.l.Gateways())
	return gws[s.rng.IntN(len(gws))], nil
}

// kinds lists the soak's events: the short and long variants of every lab event (gateways
// only: the monitors' workers go down only with their zone, and a zone loss leaves at least
// one zone up), and the churn.
func (s *soak) kinds() []soakKind {
	l := s.l
	var ks []soakKind
	// onGateway adds an event on one gateway; holder: always one holding an egress IP (the
	// controller crash needs a move to land in).
	onGateway := func(name string, holder bool, fn func(ctx context.Context, node string) (Incident, error)) {
		ks = append(ks, soakKind{name, func(ctx context.Context, s *soak) (soakPlay, error) {
			node, err := s.pickGateway(ctx, holder)
			if err != nil {
				return soakPlay{}, err
			}
			inc, err := fn(ctx, node)
			if len(inc.Nodes) == 0 {
				inc.Nodes = []string{node}
			}
			return soakPlay{inc: inc}, err
		}})
	}
	for _, v := range []struct {
		name string
		down func() time.Duration
	}{{"short", l.ShortDown}, {"long", l.LongDown}} {
		onGateway(KindColdReboot+"/"+v.name, false, func(ctx context.Context, n string) (Incident, error) {
			return l.ColdReboot(ctx, v.down(), n)
		})
		onGateway(KindAgentCrash+"/"+v.name, false, func(ctx context.Context, n string) (Incident, error) {
			return l.CrashAgent(ctx, v.down(), n)
		})
		onGateway(KindPartition+"/"+v.name, false, func(ctx context.Context, n string) (Incident, error) {
			return l.PartitionFor(ctx, v.down(), n)
		})
		ks = append(ks, soakKind{KindZoneLoss + "/" + v.name, func(ctx context.Context, s *soak) (soakPlay, error) {
			zones := l.ZoneNames()
			s.rng.Shuffle(len(zones), func(i, j int) { zones[i], zones[j] = zones[j], zones[i] })
			lost := zones[:1+s.rng.IntN(len(zones)-1)]
			var pods []string
			for _, p := range l.Monitors {
				if slices.Contains(lost, p.Node.Zone.Name) {
					pods = append(pods, p.Name)
				}
			}
			inc, err := l.LoseZones(ctx, v.down(), lost...)
			return soakPlay{inc: inc, lostPods: pods}, err
		}})
		ks = append(ks, soakKind{KindAPIServerRestart + "/" + v.name, func(ctx context.Context, s *soak) (soakPlay, error) {
			inc, err := l.RestartAPIServer(ctx, v.down())
			return soakPlay{inc: inc}, err
		}})
	}
	onGateway(KindDrain+"/short", false, func(ctx context.Context, n string) (Incident, error) {
		g, err := l.DrainGrace(ctx)
		if err != nil {
			return Incident{}, err
		}
		return l.DrainFor(ctx, g/2, n)
	})
	onGateway(KindDrain+"/long", false, func(ctx context.Context, n string) (Incident, error) {
		d, err := l.LongDrain(ctx)
		if err != nil {
			return Incident{}, err
		}
		return l.DrainFor(ctx, d, n)
	})
	onGateway(KindControllerCrash, true, func(ctx context.Context, n string) (Incident, error) {
		var crash Incident
		inc, err := l.CrashControllerInMove(ctx, time.Minute, l.ShortDown(), func() error {
			var err error
			crash, err = l.ColdCrash(ctx, n)
			return err
		})
		inc.Nodes = []string{n}
		if !crash.At.IsZero() {
			// The node comes back as a long cold reboot would.
			_ = sleep(ctx, l.LongDown()-time.Since(crash.At))
			err = errors.Join(err, l.Restore(context.WithoutCancel(ctx), n))
			inc.At, inc.RestoredAt = crash.At, time.Now()
		}
		return inc, err
	})
	ks = append(ks, soakKind{"churn/policy", func(ctx context.Context, s *soak) (soakPlay, error) {
		return soakPlay{inc: Incident{Kind: "churn", At: time.Now()}}, s.churnPolicy(ctx)
	}})
	ks = append(ks, soakKind{"churn/ips-per-zone", func(ctx context.Context, s *soak) (soakPlay, error) {
		inc := Incident{Kind: "churn", At: time.Now()}
		err := s.churnIPsPerZone(ctx)
		inc.RestoredAt = time.Now()
		return soakPlay{inc: inc, rebaseline: true}, err
	}})
	return ks
}

// churnPolicy creates an extra EgressPolicy for the monitors (another destination network
// through the same gateway), keeps it a few seconds and deletes it: the IP set must not move.
func (s *soak) churnPolicy(ctx context.Context) error {
	s.extra++
	pol := &egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("soak-extra-%d", s.extra), Namespace: WorkloadNS},
		Spec: egressv1.EgressPolicyRule{
			PodSelector:      metav1.LabelSelector{MatchLabels: map[string]string{"app": MonitorPodName}},
			DestinationCIDRs: []string{"198.51.100.0/24"},
			Gateway:          GatewayGroup,
		},
	}
	if err := s.l.API.Client.Create(ctx, pol); err != nil {
		return fmt.Errorf("creating EgressPolicy %s: %w", pol.Name, err)
	}
	_ = sleep(ctx, time.Duration(2+s.rng.IntN(4))*time.Second)
	if err := s.l.API.Client.Delete(ctx, pol); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting EgressPolicy %s: %w", pol.Name, err)
	}
	return nil
}

// churnIPsPerZone scales the gateway's ipsPerZone 1 → 2, waits until the second address of
// every zone is held, and back to 1: the set it settles on may keep either address of a
// zone, so the soak takes it as the new expected set.
func (s *soak) churnIPsPerZone(ctx context.Context) error {
	l := s.l
	set := func(n int) error {
		return retryConflict(ctx, func() error {
			var gw egressv1.EgressGateway
			if err := l.API.Client.Get(ctx, client.ObjectKey{Name: GatewayGroup}, &gw); err != nil {
				return err
			}
			gw.Spec.Addresses.Cloud.IPsPerZone = int32(n)
			return l.API.Client.Update(ctx, &gw)
		})
	}
	if err := set(2); err != nil {
		return fmt.Errorf("scaling ipsPerZone to 2: %w", err)
	}
	want := 2 * l.Config.Zones
	if _, err := l.WaitFor(ctx, 2*time.Minute, fmt.Sprintf("%d egress IPs held", want), func(v GatewayView) bool {
		return l.AllActive(v) && len(v.EgressIPs) == want && len(v.Holders) == want
	}); err != nil {
		_ = set(1)
		return err
	}
	if err := set(1); err != nil {
		return fmt.Errorf("scaling ipsPerZone back to 1: %w", err)
	}
	_, err := l.WaitFor(ctx, 2*time.Minute, fmt.Sprintf("%d egress IPs", l.Config.Zones), func(v GatewayView) bool {
		return len(v.EgressIPs) == l.Config.Zones
	})
	return err
}

// summary writes the soak's summary: events per kind, failures, monitor success rate, settle
// times and every violation.
func (s *soak) summary(w io.Writer, records []soakRecord, kinds []soakKind, elapsed time.Duration, seed int64, timing string, timingSeed int64) {
	fmt.Fprintf(w, "\nSOAK SUMMARY: %s of events (%d played), 4 zones x 2 gateways, timing %q seed %d, events seed %d\n",
		elapsed.Round(time.Second), len(records), timing, timingSeed, seed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "event\truns\tfailed runs\tunsettled\trequests failed\tsettle max\t")
	var settles []time.Duration
	for _, k := range kinds {
		runs, failedRuns, unsettled, failed, requests := 0, 0, 0, 0, 0
		var maxSettle time.Duration
		for _, r := range records {
			if r.Kind != k.name {
				continue
			}
			runs++
			if r.Violations > 0 || r.Err != "" {
				failedRuns++
			}
			if r.SettledAt.IsZero() {
				unsettled++
			} else {
				d := r.SettledAt.Sub(r.At)
				maxSettle = max(maxSettle, d)
				settles = append(settles, d)
			}
			failed += r.Failed
			requests += r.Requests
		}
		if runs == 0 {
			fmt.Fprintf(tw, "%s\t0\t\t\t\t\t\n", k.name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d/%d\t%s\t\n", k.name, runs, failedRuns, unsettled, failed, requests, fmtDur(maxSettle))
	}
	tw.Flush()
	all := s.mons.Samples()
	total, ok, excl := 0, 0, 0
	for _, smp := range all {
		if s.excludedSample(smp) {
			excl++
			continue
		}
		total++
		if smp.OK() {
			ok++
		}
	}
	rate := 0.0
	if total > 0 {
		rate = 100 * float64(ok) / float64(total)
	}
	fmt.Fprintf(w, "monitors: %d requests (every %s from %d pods), %d failed, success %.3f%% (%d requests of monitors whose worker a zone loss took down left out)\n",
		total, MonitorInterval, len(s.mons), total-ok, rate, excl)
	if len(settles) > 0 {
		fmt.Fprintf(w, "settle (event start to whole, cloud and fabric consistent, every monitor answering): p50 %s, p99 %s, max %s\n",
			fmtDur(Percentile(settles, 50)), fmtDur(Percentile(settles, 99)), fmtDur(slices.Max(settles)))
	}
	fmt.Fprintf(w, "expected IP set at the end: %v\n", s.baseline)
	fmt.Fprintf(w, "invariant violations: %d\n", len(s.violations))
	for _, v := range s.violations {
		fmt.Fprintf(w, "  %s [%s] %s\n", v.At.Format("15:04:05.000"), v.Event, v.What)
	}
}

func (s *soak) excludedSample(smp Sample) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.excluded {
		if x.pod == smp.Pod && !smp.Sent.Before(x.from) && smp.Sent.Before(x.to) {
			return true
		}
	}
	return false
}
