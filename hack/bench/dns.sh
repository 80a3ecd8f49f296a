#!/usr/bin/env bash
# rkube-dns's query benchmark. Builds rkube-apiserver, rkube-dns and its load generator
# (rkube-dns-bench, dns/src/bin/dns_bench.rs) in release mode, starts etcd, the apiserver and
# rkube-dns on 127.0.0.1 (free ports), writes 1,000 ClusterIP Services with an EndpointSlice of
# two endpoints each through the API, waits until rkube-dns answers the last one, then runs 100
# concurrent UDP clients against it for 10 s (one query in flight per client; three in four are
# A lookups of a random Service, one in four a search-path NXDOMAIN). Every address is
# loopback: no query leaves the machine, and rkube-dns has no upstream.
#
# It writes the table into the `## rkube-dns` section of docs/benchmarks.md (with any
# argument, e.g. `--print`, the table is only printed). SERVICES, CLIENTS and DURATION
# override the shape. Needs etcd (hack/install-deps.sh). Safe to run twice; everything it
# starts is stopped on exit, failure included. Not part of hack/test.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v etcd >/dev/null 2>&1 || { echo "dns.sh: etcd not found; run hack/install-deps.sh" >&2; exit 1; }

echo "== cargo build --release -p rkube-apiserver -p rkube-dns"
cargo build --release --quiet -p rkube-apiserver -p rkube-dns --bins
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/rkube-dns-bench.XXXXXX")"
source "$(dirname "$0")/lib.sh"

services="${SERVICES:-1000}"
clients="${CLIENTS:-100}"
duration="${DURATION:-10s}"
dir="$work/run"
mkdir -p "$dir"
wait_quiet
etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
# rkube-dns takes the port for UDP and TCP: find one free for both, below the kernel's
# ephemeral range (an outgoing connection may hold a port there), and distinct ports
low="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range)"
while :; do
  dns_port="$(free_port)"
  [ "$dns_port" -lt "$low" ] && [ -z "$(ss -Hlnu "sport = :$dns_port")" ] || continue
  metrics_port="$(free_port)"
  [ "$metrics_port" -lt "$low" ] || continue
  [ "$dns_port" != "$metrics_port" ] && [ "$dns_port" != "$api_port" ] && [ "$metrics_port" != "$api_port" ] \
    && [ "$dns_port" != "$etcd_port" ] && [ "$metrics_port" != "$etcd_port" ] \
    && [ "$dns_port" != "$peer_port" ] && [ "$metrics_port" != "$peer_port" ] && break
done
etcd_url="http://127.0.0.1:$etcd_port"; peer_url="http://127.0.0.1:$peer_port"
echo "== etcd on $etcd_url, rkube-apiserver on https://127.0.0.1:$api_port, rkube-dns on 127.0.0.1:$dns_port"
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
RUST_LOG=warn "$bin/rkube-dns" --kubeconfig "$dir/pki/admin.kubeconfig" \
  --listen-address "127.0.0.1:$dns_port" --metrics-bind-address "127.0.0.1:$metrics_port" >"$dir/dns.log" 2>&1 &
dns_pid=$!
pids+=("$dns_pid")
wait_port "$metrics_port" "$dns_pid" rkube-dns
idle_rss="$(awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$dns_pid/status")"
row="$("$bin/rkube-dns-bench" --kubeconfig "$dir/pki/admin.kubeconfig" --dns "127.0.0.1:$dns_port" \
  --dns-pid "$dns_pid" --services "$services" --clients "$clients" --duration "$duration")"
stop_all

table="$work/table.md"
{
  echo "| services | clients | rkube-dns | p50 | p99 | max | errors | RSS with the services loaded | RSS after the load |"
  echo "|---|---|---|---|---|---|---|---|---|"
  echo "$row"
} >"$table"
cat "$table"
echo "rkube-dns RSS idle after start (no services): $idle_rss"

if [ "$#" -gt 0 ]; then
  echo "== arguments given: docs/benchmarks.md left alone"
  exit 0
fi

doc=docs/benchmarks.md
cores="$(nproc)"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- dns 2>/dev/null; then
  rev="$rev plus uncommitted changes in dns/"
fi
section="$work/section.md"
{
  echo "## rkube-dns"
  echo
  echo "Command: \`./hack/bench/dns.sh\` (run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev;"
  echo "${cores} cores, Linux $(uname -r))."
  echo "etcd, a release-built rkube-apiserver and rkube-dns (release, default flags: one thread, no upstream)"
  echo "on 127.0.0.1; $services ClusterIP Services with an EndpointSlice of two endpoints each, written"
  echo "through the API and answered by rkube-dns before the load starts. $clients UDP clients"
  echo "(\`rkube-dns-bench\`, a 2-thread tokio runtime on the same ${cores} cores) each keep one query in"
  echo "flight for $duration: three in four are A lookups of a random Service, one in four a search-path"
  echo "expansion (\`hostN.example.com.bench.svc.cluster.local\`) that must be NXDOMAIN; an answer with the"
  echo "wrong code or count is an error, no answer within 1 s is lost. Target: ≥ 20,000 qps."
  echo
  cat "$table"
  echo
  echo "rkube-dns RSS idle after start, before any Service: $idle_rss."
  echo
} >"$section"

awk -v sec="$section" '
  BEGIN { while ((getline l < sec) > 0) s = s l "\n" }
  /^## / { skip = 0 }
  /^## rkube-dns[[:space:]]*$/ { printf "%s", s; skip = 1; done = 1; next }
  !skip { print }
  END { if (!done) printf "\n%s", s }
' "$doc" >"$work/benchmarks.md"
cp "$work/benchmarks.md" "$doc"
echo "== wrote the rkube-dns section of $doc"
