# Helpers shared by the benchmark scripts in loadtest/ (sourced, not run).
#
# The sourcing script sets, before calling these:
#   repo        the workspace root
#   out_dir     where logs and reports go (empty: the scratch directory)
#   load_bin    throng-load binary, or empty to build it
#   ready_timeout  seconds to wait for a port
# and, to start throng processes (start_distributor, start_handlers, start_agent):
#   throng_bin  the throng binary
#   handlers    how many handlers
#   distributor_args, handler_args, agent_args  extra arguments (word-split)
# and calls `bench_init NAME` once. Every process group started with start_group
# is stopped on exit, however the script ends.
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

# bench_init NAME: NAME prefixes the log lines; makes the scratch directory
# $work (removed on exit unless it is $out_dir) and $out_dir (made absolute);
# sets the exit traps.
bench_init() {
  bench_name="$1"
  work="$(mktemp -d "/tmp/$1.XXXXXX")"
  [[ -n ${out_dir:-} ]] || out_dir="$work"
  mkdir -p "$out_dir"
  out_dir="$(cd "$out_dir" && pwd)"
  bench_traps
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

# --- broker processes ------------------------------------------------------------------

# http_ok URL: the URL answers 200.
http_ok() { curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; }

# metric_is URL NAME VALUE: the unlabelled sample NAME on URL equals VALUE.
metric_is() {
  curl -fsS --max-time 1 "$1" 2>/dev/null | awk -v n="$2" -v v="$3" '$1 == n && $2 == v { found = 1 } END { exit !found }'
}

# add_tier LABEL PID: samples the process and its descendants as tier LABEL
# (throng-load's --broker-pid LABEL=PID, collected in tier_args).
tier_args=()
add_tier() {
  local pid
  while read -r pid; do tier_args+=(--broker-pid "$1=$pid"); done < <(pid_tree "$2")
}

# start_mosquitto NAME [CONF_LINES]: Mosquitto on a free port (CONF_LINES added
# to its config), sampled as tier `mosquitto`; sets mosquitto_port, mosquitto_pid.
# shellcheck disable=SC2154 # free_port sets mosquitto_port
start_mosquitto() {
  local name="$1" conf_lines="${2:-}"
  free_port mosquitto_port
  write_mosquitto_conf "$work/$name.conf" "$mosquitto_port"
  if [[ -n $conf_lines ]]; then printf '%s\n' "$conf_lines" >>"$work/$name.conf"; fi
  start_group "$name" "$(mosquitto_bin) -c $work/$name.conf"
  mosquitto_pid=$group_pid
  wait_ready "$name" "$mosquitto_pid" port_open "$mosquitto_port"
  add_tier mosquitto "$mosquitto_pid"
}

# start_redis NAME: redis-server on a free port, persisting nothing; sets
# redis_port, redis_url, redis_pid.
# shellcheck disable=SC2034,SC2154 # redis_url is for the caller; free_port sets redis_port
start_redis() {
  local name="$1"
  free_port redis_port
  start_group "$name" "$(redis_bin) --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --protected-mode no"
  redis_pid=$group_pid
  wait_ready "$name" "$redis_pid" port_open "$redis_port"
  redis_url="redis://127.0.0.1:$redis_port"
}

# plan_handlers NAME: picks the hand-off ports of handlers h0..h(H-1) before any
# starts (the distributor and the agent are given the list); sets handler_ports,
# handler_list (h0=127.0.0.1:PORT,...), handler_ids (h0,...) and fd_dir (their
# fd hand-off sockets).
# shellcheck disable=SC2034,SC2154 # handler_ids is for the caller; handlers comes from it
plan_handlers() {
  local i port members=()
  handler_ports=()
  fd_dir="$work/$1-fd"
  mkdir -p "$fd_dir"
  for ((i = 0; i < handlers; i++)); do
    free_port port
    handler_ports+=("$port")
    members+=("h$i=127.0.0.1:$port")
  done
  handler_list=$(IFS=,; echo "${members[*]}")
  handler_ids=$(IFS=,; echo "${members[*]%%=*}")
}

# start_distributor NAME [ARGS...]: distributor d0 for the planned handlers, with
# ARGS and $distributor_args; sets dist_pid, grpc_addr, dist_metrics.
# shellcheck disable=SC2154 # throng_bin comes from the caller
start_distributor() {
  local name="$1" gport admin
  shift
  free_port gport
  free_port admin
  grpc_addr="127.0.0.1:$gport"
  dist_metrics="http://127.0.0.1:$admin/metrics"
  start_group "$name-distributor" "$throng_bin distributor --id d0 --grpc-listen $grpc_addr --admin-listen 127.0.0.1:$admin --handlers $handler_list $* ${distributor_args:-}"
  dist_pid=$group_pid
  wait_ready "$name-distributor" "$dist_pid" port_open "$gport"
  wait_ready "$name-distributor" "$dist_pid" http_ok "http://127.0.0.1:$admin/readyz"
}

# wait_handlers_attached NAME: until every handler has attached to the
# distributor (so nothing sent from the start waits for a retry).
wait_handlers_attached() {
  wait_ready "$1-distributor" "$dist_pid" metric_is "$dist_metrics" throng_distributor_handlers "$handlers"
}

# start_handlers NAME [--mqtt] [ARGS...]: the planned handlers, one after the
# other, each with ARGS and $handler_args and waited for until it is ready; with
# --mqtt each gets an MQTT listener of its own too. Sets handler_pids,
# handler_metrics (hI=URL) and handler_mqtt_ports.
start_handlers() {
  local name="$1" mqtt="" i
  shift
  if [[ ${1:-} == --mqtt ]]; then mqtt=1; shift; fi
  handler_pids=()
  handler_metrics=()
  handler_mqtt_ports=()
  for ((i = 0; i < handlers; i++)); do
    local admin mport="" listen="" sock="$fd_dir/h$i.sock"
    free_port admin
    if [[ -n $mqtt ]]; then
      free_port mport
      handler_mqtt_ports+=("$mport")
      listen="--mqtt-listen 127.0.0.1:$mport "
    fi
    start_group "$name-h$i" "$throng_bin handler --id h$i $listen--handoff-listen 127.0.0.1:${handler_ports[i]} --fd-handoff-listen $sock --admin-listen 127.0.0.1:$admin $* ${handler_args:-}"
    handler_pids+=("$group_pid")
    handler_metrics+=("h$i=http://127.0.0.1:$admin/metrics")
    wait_ready "$name-h$i" "$group_pid" port_open "${handler_ports[i]}"
    if [[ -n $mport ]]; then wait_ready "$name-h$i" "$group_pid" port_open "$mport"; fi
    wait_ready "$name-h$i" "$group_pid" test -S "$sock"
    wait_ready "$name-h$i" "$group_pid" http_ok "http://127.0.0.1:$admin/readyz"
  done
}

# start_agent NAME MODE: the agent in hand-off MODE (proxy|fd) in front of the
# planned handlers, with $agent_args; sets agent_port, agent_pid, agent_metrics.
# shellcheck disable=SC2034,SC2154 # agent_metrics is for the caller; free_port sets agent_port
start_agent() {
  local name="$1" mode="$2" admin handoff_args=""
  free_port agent_port
  free_port admin
  if [[ $mode == fd ]]; then handoff_args="--handoff fd --fd-handoff-dir $fd_dir"; fi
  start_group "$name-agent" "$throng_bin agent --mqtt-listen 127.0.0.1:$agent_port --handlers $handler_list --admin-listen 127.0.0.1:$admin $handoff_args ${agent_args:-}"
  agent_pid=$group_pid
  agent_metrics="http://127.0.0.1:$admin/metrics"
  wait_ready "$name-agent" "$agent_pid" port_open "$agent_port"
  wait_ready "$name-agent" "$agent_pid" http_ok "http://127.0.0.1:$admin/readyz"
}
