#!/usr/bin/env bash
# The README's first command, run as root on a Debian machine: installs what is missing
# (hack/install-deps.sh), builds the workspace in release mode, builds the node images
# (hack/images/build-images.sh), then `rkube cluster create "$@"` (3 nodes by default) and
# prints `kubectl get nodes -o wide`. Running it again reuses what is there: the build and the
# images are incremental, and an existing cluster of the same name is started (a no-op for
# the processes that already run) instead of created.
#
#   hack/local-up-cluster.sh                      # cluster "rkube", 3 nodes
#   hack/local-up-cluster.sh --name dev --nodes 5
#   hack/local-up-cluster.sh --config cluster.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

./hack/install-deps.sh
echo "local-up: building rkube (release)"
cargo build --release --quiet --bins -p rkube -p rkube-apiserver -p rkube-scheduler \
  -p rkube-controller-manager -p rkube-kubelet -p rkube-proxy -p rkube-dns
./hack/images/build-images.sh
rkube="$PWD/target/release/rkube"

# The cluster name, as create will resolve it: --name wins, then the config file's name.
name=rkube
config=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --name) name="${args[$((i + 1))]:-}" ;;
    --name=*) name="${args[$i]#--name=}" ;;
    --config) config="${args[$((i + 1))]:-}" ;;
    --config=*) config="${args[$i]#--config=}" ;;
  esac
done
if [ -n "$config" ] && ! printf '%s\n' "$@" | grep -q -- '^--name'; then
  from_file=$(sed -n 's/^name:[[:space:]]*\([a-z0-9-]*\).*/\1/p' "$config" | head -n1)
  [ -n "$from_file" ] && name=$from_file
fi

if "$rkube" cluster list | awk 'NR > 1 {print $1}' | grep -qx "$name"; then
  echo "local-up: cluster $name exists; starting whatever is not running"
  "$rkube" cluster start --name "$name"
else
  "$rkube" cluster create "$@"
fi
kubectl get nodes -o wide
