# Shared by the benchmark scripts that start their own etcd and rkube-apiserver
# (hack/bench/scheduler.sh, hack/bench/controllers.sh): the process list, stopping it on
# exit, free loopback ports, waiting for a listener, and waiting for a quiet machine.
# Sourced after `work` (the temp dir) is set; not meant to be run.
pids=()

stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
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
  pids=()
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if [ "$rc" -ne 0 ]; then
    for log in "$work"/*/*.log; do
      if [ -f "$log" ]; then
        echo "--- last lines of $log" >&2
        tail -n 20 "$log" >&2
      fi
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

wait_port() {
  local port=$1 pid=$2 what=$3
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$(basename "$0"): $what exited" >&2; return 1; }
    sleep 0.1
  done
  echo "$(basename "$0"): $what did not listen on $port within 20 s" >&2
  return 1
}

# Cores busy over one second, from /proc/stat.
busy_cores() {
  local a b
  a="$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)"
  sleep 1
  b="$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)"
  awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; all = busy + y[2] - x[2]
    printf "%.2f\n", (all > 0) ? n * busy / all : 0 }'
}

# A shared machine: wait (at most three minutes) for five idle seconds in a row.
wait_quiet() {
  local quiet=0 i busy
  for i in $(seq 180); do
    busy="$(busy_cores)"
    if awk -v b="$busy" 'BEGIN { exit !(b < 0.3) }'; then quiet=$((quiet + 1)); else quiet=0; fi
    if [ "$quiet" -ge 5 ]; then return; fi
    if [ "$i" = 1 ] && [ "$quiet" = 0 ]; then echo "== waiting for the machine to be idle ($busy cores busy)"; fi
  done
  echo "== $busy cores busy after 3 min; measuring anyway"
}
