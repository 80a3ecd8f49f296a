#!/usr/bin/env bash
# The controller-manager benchmark. Builds rkube-apiserver, rkube-controller-manager and the
# load (hack/bench/loadgen, bin rkube-controllers-bench) in release mode; starts a fresh etcd
# and rkube-apiserver on 127.0.0.1 in a temp dir; the load creates 100 Node objects (no
# kubelets) and binds pods itself (a simple binder: unbound pods listed every 20 ms, bound
# round-robin, marked Running and Ready at once), starts rkube-controller-manager and measures:
# its idle RSS, a Deployment of 1,000 replicas until 1,000 pods are created and bound, a
# rolling update of it until complete, and its RSS once scaled to 10,000 pods. Writes the
# table into the `## controller-manager` section of docs/benchmarks.md.
#
# Everything it starts is stopped on exit, failure and Ctrl-C included; a fresh etcd each run,
# so it is safe to run twice. Extra arguments go to the load (`--big 2000` for a quick try);
# with any, the table is only printed and docs/benchmarks.md is left alone.
# Not part of hack/test.sh: it is a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v etcd >/dev/null 2>&1 || { echo "controllers.sh: etcd not found; run hack/install-deps.sh" >&2; exit 1; }

echo "== cargo build --release -p rkube-apiserver -p rkube-controller-manager -p rkube-bench"
cargo build --release --quiet -p rkube-apiserver -p rkube-controller-manager -p rkube-bench
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/rkube-ctrl-bench.XXXXXX")"
source "$(dirname "$0")/lib.sh"

dir="$work/run"
mkdir -p "$dir"
wait_quiet
etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
etcd_url="http://127.0.0.1:$etcd_port"; peer_url="http://127.0.0.1:$peer_port"
echo "== etcd on $etcd_url, rkube-apiserver on https://127.0.0.1:$api_port"
etcd --name bench --data-dir "$dir/etcd" \
  --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
  --initial-cluster "bench=$peer_url" --logger zap --log-level warn >"$dir/etcd.log" 2>&1 &
pids+=("$!")
wait_port "$etcd_port" "$!" etcd
RUST_LOG=warn "$bin/rkube-apiserver" --etcd-servers "$etcd_url" --etcd-prefix /registry \
  --cert-dir "$dir/pki" --secure-port "$api_port" --bind-address 127.0.0.1 >"$dir/apiserver.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
wait_port "$api_port" "$api_pid" rkube-apiserver
for _ in $(seq 200); do
  [ -s "$dir/pki/admin.kubeconfig" ] && break
  sleep 0.1
done
row="$("$bin/rkube-controllers-bench" --apiserver "https://127.0.0.1:$api_port" --cert-dir "$dir/pki" \
  --controller-manager-bin "$bin/rkube-controller-manager" --controller-manager-log "$dir/controller-manager.log" "$@")"
stop_all

table="$work/table.md"
{
  echo "| shape | 1,000 pods created and bound | rolling update, pods ready at once | RSS idle | RSS at 10,000 pods |"
  echo "|---|---|---|---|---|"
  echo "$row"
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
if ! git diff --quiet HEAD -- controller-manager apiserver libs 2>/dev/null; then
  rev="$rev plus uncommitted changes in controller-manager/, apiserver/ or libs/"
fi
section="$work/section.md"
{
  echo "## controller-manager"
  echo
  echo "Command: \`./hack/bench/controllers.sh\` (run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev;"
  echo "${cores} cores, ${mem}, Linux $(uname -r))."
  echo "A fresh etcd and release-built rkube-apiserver on 127.0.0.1, 100 Node objects and no kubelets: the"
  echo "load binds pods itself (pending pods listed every 20 ms, bound round-robin through \`pods/binding\`,"
  echo "marked Running and Ready through \`pods/status\` at once, 32 requests at a time). rkube-controller-manager"
  echo "(release, its own process, all controllers but nodelifecycle and podgc, no leader election). Targets:"
  echo "1,000 pods created and bound in < 5 s; RSS < 60 MiB at 10,000 pods."
  echo
  cat "$table"
  echo
} >"$section"

awk -v sec="$section" '
  BEGIN { while ((getline l < sec) > 0) s = s l "\n" }
  /^## / { skip = 0 }
  /^## controller-manager[[:space:]]*$/ { printf "%s", s; skip = 1; done = 1; next }
  !skip { print }
  END { if (!done) printf "\n%s", s }
' "$doc" >"$work/benchmarks.md"
cp "$work/benchmarks.md" "$doc"
echo "== wrote the controller-manager section of $doc"
