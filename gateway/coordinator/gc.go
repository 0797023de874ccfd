package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
)

// GC releases cloud resources tagged as this cluster's that no EgressIP claims, once they are
// older than the grace period. Providers only list resources carrying this cluster's tag, so
// untagged and foreign resources are never even seen.
type GC struct {
	*Coordinator
	// firstSeen dates unclaimed resources whose creation time the cloud does not report.
	firstSeen map[string]time.Time
}

// NewGC returns the garbage collector; Start runs it.
func NewGC(c *Coordinator) *GC { return &GC{Coordinator: c, firstSeen: map[string]time.Time{}} }

// Start runs a pass every GCInterval until ctx ends (manager.Runnable; leader only).
func (g *GC) Start(ctx context.Context) error {
	t := time.NewTicker(g.cfg.GCInterval.Duration)
	defer t.Stop()
	for {
		if _, err := g.Collect(ctx); err != nil {
			log.FromContext(ctx).Error(err, "garbage collection pass")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Collect runs one pass and returns what it released.
func (g *GC) Collect(ctx context.Context) ([]providers.OwnedResource, error) {
	var list egressv1.EgressIPList
	if err := g.reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing the ledger for garbage collection: %w", err)
	}
	claimed := map[string]bool{}
	for _, e := range list.Items {
		for _, k := range []string{e.Spec.IP, e.Status.PublicIP, e.Status.Handle.Interface, e.Status.Handle.PublicAllocation} {
			if k != "" {
				claimed[k] = true
			}
		}
	}
	now := g.clock.Now()
	seen := map[string]bool{}
	var released []providers.OwnedResource
	var errs []error
	names := make([]string, 0, len(g.providers))
	for n := range g.providers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		p := g.providers[name]
		owned, err := p.ListOwned(ctx, g.cfg.ClusterName)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing %s resources of cluster %s: %w", name, g.cfg.ClusterName, err))
			continue
		}
		for _, res := range owned {
			if res.Owner.Cluster != "" && res.Owner.Cluster != g.cfg.ClusterName {
				continue // defence in depth: a provider bug must not make us touch another cluster
			}
			if isClaimed(res, claimed) {
				continue
			}
			key := name + "/" + string(res.Kind) + "/" + res.ID
			seen[key] = true
			born := res.Created
			if born.IsZero() {
				if _, ok := g.firstSeen[key]; !ok {
					g.firstSeen[key] = now
				}
				born = g.firstSeen[key]
			}
			if now.Sub(born) < g.cfg.GCGracePeriod.Duration {
				continue
			}
			if err := p.ReleaseOwned(ctx, res); err != nil {
				errs = append(errs, fmt.Errorf("releasing unclaimed %s %s: %w", res.Kind, res.ID, err))
				continue
			}
			delete(g.firstSeen, key)
			released = append(released, res)
			if g.metrics != nil {
				g.metrics.GCReleased.WithLabelValues(name, string(res.Kind)).Inc()
			}
		}
	}
	for k := range g.firstSeen {
		if !seen[k] {
			delete(g.firstSeen, k)
		}
	}
	return released, errors.Join(errs...)
}

// isClaimed: addresses are claimed by address (a private IP's ID may be its interface, which
// claimed addresses share), interfaces by ID.
func isClaimed(res providers.OwnedResource, claimed map[string]bool) bool {
	if res.Kind == providers.ResourceInterface {
		return claimed[res.ID]
	}
	if res.IP.IsValid() {
		return claimed[res.IP.String()]
	}
	return claimed[res.ID]
}

// NeedLeaderElection: only the leader collects.
func (g *GC) NeedLeaderElection() bool { return true }
