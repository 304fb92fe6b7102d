#!/usr/bin/env bash
# Idle-connection benchmark: start a broker on a free loopback port, open N MQTT
# connections to it with throng-load, hold them idle, and report connects/s, the
# broker's memory per idle connection and CPU per connection (sampled from /proc).
#
#   loadtest/idle-bench.sh                        # Mosquitto (installed if missing)
#   loadtest/idle-bench.sh --throng 'CMD {port}'  # any broker command instead
#   loadtest/idle-bench.sh --throng 'CMD {port}' --compare   # Mosquitto, then CMD
#
# --throng CMD runs CMD (through bash, in its own process group) with every
# "{port}" replaced by the chosen port, waits until 127.0.0.1:port accepts, and
# samples the started process and all its descendants. Everything this script
# starts is stopped on exit.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: loadtest/idle-bench.sh [options] [-- extra throng-load connect options]
  --connections N   connections to open (default 15000; Mosquitto holds < 20000)
  --hold S          seconds to hold them idle (default 10)
  --in-flight K     handshakes in flight (default: throng-load's, 1000)
  --rate R          start R handshakes/s instead of an in-flight limit
  --protocol 4|5    MQTT protocol level (default 4)
  --keepalive S     keep-alive sent in CONNECT (default 60)
  --no-clean        persistent sessions instead of clean ones
  --port P          broker port (default: a free one below the ephemeral range)
  --throng CMD      benchmark this command instead of Mosquitto ({port} is replaced)
  --compare         with --throng: run Mosquitto first, then CMD, same settings
  --ready-timeout S seconds to wait for the broker's port (default 60)
  --out DIR         keep JSON reports and broker logs here (default: a temp dir)
  --load-bin PATH   throng-load binary (default: build it with cargo --release)
EOF
}

connections=15000
hold=10
in_flight=""
rate=""
protocol=4
keepalive=60
clean=1
port=""
throng_cmd=""
compare=0
ready_timeout=60
out_dir=""
load_bin="${THRONG_LOAD:-}"
extra=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --connections) connections="$2"; shift 2 ;;
    --hold) hold="$2"; shift 2 ;;
    --in-flight) in_flight="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --protocol) protocol="$2"; shift 2 ;;
    --keepalive) keepalive="$2"; shift 2 ;;
    --no-clean) clean=0; shift ;;
    --port) port="$2"; shift 2 ;;
    --throng) throng_cmd="$2"; shift 2 ;;
    --compare) compare=1; shift ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    --load-bin) load_bin="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ $compare == 1 && -z $throng_cmd ]]; then
  echo "--compare needs --throng CMD" >&2
  exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d /tmp/idle-bench.XXXXXX)"
[[ -n $out_dir ]] || out_dir="$work"
mkdir -p "$out_dir"

started_pgids=()
cleanup() {
  local rc=$?
  for pgid in "${started_pgids[@]}"; do
    kill -TERM -- "-$pgid" 2>/dev/null || true
  done
  for pgid in "${started_pgids[@]}"; do
    for _ in $(seq 50); do
      kill -0 -- "-$pgid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  done
  if [[ $out_dir != "$work" ]]; then rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[idle-bench] $*" >&2; }

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

ensure_load_bin() {
  if [[ -n $load_bin ]]; then
    [[ -x $load_bin ]] || { echo "no executable at $load_bin" >&2; exit 1; }
    return
  fi
  log "building throng-load (release)"
  (cd "$repo" && cargo build --release -q -p throng-load)
  local target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  load_bin="$target_dir/release/throng-load"
}

# --- ports and processes -----------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  # Below the ephemeral range (net.ipv4.ip_local_port_range), so the load
  # generator's own source ports never collide with it.
  local lo=20000 hi=32000 p
  for _ in $(seq 200); do
    p=$((lo + RANDOM % (hi - lo)))
    if ! port_open "$p"; then echo "$p"; return; fi
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

# start_broker NAME CMD: runs CMD in a new process group; sets broker_pid.
start_broker() {
  local name="$1" cmd="$2"
  log "starting $name: $cmd"
  setsid bash -c "ulimit -n \$(ulimit -Hn); exec $cmd" >"$out_dir/$name.log" 2>&1 &
  broker_pid=$!
  started_pgids+=("$broker_pid")
  local deadline=$((SECONDS + ready_timeout))
  until port_open "$broker_port"; do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      echo "$name exited before listening; its log:" >&2
      cat "$out_dir/$name.log" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "$name is not listening on 127.0.0.1:$broker_port after ${ready_timeout}s" >&2
      exit 1
    fi
    sleep 0.1
  done
  sleep 1 # let it settle before the "before" sample
}

stop_broker() {
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null || true
}

# run_bench NAME CMD: start, load, report, stop. A function prepare_NAME, if
# defined, is called with the port first.
run_bench() {
  local name="$1" cmd="$2"
  broker_port="${port:-$(free_port)}"
  cmd="${cmd//\{port\}/$broker_port}"
  if declare -F "prepare_$name" >/dev/null; then "prepare_$name" "$broker_port"; fi
  start_broker "$name" "$cmd"
  local pids=() args=()
  mapfile -t pids < <(pid_tree "$broker_pid")
  for p in "${pids[@]}"; do args+=(--broker-pid "$p"); done
  args+=(--target "127.0.0.1:$broker_port" --connections "$connections" --hold "$hold")
  args+=(--protocol "$protocol" --keepalive "$keepalive" --json "$out_dir/$name.json")
  if [[ $clean == 1 ]]; then args+=(--clean); fi
  if [[ -n $in_flight ]]; then args+=(--in-flight "$in_flight"); fi
  if [[ -n $rate ]]; then args+=(--rate "$rate"); fi
  log "sampling $name pid(s): ${pids[*]}"
  echo "\$ throng-load connect ${args[*]} ${extra[*]}"
  "$load_bin" connect "${args[@]}" "${extra[@]}"
  echo "report: $out_dir/$name.json"
  stop_broker "$broker_pid"
}

prepare_mosquitto() {
  cat >"$work/mosquitto.conf" <<EOF
listener $1 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
log_dest stderr
log_type error
log_type warning
EOF
}

ensure_load_bin
if [[ -z $throng_cmd || $compare == 1 ]]; then
  ensure_mosquitto
  run_bench mosquitto "$(command -v mosquitto || echo /usr/sbin/mosquitto) -c $work/mosquitto.conf"
fi
if [[ -n $throng_cmd ]]; then
  run_bench throng "$throng_cmd"
fi
