#!/usr/bin/env bash
# The kubelet's pod startup benchmark. Builds the kubelet's benchmark test
# (kubelet/tests/pod_startup_bench.rs, which reuses the kubelet's integration harness
# kubelet/tests/support/) in release mode, so the rkube-kubelet binary it starts and the
# in-process apiserver are release builds too, and runs it: one node (a network + mount + UTS
# namespace with containerd inside, images imported from _output/images), etcd, the apiserver,
# then
#   - raw CRI: RunPodSandbox + CreateContainer + StartContainer for 50 pods, one at a time;
#   - the kubelet: 50 pods created with nodeName set, one at a time, each timed from the
#     create call to the watch event showing it Running and Ready;
#   - the kubelet's RSS idle with 0 and with 30 pods.
# It writes the table into the `## kubelet pod startup` section of docs/benchmarks.md (with
# any argument, e.g. `--print`, the table is only printed).
#
# Needs root and what hack/install-deps.sh installs (containerd, runc, CNI plugins, etcd).
# Everything it creates is removed on exit, failure included (the harness's Drop). About a
# minute after the build. Not part of hack/test.sh: it is a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(id -u)" = 0 ] || { echo "pod-startup.sh: needs root (network namespaces, mounts, cgroups)" >&2; exit 1; }
for c in containerd runc etcd ctr nsenter; do
  command -v "$c" >/dev/null 2>&1 || { echo "pod-startup.sh: $c not found; run hack/install-deps.sh" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/rkube-pod-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== cargo test --release -p rkube-kubelet --test integration (build)"
cargo test --release --quiet -p rkube-kubelet --test integration --no-run
echo "== benchmark"
BENCH_OUT="$work/table.md" cargo test --release --quiet -p rkube-kubelet --test integration \
  -- --ignored --exact pod_startup_bench::pod_startup --nocapture 2>"$work/stderr.log" || {
  tail -n 40 "$work/stderr.log" >&2
  exit 1
}
cat "$work/table.md"

if [ "$#" -gt 0 ]; then
  echo "== arguments given: docs/benchmarks.md left alone"
  exit 0
fi

doc=docs/benchmarks.md
cores="$(nproc)"
mem="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- kubelet apiserver libs 2>/dev/null; then
  rev="$rev plus uncommitted changes in kubelet/, apiserver/ or libs/"
fi
section="$work/section.md"
{
  echo "## kubelet pod startup"
  echo
  echo "Command: \`./hack/bench/pod-startup.sh\` (run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev;"
  echo "${cores} cores, ${mem}, Linux $(uname -r), $(containerd --version | awk '{print $1, $3}'), runc $(runc --version | awk 'NR==1 {print $3}'))."
  echo "One node as in the kubelet's integration tests (network + mount + UTS namespace, containerd inside, images"
  echo "present), etcd and a release-built apiserver and kubelet; pods are busybox \`sleep\` with one container."
  echo "Both columns create one pod at a time: the kubelet figure is the whole path (API create, the kubelet's"
  echo "watch, its sync: image check, sandbox, container, status patch, and the benchmark's watch seeing"
  echo "Running and Ready); the raw figure is the three CRI calls alone, with the least config a pod needs"
  echo "(no DNS config, no mounts), measured on the same node before the kubelet starts. Other work on the machine"
  echo "(other benchmarks, builds) is not stopped: the machine is shared."
  echo
  cat "$work/table.md"
  echo
} >"$section"

awk -v sec="$section" '
  BEGIN { while ((getline l < sec) > 0) s = s l "\n" }
  /^## / { skip = 0 }
  /^## kubelet pod startup[[:space:]]*$/ { printf "%s", s; skip = 1; done = 1; next }
  !skip { print }
  END { if (!done) printf "\n%s", s }
' "$doc" >"$work/benchmarks.md"
cp "$work/benchmarks.md" "$doc"
echo "== wrote the kubelet pod startup section of $doc"
