#!/usr/bin/env bash
# Installs what building and testing rkube needs from Debian's packages. Safe to run twice:
# it installs only what is missing, and runs `apt-get update` only when something is.
set -euo pipefail

packages=(
  etcd-server        # the one store; tests start their own etcd on loopback
  protobuf-compiler  # protoc, for crates that generate gRPC code
  jq curl            # used by the scripts under hack/
  # nodes: the container runtime the kubelet drives over CRI, and pod networking
  containerd         # the CRI runtime (also ships `ctr`, used to import images)
  runc               # the OCI runtime containerd starts containers with
  containernetworking-plugins  # CNI bridge, host-local, portmap, loopback (/usr/lib/cni)
  iptables conntrack # rkube-proxy's rules; conntrack to flush stale entries
  iproute2           # `ip netns`: each node (and each runtime test) is a network namespace
  docker-registry    # the local registry the local cluster points containerd's mirrors at
  # images built from Debian packages without Docker (hack/images/build-images.sh)
  busybox-static     # the busybox image, and the base of the small nginx image
  skopeo umoci       # assemble OCI layouts and write importable oci-archives
  gcc libc6-dev      # the static pause binary
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian etcd package enables a system service; rkube starts its own etcd processes.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi

for cmd in etcd protoc kubectl cargo containerd ctr runc ip iptables skopeo umoci gcc; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "install-deps: $cmd not found after install" >&2; exit 1; }
done
