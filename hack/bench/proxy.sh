#!/usr/bin/env bash
# rkube-proxy's sync benchmark. Builds the proxy's benchmark test (proxy/tests/sync_bench.rs)
# in release mode and runs it once per iptables backend (nf_tables, then legacy): for 1,000
# and 10,000 ClusterIP Services with 2 endpoints each, loaded through a real apiserver on a
# real etcd (both in-process/child of the benchmark, on loopback) and programmed by the whole
# proxy into a fresh network namespace (nothing touches the root namespace's tables),
#   - the proxy's first full sync (read both tables while rendering, one iptables-restore;
#     its kubeproxy_sync_full_proxy_rules_duration_seconds) next to a bare iptables-restore of
#     the same text (the same rules and jump-rule inserts) into another fresh namespace. When
#     the first bare restore takes under 5 s (all but nf_tables at 10,000 services), 5 of each
#     are taken in turns, every one into a fresh namespace (the proxy restarted each time), and
#     the table shows the medians with the range; a fresh namespace is what the proxy's first
#     sync meets, so a restore into one that already holds the rules would measure a different
#     operation;
#   - a one-endpoint change written through the API with the
#     endpoints.kubernetes.io/last-change-trigger-time annotation set to the write time, timed
#     to the end of the iptables-restore that commits it (the proxy's
#     kubeproxy_network_programming_duration_seconds), next to a bare restore of the same
#     partial text (median of 5).
#   - the render alone (sync_bench::render_only, no kernel): median of 21 full and 21
#     one-service partial renders of the same state.
# It writes the table into the `## rkube-proxy sync` section of docs/benchmarks.md (with any
# argument, e.g. `--print`, the table is only printed).
#
# Needs root, etcd, iptables (both backends) and iproute2 (hack/install-deps.sh). The namespaces,
# etcd and the proxy are gone on exit, failure included (the benchmark's Drop guards and
# PR_SET_PDEATHSIG). A few minutes after the build: loading 20,000 objects through the API, and
# the nf_tables backend restores 10,000 services slowly. Not part of hack/test.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(id -u)" = 0 ] || { echo "proxy.sh: needs root (network namespaces, iptables)" >&2; exit 1; }
for c in ip etcd iptables-nft-restore iptables-legacy-restore; do
  command -v "$c" >/dev/null 2>&1 || { echo "proxy.sh: $c not found; run hack/install-deps.sh" >&2; exit 1; }
done

load="$(cut -d' ' -f1-3 /proc/loadavg)"
work="$(mktemp -d "${TMPDIR:-/tmp}/rkube-proxy-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== cargo test --release -p rkube-proxy --test integration (build)"
bin="$(cargo test --release -p rkube-proxy --test integration --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)"
[ -x "$bin" ] || { echo "proxy.sh: cannot find the built benchmark" >&2; exit 1; }
{
  echo "| backend | services | rules | full-sync samples | bare full restore | proxy full sync | ratio | bare partial restore | proxy partial sync | API write → kernel commit | ratio |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
} >"$work/table.md"
echo "== render alone"
"$bin" --ignored --exact sync_bench::render_only --nocapture 2>"$work/stderr.log" | grep '^render' >"$work/render.txt" || {
  tail -n 40 "$work/stderr.log" >&2
  exit 1
}
cat "$work/render.txt"
for backend in nft legacy; do
  echo "== benchmark, $backend backend"
  # The binary runs directly, so another cargo build holding the target lock cannot stall it.
  BENCH_BACKEND="$backend" BENCH_OUT="$work/table.md" "$bin" --ignored --exact sync_bench::proxy_sync --nocapture \
    2>"$work/stderr.log" >"$work/stdout.log" || {
    tail -n 40 "$work/stdout.log" >&2
    tail -n 40 "$work/stderr.log" >&2
    exit 1
  }
done
cat "$work/table.md"

if [ "$#" -gt 0 ]; then
  echo "== arguments given: docs/benchmarks.md left alone"
  exit 0
fi

doc=docs/benchmarks.md
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- proxy 2>/dev/null; then
  rev="$rev plus uncommitted changes in proxy/"
fi
section="$work/section.md"
{
  echo "## rkube-proxy sync"
  echo
  echo "Command: \`./hack/bench/proxy.sh\` (run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev;"
  echo "$(nproc) cores, Linux $(uname -r), $(iptables --version | awk '{print $1, $2}'))."
  echo "ClusterIP Services with 2 endpoints each, created through a real apiserver (rkube-apiserver's"
  echo "\`run\` in the benchmark's process, \`rkube_apiserver::testing::TestApiserver\`) on a real etcd, and"
  echo "programmed by the whole proxy (\`rkube_proxy::run_with\`: watches, tracker, sync loop) into a fresh"
  echo "network namespace; a release build. *Proxy full sync* is the proxy's first sync"
  echo "(\`kubeproxy_sync_full_proxy_rules_duration_seconds\`: \`iptables-save\` of filter and nat running while"
  echo "the proxy renders, then one \`iptables-restore --noflush\` that also inserts the jump rules); *bare full"
  echo "restore* is one \`iptables-restore --noflush\` of the same text (rules and jump-rule inserts) into another"
  echo "fresh namespace. Where the first bare restore took under 5 s, both are sampled 5 times in turns, each"
  echo "into a fresh namespace (the proxy restarted every time), and the cells give the median with the"
  echo "range in ms; the ratio is of the medians. The partial columns"
  echo "move one endpoint of one Service (median of 5): *API write → kernel commit* starts when the"
  echo "benchmark stamps \`endpoints.kubernetes.io/last-change-trigger-time\` and PUTs the EndpointSlice, and"
  echo "ends when the \`iptables-restore\` holding the change returned (the proxy's"
  echo "\`kubeproxy_network_programming_duration_seconds\`, one observation per round); *proxy partial sync* is"
  echo "the sync alone (\`kubeproxy_sync_partial_proxy_rules_duration_seconds\`); *bare partial restore*"
  echo "restores the same partial text. The last ratio is API write → kernel commit over the bare partial"
  echo "restore. All restores go through \`ip netns exec\`. Load average before the build: $load."
  echo
  cat "$work/table.md"
  echo
  echo "The render alone (\`sync_bench::render_only\`, median of 21, no kernel involved):"
  echo
  sed 's/^/- /' "$work/render.txt"
  echo
} >"$section"

awk -v sec="$section" '
  BEGIN { while ((getline l < sec) > 0) s = s l "\n" }
  /^## / { skip = 0 }
  /^## rkube-proxy sync[[:space:]]*$/ { printf "%s", s; skip = 1; done = 1; next }
  !skip { print }
  END { if (!done) printf "\n%s", s }
' "$doc" >"$work/benchmarks.md"
cp "$work/benchmarks.md" "$doc"
echo "== wrote the rkube-proxy sync section of $doc"
