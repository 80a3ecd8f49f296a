#!/usr/bin/env bash
# Starts a local rkube control plane: etcd and rkube-apiserver on loopback, with state under
# $RKUBE_DIR (default /var/lib/rkube/local). Installs what is missing, builds in release mode,
# and prints how to point kubectl at it. Running it again reuses what is running.
# `hack/local-up-cluster.sh down` stops what it started (state is kept).
# The full multi-node local cluster arrives with `rkube cluster create` (the cluster-tool issue).
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${RKUBE_DIR:-/var/lib/rkube/local}"
etcd_port="${RKUBE_ETCD_PORT:-2379}"
api_port="${RKUBE_API_PORT:-6443}"
mkdir -p "$dir/logs"

running() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

stop() {
  for p in rkube-apiserver etcd; do
    if running "$p"; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
      for _ in $(seq 50); do running "$p" || break; sleep 0.1; done
    fi
    rm -f "$dir/$p.pid"
  done
  echo "stopped (state kept in $dir)"
}

if [ "${1:-}" = "down" ]; then
  stop
  exit 0
fi

./hack/install-deps.sh
cargo build --release --quiet -p rkube-apiserver
bin="$PWD/target/release"

if ! running etcd; then
  etcd --name rkube --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "rkube=http://127.0.0.1:$((etcd_port + 1))" \
    --logger zap --log-level warn >"$dir/logs/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
fi

if ! running rkube-apiserver; then
  "$bin/rkube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" --cert-dir "$dir/pki" \
    --secure-port "$api_port" --bind-address 127.0.0.1 >"$dir/logs/apiserver.log" 2>&1 &
  echo $! >"$dir/rkube-apiserver.pid"
fi

export KUBECONFIG="$dir/pki/admin.kubeconfig"
for _ in $(seq 100); do
  [ -f "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 && break
  running rkube-apiserver || { echo "rkube-apiserver exited; see $dir/logs/apiserver.log" >&2; tail -n 20 "$dir/logs/apiserver.log" >&2; exit 1; }
  sleep 0.1
done
kubectl get namespaces
cat <<MSG

rkube control plane is up (etcd + rkube-apiserver on https://127.0.0.1:$api_port).
Point kubectl at it:
  export KUBECONFIG=$KUBECONFIG
Logs: $dir/logs/   Stop: $0 down
MSG
