package bpf

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkClassifier measures the pod classifier with BPF_PROG_TEST_RUN at
// 10, 1k and 100k endpoints with 1k policy sets of 10 destination CIDRs each
// (10k rules) over 10 groups. The packet belongs to an established, pinned
// flow, the steady state of a busy node. ns/pkt is the kernel's own timing,
// the median of classifierChunks runs of b.N/classifierChunks packets (a run
// that another tenant of the machine interrupts reads high: single runs here
// spread over 185-300 ns at every size); map-bytes is the memory of the
// endpoints and rules maps. The three datapaths are filled once, before any
// timing. The "interleaved" sub-benchmark runs the three sizes in turn, 15
// rounds, and reports the medians of the per-round ratios to 10 endpoints:
// whether the classifier is flat, with the machine's slow spells hitting every
// size alike.
func BenchmarkClassifier(b *testing.B) {
	sizes := []int{10, 1000, 100000}
	beds := make([]classifierBed, len(sizes))
	for i, eps := range sizes {
		beds[i] = newClassifierBed(b, eps)
	}
	for _, bed := range beds {
		b.Run(fmt.Sprintf("endpoints=%d/policies=1000", bed.eps), func(b *testing.B) {
			b.ResetTimer()
			per := make([]float64, 0, classifierChunks)
			for range classifierChunks {
				per = append(per, bed.nsPerPkt(b, max(b.N/classifierChunks, 1)))
			}
			b.ReportMetric(median(per), "ns/pkt")
			b.ReportMetric(float64(bed.mapBytes), "map-bytes")
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		const rounds, repeat = 15, 100000
		ratios := make([][]float64, len(beds))
		b.ResetTimer()
		for r := 0; r < rounds; r++ {
			ns := make([]float64, len(beds))
			for i := range beds {
				// Rotate the order so that no size always runs right after the fill or first.
				j := (i + r) % len(beds)
				ns[j] = beds[j].nsPerPkt(b, repeat)
			}
			for i := range beds {
				ratios[i] = append(ratios[i], ns[i]/ns[0])
			}
		}
		for i, bed := range beds[1:] {
			b.ReportMetric(median(ratios[i+1]), fmt.Sprintf("eps%d/eps10", bed.eps))
		}
	})
}

// classifierChunks is how many kernel runs one sub-benchmark of BenchmarkClassifier splits
// its packets into.
const classifierChunks = 9

// classifierBed is one datapath of BenchmarkClassifier and the packet it classifies.
type classifierBed struct {
	eps      int
	d        *Datapath
	pkt      []byte
	mapBytes uint64
}

func newClassifierBed(b *testing.B, eps int) classifierBed {
	d := load(b, Limits{Endpoints: 131072, Rules: 16384})
	const sets, cidrs, groups = 1000, 10, 10
	for g := uint32(1); g <= groups; g++ {
		must(b, d.SetGroup(g, []Gateway{gwA, gwB}))
	}
	for s := uint32(1); s <= sets; s++ {
		for c := 0; c < cidrs; c++ {
			// Distinct /24s per set, spread over 10.x.y.0.
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(s >> 4), byte(s<<4) | byte(c), 0}), 24)
			must(b, d.SetRule(RuleKey{s, p}, Rule{Group: 1 + (s+uint32(c))%groups}))
		}
	}
	var probeSrc netip.Addr
	for i := 0; i < eps; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		must(b, d.SetEndpoint(ip, Endpoint{PolicySet: 1 + uint32(i)%sets, Ifindex: 1}))
		if i == eps/2 {
			probeSrc = ip
		}
	}
	all, err := d.Endpoints()
	must(b, err)
	set := all[probeSrc].PolicySet
	dst := netip.AddrFrom4([4]byte{100, byte(set >> 4), byte(set<<4) | 3, 7})
	pkt := packet(probeSrc, dst, unix.IPPROTO_TCP, 40000, 443)
	if got := run(b, d, pkt); got != actSteered {
		b.Fatalf("verdict %#x, want redirect", got)
	}
	mem, err := d.MapMemory()
	must(b, err)
	return classifierBed{eps: eps, d: d, pkt: pkt, mapBytes: mem["endpoints"] + mem["rules4"]}
}

// nsPerPkt classifies the bed's packet n times in one BPF_PROG_TEST_RUN and returns the
// kernel's ns per run.
func (c classifierBed) nsPerPkt(b *testing.B, n int) float64 {
	_, per, err := c.d.Program(HookPod).Benchmark(c.pkt, n, nil)
	if err != nil {
		b.Fatal(err)
	}
	return float64(per.Nanoseconds())
}

// median sorts xs and returns its median.
func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// TestMapMemory reports the map memory at 100k endpoints × 1k policy sets ×
// 10 CIDRs, the scale DESIGN.md §1 compares with Cilium's pods × CIDRs map.
func TestMapMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 110k map entries")
	}
	d := load(t, Limits{Endpoints: 131072, Rules: 16384})
	for s := uint32(1); s <= 1000; s++ {
		for c := 0; c < 10; c++ {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(s >> 4), byte(s<<4) | byte(c), 0}), 24)
			must(t, d.SetRule(RuleKey{s, p}, Rule{Group: 1}))
		}
	}
	for i := 0; i < 100000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		must(t, d.SetEndpoint(ip, Endpoint{PolicySet: 1 + uint32(i)%1000}))
	}
	mem, err := d.MapMemory()
	must(t, err)
	t.Logf("100k endpoints × 1k policy sets × 10 CIDRs: endpoints %.1f MiB, rules4 %.1f MiB (a pods × CIDRs map would hold 1M entries)",
		float64(mem["endpoints"])/(1<<20), float64(mem["rules4"])/(1<<20))
	t.Logf("fixed-size maps: flows %.1f MiB, return_flows %.1f MiB, groups %.1f MiB, stats %.1f MiB",
		float64(mem["flows"])/(1<<20), float64(mem["return_flows"])/(1<<20), float64(mem["groups"])/(1<<20), float64(mem["stats"])/(1<<20))
}

// BenchmarkMapFill: the cost of MapFill with the endpoints map full (64k entries), the most an
// agent's metrics scrape pays for it.
func BenchmarkMapFill(b *testing.B) {
	d := load(b, Limits{})
	for i := range 65536 {
		must(b, d.SetEndpoint(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Endpoint{PolicySet: 1}))
	}
	b.ResetTimer()
	for b.Loop() {
		fill, err := d.MapFill()
		must(b, err)
		if fill[0].Entries != 65536 {
			b.Fatalf("endpoints: %+v", fill[0])
		}
	}
}
