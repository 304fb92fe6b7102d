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
# shellcheck source=bench-lib.sh source-path=SCRIPTDIR
source "$repo/loadtest/bench-lib.sh"
bench_init idle-bench

# start_broker NAME CMD: runs CMD in a new process group, waits for its port;
# sets broker_pid.
start_broker() {
  local name="$1" cmd="$2"
  start_group "$name" "$cmd"
  broker_pid=$group_pid
  wait_ready "$name" "$broker_pid" port_open "$broker_port"
  sleep 1 # let it settle before the "before" sample
}

# run_bench NAME CMD: start, load, report, stop. A function prepare_NAME, if
# defined, is called with the port first.
run_bench() {
  local name="$1" cmd="$2"
  broker_port="$port"
  [[ -n $broker_port ]] || free_port broker_port
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
  stop_all
}

prepare_mosquitto() { write_mosquitto_conf "$work/mosquitto.conf" "$1"; }

ensure_load_bin
if [[ -z $throng_cmd || $compare == 1 ]]; then
  ensure_mosquitto
  run_bench mosquitto "$(mosquitto_bin) -c $work/mosquitto.conf"
fi
if [[ -n $throng_cmd ]]; then
  run_bench throng "$throng_cmd"
fi
