#!/usr/bin/env bash
# StatefulSet benchmark (issue 8): on a local 3-node cluster, the time for a 10-replica
# OrderedReady StatefulSet with a volumeClaimTemplate (default class `standard`, the local-path
# provisioner, WaitForFirstConsumer) to be fully Ready, and the time per ordinal step (pod
# N-1 Ready → pod N Ready), next to the floor: plain pods of the same image created one at a
# time on the same cluster (first seen by a watch → Ready seen by the same watch).
# The step's overhead above the floor is what the StatefulSet controller, the claim's
# provisioning and binding, and the scheduler's volume binding add. Prints a Markdown table.
#
#   hack/bench/statefulset.sh                  # release build (once), REPLICAS=10
#   BIN_DIR=target/debug hack/bench/statefulset.sh
# Target: per-step overhead < 300 ms above the pod startup latency.
set -euo pipefail
cd "$(dirname "$0")/../.."

replicas=${REPLICAS:-10}
floor_pods=${FLOOR_PODS:-10}
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --quiet --bins -p rkube -p rkube-apiserver -p rkube-scheduler \
    -p rkube-controller-manager -p rkube-kubelet -p rkube-proxy -p rkube-dns
  BIN_DIR=$PWD/target/release
fi
./hack/images/build-images.sh >/dev/null
rkube="$BIN_DIR/rkube"
export RKUBE_IMAGES_DIR=$PWD/_output/images
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig
name=bsts$$
watcher=
cleanup() {
  [ -n "$watcher" ] && kill "$watcher" 2>/dev/null || true
  "$rkube" cluster delete --name "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }

"$rkube" cluster create --name "$name" --nodes 3 >/dev/null 2>"$work/create.log" || { cat "$work/create.log" >&2; exit 1; }

# One watch for the whole run: each line is "<arrival time> <pod> <Ready status>".
kubectl get pods --watch -o jsonpath='{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}' 2>/dev/null |
  while read -r pod ready; do echo "$(now) $pod ${ready:-none}"; done >"$work/watch.log" &
watcher=$!
sleep 1

first_seen() { awk -v p="$1" '$2 == p { print $1; exit }' "$work/watch.log"; }
ready_at() { awk -v p="$1" '$2 == p && $3 == "True" { print $1; exit }' "$work/watch.log"; }
wait_ready() {
  local deadline=$(($(date +%s) + 120))
  until [ -n "$(ready_at "$1")" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "statefulset.sh: $1 not Ready in 120 s" >&2; exit 1; }
    sleep 0.05
  done
}
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print v[int((NR + 1) / 2)] }'; }

# The floor: plain pods, one at a time, the same image and readiness as the StatefulSet's.
for i in $(seq "$floor_pods"); do
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: floor-$i, labels: {bench: floor}}
spec:
  containers:
  - {name: web, image: nginx:1.25}
EOF
  wait_ready "floor-$i"
done
floors=()
for i in $(seq "$floor_pods"); do floors+=("$(ms "$(first_seen "floor-$i")" "$(ready_at "floor-$i")")"); done
floor=$(printf '%s\n' "${floors[@]}" | median)
kubectl delete pods -l bench=floor --wait=false >/dev/null

kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench}
spec:
  clusterIP: None
  selector: {app: bench}
  ports: [{port: 80, name: web}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: bench}
spec:
  serviceName: bench
  replicas: $replicas
  podManagementPolicy: OrderedReady
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 10Mi}}
EOF
t_apply=$(now)
wait_ready "bench-$((replicas - 1))"
total=$(ms "$t_apply" "$(ready_at "bench-$((replicas - 1))")")

steps=()
startups=()
prev=$t_apply
for i in $(seq 0 $((replicas - 1))); do
  r=$(ready_at "bench-$i")
  steps+=("$(ms "$prev" "$r")")
  startups+=("$(ms "$(first_seen "bench-$i")" "$r")")
  prev=$r
done
step_med=$(printf '%s\n' "${steps[@]:1}" | median)
step_max=$(printf '%s\n' "${steps[@]:1}" | sort -n | tail -n1)
startup_med=$(printf '%s\n' "${startups[@]}" | median)
bound=$(kubectl get pvc -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase}{"\n"}{end}' |
  grep -c '^data-bench-[0-9]* Bound$' || true)

echo "| measure | value |"
echo "|---|---|"
echo "| apply → all $replicas pods Ready | $total ms |"
echo "| ordinal step (pod N-1 Ready → pod N Ready), median / max of $((replicas - 1)) | $step_med ms / $step_max ms |"
echo "| StatefulSet pod: first seen → Ready, median | $startup_med ms |"
echo "| floor: plain pod first seen → Ready, median of $floor_pods | $floor ms |"
echo "| per-step overhead above the floor (median step − floor) | $((step_med - floor)) ms |"
echo "| claims Bound | $bound of $replicas |"
echo
echo "floor pods (ms): ${floors[*]}" >&2
echo "steps (ms): ${steps[*]}" >&2
echo "StatefulSet pods, first seen → Ready (ms): ${startups[*]}" >&2
[ -z "${KEEP_WATCH:-}" ] || cp "$work/watch.log" "$KEEP_WATCH"
