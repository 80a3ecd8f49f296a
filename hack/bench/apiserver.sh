#!/usr/bin/env bash
# The apiserver benchmark. Builds rkube-apiserver and the load generator (hack/bench/loadgen)
# in release mode, starts one etcd and one rkube-apiserver on 127.0.0.1 in a temp dir, runs
# the load generator against them (creates vs raw etcd puts, a 10k-pod cached list vs a raw
# etcd range, 1,000 watchers vs one etcd watch, GETs over 64 connections, RSS), and writes
# its table into the `## apiserver` section of docs/benchmarks.md.
#
# Everything it starts is stopped on exit, failure and Ctrl-C included; each run starts from
# a fresh etcd, so it is safe to run twice. About two minutes after the build.
# Extra arguments go to the load generator (`--pods 1000 --watchers 100` for a quick try);
# with any, the table is only printed and docs/benchmarks.md is left alone.
# Not part of hack/test.sh: it is a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v etcd >/dev/null 2>&1 || { echo "apiserver.sh: etcd not found; run hack/install-deps.sh" >&2; exit 1; }

echo "== cargo build --release -p rkube-apiserver -p rkube-bench"
cargo build --release --quiet -p rkube-apiserver -p rkube-bench
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

# 1,000 watch connections need as many sockets in the apiserver and in the load generator.
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"

work="$(mktemp -d "${TMPDIR:-/tmp}/rkube-bench.XXXXXX")"
pids=()

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Ten seconds to stop gracefully, then SIGKILL.
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    if [ "$alive" = 0 ]; then break; fi
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for log in etcd apiserver; do
      if [ -f "$work/$log.log" ]; then
        echo "--- last lines of $log.log" >&2
        tail -n 20 "$work/$log.log" >&2
      fi
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A loopback port nothing listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# Waits until something accepts connections on the loopback port, or the process dies.
wait_port() {
  local port=$1 pid=$2 what=$3
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "apiserver.sh: $what exited" >&2; return 1; }
    sleep 0.1
  done
  echo "apiserver.sh: $what did not listen on $port within 20 s" >&2
  return 1
}

# Cores busy over one second, from /proc/stat (user nice system idle iowait irq softirq steal).
busy_cores() {
  local a b
  a="$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)"
  sleep 1
  b="$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)"
  awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; all = busy + y[2] - x[2]
    printf "%.2f\n", (all > 0) ? n * busy / all : 0 }'
}

# A shared machine: wait (at most three minutes) until other work, a build say, has left it
# idle for five seconds in a row.
quiet=0
for i in $(seq 180); do
  busy="$(busy_cores)"
  if awk -v b="$busy" 'BEGIN { exit !(b < 0.3) }'; then quiet=$((quiet + 1)); else quiet=0; fi
  if [ "$quiet" -ge 5 ]; then break; fi
  if [ "$i" = 1 ] && [ "$quiet" = 0 ]; then echo "== waiting for the machine to be idle ($busy cores busy)"; fi
  if [ "$i" = 180 ]; then echo "== $busy cores busy after 3 min; measuring anyway (see 'other processes')"; fi
done

etcd_port="$(free_port)"
peer_port="$(free_port)"
api_port="$(free_port)"
etcd_url="http://127.0.0.1:$etcd_port"
peer_url="http://127.0.0.1:$peer_port"

echo "== etcd on $etcd_url (data in $work/etcd)"
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
  --initial-cluster "bench=$peer_url" \
  --logger zap --log-level warn >"$work/etcd.log" 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")
wait_port "$etcd_port" "$etcd_pid" etcd

echo "== rkube-apiserver on https://127.0.0.1:$api_port"
# No controller-manager runs here to create the `default` service accounts that the
# ServiceAccount admission plugin requires of pods; upstream's integration tests turn it off too.
RUST_LOG=info "$bin/rkube-apiserver" --etcd-servers "$etcd_url" --etcd-prefix /registry \
  --disable-admission-plugins=ServiceAccount \
  --cert-dir "$work/pki" --secure-port "$api_port" --bind-address 127.0.0.1 >"$work/apiserver.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
wait_port "$api_port" "$api_pid" rkube-apiserver
# The listener binds before the certificates are written; the kubeconfig comes last.
for _ in $(seq 200); do
  [ -s "$work/pki/admin.kubeconfig" ] && break
  sleep 0.1
done
[ -s "$work/pki/admin.kubeconfig" ] || { echo "apiserver.sh: no $work/pki/admin.kubeconfig after 20 s" >&2; exit 1; }

echo "== load (rkube-bench)"
"$bin/rkube-bench" --apiserver "https://127.0.0.1:$api_port" --cert-dir "$work/pki" \
  --etcd "$etcd_url" --etcd-prefix /registry --apiserver-pid "$api_pid" --etcd-pid "$etcd_pid" "$@" >"$work/table.md" &
pids+=("$!")
wait "$!"
cat "$work/table.md"

if [ "$#" -gt 0 ]; then
  echo "== extra arguments given: docs/benchmarks.md left alone"
  exit 0
fi

doc=docs/benchmarks.md
cores="$(nproc)"
mem="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
if [ ! -f "$doc" ]; then
  cat >"$doc" <<EOF
# Benchmarks

Numbers are from the command given in each section, on this ${cores}-core machine
(${cpu:-unknown CPU}, ${mem} memory, Linux $(uname -r)); file started $(date -u +%Y-%m-%d).
Load generators run on the same machine and share its cores with what they measure.
EOF
fi

rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- apiserver libs 2>/dev/null; then
  rev="$rev plus uncommitted changes in apiserver/ or libs/"
fi
section="$work/section.md"
{
  echo "## apiserver"
  echo
  echo "Command: \`./hack/bench/apiserver.sh\` (run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev;"
  echo "${cores} cores, ${mem}, Linux $(uname -r))."
  echo "One etcd ($(etcd --version | head -n 1 | sed 's/^etcd Version: //'), its own temp dir) and one release-built"
  echo "rkube-apiserver on 127.0.0.1; the load generator (\`hack/bench/loadgen\`, HTTPS with the admin client"
  echo "certificate, HTTP/1.1) runs beside them. \"etcd directly\" uses the same etcd, its own key prefix,"
  echo "the same 1 KiB values and the same concurrency."
  echo
  cat "$work/table.md"
  echo
} >"$section"

awk -v sec="$section" '
  BEGIN { while ((getline l < sec) > 0) s = s l "\n" }
  /^## / { skip = 0 }
  /^## apiserver[[:space:]]*$/ { printf "%s", s; skip = 1; done = 1; next }
  !skip { print }
  END { if (!done) printf "\n%s", s }
' "$doc" >"$work/benchmarks.md"
cp "$work/benchmarks.md" "$doc"
echo "== wrote the apiserver section of $doc"
