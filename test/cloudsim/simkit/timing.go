package simkit

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Dist is a distribution of delays: log-normal around Median (the delay is
// Median·e^(Sigma·Z), Z standard normal), clamped to [Min, Max]. Sigma 0 makes it the
// constant Median (still clamped); a zero Median draws 0. Max 0 means no upper clamp.
type Dist struct {
	Median time.Duration `json:"median"`
	Sigma  float64       `json:"sigma,omitempty"`
	Min    time.Duration `json:"min,omitempty"`
	Max    time.Duration `json:"max,omitempty"`
}

// Const is a distribution that always draws d.
func Const(d time.Duration) Dist { return Dist{Median: d} }

// Zero reports whether the distribution only draws 0.
func (d Dist) Zero() bool { return d.Median <= 0 && d.Min <= 0 }

// Draw draws one delay with r.
func (d Dist) Draw(r *rand.Rand) time.Duration {
	if d.Zero() {
		return 0
	}
	v := float64(d.Median)
	if d.Sigma > 0 {
		v *= math.Exp(d.Sigma * r.NormFloat64())
	}
	out := time.Duration(v)
	if out < d.Min {
		out = d.Min
	}
	if d.Max > 0 && out > d.Max {
		out = d.Max
	}
	return out
}

// Scaled multiplies every bound of the distribution by f.
func (d Dist) Scaled(f float64) Dist {
	s := func(x time.Duration) time.Duration { return time.Duration(float64(x) * f) }
	return Dist{Median: s(d.Median), Sigma: d.Sigma, Min: s(d.Min), Max: s(d.Max)}
}

func (d Dist) String() string {
	if d.Zero() {
		return "0"
	}
	s := fmt.Sprintf("lognormal(median %v, sigma %.2f)", d.Median, d.Sigma)
	if d.Sigma == 0 {
		s = d.Median.String()
	}
	if d.Min > 0 || d.Max > 0 {
		s += fmt.Sprintf(" in [%v, %v]", d.Min, d.Max)
	}
	return s
}

// Profile is how a cloud's control plane and fabric take their time. Every delay is drawn
// per event. docs/testbed.md gives the published figure each named profile is based on.
type Profile struct {
	// Name is how ParseProfile finds it ("instant", "aws", "azure", "gcp").
	Name string `json:"name"`
	// CallLatency is how long a mutating call takes before it returns (its change is
	// accepted when it returns).
	CallLatency Dist `json:"callLatency"`
	// Propagation is the time from an accepted change until the fabric delivers an address
	// to its new holder and stops delivering it to the old one (on Azure and GCP: until the
	// long-running operation completes, which is when their simulators apply it).
	Propagation Dist `json:"propagation"`
	// DescribeLag is how long after a write describe and list calls may still show the state
	// before it (EC2's eventual consistency).
	DescribeLag Dist `json:"describeLag"`
	// Attachment is how long an interface stays in an intermediate state (EC2 `attaching`,
	// `detaching`) before the final one.
	Attachment Dist `json:"attachment"`
	// Scale is the factor the profile was scaled by (1 for a named profile as published).
	Scale float64 `json:"scale"`
}

// Instant reports whether the profile has no delay at all (today's simulators).
func (p Profile) Instant() bool {
	return p.CallLatency.Zero() && p.Propagation.Zero() && p.DescribeLag.Zero() && p.Attachment.Zero()
}

// Scaled returns the profile with every delay multiplied by f (unit tests run the real
// profiles' shapes at a fraction of their length).
func (p Profile) Scaled(f float64) Profile {
	p.CallLatency, p.Propagation = p.CallLatency.Scaled(f), p.Propagation.Scaled(f)
	p.DescribeLag, p.Attachment = p.DescribeLag.Scaled(f), p.Attachment.Scaled(f)
	if p.Scale == 0 {
		p.Scale = 1
	}
	p.Scale *= f
	return p
}

func (p Profile) String() string {
	s := p.Name
	if p.Scale != 1 && p.Scale != 0 {
		s += ":" + strconv.FormatFloat(p.Scale, 'g', -1, 64)
	}
	return fmt.Sprintf("%s (call %v, propagation %v, describe lag %v, attachment %v)", s, p.CallLatency,
		p.Propagation, p.DescribeLag, p.Attachment)
}

// The named profiles. The figures and their sources are in docs/testbed.md ("Cloud timing").
var profiles = map[string]Profile{
	"instant": {Name: "instant", Scale: 1},
	// EC2: Elastic IP reassociation measured at 5-6 s (NGINX's keepalived guide for AWS); no
	// figure is published for a secondary private IP reassigned with AllowReassignment, which
	// is applied asynchronously too: the same figure is used. Call latency, describe lag and
	// attachment times are not published: assumptions (docs/testbed.md).
	"aws": {Name: "aws", Scale: 1,
		CallLatency: Dist{Median: 150 * time.Millisecond, Sigma: 0.4, Min: 50 * time.Millisecond, Max: 2 * time.Second},
		Propagation: Dist{Median: 5500 * time.Millisecond, Sigma: 0.15, Min: 3 * time.Second, Max: 20 * time.Second},
		DescribeLag: Dist{Median: time.Second, Sigma: 0.7, Max: 10 * time.Second},
		Attachment:  Dist{Median: 3 * time.Second, Sigma: 0.4, Min: time.Second, Max: 15 * time.Second}},
	// Azure: a NIC ipConfiguration update's operation typically takes 30-90 s, with outliers
	// of minutes (F5's failover reports, azure-cli and SDK issues): log-normal with 30-90 s as
	// its middle two thirds. ARM reads are consistent: the NIC shows Updating meanwhile.
	"azure": {Name: "azure", Scale: 1,
		CallLatency: Dist{Median: 500 * time.Millisecond, Sigma: 0.5, Min: 100 * time.Millisecond, Max: 5 * time.Second},
		Propagation: Dist{Median: 52 * time.Second, Sigma: 0.55, Min: 10 * time.Second, Max: 10 * time.Minute}},
	// GCE: an alias IP or access config update is a zonal operation that takes seconds; no
	// distribution is published (assumption). Reads show the operation RUNNING meanwhile.
	"gcp": {Name: "gcp", Scale: 1,
		CallLatency: Dist{Median: 300 * time.Millisecond, Sigma: 0.5, Min: 100 * time.Millisecond, Max: 3 * time.Second},
		Propagation: Dist{Median: 4 * time.Second, Sigma: 0.5, Min: time.Second, Max: time.Minute}},
}

// ProfileNames lists the named profiles.
func ProfileNames() []string {
	var out []string
	for n := range profiles {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ParseProfile returns the named profile: "instant", "aws", "azure" or "gcp", optionally
// followed by ":<factor>" to scale every delay ("aws:0.01" is the AWS profile at 1/100th).
// The empty name is "instant".
func ParseProfile(s string) (Profile, error) {
	name, factor, scaled := strings.Cut(s, ":")
	if name == "" && !scaled {
		name = "instant"
	}
	p, ok := profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("timing profile %q: unknown, want one of %s (optionally :<scale factor>)",
			s, strings.Join(ProfileNames(), ", "))
	}
	if scaled {
		f, err := strconv.ParseFloat(factor, 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) {
			return Profile{}, fmt.Errorf("timing profile %q: scale factor %q is not a positive number", s, factor)
		}
		p = p.Scaled(f)
	}
	return p, nil
}

// MustProfile is ParseProfile for names fixed in code.
func MustProfile(s string) Profile {
	p, err := ParseProfile(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Timing draws a profile's delays from one seeded generator, so that a run is reproducible
// given its seed and the order of the simulator's events. The zero value is not usable; call
// NewTiming. It is safe for concurrent use.
type Timing struct {
	mu   sync.Mutex
	p    Profile
	seed int64
	r    *rand.Rand
}

// NewTiming returns a Timing for p seeded with seed; seed 0 takes one from the clock (Seed
// says which, to print and replay).
func NewTiming(p Profile, seed int64) *Timing {
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	return &Timing{p: p, seed: seed, r: rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))}
}

// Profile returns the profile drawn from.
func (t *Timing) Profile() Profile { return t.p }

// Seed returns the generator's seed.
func (t *Timing) Seed() int64 { return t.seed }

func (t *Timing) draw(d Dist) time.Duration {
	if d.Zero() {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return d.Draw(t.r)
}

// CallLatency draws a mutating call's latency.
func (t *Timing) CallLatency() time.Duration { return t.draw(t.p.CallLatency) }

// Propagation draws a change's propagation delay.
func (t *Timing) Propagation() time.Duration { return t.draw(t.p.Propagation) }

// DescribeLag draws how long a write stays invisible to describe calls.
func (t *Timing) DescribeLag() time.Duration { return t.draw(t.p.DescribeLag) }

// Attachment draws how long an interface stays attaching or detaching.
func (t *Timing) Attachment() time.Duration { return t.draw(t.p.Attachment) }

// Timed gives a simulator a timing profile: embedded, it offers SetTiming and Timing, and
// draws call latencies and operation durations. The zero value is the instant profile. It is
// safe for concurrent use.
type Timed struct {
	mu sync.Mutex
	t  *Timing
}

// SetTiming makes the simulator take its time as p says, drawing delays from a generator
// seeded with seed (0: from the clock); it returns the seed used, to print and replay.
func (x *Timed) SetTiming(p Profile, seed int64) int64 {
	t := NewTiming(p, seed)
	x.mu.Lock()
	x.t = t
	x.mu.Unlock()
	return t.Seed()
}

// Timing returns the profile in use and its seed (instant and 0 before SetTiming).
func (x *Timed) Timing() (Profile, int64) {
	t := x.timing()
	if t == nil {
		return profiles["instant"], 0
	}
	return t.Profile(), t.Seed()
}

func (x *Timed) timing() *Timing { x.mu.Lock(); defer x.mu.Unlock(); return x.t }

// CallDelay waits out a mutating call's drawn latency (reads take none); it returns false
// when ctx ends first.
func (x *Timed) CallDelay(ctx context.Context, mutating bool) bool {
	t := x.timing()
	if t == nil || !mutating {
		return true
	}
	return wait(ctx, t.CallLatency())
}

// OperationTime draws how long a long-running operation runs before its change applies
// (the profile's propagation).
func (x *Timed) OperationTime() time.Duration {
	if t := x.timing(); t != nil {
		return t.Propagation()
	}
	return 0
}

// TimingDoc selects a timing profile by name (ParseProfile) and its seed, in admin documents.
type TimingDoc struct {
	Profile string `json:"profile"`
	Seed    int64  `json:"seed,omitempty"`
}

// Apply sets the profile on x.
func (d TimingDoc) Apply(x interface {
	SetTiming(Profile, int64) int64
}) error {
	p, err := ParseProfile(d.Profile)
	if err != nil {
		return err
	}
	x.SetTiming(p, d.Seed)
	return nil
}
