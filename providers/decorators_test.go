package providers_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/conformance"
)

type fake struct {
	name string
	err  error
}

func (f *fake) Name() string {
	if f.name == "" {
		return "fake"
	}
	return f.name
}
func (f *fake) DiscoverNode(context.Context, providers.NodeRef) (*providers.NodeInfo, error) {
	return &providers.NodeInfo{}, f.err
}
func (f *fake) EnsureIP(context.Context, providers.EnsureRequest) (*providers.Assignment, error) {
	return &providers.Assignment{}, f.err
}
func (f *fake) MoveIP(context.Context, providers.MoveRequest) (*providers.Assignment, error) {
	return &providers.Assignment{}, f.err
}
func (f *fake) ReleaseIP(context.Context, providers.ReleaseRequest) error { return f.err }
func (f *fake) ListOwned(context.Context, string) ([]providers.OwnedResource, error) {
	return nil, f.err
}
func (f *fake) ReleaseOwned(context.Context, providers.OwnedResource) error { return f.err }

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := providers.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{}
	p := m.Wrap(f)
	ctx := context.Background()
	if _, err := p.EnsureIP(ctx, providers.EnsureRequest{}); err != nil {
		t.Fatal(err)
	}
	f.err = &providers.Error{Kind: providers.KindThrottled, Op: "x"}
	if _, err := p.EnsureIP(ctx, providers.EnsureRequest{}); !providers.IsThrottled(err) {
		t.Fatalf("error kind lost through the decorator: %v", err)
	}
	f.err = errors.New("boom")
	_ = p.ReleaseIP(ctx, providers.ReleaseRequest{})

	want := map[string]float64{
		`egressd_cloud_calls_total{operation="EnsureIP",provider="fake"}`:                   2,
		`egressd_cloud_errors_total{kind="Throttled",operation="EnsureIP",provider="fake"}`: 1,
		`egressd_cloud_errors_total{kind="Other",operation="ReleaseIP",provider="fake"}`:    1,
	}
	got := counters(t, reg)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if n := testutil.CollectAndCount(reg, "egressd_cloud_call_duration_seconds"); n != 2 {
		t.Errorf("latency series = %d, want 2 (EnsureIP, ReleaseIP)", n)
	}
	// A second Metrics on the same registry is a programming error, reported, not a panic.
	if _, err := providers.NewMetrics(reg); err == nil {
		t.Error("registering twice succeeded")
	}
}

// counters gathers reg's counters by name{labels} (labels sorted, as Gather returns them).
func counters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for i, l := range mm.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetName() + `="` + l.GetValue() + `"`
			}
			key += "}"
			if mm.Counter != nil {
				got[key] = mm.GetCounter().GetValue()
			}
		}
	}
	return got
}

func TestRateLimitSeparatesReadsAndMutations(t *testing.T) {
	p := providers.WithRateLimit(&fake{}, providers.RateLimits{MutatingQPS: 1, MutatingBurst: 1, ReadQPS: 1000, ReadBurst: 100})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := p.EnsureIP(ctx, providers.EnsureRequest{}); err != nil {
		t.Fatal(err)
	}
	// The mutating bucket is empty for a second; reads are not held up by it.
	for range 50 {
		if _, err := p.DiscoverNode(ctx, providers.NodeRef{}); err != nil {
			t.Fatalf("read limited by the mutating bucket: %v", err)
		}
	}
	_, err := p.MoveIP(ctx, providers.MoveRequest{})
	if !providers.IsThrottled(err) || providers.RetryAfter(err) <= 0 {
		t.Fatalf("want Throttled with RetryAfter past the deadline, got %v", err)
	}
}

func TestRegistry(t *testing.T) {
	r := providers.Registry{"fake": func(_ context.Context, name string, _ json.RawMessage) (providers.Provider, error) {
		return &fake{name: name}, nil
	}}
	if _, err := r.New(context.Background(), "nope", "x", nil); !providers.IsNotFound(err) {
		t.Fatalf("unknown provider type: %v", err)
	}
	p, err := r.New(context.Background(), "fake", "fake-eu", nil)
	if err != nil || p.Name() != "fake-eu" {
		t.Fatalf("New: %v %v", p, err)
	}
}

// TestMetricsPerConfiguredName: two AWS providers (two accounts) on one Metrics have their own
// series, labelled with their configured names.
func TestMetricsPerConfiguredName(t *testing.T) {
	w := awssimtest.Harness{}.Setup(t, conformance.Topology{Zones: []string{"a"}, NodesPerZone: 1, IPsPerNode: 2}).(*awssimtest.World)
	reg := prometheus.NewPedanticRegistry()
	m, err := providers.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node := w.Nodes("a")[0]
	for name, calls := range map[string]int{"aws-prod": 1, "aws-staging": 2} {
		p, err := w.NewProvider(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		wrapped := providers.WithRateLimit(m.Wrap(p), providers.RateLimits{})
		if wrapped.Name() != name {
			t.Fatalf("decorated Name() = %q, want %q", wrapped.Name(), name)
		}
		for range calls {
			if _, err := wrapped.DiscoverNode(ctx, node); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := counters(t, reg)
	for name, want := range map[string]float64{"aws-prod": 1, "aws-staging": 2} {
		key := `egressd_cloud_calls_total{operation="DiscoverNode",provider="` + name + `"}`
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
	if _, ok := got[`egressd_cloud_calls_total{operation="DiscoverNode",provider="aws"}`]; ok {
		t.Error("a series is labelled with the provider type, not its configured name")
	}
}

// batchFake describes nodes in one call.
type batchFake struct {
	fake
	batches int
}

func (f *batchFake) DiscoverNodes(_ context.Context, nodes []providers.NodeRef) ([]*providers.NodeInfo, []error) {
	f.batches++
	infos := make([]*providers.NodeInfo, len(nodes))
	for i, n := range nodes {
		infos[i] = &providers.NodeInfo{Ref: n}
	}
	return infos, make([]error, len(nodes))
}

// TestDiscoverNodesThroughDecorators: the batch reaches a provider that has it through both
// decorators as one counted, rate-limited call; a provider without it is asked node by node.
func TestDiscoverNodesThroughDecorators(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := providers.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nodes := []providers.NodeRef{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	b := &batchFake{}
	infos, errs := providers.DiscoverNodes(ctx, m.Wrap(providers.WithRateLimit(b, providers.DefaultRateLimits)), nodes)
	if b.batches != 1 || len(infos) != 3 || infos[2].Ref.Name != "c" || errors.Join(errs...) != nil {
		t.Fatalf("batched: %d batches, infos %v, errs %v", b.batches, infos, errs)
	}
	if got := callsOf(t, reg, providers.OpDiscoverNodes); got != 1 {
		t.Errorf("DiscoverNodes calls counted %v, want 1", got)
	}
	// Without a batch: three DiscoverNode calls, each counted.
	infos, errs = providers.DiscoverNodes(ctx, m.Wrap(&fake{}), nodes)
	if len(infos) != 3 || errors.Join(errs...) != nil {
		t.Fatalf("one by one: infos %v, errs %v", infos, errs)
	}
	if got := callsOf(t, reg, providers.OpDiscoverNode); got != 3 {
		t.Errorf("DiscoverNode calls counted %v, want 3", got)
	}
	// A rate limit that refuses the batch fails every node with the Throttled error.
	limited := providers.WithRateLimit(&batchFake{}, providers.RateLimits{ReadQPS: 0.001, ReadBurst: 1})
	_, _ = limited.DiscoverNode(ctx, providers.NodeRef{})
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, errs := providers.DiscoverNodes(dctx, limited, nodes); !providers.IsThrottled(errs[0]) || !providers.IsThrottled(errs[2]) {
		t.Errorf("refused batch: %v", errs)
	}
}

// callsOf reads egressd_cloud_calls_total of the fake provider's op.
func callsOf(t *testing.T, reg prometheus.Gatherer, op providers.Operation) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "egressd_cloud_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" && l.GetValue() == string(op) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
