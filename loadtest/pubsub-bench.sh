#!/usr/bin/env bash
# Publish/subscribe, throng side by side with Mosquitto: the same `throng-load
# pubsub` run against
#   mosquitto  Mosquitto (one process, `max_connections -1`, otherwise defaults),
#   agent      a throng cluster of separate release processes: 1 distributor,
#              H handlers attached to it, 1 agent (hand-off --handoff, fd by
#              default: the agent leaves the data path); clients connect to the agent,
#   handlers   optionally, the same cluster with the clients straight on the
#              handlers' MQTT listeners (publisher i on handler i mod H, subscriber j
#              on handler (j+1) mod H: every one-to-one pair crosses the distributor),
# one after the other for each case (MODE:QOS[@LOAD]):
#   fan-out     --fan-out-publishers publisher(s) on one topic, --fan-out-subscribers
#               subscribers each receiving everything
#   fan-in      --fan-in-publishers publishers on their own topics, --fan-in-subscribers
#               subscriber(s) on the wildcard
#   one-to-one  --pairs pairs: publisher i -> topic i -> subscriber i
# LOAD is the offered load in deliveries per second (all subscribers together; the
# publishers publish LOAD / subscribers per second in fan-out and fan-in, LOAD in
# one-to-one), the same for every broker, or `max`: publishers as fast as their
# in-flight window (QoS 1/2) or their socket (QoS 0) allows. At `max` the brokers
# are saturated (latency is mostly queueing), the load generator shares the host's
# cores with them, and a broker may drop what its queues cannot hold: losses there
# are reported (with throng's drop counters) but do not fail the script; at a fixed
# LOAD any failure (a loss at QoS >= 1, ...) does.
# Every broker is started fresh for each run and stopped after it. The table at the
# end gives per run the measured publish and delivery rates, end-to-end latency,
# losses and broker CPU per delivery, and the ratio throng/Mosquitto.
#
#   CARGO_TARGET_DIR=/work/targets/load loadtest/pubsub-bench.sh --duration 15
#
# Everything this script starts is stopped on exit. JSON reports and logs stay in
# --out (default: a temp dir).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: loadtest/pubsub-bench.sh [options] [-- extra throng-load pubsub options]
  --cases LIST       MODE:QOS[@LOAD],... (default fan-out:0,fan-out:1,one-to-one:0,
                     one-to-one:1,fan-out:1@max,one-to-one:1@max)
  --variants LIST    mosquitto, agent, handlers (default mosquitto,agent)
  --duration S       measured seconds per run (default 15)
  --warmup S         seconds of publishing before that, not counted (default 2)
  --load D           offered deliveries/s of a case without @LOAD (default 20000)
  --fan-out-publishers N   (default 1)     --fan-out-subscribers N  (default 10)
  --fan-in-publishers N    (default 100)   --fan-in-subscribers N   (default 1)
  --pairs N          one-to-one publisher/subscriber pairs (default 100)
  --payload-size B   (default 64)
  --inflight N       QoS 1/2 PUBLISHes in flight per publisher (default 64)
  --protocol 4|5     MQTT protocol level (default 4)
  --handlers H       throng handler processes (default 2)
  --handoff MODE     agent hand-off: fd or proxy (default fd)
  --rounds R         run everything R times (default 1)
  --quick            a smoke run: the four fixed-load cases for 3 s at 2,000 deliveries/s,
                     20 pairs; exits non-zero on any loss (also at QoS 0)
  --throng-bin PATH  throng binary (default: release/throng in $CARGO_TARGET_DIR, else
                     in the workspace's target/)
  --distributor-args ARGS  extra arguments for `throng distributor` (word-split)
  --handler-args ARGS      extra arguments for every `throng handler` (word-split)
  --agent-args ARGS        extra arguments for `throng agent` (word-split)
  --mosquitto-conf LINES   extra lines for mosquitto.conf (e.g. $'max_queued_messages 0')
  --ready-timeout S  seconds to wait for a process to be ready (default 60)
  --out DIR          keep reports and logs here (default: a temp dir)
  --load-bin PATH    throng-load binary (default: build it with cargo --release)
The exit status is non-zero when a fixed-load run failed (a loss at QoS >= 1, a
client that could not connect, ...); the table still shows every run.
USAGE
}

cases="fan-out:0,fan-out:1,one-to-one:0,one-to-one:1,fan-out:1@max,one-to-one:1@max"
variants="mosquitto,agent"
duration=15
warmup=2
load=20000
fo_pubs=1
fo_subs=10
fi_pubs=100
fi_subs=1
pairs=100
payload=64
inflight=64
protocol=4
handlers=2
handoff=fd
rounds=1
quick=0
throng_bin=""
distributor_args=""
handler_args=""
agent_args=""
mosquitto_extra=""
ready_timeout=60
out_dir=""
load_bin="${THRONG_LOAD:-}"
extra=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cases) cases="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --load) load="$2"; shift 2 ;;
    --fan-out-publishers) fo_pubs="$2"; shift 2 ;;
    --fan-out-subscribers) fo_subs="$2"; shift 2 ;;
    --fan-in-publishers) fi_pubs="$2"; shift 2 ;;
    --fan-in-subscribers) fi_subs="$2"; shift 2 ;;
    --pairs) pairs="$2"; shift 2 ;;
    --payload-size) payload="$2"; shift 2 ;;
    --inflight) inflight="$2"; shift 2 ;;
    --protocol) protocol="$2"; shift 2 ;;
    --handlers) handlers="$2"; shift 2 ;;
    --handoff) handoff="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --throng-bin) throng_bin="$2"; shift 2 ;;
    --distributor-args) distributor_args="$2"; shift 2 ;;
    --handler-args) handler_args="$2"; shift 2 ;;
    --agent-args) agent_args="$2"; shift 2 ;;
    --mosquitto-conf) mosquitto_extra="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    --load-bin) load_bin="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

if ((quick)); then
  cases="fan-out:0,fan-out:1,one-to-one:0,one-to-one:1"
  duration=3
  warmup=1
  load=2000
  pairs=20
  fi_pubs=20
  extra+=(--fail-on-loss)
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench-lib.sh source-path=SCRIPTDIR
source "$repo/loadtest/bench-lib.sh"
bench_init pubsub-bench

[[ -n $throng_bin ]] || throng_bin="${CARGO_TARGET_DIR:-$repo/target}/release/throng"
IFS=, read -r -a variant_list <<<"$variants"
IFS=, read -r -a case_list <<<"$cases"
for v in "${variant_list[@]}"; do
  case "$v" in
    mosquitto) ;;
    agent|handlers)
      if [[ ! -x $throng_bin ]]; then
        echo "no throng binary at $throng_bin (cargo build --release -p throng)" >&2
        exit 1
      fi ;;
    *) echo "unknown variant: $v (mosquitto, agent, handlers)" >&2; exit 2 ;;
  esac
done
for c in "${case_list[@]}"; do
  case "$c" in
    fan-out:[012]|fan-in:[012]|one-to-one:[012]) ;;
    fan-out:[012]@*|fan-in:[012]@*|one-to-one:[012]@*)
      [[ ${c#*@} == max || ${c#*@} =~ ^[0-9]+$ ]] || { echo "bad load in case $c (a number or max)" >&2; exit 2; } ;;
    *) echo "unknown case: $c (MODE:QOS[@LOAD], MODE one of fan-out, fan-in, one-to-one)" >&2; exit 2 ;;
  esac
done
case "$handoff" in proxy|fd) ;; *) echo "--handoff is fd or proxy" >&2; exit 2 ;; esac

# start_throng NAME VARIANT: distributor, H handlers (attached), and for `agent`
# the agent; sets target (the agent, or every handler's MQTT port), tier_args,
# admin_urls.
admin_urls=()
start_throng() {
  local name="$1" variant="$2" pid
  plan_handlers "$name"
  start_distributor "$name"
  admin_urls=("distributor=$dist_metrics")
  start_handlers "$name" --mqtt --distributors "d0=$grpc_addr"
  admin_urls+=("${handler_metrics[@]}")
  # Every handler attached: subscriptions propagate from the start.
  wait_handlers_attached "$name"
  if [[ $variant == agent ]]; then
    start_agent "$name" "$handoff"
    target="127.0.0.1:$agent_port"
    add_tier agent "$agent_pid"
  else
    target="127.0.0.1:$(IFS=,; echo "${handler_mqtt_ports[*]}")"
  fi
  for pid in "${handler_pids[@]}"; do add_tier handlers "$pid"; done
  add_tier distributor "$dist_pid"
}

# What the brokers counted as dropped (throng's drop counters; Mosquitto has none to scrape).
save_metrics() {
  local name="$1" who url
  for who in "${admin_urls[@]}"; do
    url="${who#*=}"
    curl -fsS --max-time 2 "$url" 2>/dev/null |
      grep -E '^throng_(messages_dropped_total|distributor_forward_dropped_total|handler_forward)' |
      sed "s/^/${who%%=*}: /" >>"$out_dir/$name.drops" || true
  done
}

failed_runs=()
lossy_max=()
# case_load CASE: its LOAD (max or deliveries/s).
case_load() { if [[ $1 == *@* ]]; then echo "${1#*@}"; else echo "$load"; fi; }
run_case() {
  local case="$1" variant="$2" name="$3"
  local mode="${case%%:*}" qos="${case#*:}"
  qos="${qos%%@*}"
  local offered
  offered=$(case_load "$case")
  tier_args=()
  admin_urls=()
  case "$variant" in
    mosquitto)
      start_mosquitto "$name-mosquitto" "$mosquitto_extra"
      target="127.0.0.1:$mosquitto_port"
      ;;
    *) start_throng "$name" "$variant" ;;
  esac
  sleep 1 # let it settle
  local args=("${tier_args[@]}" --target "$target" --mode "$mode" --qos "$qos")
  local fan=1
  case "$mode" in
    fan-out) args+=(--publishers "$fo_pubs" --subscribers "$fo_subs"); fan=$fo_subs ;;
    fan-in) args+=(--publishers "$fi_pubs" --subscribers "$fi_subs"); fan=$fi_subs ;;
    one-to-one) args+=(--publishers "$pairs" --subscribers "$pairs") ;;
  esac
  if [[ $offered != max ]]; then
    args+=(--rate "$(awk -v d="$offered" -v f="$fan" 'BEGIN { printf "%.3f", d / f }')")
  fi
  args+=(--payload-size "$payload" --inflight "$inflight" --protocol "$protocol")
  args+=(--duration "$duration" --warmup "$warmup" --json "$out_dir/$name.json")
  echo
  echo "=== $name ==="
  echo "\$ throng-load pubsub ${args[*]} ${extra[*]}"
  echo "host CPU pressure before the run: $(head -n 1 /proc/pressure/cpu 2>/dev/null || echo n/a)"
  local rc=0
  setsid "$load_bin" pubsub "${args[@]}" "${extra[@]}" \
    > >(tee "$out_dir/$name.txt") 2>"$out_dir/$name.load.stderr" &
  load_pgid=$!
  wait "$load_pgid" || rc=$?
  load_pgid=""
  save_metrics "$name"
  stop_all
  if [[ ! -s $out_dir/$name.json ]]; then
    echo "throng-load made no report for $name (exit $rc); its stderr:" >&2
    tail -20 "$out_dir/$name.load.stderr" >&2 || true
    exit 1
  fi
  if ((rc != 0)); then
    if [[ $offered == max ]]; then lossy_max+=("$name"); else failed_runs+=("$name"); fi
  fi
  reports+=("$out_dir/$name.json")
}

# --- main ----------------------------------------------------------------------------

ensure_load_bin
if [[ " ${variant_list[*]} " == *" mosquitto "* ]]; then ensure_mosquitto; fi
log "cases $cases; variants $variants; ${duration}s each after ${warmup}s warmup; default load $load deliveries/s; output in $out_dir"
reports=()
for ((round = 1; round <= rounds; round++)); do
  for c in "${case_list[@]}"; do
    for v in "${variant_list[@]}"; do
      q="${c#*:}"
      name="${c%%:*}-q${q%%@*}-$(case_load "$c")-$v"
      if ((rounds > 1)); then name="$name-r$round"; fi
      run_case "$c" "$v" "$name"
    done
  done
done

echo
echo "=== summary (pubsub: ${duration} s measured after ${warmup} s warmup, ${payload} B, MQTT $([[ $protocol == 5 ]] && echo 5 || echo 3.1.1); throng: $handlers handlers, $handoff hand-off) ==="
echo "run: MODE-QoS-offered deliveries/s (or max)-broker; pub/s: measured messages published per second;"
echo "deliv/s: unique deliveries per second (first to last arrival); latency: payload send time to arrival;"
echo "lost: expected - delivered; CPU: broker cores busy over the window (all tiers); µs/deliv: broker CPU"
echo "per delivery (warmup backlog included); ratio: throng / Mosquitto; dropped: messages shed at max load"
echo "by the broker's queue limits (counters below)"
python3 - "${reports[@]}" <<'PY' || echo "(python3 failed: no summary; see the JSON reports)"
import json, os, re, sys

def ms(us):
    return f"{us / 1000:.2f} ms" if us < 1e6 else f"{us / 1e6:.2f} s"

def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "n/a"

def result(x):
    # At `max` a broker may shed load by its queue limits: reported, not a failure.
    if x["ok"]:
        return "ok"
    return "dropped" if x["lost"] and "-max-" in x["name"] else "FAILED"

rows = []
for path in sys.argv[1:]:
    r = json.load(open(path))
    name = os.path.basename(path)[: -len(".json")]
    d, p = r["delivery"], r["publish"]
    tiers = r.get("broker", [])
    # The run's name without its broker: MODE-qQOS-LOAD[-rROUND].
    m = re.match(r"^(.*)-(mosquitto|agent|handlers)(-r\d+)?$", name)
    rows.append(dict(
        name=name, case=(m.group(1) + (m.group(3) or "")) if m else name,
        mosquitto=any(t["label"] == "mosquitto" for t in tiers),
        pub=p["messages_per_s"], deliv=d["messages_per_s"], p50=d["latency_us"]["p50_us"],
        p99=d["latency_us"]["p99_us"], lost=d["lost"],
        cores=sum(t["cores"] for t in tiers),
        per=sum(t["cpu_us_per_message"] or 0 for t in tiers) if tiers else None,
        ok=not r["problems"]))

print(f"{'run':<32}{'pub/s':>10}{'deliv/s':>11}{'p50':>11}{'p99':>11}{'lost':>12}{'CPU':>7}{'µs/deliv':>10}  result")
for x in rows:
    per = "n/a" if x["per"] is None else f"{x['per']:.2f}"
    print(f"{x['name']:<32}{x['pub']:>10,.0f}{x['deliv']:>11,.0f}{ms(x['p50']):>11}{ms(x['p99']):>11}"
          f"{x['lost']:>12,}{x['cores']:>7.2f}{per:>10}  {result(x)}")
    base = next((y for y in rows if y["mosquitto"] and y["case"] == x["case"]), None)
    if not x["mosquitto"] and base:
        print(f"{'  throng / mosquitto':<32}{ratio(x['pub'], base['pub']):>10}{ratio(x['deliv'], base['deliv']):>11}"
              f"{ratio(x['p50'], base['p50']):>11}{ratio(x['p99'], base['p99']):>11}{'':>12}"
              f"{ratio(x['cores'], base['cores']):>7}{ratio(x['per'], base['per']):>10}")
PY
echo
for name in "${lossy_max[@]}"; do
  echo "$name lost messages under saturation; throng's drop counters (non-zero):"
  grep -v ' 0$' "$out_dir/$name.drops" 2>/dev/null | grep -v forwarded_total | sed 's/^/  /' || echo "  (none: Mosquitto)"
done
echo "JSON reports, load-tool output, broker logs and throng drop counters (*.drops): $out_dir"
if ((${#failed_runs[@]})); then
  echo "failed runs: ${failed_runs[*]}" >&2
  exit 1
fi
