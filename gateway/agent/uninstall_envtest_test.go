package agent

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/egressd/egressd/test/envtest"
)

// TestUninstalling checks how a stopping agent tells an uninstall from a restart against a
// real API server (which has no garbage collector here: the foreground deletion stays pending
// until the test removes its finalizer, as the collector would once the pods are gone).
func TestUninstalling(t *testing.T) {
	s := envtest.Start(t)
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns, name = "default", "egressd-agent"
	labels := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "agent"}}}}}}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(want bool) {
		t.Helper()
		got, err := Uninstalling(ctx, cs, ns, name)
		if err != nil || got != want {
			t.Fatalf("Uninstalling = %v, %v; want %v", got, err, want)
		}
	}
	check(false) // a restart: the DaemonSet is there

	done := make(chan error, 1)
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() { done <- DeleteDaemonSet(dctx, cs, ns, name) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := Uninstalling(ctx, cs, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("DeleteDaemonSet did not start a deletion")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("DeleteDaemonSet returned (%v) while the DaemonSet is still there", err)
	case <-time.After(1500 * time.Millisecond):
	}
	// The garbage collector's part: the dependents are gone, the finalizer goes.
	if _, err := cs.AppsV1().DaemonSets(ns).Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("DeleteDaemonSet: %v", err)
	}
	check(true) // gone
	if err := DeleteDaemonSet(ctx, cs, ns, name); err != nil {
		t.Fatalf("DeleteDaemonSet of a DaemonSet already gone: %v", err)
	}
}
