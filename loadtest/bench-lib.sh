# Helpers shared by the benchmark scripts in loadtest/ (sourced, not run).
#
# The sourcing script sets, before calling these:
#   bench_name  prefix of log lines
#   repo        the workspace root
#   work        a scratch directory (removed on exit unless it is $out_dir)
#   out_dir     where logs and reports go
#   load_bin    throng-load binary, or empty to build it
#   ready_timeout  seconds to wait for a port
# and calls `bench_traps` once. Every process group started with start_group is
# stopped on exit, however the script ends.
# shellcheck shell=bash

started_pgids=()
chosen_ports=()
load_pgid=""

bench_cleanup() {
  local rc=$?
  if [[ -n $load_pgid ]]; then kill -TERM -- "-$load_pgid" 2>/dev/null || true; fi
  local pgid
  for pgid in "${started_pgids[@]}"; do
    kill -TERM -- "-$pgid" 2>/dev/null || true
  done
  local all=("${started_pgids[@]}")
  if [[ -n $load_pgid ]]; then all+=("$load_pgid"); fi
  for pgid in "${all[@]}"; do
    for _ in $(seq 50); do
      kill -0 -- "-$pgid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  done
  if [[ -n ${work:-} && ${out_dir:-} != "$work" ]]; then rm -rf "$work"; fi
  exit "$rc"
}

bench_traps() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

log() { echo "[${bench_name:-bench}] $*" >&2; }

# --- tools ---------------------------------------------------------------------
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

ensure_mosquitto() {
  if command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]; then
    return
  fi
  log "installing mosquitto (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
}

mosquitto_bin() { command -v mosquitto || echo /usr/sbin/mosquitto; }

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]]; then
    return
  fi
  log "installing redis-server (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
}

redis_bin() { command -v redis-server || echo /usr/bin/redis-server; }

# write_mosquitto_conf PATH PORT
write_mosquitto_conf() {
  cat >"$1" <<EOF
listener $2 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
log_dest stderr
log_type error
log_type warning
EOF
}

ensure_load_bin() {
  if [[ -n $load_bin ]]; then
    [[ -x $load_bin ]] || { echo "no executable at $load_bin" >&2; exit 1; }
    return
  fi
  log "building throng-load (release)"
  (cd "${repo:?}" && cargo build --release -q -p throng-load)
  local target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  load_bin="$target_dir/release/throng-load"
}

# --- ports and processes -----------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port VAR: sets VAR to a free loopback port below the ephemeral range
# (net.ipv4.ip_local_port_range), so the load generator's own source ports never
# collide with it, and never one chosen before (it may not be listening yet).
# Not in a command substitution: the list of chosen ports must survive.
free_port() {
  local lo=20000 hi=32000 p
  for _ in $(seq 200); do
    p=$((lo + RANDOM % (hi - lo)))
    if [[ " ${chosen_ports[*]} " == *" $p "* ]] || port_open "$p"; then continue; fi
    chosen_ports+=("$p")
    printf -v "$1" '%s' "$p"
    return
  done
  echo "no free port found" >&2
  exit 1
}

# The process and all its descendants.
pid_tree() {
  local pid="$1" child
  echo "$pid"
  # shellcheck disable=SC2013 # the files hold space-separated pids
  for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
    pid_tree "$child"
  done
}

# start_group NAME CMD: runs CMD (through bash, open-file limit raised to the
# hard limit) in a new process group, output to $out_dir/NAME.log; sets group_pid.
start_group() {
  local name="$1" cmd="$2"
  log "starting $name: $cmd"
  setsid bash -c "ulimit -n \$(ulimit -Hn); exec $cmd" >"$out_dir/$name.log" 2>&1 &
  group_pid=$!
  started_pgids+=("$group_pid")
}

# wait_ready NAME PID TEST...: waits until the command TEST succeeds, failing if
# PID exits first or after $ready_timeout seconds.
wait_ready() {
  local name="$1" pid="$2"
  shift 2
  local deadline=$((SECONDS + ${ready_timeout:-60}))
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before it was ready ($*); its log:" >&2
      cat "$out_dir/$name.log" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "$name is not ready ($*) after ${ready_timeout:-60}s" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# stop_group PGID: SIGTERM, then SIGKILL after 5 s.
stop_group() {
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null || true
}

# stop_all: stops every group started so far (in reverse order) and forgets them.
stop_all() {
  local i
  for ((i = ${#started_pgids[@]} - 1; i >= 0; i--)); do
    stop_group "${started_pgids[i]}"
  done
  started_pgids=()
  chosen_ports=()
}
