package agent

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// clusterView is the cache of every pod and node of the cluster that a gateway node reads to
// admit tunnelled traffic (Inputs.ClusterView). Other nodes never start it: they read only
// their own pods and node. It starts when a node may serve a group (Result.NeedsClusterView)
// and stops when it no longer may, so a standby gateway has it warm before it takes over.
type clusterView struct {
	newCache func() (cache.Cache, error) // nil: never started
	signal   func()

	mu     sync.Mutex
	c      cache.Cache
	cancel context.CancelFunc
	synced bool
}

// ensure starts the view (want) or stops it (!want). A start returns at once; the view is
// read only once its caches have synced, and signal is called then and on every change.
func (v *clusterView) ensure(ctx context.Context, want bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case want == (v.c != nil), want && v.newCache == nil:
		return nil
	case !want:
		v.cancel()
		v.c, v.cancel, v.synced = nil, nil, false
		log.FromContext(ctx).Info("stopped watching the cluster's pods and nodes: this node serves no group")
		return nil
	}
	c, err := v.newCache()
	if err != nil {
		return fmt.Errorf("creating the cluster view: %w", err)
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { v.signal() },
		UpdateFunc: func(any, any) { v.signal() },
		DeleteFunc: func(any) { v.signal() },
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.Node{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching the cluster's %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watching the cluster's %T: %w", obj, err)
		}
	}
	vctx, cancel := context.WithCancel(ctx)
	v.c, v.cancel = c, cancel
	logger := log.FromContext(ctx)
	logger.Info("watching the cluster's pods and nodes: this node may serve a group")
	go func() {
		if err := c.Start(vctx); err != nil && vctx.Err() == nil {
			logger.Error(err, "cluster view stopped")
		}
	}()
	go func() {
		if !c.WaitForCacheSync(vctx) {
			return
		}
		v.mu.Lock()
		if v.c == c {
			v.synced = true
		}
		v.mu.Unlock()
		v.signal()
	}()
	return nil
}

// read fills the cluster's pods and nodes into in once the view has synced.
func (v *clusterView) read(ctx context.Context, in *Inputs) error {
	v.mu.Lock()
	c, synced := v.c, v.synced
	v.mu.Unlock()
	if c == nil || !synced {
		return nil
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods); err != nil {
		return fmt.Errorf("listing the cluster's pods: %w", err)
	}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return fmt.Errorf("listing the cluster's nodes: %w", err)
	}
	in.ClusterView, in.ClusterPods, in.Nodes = true, pods.Items, nodes.Items
	return nil
}
