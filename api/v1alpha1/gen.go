package v1alpha1

// CRDs go to the Helm chart's files/crds, the one copy that test/envtest and the chart
// templates both read; deepcopy goes next to the types.
//go:generate go tool controller-gen object paths=./... crd:crdVersions=v1 output:crd:dir=../../charts/egressd/files/crds
