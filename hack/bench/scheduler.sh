#!/usr/bin/env bash
# The scheduler benchmark (upstream scheduler_perf's SchedulingBasic shape). Builds
# rkube-apiserver, rkube-scheduler and the load (hack/bench/loadgen, bin rkube-scheduler-bench)
# in release mode; then for each shape — 1,000 nodes and 5,000 nodes, 1,000 pods present
# first, 10,000 measured — starts a fresh etcd and rkube-apiserver on 127.0.0.1 in a temp
# dir, measures raw binding throughput (bindings POSTed directly), starts rkube-scheduler and
# measures pods bound per second, per-pod latency and the scheduler's RSS. Writes the table
# into the `## scheduler` section of docs/benchmarks.md.
#
# Everything it starts is stopped on exit, failure and Ctrl-C included; each shape starts
# from a fresh etcd, so it is safe to run twice. A few minutes after the build.
# Extra arguments go to the load (`--pods 2000` for a quick try); with any, the table is only
# printed and docs/benchmarks.md is left alone. SHAPES="1000 5000" picks the node counts.
# Not part of hack/test.sh: it is a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v etcd >/dev/null 2>&1 || { echo "scheduler.sh: etcd not found; run hack/install-deps.sh" >&2; exit 1; }

echo "== cargo build --release -p rkube-apiserver -p rkube-scheduler -p rkube-bench"
cargo build --release --quiet -p rkube-apiserver -p rkube-scheduler -p rkube-bench
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/rkube-sched-bench.XXXXXX")"
source "$(dirname "$0")/lib.sh"

rows="$work/rows.md"
: >"$rows"
for nodes in ${SHAPES:-1000 5000}; do
  dir="$work/$nodes"
  mkdir -p "$dir"
  wait_quiet
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
  etcd_url="http://127.0.0.1:$etcd_port"; peer_url="http://127.0.0.1:$peer_port"
  echo "== $nodes nodes: etcd on $etcd_url, rkube-apiserver on https://127.0.0.1:$api_port"
  etcd --name bench --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
    --initial-cluster "bench=$peer_url" --logger zap --log-level warn >"$dir/etcd.log" 2>&1 &
  pids+=("$!")
  wait_port "$etcd_port" "$!" etcd
  # No controller-manager runs here to create the `default` service accounts that the
  # ServiceAccount admission plugin requires of pods; upstream's integration tests turn it off too.
  RUST_LOG=warn "$bin/rkube-apiserver" --etcd-servers "$etcd_url" --etcd-prefix /registry \
    --disable-admission-plugins=ServiceAccount \
    --cert-dir "$dir/pki" --secure-port "$api_port" --bind-address 127.0.0.1 >"$dir/apiserver.log" 2>&1 &
  api_pid=$!
  pids+=("$api_pid")
  wait_port "$api_port" "$api_pid" rkube-apiserver
  for _ in $(seq 200); do
    [ -s "$dir/pki/admin.kubeconfig" ] && break
    sleep 0.1
  done
  "$bin/rkube-scheduler-bench" --apiserver "https://127.0.0.1:$api_port" --cert-dir "$dir/pki" \
    --scheduler-bin "$bin/rkube-scheduler" --scheduler-log "$dir/scheduler.log" --nodes "$nodes" "$@" >>"$rows"
  stop_all
done

table="$work/table.md"
{
  echo "| shape | rkube-scheduler | per-pod latency (create → bound) | raw bindings, same apiserver | scheduler ÷ raw | scheduler RSS after |"
  echo "|---|---|---|---|---|---|"
  cat "$rows"
} >"$table"
cat "$table"

if [ "$#" -gt 0 ]; then
  echo "== extra arguments given: docs/benchmarks.md left alone"
  exit 0
fi

doc=docs/benchmarks.md
cores="$(nproc)"
mem="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- scheduler apiserver libs 2>/dev/null; then
  rev="$rev plus uncommitted changes in scheduler/, apiserver/ or libs/"
fi
section="$work/section.md"
{
  echo "## scheduler"
  echo
  echo "Command: \`./hack/bench/scheduler.sh\` (run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev;"
  echo "${cores} cores, ${mem}, Linux $(uname -r))."
  echo "Upstream scheduler_perf's SchedulingBasic shape: per row a fresh etcd and release-built rkube-apiserver"
  echo "on 127.0.0.1, Node objects only (4 cpu, 32 Gi, 110 pods; no kubelets, as kwok), pods requesting 100m"
  echo "and 500 Mi. Raw bindings: pods nobody schedules, bound by POSTing \`pods/binding\` directly with 32"
  echo "clients, before the scheduler starts. Then rkube-scheduler (release, its own process, default"
  echo "flags without leader election) binds 1,000 pods, then the 10,000 measured ones, created by 32"
  echo "clients; throughput is from the first create to the last binding seen on a watch. Everything"
  echo "shares the machine's ${cores} cores. Targets: ≥ 500 pods/s at 1,000 nodes, ≥ 340 at 5,000, at least"
  echo "half the raw binding rate, RSS < 100 MiB at 5,000 nodes."
  echo
  cat "$table"
  echo
} >"$section"

awk -v sec="$section" '
  BEGIN { while ((getline l < sec) > 0) s = s l "\n" }
  /^## / { skip = 0 }
  /^## scheduler[[:space:]]*$/ { printf "%s", s; skip = 1; done = 1; next }
  !skip { print }
  END { if (!done) printf "\n%s", s }
' "$doc" >"$work/benchmarks.md"
cp "$work/benchmarks.md" "$doc"
echo "== wrote the scheduler section of $doc"
