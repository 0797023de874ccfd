#!/usr/bin/env bash
# Installs the Debian packages egressd's build, tests, demo and benchmarks use, when missing.
# clang/llvm/libbpf-dev: regenerate the BPF objects (make generate/verify; make test uses the
#   committed objects). iproute2, nftables, iptables, ipset, ethtool: the network-namespace test
#   bed, the lab and the datapath baselines. procps, psmisc: process handling in the lab.
#   containerd, runc: the container runtime of the real-cluster e2e suite's nodes (test/e2e);
#   Debian's containerd 1.6 pairs with kubelet v1.35, the last kubelet for containerd 1.x.
set -euo pipefail

need=()
for pkg in clang llvm libbpf-dev iproute2 nftables iptables ipset ethtool procps psmisc curl ca-certificates containerd runc; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[[ ${#need[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
	echo "missing Debian packages: ${need[*]} (run as root, or install them: apt-get install ${need[*]})" >&2
	exit 1
fi
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
