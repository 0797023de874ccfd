package agent

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// An agent that stops leaves its node's datapath running, so that a restarted agent (rolling
// update, crash, node drain) picks it up from the pinned maps and no established flow breaks.
// Only an uninstall must remove it: nothing will ever start an agent on the node again, and
// the programs, pins, nftables table, rules, routes and tunnel device would stay forever.
//
// The agent tells the two apart by its DaemonSet: being deleted (foreground deletion, which the
// chart's pre-delete hook runs with DeleteDaemonSet) or gone means uninstall. The hook is what
// makes this reliable: it runs before helm deletes the agent's RBAC, so the agent can still
// read its DaemonSet when its pod is stopped.

// uninstallCheckTimeout bounds the DaemonSet read of a stopping agent: the pod's termination
// grace period must cover it and the datapath removal.
const uninstallCheckTimeout = 5 * time.Second

// Uninstalling reports whether the DaemonSet ns/name is being deleted or is gone. Any other
// error is returned, and the caller keeps the datapath.
func Uninstalling(ctx context.Context, cs kubernetes.Interface, ns, name string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, uninstallCheckTimeout)
	defer cancel()
	ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading DaemonSet %s/%s: %w", ns, name, err)
	}
	return ds.DeletionTimestamp != nil, nil
}

// DeleteDaemonSet deletes the DaemonSet ns/name in the foreground and waits until it is gone,
// that is until every agent pod it owned has stopped (and, seeing the DaemonSet being deleted,
// removed its node's datapath). A DaemonSet already gone is not an error.
func DeleteDaemonSet(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	fg := metav1.DeletePropagationForeground
	err := cs.AppsV1().DaemonSets(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting DaemonSet %s/%s: %w", ns, name, err)
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		_, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for DaemonSet %s/%s to go: %w", ns, name, ctx.Err())
		case <-t.C:
		}
	}
}
