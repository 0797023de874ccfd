// Package cachetrim builds the informer cache transforms with which the coordinator and the
// agent keep only the fields of an object that they read.
package cachetrim

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// Transform makes a cache transform of a trimming function for one object type; objects of any
// other type pass through unchanged.
func Transform[T any](trim func(*T) *T) toolscache.TransformFunc {
	return func(obj any) (any, error) {
		if o, ok := obj.(*T); ok {
			return trim(o), nil
		}
		return obj, nil
	}
}

// Meta keeps an object's identity, labels and deletion timestamp; annotations, owners,
// finalizers and managed fields go.
func Meta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: m.Labels, DeletionTimestamp: m.DeletionTimestamp}
}
