package conformance

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
)

// BenchDiscoverNodes is a simulator harness's discovery benchmark: a cold provider (from
// newProvider) discovers refs in batches of batch nodes (as the coordinator asks, one
// gateway's nodes at a time) and one node at a time. Each mode reports the simulator's calls
// per run (count of them, and per method) and logs figure's FIGURE line.
func BenchDiscoverNodes(b *testing.B, refs []providers.NodeRef, batch int, sim SimCounters, newProvider func() providers.Provider,
	count func(calls map[string]int) int, figure func(mode string, calls map[string]int, took time.Duration) string) {
	ctx := context.Background()
	for _, mode := range []struct {
		name     string
		discover func(p providers.Provider) error
	}{
		{"batches-of-" + strconv.Itoa(batch), func(p providers.Provider) error {
			for chunk := range slices.Chunk(refs, batch) {
				if _, errs := providers.DiscoverNodes(ctx, p, chunk); errors.Join(errs...) != nil {
					return errors.Join(errs...)
				}
			}
			return nil
		}},
		{"one-at-a-time", func(p providers.Provider) error {
			for _, r := range refs {
				if _, err := p.DiscoverNode(ctx, r); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			var calls map[string]int
			var took time.Duration
			for b.Loop() {
				p := newProvider()
				sim.ResetCalls()
				start := time.Now()
				if err := mode.discover(p); err != nil {
					b.Fatal(err)
				}
				took = time.Since(start)
				calls = sim.CallCounts()
			}
			b.ReportMetric(float64(count(calls)), "calls/"+strconv.Itoa(len(refs))+"-nodes")
			for m, n := range calls {
				b.ReportMetric(float64(n), m+"-calls")
			}
			b.Log(figure(mode.name, calls, took))
		})
	}
}
