package cachetrim_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/gateway/internal/cachetrim"
)

func TestTransform(t *testing.T) {
	tr := cachetrim.Transform(func(p *corev1.Pod) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: cachetrim.Meta(&p.ObjectMeta)}
	})
	now := metav1.Now()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", UID: "u", ResourceVersion: "7",
		Labels: map[string]string{"app": "web"}, DeletionTimestamp: &now, Annotations: map[string]string{"a": "b"},
		Finalizers: []string{"f"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Spec: corev1.PodSpec{NodeName: "x"}}
	out, err := tr(p)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Pod)
	m := got.ObjectMeta
	if m.Name != "p" || m.Namespace != "n" || m.UID != "u" || m.ResourceVersion != "7" || m.Labels["app"] != "web" ||
		m.DeletionTimestamp != &now || m.Annotations != nil || m.Finalizers != nil || m.ManagedFields != nil || got.Spec.NodeName != "" {
		t.Errorf("trimmed pod %+v", got)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Annotations: map[string]string{"a": "b"}}}
	if out, err := tr(ns); err != nil || out != any(ns) {
		t.Errorf("a Namespace was changed: %v, %v", out, err)
	}
}
