#!/usr/bin/env bash
# Builds, from the Go module proxy, every binary the real-cluster e2e suite (test/e2e) runs
# beyond kube-apiserver and etcd (hack/kube-binaries.sh): kube-controller-manager,
# kube-scheduler and kube-proxy (module hack/kube), kubelet (module hack/kubelet), the CNI
# plugins bridge, host-local, loopback and portmap (module hack/cni) and helm (module
# hack/helm). Each binary is built once into a cache directory keyed by every version, and
# renamed into place only when it built, so an interrupted build never leaves a half cache.
# Later runs find the binaries and return in milliseconds. Build times go to stderr and to
# build-times.txt in the directory. Prints the directory: its kube-*, kubelet and helm at the
# top, the CNI plugins under cni/.
set -euo pipefail

KUBE_VERSION=v1.36.3    # control plane and kube-proxy, as hack/kube-binaries.sh and hack/kube/go.mod
KUBELET_VERSION=v1.35.4 # the last kubelet that supports containerd 1.x; hack/kubelet/go.mod
CNI_VERSION=v1.10.0     # hack/cni/go.mod
HELM_VERSION=v3.21.4    # hack/helm/go.mod
here=$(cd "$(dirname "$0")" && pwd)
cache=${EGRESSD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/egressd}
dir="$cache/e2e/kube-$KUBE_VERSION-kubelet-$KUBELET_VERSION-cni-$CNI_VERSION-helm-$HELM_VERSION"

# kube_ldflags VERSION: the version stamp Kubernetes' own build gives its binaries.
kube_ldflags() {
	local minor=${1#v1.}
	minor=${minor%%.*}
	local pkg=k8s.io/component-base/version
	echo "-s -w -X $pkg.gitVersion=$1 -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
}

# build MODULE_DIR OUT PACKAGE [LDFLAGS]: builds one static binary unless OUT already exists.
build() {
	local module=$1 out=$2 pkg=$3 ldflags=${4:--s -w}
	[[ -x "$dir/$out" ]] && return 0
	mkdir -p "$(dirname "$dir/$out")"
	local tmp start
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	start=$(date +%s)
	echo "building $out ($pkg) from the module proxy" >&2
	if ! (cd "$here/$module" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/bin" "$pkg"); then
		rm -rf "$tmp"
		return 1
	fi
	mv "$tmp/bin" "$dir/$out"
	rm -rf "$tmp"
	echo "$out $(($(date +%s) - start))s $(stat -c %s "$dir/$out")B" | tee -a "$dir/build-times.txt" >&2
}

mkdir -p "$dir"
for plugin in main/bridge ipam/host-local main/loopback meta/portmap; do
	build cni "cni/${plugin#*/}" "github.com/containernetworking/plugins/plugins/$plugin" \
		"-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_VERSION"
done
build helm helm helm.sh/helm/v3/cmd/helm \
	"-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for cmd in kube-controller-manager kube-scheduler kube-proxy; do
	build kube "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$(kube_ldflags "$KUBE_VERSION")"
done
build kubelet kubelet k8s.io/kubernetes/cmd/kubelet "$(kube_ldflags "$KUBELET_VERSION")"
echo "$dir"
