#!/usr/bin/env bash
# Local cluster benchmark (issue 4): time from `rkube cluster create --nodes 3` to all nodes
# Ready and to a first pod Running, stop and start times, and the idle RSS of the whole
# cluster (every process it runs: etcd, registry, control plane, containerds, kubelets, shims,
# pause and app containers) and of the rkube processes alone. Prints a Markdown table.
#
#   hack/bench/cluster.sh                 # release build (once), RUNS=3
#   BIN_DIR=target/debug RUNS=1 hack/bench/cluster.sh
# Targets: 3 nodes Ready < 5 s, first pod Running < 8 s, rkube processes idle RSS < 150 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."

runs=${RUNS:-3}
idle=${IDLE_SECONDS:-10}
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
name=bench$$
cleanup() {
  "$rkube" cluster delete --name "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# RSS (MiB) of every process whose command line names the cluster dir or that sits in one of
# its node cgroups; $1 = "all" or "rkube" (rkube-* binaries only), $2 = the field of
# /proc/<pid>/smaps_rollup to sum: Rss (the default; pages shared by several processes, such as
# the code of three kubelets started from one binary, count once per process) or Pss (shared
# pages split between their sharers: the memory the cluster really takes).
rss() {
  local field=${2:-Rss}
  local dir=/var/lib/rkube/clusters/$name/ pids=() p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "$dir" && pids+=("${p#/proc/}")
  done
  for f in /sys/fs/cgroup/pids/rkube-"$name"-*; do
    [ -d "$f" ] && pids+=($(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null))
  done
  printf '%s\n' "${pids[@]}" | sort -u | while read -r p; do
    [ -n "$p" ] || continue
    if [ "$1" = rkube ]; then
      tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | head -n1 | grep -q '/rkube-[a-z-]*$' || continue
    fi
    awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null
  done | awk '{s += $1} END {printf "%.1f", s / 1024}'
}

ready_count() {
  kubectl get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l
}

echo "cluster benchmark: $runs run(s), binaries from $BIN_DIR, $(nproc) cores" >&2
rows=()
for run in $(seq "$runs"); do
  t0=$(now)
  "$rkube" cluster create --name "$name" --nodes 3 >/dev/null 2>"$work/create.log" || { cat "$work/create.log" >&2; exit 1; }
  t_ready=$(now)
  [ "$(ready_count)" = 3 ] || { echo "not all nodes Ready after create" >&2; exit 1; }
  kubectl run first --image=nginx:1.25 >/dev/null
  until [ "$(kubectl get pod first -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; do
    sleep 0.05
    [ "$(secs "$t0" "$(now)" | cut -d. -f1)" -lt 120 ] || { echo "first pod never Running" >&2; exit 1; }
  done
  t_pod=$(now)
  sleep "$idle"
  rss_all=$(rss all)
  rss_rkube=$(rss rkube)
  pss_all=$(rss all Pss)
  pss_rkube=$(rss rkube Pss)
  t1=$(now)
  "$rkube" cluster stop --name "$name" >/dev/null
  t_stop=$(now)
  "$rkube" cluster start --name "$name" >/dev/null 2>&1
  t_start=$(now)
  until [ "$(kubectl get pod first -o jsonpath='{.status.containerStatuses[0].ready}' 2>/dev/null)" = true ] &&
    kubectl exec first -- true >/dev/null 2>&1; do
    sleep 0.05
  done
  t_back=$(now)
  t2=$(now)
  "$rkube" cluster delete --name "$name" >/dev/null
  t_del=$(now)
  row="| $run | $(secs "$t0" "$t_ready") s | $(secs "$t0" "$t_pod") s | $(secs "$t1" "$t_stop") s | $(secs "$t_stop" "$t_start") s | $(secs "$t_stop" "$t_back") s | $(secs "$t2" "$t_del") s | $rss_all MiB | $rss_rkube MiB | $pss_all MiB | $pss_rkube MiB |"
  echo "$row" >&2
  rows+=("$row")
done

echo "| run | create → 3 nodes Ready | create → first pod Running | stop | start → nodes Ready | start → pod serving again | delete | idle RSS, whole cluster | idle RSS, rkube processes | idle PSS, whole cluster | idle PSS, rkube processes |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
