#!/usr/bin/env bash
# Downlink throughput through ONE distributor: a fresh cluster of separate
# release processes per variant,
#   redis-server (the downlink stream) -> throng distributor d0 -> H throng
#   handlers -> devices connected through one throng agent,
# and throng-load's `downlink` scenario: N devices connect through the agent,
# then M messages for them are pushed either by XADD to the stream (variant
# `redis`) or through the distributor's ingest API (variant `ingest`), and
# every arrival is checked (device, topic, sequence number) and timed.
# CPU and RSS are sampled per tier (distributor, handlers, agent, redis).
#
# Variants `sink` and `sink-ingest` measure the distributor alone: no handlers,
# agent or devices; throng-load attaches to the distributor as the handlers of
# its ring and acks every delivery itself (messages pushed by XADD as in
# `redis`, or through the ingest API as in `ingest`).
#
#   CARGO_TARGET_DIR=/work/targets/load loadtest/downlink-bench.sh --messages 1000000
#
# Everything this script starts is stopped on exit. JSON reports, logs and the
# distributor's /metrics after each run (and its pending / lag gauges every
# second during it, NAME.distributor.timeline) stay in --out (default: a temp dir).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: loadtest/downlink-bench.sh [options] [-- extra throng-load downlink options]
  --devices N        devices (default 2000)
  --messages M       messages per variant (default 500000)
  --qos 0|1          (default 1)
  --variants LIST    comma-separated, in order (default redis,ingest; also: sink and
                     sink-ingest, the distributor alone with throng-load acking as
                     its handlers)
  --rounds R         run the whole list R times (default 1)
  --handlers H       throng handler processes (default 2)
  --handoff MODE     agent hand-off: proxy (relays every byte) or fd (passes the
                     socket; the agent leaves the data path) (default proxy)
  --batch B          messages per pipelined XADD write / PublishBatch (default 500)
  --producers P      concurrent producers, each with one batch in flight (default 4 for
                     XADD; 32 for the ingest API, whose PublishBatch answers only
                     once every message of it was acked)
  --rate R           push at most R messages/s (default: as fast as possible)
  --throng-bin PATH  throng binary (default: release/throng in $CARGO_TARGET_DIR, else
                     in the workspace's target/)
  --distributor-args ARGS  extra arguments for `throng distributor` (word-split)
  --handler-args ARGS      extra arguments for every `throng handler` (word-split)
  --agent-args ARGS        extra arguments for `throng agent` (word-split)
  --perf SECONDS     record the distributor and handler h0 with perf (DWARF call graphs)
                     for SECONDS once the push has started (needs perf; output in --out)
  --ready-timeout S  seconds to wait for a process to be ready (default 60)
  --out DIR          keep reports, logs and metrics here (default: a temp dir)
  --load-bin PATH    throng-load binary (default: build it with cargo --release)
USAGE
}

devices=2000
messages=500000
qos=1
variants="redis,ingest"
rounds=1
handlers=2
handoff=proxy
batch=500
producers=""
rate=""
throng_bin=""
distributor_args=""
handler_args=""
agent_args=""
perf_secs=""
ready_timeout=60
out_dir=""
load_bin="${THRONG_LOAD:-}"
extra=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --devices) devices="$2"; shift 2 ;;
    --messages) messages="$2"; shift 2 ;;
    --qos) qos="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --handlers) handlers="$2"; shift 2 ;;
    --handoff) handoff="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --producers) producers="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --throng-bin) throng_bin="$2"; shift 2 ;;
    --distributor-args) distributor_args="$2"; shift 2 ;;
    --handler-args) handler_args="$2"; shift 2 ;;
    --agent-args) agent_args="$2"; shift 2 ;;
    --perf) perf_secs="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    --load-bin) load_bin="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench-lib.sh source-path=SCRIPTDIR
source "$repo/loadtest/bench-lib.sh"
bench_init downlink-bench

[[ -n $throng_bin ]] || throng_bin="${CARGO_TARGET_DIR:-$repo/target}/release/throng"
if [[ ! -x $throng_bin ]]; then
  echo "no throng binary at $throng_bin (cargo build --release -p throng)" >&2
  exit 1
fi
IFS=, read -r -a variant_list <<<"$variants"
for v in "${variant_list[@]}"; do
  case "$v" in
    redis|ingest|sink|sink-ingest) ;;
    *) echo "unknown variant: $v (redis, ingest, sink, sink-ingest)" >&2; exit 2 ;;
  esac
done
case "$handoff" in proxy|fd) ;; *) echo "--handoff is proxy or fd" >&2; exit 2 ;; esac
if [[ -n $perf_secs ]] && ! command -v perf >/dev/null 2>&1; then
  echo "--perf needs perf (apt-get install linux-perf)" >&2
  exit 2
fi

perf_targets=()

# start_cluster NAME [sink]: redis, the distributor, H handlers attached to it,
# the agent; with `sink` only redis and the distributor (throng-load attaches as
# the handlers). Sets redis_url, grpc_addr, target_addr, dist_pid, dist_metrics,
# handler_ids.
start_cluster() {
  local name="$1" sink="${2:-}" pid
  tier_args=()
  start_redis "$name-redis"
  plan_handlers "$name"
  start_distributor "$name" --redis-url "$redis_url"
  perf_targets=("distributor=$dist_pid")
  if [[ -n $sink ]]; then
    target_addr=""
    add_tier distributor "$dist_pid"
    add_tier redis "$redis_pid"
    return
  fi
  start_handlers "$name" --distributors "d0=$grpc_addr"
  wait_handlers_attached "$name"
  start_agent "$name" "$handoff"
  target_addr="127.0.0.1:$agent_port"

  add_tier distributor "$dist_pid"
  perf_targets+=("h0=${handler_pids[0]}")
  for pid in "${handler_pids[@]}"; do add_tier handlers "$pid"; done
  add_tier agent "$agent_pid"
  add_tier redis "$redis_pid"
}

# perf_when_pushing NAME ERRFILE LOADPID: once the load tool starts pushing,
# records the distributor and the first handler (perf_targets) for --perf seconds.
perf_when_pushing() {
  local name="$1" errfile="$2" loadpid="$3"
  until grep -q "pushing" "$errfile" 2>/dev/null; do
    kill -0 "$loadpid" 2>/dev/null || return 0
    sleep 0.1
  done
  local who pid
  for who in "${perf_targets[@]}"; do
    pid="${who#*=}"
    who="${who%%=*}"
    perf record -F 499 --call-graph dwarf,32768 -p "$pid" -o "$out_dir/$name.$who.perf.data" -- sleep "$perf_secs" \
      >"$out_dir/$name.$who.perf.log" 2>&1 &
  done
  wait
}

# follow_distributor NAME LOADPID: every second while the load tool runs, one
# line of the distributor's gauges (accepted so far, pending, stream lag).
follow_distributor() {
  local name="$1" loadpid="$2" f="$out_dir/$1.distributor.timeline"
  echo "# unix_s accepted pending queue_lag" >"$f"
  while kill -0 "$loadpid" 2>/dev/null; do
    curl -fsS --max-time 1 "$dist_metrics" 2>/dev/null | awk -v t="$(date +%s.%N)" '
      /^throng_distributor_outcomes_total\{outcome="accepted"\}/ { a = $2 }
      /^throng_distributor_pending / { p = $2 }
      /^throng_distributor_queue_lag / { l = $2 }
      END { printf "%.1f %s %s %s\n", t, a, p, l }' >>"$f" || true
    sleep 1
  done
}

# The distributor's view of the run, and Redis's (calls and time per command).
show_metrics() {
  local name="$1" f="$out_dir/$1.distributor.metrics"
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -p "$redis_port" INFO commandstats 2>/dev/null | tr -d '\r' >"$out_dir/$name.redis.commandstats" || true
    grep -E '^cmdstat_(xadd|xreadgroup|xack|xautoclaim):' "$out_dir/$name.redis.commandstats" |
      sed "s/^/  redis: /" || true
  fi
  curl -fsS --max-time 2 "$dist_metrics" >"$f" 2>/dev/null || return 0
  grep -E '^throng_distributor_(outcomes_total|dead_letters_total|queue_lag|pending|forward_dropped_total|delivery_latency_seconds_(count|sum))[ {]' "$f" |
    sed "s/^/  distributor: /" || true
}

run_variant() {
  local variant="$1" name="$2"
  local sink=""
  if [[ $variant == sink* ]]; then sink=1; fi
  if [[ -n $sink ]]; then start_cluster "$name" sink; else start_cluster "$name"; fi
  sleep 1 # let it settle
  local args=("${tier_args[@]}")
  args+=(--devices "$devices" --messages "$messages" --qos "$qos")
  local p="$producers"
  if [[ -z $p ]]; then
    case "$variant" in *ingest) p=32 ;; *) p=4 ;; esac
  fi
  args+=(--batch "$batch" --producers "$p" --json "$out_dir/$name.json")
  case "$variant" in
    redis) args+=(--via redis --redis-url "$redis_url") ;;
    ingest) args+=(--via ingest --grpc "$grpc_addr") ;;
    sink) args+=(--via redis --redis-url "$redis_url") ;;
    sink-ingest) args+=(--via ingest --grpc "$grpc_addr") ;;
  esac
  if [[ -n $sink ]]; then
    args+=(--sink "$handler_ids" --distributor "$grpc_addr")
  else
    args+=(--target "$target_addr")
  fi
  if [[ -n $rate ]]; then args+=(--rate "$rate"); fi
  echo
  if [[ -n $sink ]]; then echo "=== $name (distributor alone) ==="; else echo "=== $name (handoff $handoff) ==="; fi
  echo "\$ throng-load downlink ${args[*]} ${extra[*]}"
  echo "host CPU pressure before the run: $(head -n 1 /proc/pressure/cpu 2>/dev/null || echo n/a)"
  local errfile="$out_dir/$name.load.stderr"
  : >"$errfile"
  setsid "$load_bin" downlink "${args[@]}" "${extra[@]}" \
    > >(tee "$out_dir/$name.txt") 2> >(tee "$errfile" >&2) &
  local loadpid=$!
  load_pgid=$loadpid
  follow_distributor "$name" "$loadpid" &
  local follower=$!
  local perfer=""
  if [[ -n $perf_secs ]]; then
    perf_when_pushing "$name" "$errfile" "$loadpid" &
    perfer=$!
  fi
  local rc=0
  wait "$loadpid" || rc=$?
  load_pgid=""
  if [[ -n $perfer ]]; then wait "$perfer" || true; fi
  wait "$follower" || true
  show_metrics "$name"
  stop_all
  if ((rc != 0)); then
    echo "throng-load failed on $name (exit $rc); logs in $out_dir" >&2
    exit "$rc"
  fi
  reports+=("$out_dir/$name.json")
}

# --- main ----------------------------------------------------------------------------

ensure_load_bin
ensure_redis
log "N = $devices devices, M = $messages messages at QoS $qos per variant, $handlers handlers, $handoff hand-off; output in $out_dir"
reports=()
for ((round = 1; round <= rounds; round++)); do
  for v in "${variant_list[@]}"; do
    name="$v"
    if ((rounds > 1)); then name="$v-r$round"; fi
    run_variant "$v" "$name"
  done
done

echo
echo "=== summary ($devices devices, $messages messages at QoS $qos; $handoff hand-off, sink variants have no agent or handlers) ==="
echo "msg/s: unique messages from the first send to the last arrival; push/s: accepted by the entry point;"
echo "drain/s: arrivals after the push ended, per second (no producer running); CPU: cores busy over the window"
python3 - "${reports[@]}" <<'PY' || echo "(python3 failed: no summary; see the JSON reports)"
import json, os, sys

def ms(us):
    return f"{us / 1000:.1f} ms" if us < 1e6 else f"{us / 1e6:.2f} s"

print(f"{'variant':<12}{'msg/s':>10}{'push/s':>10}{'drain/s':>10}{'p50':>10}{'p99':>10}{'lost':>6}{'dups':>6}  "
      f"{'distributor':>11}{'handlers':>9}{'agent':>7}{'redis':>7}  µs/msg distributor")
for path in sys.argv[1:]:
    r = json.load(open(path))
    name = os.path.basename(path)[: -len(".json")]
    d, p = r["delivery"], r.get("push") or {}
    t = {x["label"]: x for x in r.get("broker", [])}
    def cores(label):
        return f"{t[label]['cores']:.2f}" if label in t else "n/a"
    per = t.get("distributor", {}).get("cpu_us_per_message")
    per = "n/a" if per is None else f"{per:.2f}"
    drain = d.get("after_push_per_s")
    drain = "n/a" if drain is None else f"{drain:,.0f}"
    print(f"{name:<12}{d['messages_per_s']:>10,.0f}{p.get('messages_per_s', 0):>10,.0f}{drain:>10}"
          f"{ms(d['latency_us']['p50_us']):>10}{ms(d['latency_us']['p99_us']):>10}"
          f"{d['lost']:>6}{d['duplicates']:>6}  {cores('distributor'):>11}{cores('handlers'):>9}"
          f"{cores('agent'):>7}{cores('redis'):>7}  {per}")
PY
echo
echo "JSON reports:"
printf '  %s\n' "${reports[@]}"
echo "logs, load-tool output and distributor /metrics: $out_dir"
