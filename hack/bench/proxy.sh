#!/usr/bin/env bash
# rkube-proxy's sync benchmark. Builds the proxy's benchmark test (proxy/tests/sync_bench.rs)
# in release mode and runs it once per iptables backend (nf_tables, then legacy): for 1,000
# and 10,000 ClusterIP Services with 2 endpoints each, in fresh network namespaces (nothing
# touches the root namespace's tables),
#   - the proxy's full sync (read both tables, render, one iptables-restore) next to a bare
#     iptables-restore of the same rendered text;
#   - a one-endpoint change: the proxy's partial sync (render, one iptables-restore of the
#     changed service's chains plus the shared chains) next to a bare restore of the same text
#     (median of 5).
# It writes the table into the `## rkube-proxy sync` section of docs/benchmarks.md (with any
# argument, e.g. `--print`, the table is only printed).
#
# Needs root, iptables (both backends) and iproute2 (hack/install-deps.sh). The namespaces are
# removed on exit, failure included (the benchmark's Drop guards). A few minutes after the
# build: the nf_tables backend restores 10,000 services slowly. Not part of hack/test.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(id -u)" = 0 ] || { echo "proxy.sh: needs root (network namespaces, iptables)" >&2; exit 1; }
for c in ip iptables-nft-restore iptables-legacy-restore; do
  command -v "$c" >/dev/null 2>&1 || { echo "proxy.sh: $c not found; run hack/install-deps.sh" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/rkube-proxy-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== cargo test --release -p rkube-proxy --test integration (build)"
bin="$(cargo test --release -p rkube-proxy --test integration --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)"
[ -x "$bin" ] || { echo "proxy.sh: cannot find the built benchmark" >&2; exit 1; }
{
  echo "| backend | services | rules | bare full restore | proxy full sync | ratio | bare partial restore | proxy partial sync | ratio |"
  echo "|---|---|---|---|---|---|---|---|---|"
} >"$work/table.md"
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
  echo "ClusterIP Services with 2 endpoints each, rendered and restored into fresh network namespaces by a"
  echo "release build. *Proxy full sync* is \`Proxier::sync(full)\` on empty tables: \`iptables-save\` of"
  echo "filter and nat, the render, and one \`iptables-restore --noflush\` (which also inserts the jump rules);"
  echo "*bare full restore* is one \`iptables-restore --noflush\` of the same rendered text. The partial"
  echo "columns move one endpoint of one Service; both restore the same partial text (median of 5). Both"
  echo "sides go through \`ip netns exec\`. The proxy's time starts at the tracker, not at an EndpointSlice"
  echo "write in the API."
  echo
  cat "$work/table.md"
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
