package simkit

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDistDraw(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	if got := (Dist{}).Draw(r); got != 0 {
		t.Fatalf("zero Dist drew %v", got)
	}
	if got := Const(3 * time.Second).Draw(r); got != 3*time.Second {
		t.Fatalf("Const(3s) drew %v", got)
	}
	d := Dist{Median: time.Second, Sigma: 0.5, Min: 500 * time.Millisecond, Max: 2 * time.Second}
	var draws []time.Duration
	for range 2000 {
		v := d.Draw(r)
		if v < d.Min || v > d.Max {
			t.Fatalf("draw %v outside [%v, %v]", v, d.Min, d.Max)
		}
		draws = append(draws, v)
	}
	slices.Sort(draws)
	// The median of a log-normal is its Median; 2000 draws put the sample's within 10%.
	if med := draws[len(draws)/2]; med < 900*time.Millisecond || med > 1100*time.Millisecond {
		t.Fatalf("sample median %v, want about 1s", med)
	}
	// Sigma 0.5 clamped at 2 s (1.39 sigma): about 8% of the draws sit at the clamp.
	atMax := len(draws) - slices.Index(draws, d.Max)
	if atMax < 80 || atMax > 250 {
		t.Fatalf("%d of 2000 draws at the upper clamp, want about 165", atMax)
	}
}

func TestTimingIsReproducible(t *testing.T) {
	p := MustProfile("azure")
	a, b, c := NewTiming(p, 42), NewTiming(p, 42), NewTiming(p, 43)
	var sa, sb, sc []time.Duration
	for range 20 {
		sa = append(sa, a.Propagation(), a.CallLatency())
		sb = append(sb, b.Propagation(), b.CallLatency())
		sc = append(sc, c.Propagation(), c.CallLatency())
	}
	if !slices.Equal(sa, sb) {
		t.Fatal("two timings of one seed drew different delays")
	}
	if slices.Equal(sa, sc) {
		t.Fatal("two seeds drew the same delays")
	}
	if NewTiming(p, 0).Seed() == 0 {
		t.Fatal("seed 0 should take one from the clock")
	}
	if d := a.DescribeLag(); d != 0 {
		t.Fatalf("azure describe lag %v, want 0 (ARM reads are consistent)", d)
	}
}

func TestParseProfile(t *testing.T) {
	for _, name := range []string{"", "instant"} {
		p, err := ParseProfile(name)
		if err != nil || !p.Instant() || p.Name != "instant" {
			t.Fatalf("ParseProfile(%q) = %+v, %v; want the instant profile", name, p, err)
		}
	}
	aws, err := ParseProfile("aws")
	if err != nil || aws.Instant() || aws.Propagation.Median != 5500*time.Millisecond {
		t.Fatalf("aws: %+v, %v", aws, err)
	}
	scaled, err := ParseProfile("aws:0.01")
	if err != nil || scaled.Propagation.Median != 55*time.Millisecond || scaled.Propagation.Max != 200*time.Millisecond ||
		scaled.Scale != 0.01 {
		t.Fatalf("aws:0.01: %+v, %v", scaled, err)
	}
	if !strings.Contains(scaled.String(), "aws:0.01") {
		t.Fatalf("String() = %q, want the scale in it", scaled)
	}
	for _, bad := range []string{"ec2", "aws:", "aws:-1", "aws:x", ":2"} {
		_, err := ParseProfile(bad)
		if err == nil || !strings.Contains(err.Error(), "timing profile") {
			t.Fatalf("ParseProfile(%q): %v, want an error naming the profile", bad, err)
		}
	}
	if _, err := ParseProfile("ec2"); !strings.Contains(err.Error(), "aws, azure, gcp, instant") {
		t.Fatalf("unknown profile error %q does not list the names", err)
	}
}

func TestTimed(t *testing.T) {
	var x Timed
	if p, seed := x.Timing(); !p.Instant() || seed != 0 {
		t.Fatalf("zero Timed: %v, seed %d; want instant", p, seed)
	}
	if d := x.OperationTime(); d != 0 {
		t.Fatalf("zero Timed operation time %v", d)
	}
	if err := (TimingDoc{Profile: "gcp", Seed: 5}).Apply(&x); err != nil {
		t.Fatal(err)
	}
	if p, seed := x.Timing(); p.Name != "gcp" || seed != 5 {
		t.Fatalf("after TimingDoc: %v, seed %d", p, seed)
	}
	if d := x.OperationTime(); d < time.Second || d > time.Minute {
		t.Fatalf("gcp operation time %v outside its clamp [1s, 1m]", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if x.CallDelay(ctx, true) {
		t.Fatal("CallDelay of a mutating call returned true on a cancelled context")
	}
	if !x.CallDelay(ctx, false) {
		t.Fatal("a read waited for a call latency")
	}
	if err := (TimingDoc{Profile: "softlayer"}).Apply(&x); err == nil {
		t.Fatal("TimingDoc with an unknown profile applied")
	}
}
